"""How long does each Table 1 cell take to train on this CPU, and do older kernels help?
Seconds a training step per cell, with this CPU's own kernels and held to AVX2, side by
side in the same run, and the table's budget projected from them, as JSON.

The issue behind Table 1 asks for every cell in at most 15 minutes on a 2-core CPU.
``results/table1.json`` records each cell's wall time, but those runs shared the machine
with other jobs and ran on CPUs with different instruction sets (a seed's kernels depend on
them: ``benchmarks/rounding.py``). This script measures each cell alone: in a fresh
process per (cell, profile, threads) it trains the table's recipe (Adam, one-cycle, batch
64, fresh distortions every batch) for ``--warmup`` steps, then again for ``--warmup`` +
``--steps`` steps; the difference of the two wall times over ``--steps`` is the time a
step (start-up, loading and the first slow steps cancel). As a real run does, the worker
first distorts the cell's fixed test set (records with ``"test_set_first": true``): before
that change (``cell_speed.json``, ``cell_speed_fold.json``) a fresh process allocated
fresh pages every step, and its projections read longer than real runs took (R with
``--conv-grad fold``: 12.1 minutes projected, 10.3 trained; RTS with ``--loc-pool 2``: about
1.5 times). The profiles take turns,
``--repeat`` times, and the median counts: on this shared 2-core machine the same
measurement taken again has differed by up to 20% (more with 2 threads), so one
measurement's ratio of two profiles means little, the ratios over many cells more.
Projected: a step's time x 937 steps an epoch (60,000 digits, batch 64) x the epochs
``table1.json`` gave the cell.

Profiles (``stnlib.train.CPU_PROFILES``): ``native`` (this CPU's own kernels) and ``avx2``
(ATen, oneDNN and MKL held to AVX2, the instructions of the CPU the committed table's
affine R cell was trained on). Both give valid training; they round differently, so a
run's weights depend on the profile. A profile with ``+fold`` (``native+fold``) builds the
models with ``conv_grad="fold"`` (``stnlib paper --conv-grad fold``: the CNN classifier's
first convolution computes its input gradient as a matrix product and a fold,
:mod:`stnlib.conv`), one with ``+pool2`` with ``loc_pool=2`` (``--loc-pool 2``: the
localisation network reads the input max-pooled by 2; RTS and TC cells only), to compare
with the same kernels without them; ``native+fold+pool2+sampled`` makes TC's training
batches through the sampler, as ``stnlib.distort`` did before it placed TC's digit (TC
cells only); ``+fold+torchfold`` has the fold add its columns with torch's ``F.fold``,
as :mod:`stnlib.conv` did before :func:`stnlib.conv.overlap_add`. On the project's AMD
EPYC (AVX-512), with one thread, AVX2 kernels made the ST-CNN steps up to 12% faster and
the CNN steps 5 to 15% slower; with two threads the differences were inside the noise.

    python benchmarks/cell_speed.py --cells 'stcnn-*/R,cnn/R' --threads 1 2
    python benchmarks/cell_speed.py --cells 'stcnn-*/R' --profiles native native+fold

Writes the records to ``--out`` (a JSON file, replaced) and prints them.
``results/cell_speed.json`` holds every CNN and ST-CNN cell (the default ``--cells``),
measured in two parts whose records were put together in the table's order, on the
project's CPU with nothing else running (about 60 minutes)::

    python benchmarks/cell_speed.py \\
        --cells 'stcnn-*/R,stcnn-*/RTS,stcnn-*/E,stcnn-aff/TC,cnn/R,cnn/RTS'
    python benchmarks/cell_speed.py --cells 'stcnn-*/P,cnn/P,cnn/E,cnn/TC'

``results/cell_speed_fold.json`` compares ``native`` with ``native+fold`` on the R, RTS
and TC ST-CNN cells (commands in ``results/conv-grad-fold/README.md``);
``results/cell_speed_pool.json`` ``native+fold`` with ``native+fold+pool2`` on the RTS and
TC ones (``results/loc-pool/README.md``); ``results/tc-place/cell_speed.json`` the pooled TC
cell with its digit placed and sampled (``results/tc-place/README.md``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

from stnlib import paper
from stnlib.bench import check_positive, report
from stnlib.train import CPU_PROFILES, machine, profile_environment

#: the table's recipe (paper.Budget's defaults); the epochs come from table1.json
BATCH_SIZE, LR, TRAIN_IMAGES = 64, 0.002, 60000
#: A cell takes at most this long, says the issue (seconds).
TARGET_S = 15 * 60


#: What a profile may add to its kernels, and the options of :func:`train_seconds` each
#: addition sets: the model's (of :func:`stnlib.paper.cell_model`) and, for TC cells,
#: ``tc_route``: ``"sampler"`` makes the training batches through the sampler
#: (:func:`stnlib.bench.distort.sampled_tc_transform`, the route before ``distort`` placed
#: TC's digit), and ``col2im``: ``"torch"`` makes the fold (``conv_grad="fold"``) torch's
#: ``F.fold`` instead of :func:`stnlib.conv.overlap_add` (the fold as it was first written).
OPTIONS: dict[str, dict[str, Any]] = {"fold": {"conv_grad": "fold"},
                                      "pool2": {"loc_pool": 2},
                                      "sampled": {"tc_route": "sampler"},
                                      "torchfold": {"col2im": "torch"}}
#: Those options when a profile does not set them (the table's: torch's kernel, no pool,
#: TC placed; stnlib's fold where the fold is used).
OPTION_DEFAULTS: dict[str, Any] = {"conv_grad": "native", "loc_pool": 1, "tc_route": "placed",
                                   "col2im": "stnlib"}
SUFFIXES = ("", "+fold", "+pool2", "+fold+pool2", "+fold+pool2+sampled", "+fold+torchfold",
            "+fold+pool2+torchfold")
PROFILES = [kernels + suffix for suffix in SUFFIXES for kernels in CPU_PROFILES]


def split_profile(profile: str) -> tuple[str, dict[str, Any]]:
    """``"avx2+fold+pool2"`` -> ``("avx2", {"conv_grad": "fold", "loc_pool": 2})``: its
    kernels (a :data:`CPU_PROFILES` key) and the options of :func:`train_seconds` it sets."""
    kernels, *additions = profile.split("+")
    return kernels, {k: v for a in additions for k, v in OPTIONS[a].items()}


def _check_tc_route(cell: str, tc_route: str) -> None:
    if tc_route != "placed" and not cell.endswith("/TC"):
        raise ValueError(f"tc_route={tc_route!r} times TC's batches through the sampler; "
                         "only TC cells have them")


def check_options(cell: str, options: dict[str, Any]) -> None:
    """A ValueError if ``cell`` cannot take ``options`` (loc_pool on R, tc_route off TC)."""
    paper.cell_model(cell, **{k: v for k, v in options.items()
                              if k not in ("tc_route", "col2im")})
    _check_tc_route(cell, options.get("tc_route", "placed"))


def train_seconds(cell: str, steps: int, *, epochs: int, threads: int,
                  train_size: int | None = None, conv_grad: str = "native",
                  loc_pool: int = 1, tc_route: str = "placed", col2im: str = "stnlib"
                  ) -> float:
    """Wall seconds of ``steps`` training steps of ``cell`` (the table's recipe, from
    scratch, no test), start-up included."""
    import torch.nn.functional as F

    import stnlib.conv
    from stnlib.bench.distort import sampled_tc_transform
    from stnlib.data import mnist
    from stnlib.distort import train_transform
    from stnlib.train import fit

    _check_tc_route(cell, tc_route)
    model = paper.cell_model(cell, seed=0, conv_grad=conv_grad, loc_pool=loc_pool)
    train_set = mnist(train=True)
    if train_size is not None:
        train_set = train_set.subset(train_size)
    transform = (sampled_tc_transform if tc_route == "sampler"
                 else train_transform(cell.split("/")[1]))
    # col2im="torch": the fold's input gradient (stnlib.conv.input_grad) calls F.fold
    fold = F.fold if col2im == "torch" else stnlib.conv.overlap_add
    start = time.perf_counter()
    with mock.patch.object(stnlib.conv, "overlap_add", fold):
        fit(model, train_set, None, epochs=epochs, batch_size=BATCH_SIZE, lr=LR,
            optimizer="adam", schedule="onecycle", seed=0, progress=False, max_steps=steps,
            train_transform=transform, threads=threads)
    return time.perf_counter() - start


def _worker(args: argparse.Namespace) -> int:
    import torch

    # A cell distorts its fixed test set before it trains (stnlib paper): its large
    # tensors, made and freed, raise glibc's mmap threshold, and the steps after it run
    # without fresh pages for every batch. Without it, a step measured in a fresh process
    # took about 1.5 times as long as in a real run (RTS with loc_pool=2, two threads).
    paper.distorted_test_set(args.cells.split("/")[1], args.train_size)
    common = dict(epochs=args.epochs, threads=args.threads[0], train_size=args.train_size,
                  conv_grad=args.conv_grad, loc_pool=args.loc_pool, tc_route=args.tc_route,
                  col2im=args.col2im)
    short = train_seconds(args.cells, args.warmup, **common)
    long = train_seconds(args.cells, args.warmup + args.steps, **common)
    args.worker.write_text(json.dumps({
        "step_s": max(long - short, 0.0) / args.steps,
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability())}))
    return 0


def measure(cell: str, profile: str, threads: int, epochs: int, args: argparse.Namespace,
            folder: Path) -> dict[str, Any]:
    """A step's seconds of ``cell`` (one-cycle over ``epochs``) in a fresh process under
    ``profile`` (its variables set before torch loads)."""
    out = folder / f"{cell.replace('/', '_')}-{profile}-{threads}.json"
    kernels, options = split_profile(profile)
    options = {**OPTION_DEFAULTS, **options}
    env = profile_environment(kernels)
    env.pop("STNLIB_FAST", None)  # the measured steps are the real ones
    command = [sys.executable, __file__, "--worker", str(out), "--cells", cell,
               "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--threads", str(threads), "--epochs", str(epochs),
               "--conv-grad", options["conv_grad"], "--loc-pool", str(options["loc_pool"]),
               "--tc-route", options["tc_route"], "--col2im", options["col2im"]]
    if args.train_size is not None:
        command += ["--train-size", str(args.train_size)]
    if subprocess.run(command, env=env).returncode != 0:
        raise RuntimeError(f"{cell} ({profile}, {threads} threads) stopped with the error "
                           f"printed above")
    return json.loads(out.read_text())


def table_epochs(results_dir: Path) -> dict[str, dict[str, Any]]:
    """Each finished cell's epochs and recorded wall time in ``results_dir``'s table."""
    return {cell: {"epochs": r["epochs"], "train_s": r["train_s"], "threads": r["threads"]}
            for cell, r in paper.finished_cells(results_dir).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="stcnn-*/*,cnn/*",
                        help="patterns as for `stnlib paper` (default: every CNN and ST-CNN "
                             "cell)")
    parser.add_argument("--profiles", nargs="+", default=["native", "avx2"],
                        choices=PROFILES, help="kernels to compare, '+fold' for the models "
                                               "with --conv-grad fold, '+pool2' with "
                                               "--loc-pool 2, '+sampled' with TC's batches "
                                               "through the sampler, '+torchfold' with the "
                                               "fold's col2im torch's F.fold (first: the "
                                               "reference of the ratios)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=200, help="timed steps a measurement")
    parser.add_argument("--repeat", type=int, default=3,
                        help="measurements per profile, interleaved; the median counts")
    parser.add_argument("--warmup", type=int, default=30,
                        help="steps whose time (with start-up) is subtracted")
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="the table1.json whose epochs give the projection")
    parser.add_argument("--epochs", type=int, default=None,
                        help="project this many epochs for every cell instead")
    parser.add_argument("--train-size", type=int, default=None,
                        help="the first N training digits (default: all 60,000; for tests)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--conv-grad", default=OPTION_DEFAULTS["conv_grad"],
                        choices=paper.CONV_GRADS, help=argparse.SUPPRESS)  # the worker's
    parser.add_argument("--loc-pool", type=int, default=OPTION_DEFAULTS["loc_pool"],
                        help=argparse.SUPPRESS)  # the same
    parser.add_argument("--tc-route", default=OPTION_DEFAULTS["tc_route"],
                        choices=("placed", "sampler"), help=argparse.SUPPRESS)  # the same
    parser.add_argument("--col2im", default=OPTION_DEFAULTS["col2im"],
                        choices=("stnlib", "torch"), help=argparse.SUPPRESS)  # the same
    args = parser.parse_args(argv)
    try:
        check_positive(args, "steps", "repeat", "warmup", "epochs", "train_size")
        if not args.threads or min(args.threads) <= 0:
            raise ValueError(f"--threads must be positive counts, got {args.threads}")
        if args.worker is not None:
            return _worker(args)
        cells = paper.select_cells(args.cells)
        options = {p: split_profile(p)[1] for p in args.profiles}
        for cell in cells:  # a profile's options must fit every cell (loc_pool: not R)
            for profile in args.profiles:
                try:
                    check_options(cell, options[profile])
                except ValueError as error:
                    raise ValueError(f"cell {cell}, profile {profile}: {error}") from None
        table = {} if args.epochs else table_epochs(args.results)
        missing = [c for c in cells if c not in table and not args.epochs]
        if missing:
            raise ValueError(f"{args.results / 'table1.json'} has no finished {missing[0]} to "
                             f"take its epochs from; give --epochs")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    steps_per_epoch = (args.train_size or TRAIN_IMAGES) // BATCH_SIZE
    reference, records, cpu = args.profiles[0], [], machine()["cpu"]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for cell in cells:
                epochs = args.epochs or table[cell]["epochs"]
                for threads in args.threads:
                    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in args.profiles}
                    for _ in range(args.repeat):  # interleaved: a slow spell hits each
                        for p in args.profiles:
                            runs[p].append(measure(cell, p, threads, epochs, args, Path(tmp)))
                    step_s = {p: statistics.median(r["step_s"] for r in found)
                              for p, found in runs.items()}
                    projected = {p: s * steps_per_epoch * epochs for p, s in step_s.items()}
                    records.append({
                        "cell": cell, "threads": threads,
                        "ms_per_step": {p: round(1000 * s, 2) for p, s in step_s.items()},
                        "ms_per_step_runs": {p: [round(1000 * r["step_s"], 2) for r in found]
                                             for p, found in runs.items()},
                        "cpu_capability": {p: found[0]["cpu_capability"]
                                           for p, found in runs.items()},
                        "over_" + reference: {p: round(s / step_s[reference], 3)
                                              for p, s in step_s.items() if p != reference
                                              and step_s[reference] > 0},
                        "epochs": epochs, "steps_per_epoch": steps_per_epoch,
                        "projected_train_s": {p: round(s) for p, s in projected.items()},
                        "within_15_min": {p: s <= TARGET_S for p, s in projected.items()},
                        **({"table": table[cell]} if cell in table else {}),
                        "env": {p: CPU_PROFILES[split_profile(p)[0]]
                                for p in args.profiles},
                        **{option: {p: options[p].get(option, default)
                                    for p in args.profiles}
                           for option, default in OPTION_DEFAULTS.items()
                           if any(option in options[p] for p in args.profiles)},
                        "steps_timed": args.steps, "test_set_first": True, "cpu": cpu})
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report(records, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
