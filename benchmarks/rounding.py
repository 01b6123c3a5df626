"""Does a seed give the same weights on another CPU? The first steps of one paper cell,
trained under this CPU's own kernels and under emulated older ones, compared as JSON.

The same seed and settings give bit-identical weights on one machine (tests/test_train.py).
On another CPU torch may pick other kernels: ATen's by the vector instruction set
(``ATEN_CPU_CAPABILITY``) and oneDNN's convolutions by theirs (``ONEDNN_MAX_CPU_ISA``). They
add in another order and round differently, and training amplifies the difference step by
step until a long run ends as another draw from the seed's spread. This script shows it
on one machine: each profile trains the same cell with the same seed in a fresh process
(its environment set before torch loads) and the weights after each of ``--steps`` are
compared with the ``native`` run's (this CPU's own kernels): bit-identical or not, the
largest difference of one weight, and the distance of all of them relative to their norm
and to the way the native run travelled from the initial weights (``diff_per_travel``).
``native`` runs twice: the control, which must be bit-identical.

Profiles: ``native`` (nothing set), ``avx2`` (ATen, oneDNN and MKL held to AVX2, like an
AMD EPYC Zen 2/3 or an Intel CPU without AVX-512) and ``scalar`` (ATen's plain C++ kernels,
oneDNN held to SSE4.1). On a CPU without AVX-512, ``native`` may already be ``avx2``; each
record names the capability torch reported.

    python benchmarks/rounding.py --cell stcnn-aff/R --steps 1 10 100 1000 \\
        --out results/reruns/rounding.json

Writes the records to ``--out`` (a JSON file, replaced) and prints them.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from stnlib import paper
from stnlib.bench import check_positive, report
from stnlib.train import CPU_PROFILES, machine, profile_environment


def train_steps(cell: str, steps: list[int], *, seed: int = 0, epochs: int = 30,
                batch_size: int = 64, lr: float = 0.002, threads: int = 1,
                train_size: int | None = None) -> dict[int, dict[str, torch.Tensor]]:
    """The weights of ``cell`` (the table's recipe: Adam, one-cycle over ``epochs``) before
    training (key 0) and after each of ``steps`` (increasing), from one run: it stops at
    each count with a checkpoint and resumes (bit-identical to an uninterrupted run)."""
    from stnlib.data import mnist
    from stnlib.distort import train_transform
    from stnlib.train import fit

    model = paper.cell_model(cell, seed=seed)
    train_set = mnist(train=True)
    if train_size is not None:
        train_set = train_set.subset(train_size)
    def snapshot() -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    weights = {0: snapshot()}
    with tempfile.TemporaryDirectory() as folder:
        for i, count in enumerate(steps):
            fit(model, train_set, None, epochs=epochs, batch_size=batch_size, lr=lr,
                optimizer="adam", schedule="onecycle", seed=seed, progress=False,
                checkpoint=Path(folder) / "run.pt", resume=i > 0, max_steps=count,
                train_transform=train_transform(cell.split("/")[1]), threads=threads)
            weights[count] = snapshot()
    return weights


def compare(weights: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
            start: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """How far ``weights`` are from ``reference``: bit-identical or not, the largest
    absolute difference of one weight, the L2 distance of all of them relative to the
    reference's norm and, given the initial weights ``start``, relative to the distance the
    reference travelled from them (1: the two runs are as far apart as training moved)."""

    def flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([state[k].double().flatten() for k in reference])

    delta = flat(weights) - flat(reference)
    found = {"identical": all(torch.equal(weights[k], reference[k]) for k in reference),
             "max_abs_diff": float(delta.abs().max()),
             "rel_l2_diff": float(delta.norm() / flat(reference).norm())}
    if start is not None:
        found["diff_per_travel"] = float(delta.norm() / (flat(reference) - flat(start)).norm())
    return found


def _worker(args: argparse.Namespace) -> int:
    weights = train_steps(args.cell, args.steps, seed=args.seed, epochs=args.epochs,
                          threads=args.threads, train_size=args.train_size)
    torch.save({"weights": weights, "cpu_capability": torch.backends.cpu.get_cpu_capability()},
               args.worker)
    return 0


def run_profile(profile: str, args: argparse.Namespace, folder: Path, tag: str
                ) -> tuple[dict[int, dict[str, torch.Tensor]], str, float]:
    """Train in a fresh process under ``profile``: (weights by step, capability, seconds)."""
    out = folder / f"{tag}.pt"
    env = profile_environment(profile)
    command = [sys.executable, __file__, "--worker", str(out), "--cell", args.cell,
               "--steps", *map(str, args.steps), "--seed", str(args.seed),
               "--epochs", str(args.epochs), "--threads", str(args.threads)]
    if args.train_size is not None:
        command += ["--train-size", str(args.train_size)]
    start = time.perf_counter()
    if subprocess.run(command, env=env).returncode != 0:
        raise RuntimeError(f"the {tag} run stopped with the error printed above")
    saved = torch.load(out, weights_only=True)
    return saved["weights"], saved["cpu_capability"], time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", default="stcnn-aff/R", help="a Table 1 cell")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 10, 100, 1000],
                        help="compare the weights after each of these step counts")
    parser.add_argument("--profiles", nargs="+", default=["avx2", "scalar"],
                        choices=[p for p in CPU_PROFILES if p != "native"],
                        help="emulated CPUs to compare with the native run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30,
                        help="the one-cycle schedule's length (the table's: 30)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=None,
                        help="the first N training digits (default: all 60,000; for tests)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        check_positive(args, "epochs", "threads", "train_size")
        if any(s <= 0 for s in args.steps) or args.steps != sorted(set(args.steps)):
            raise ValueError(f"--steps must be increasing positive counts, got {args.steps}")
        paper.cell_model(args.cell)  # a bad cell: before any process starts
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.worker is not None:
        return _worker(args)
    records = []
    runs = [("native", "native"), *((p, p) for p in args.profiles),
            ("native", "native-again")]  # (profile, tag): the control runs last
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results = {tag: run_profile(profile, args, Path(tmp), tag)
                       for profile, tag in runs}
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    cpu = machine()["cpu"]
    reference = results["native"][0]
    for profile, tag in runs[1:]:
        weights, capability, seconds = results[tag]
        for count in args.steps:
            records.append({
                "cell": args.cell, "seed": args.seed, "steps": count,
                "profile": tag, "env": CPU_PROFILES[profile], "cpu_capability": capability,
                "native_cpu_capability": results["native"][1],
                **compare(weights[count], reference[count], reference[0]),
                "threads": args.threads, "seconds": round(seconds, 1),
                "cpu": cpu,
                "torch": torch.__version__})
    for record in records:
        for key in ("max_abs_diff", "rel_l2_diff", "diff_per_travel"):
            record[key] = float(f"{record[key]:.3g}") if math.isfinite(record[key]) else None
    report(records, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
