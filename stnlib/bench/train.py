"""Training benchmark: the PyTorch STN tutorial's pipeline vs stnlib's ST-CNN training.

Runs one after the other in one process, on the same machine state:

(a) ``tutorial``: a faithful re-creation of the official PyTorch tutorial
    (https://pytorch.org/tutorials/intermediate/spatial_transformer_tutorial.html):
    its ``Net`` (localization net + 10/20-channel classifier with dropout),
    ``torchvision.datasets.MNIST`` with per-sample ``ToTensor`` + ``Normalize((0.1307,),
    (0.3081,))``, ``DataLoader(batch_size=64, shuffle=True, num_workers=4)`` for train
    and test, ``SGD(lr=0.01)``, NLL loss, 20 epochs, a test pass after every epoch. The
    only change: ``align_corners=False`` is passed explicitly (torch's default, silencing
    its warning). MNIST comes from stnlib's data root, never downloaded.
(b) ``stnlib``: :func:`stnlib.train.train_model` with its defaults (the ST-CNN of
    :mod:`stnlib.models`, in-memory batches, Adam + one-cycle), test pass every epoch.

It then times the same ST-CNN training with ``sampler="stnlib"`` against
``sampler="torch"`` (``--ratio-epochs`` epochs each), and reports the accuracy of a
CNN and an ST-CNN on the test set rotated by ``--rotate`` degrees. Every figure is a
JSON line; the ratios compare runs measured in this process.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from stnlib import fast_mode


class TutorialNet(nn.Module):
    """The network of the PyTorch STN tutorial, verbatim (it normalises before the sampler)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)
        self.localization = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=7), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
            nn.Conv2d(8, 10, kernel_size=5), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
        )
        self.fc_loc = nn.Sequential(nn.Linear(10 * 3 * 3, 32), nn.ReLU(True), nn.Linear(32, 6))
        self.fc_loc[2].weight.data.zero_()
        self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))

    def stn(self, x: torch.Tensor) -> torch.Tensor:
        xs = self.localization(x).view(-1, 10 * 3 * 3)
        theta = self.fc_loc(xs).view(-1, 2, 3)
        grid = F.affine_grid(theta, x.size(), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stn(x)
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        return F.log_softmax(self.fc2(x), dim=1)


def run_tutorial(epochs: int = 20, seed: int = 0, root=None, workers: int = 4,
                 subset: int | None = None) -> dict:
    """Train the tutorial's pipeline; returns wall time (train + per-epoch test) and accuracy."""
    from torchvision import datasets, transforms

    from stnlib.data import data_root, load_mnist

    load_mnist(True, root)  # clear error if MNIST is missing; torchvision then finds it
    root = str(data_root(root))
    transform = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize((0.1307,), (0.3081,))])
    with contextlib.redirect_stdout(io.StringIO()):
        train_data = datasets.MNIST(root, train=True, download=False, transform=transform)
        test_data = datasets.MNIST(root, train=False, download=False, transform=transform)
    if subset:
        train_data = torch.utils.data.Subset(train_data, range(subset))
        test_data = torch.utils.data.Subset(test_data, range(min(subset, len(test_data))))
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # torch warns that 4 workers exceed this machine's 2 cores: that is the tutorial
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        torch.manual_seed(seed)
        start = time.perf_counter()
        train_loader = torch.utils.data.DataLoader(train_data, batch_size=64, shuffle=True,
                                                   num_workers=workers)
        test_loader = torch.utils.data.DataLoader(test_data, batch_size=64, shuffle=True,
                                                  num_workers=workers)
        model = TutorialNet()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        accuracy = 0.0
        for _ in range(epochs):
            model.train()
            for data, target in train_loader:
                optimizer.zero_grad()
                loss = F.nll_loss(model(data), target)
                loss.backward()
                optimizer.step()
            model.eval()
            correct = 0
            with torch.no_grad():
                for data, target in test_loader:
                    correct += int((model(data).argmax(1) == target).sum())
            accuracy = correct / len(test_data)
        wall = time.perf_counter() - start
    return {"run": "tutorial", "epochs": epochs, "batch_size": 64, "workers": workers,
            "train_size": len(train_data), "test_acc": accuracy, "wall_s": round(wall, 2)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tutorial-epochs", type=int, default=20,
                        help="epochs of the tutorial pipeline (its own setting: 20)")
    parser.add_argument("--workers", type=int, default=4,
                        help="DataLoader workers of the tutorial pipeline (its own: 4)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of stnlib's ST-CNN (default: train_model's default)")
    parser.add_argument("--ratio-epochs", type=int, default=1,
                        help="epochs per run for the stnlib/torch sampler timing")
    parser.add_argument("--rotate", type=float, default=45.0,
                        help="rotation (degrees) of the test set for CNN vs ST-CNN")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for every run (default: torch's own)")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["tutorial", "stnlib", "sampler", "rotation"],
                        help="parts to leave out")
    parser.add_argument("--fast", action="store_true",
                        help="tiny subsets and one epoch (a smoke test; also STNLIB_FAST=1)")


def run(args: argparse.Namespace) -> list[dict]:
    """Run the parts in order; returns JSON-able records (also yields ratios)."""
    from stnlib.data import mnist_transformed
    from stnlib.train import evaluate, train_model

    fast = bool(args.fast) or fast_mode()
    old_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    records: list[dict] = []
    try:
        tutorial = stn = None
        if "tutorial" not in args.skip:
            tutorial = run_tutorial(1 if fast else args.tutorial_epochs, args.seed,
                                    workers=args.workers, subset=2000 if fast else None)
            tutorial["threads"] = threads
            records.append(tutorial)
        models = {}
        if "stnlib" not in args.skip:
            overrides = {} if args.epochs is None else {"epochs": args.epochs}
            start = time.perf_counter()
            model, history = train_model("stcnn", fast=fast, seed=args.seed, progress=False,
                                         **overrides)
            wall = time.perf_counter() - start
            models["stcnn"] = model
            stn = {"run": "stnlib", "model": "stcnn", "epochs": len(history.epoch),
                   "test_acc": history.final_test_acc, "train_s": round(history.train_s, 2),
                   "wall_s": round(wall, 2), "threads": threads}
            records.append(stn)
        if tutorial and stn:
            records.append({"run": "ratio", "stnlib_wall_over_tutorial_wall":
                            round(stn["wall_s"] / tutorial["wall_s"], 3),
                            "goal": "<= 0.333 with test_acc >= 0.995",
                            "met": stn["wall_s"] <= tutorial["wall_s"] / 3
                            and stn["test_acc"] >= 0.995})
        if "sampler" not in args.skip:
            times = {}
            for sampler in ("torch", "stnlib", "torch", "stnlib"):  # interleaved
                start = time.perf_counter()
                train_model("stcnn", fast=fast, seed=args.seed, progress=False,
                            sampler=sampler, epochs=args.ratio_epochs, test_set=False)
                times.setdefault(sampler, []).append(time.perf_counter() - start)
            best = {k: min(v) for k, v in times.items()}
            records.append({"run": "sampler", "epochs": args.ratio_epochs,
                            "torch_s": round(best["torch"], 2),
                            "stnlib_s": round(best["stnlib"], 2),
                            "stnlib_over_torch": round(best["stnlib"] / best["torch"], 3),
                            "goal": "<= 1.1"})
        if "rotation" not in args.skip:
            if "stcnn" not in models:
                models["stcnn"], _ = train_model("stcnn", fast=fast, seed=args.seed,
                                                 progress=False)
            models["cnn"], history = train_model("cnn", fast=fast, seed=args.seed,
                                                 progress=False)
            rotated = mnist_transformed(train=False, degrees=args.rotate)
            if fast:
                rotated = rotated.subset(1000)
            record = {"run": "rotation", "degrees": args.rotate}
            for name in ("cnn", "stcnn"):
                record[f"{name}_acc"] = evaluate(models[name], rotated)
            record["cnn_upright_acc"] = history.final_test_acc
            records.append(record)
    finally:
        torch.set_num_threads(old_threads)
    return records
