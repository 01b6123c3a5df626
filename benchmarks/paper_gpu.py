"""Table 1 cells on a GPU inside a fixed wall-clock budget, several cells at once.

What it answers: does the ST-CNN reach the paper's error when it gets more epochs than
our 2-core CPU allows, with everything else (model, Adam, one-cycle, lr, batch 64, seed,
test set) unchanged? ``--batch-size 256`` (the paper's batch; four cells sharing an H100
took 18 to 23 ms a step of 256, against 11 to 13 ms a step of 64 on an H200, so it buys
about 3x the epochs) and ``--lr`` change the recipe on purpose; keep such runs in their
own ``--results`` folder, so that each table's "error by budget" compares like with
like. The sampler is the from-scratch one unless ``--sampler torch`` asks for the fast
path (same result within 1e-5; each record names the sampler it used). It is the "what
would close the gap" check of notebook 06, not the headline table (that is
``results/table1.json``, trained on the CPU). Distortions are drawn on the CPU and
warped on the GPU, so a process needs about one CPU core.

How: each cell runs as its own ``python -m stnlib paper --device cuda`` process (small
models keep one process far from filling a GPU). First every cell trains 400 steps at
once, to measure its seconds per step under that sharing; then each cell gets the most
epochs (capped by ``--max-epochs``) that fit the remaining ``--budget-s``, and all train
at once. Cells unfinished at the deadline are stopped and left out of the table; their
run checkpoints stay in ``<work>/train/``, and ``--resume`` (with a new ``--budget-s``)
trains them on from there and merges them then. The finished records are merged into
``<results>/table1.json`` / ``.md`` and a JSON summary is printed.

The calibration can read faster than the training then runs: with seven processes on an
H200 (three of these commands at once), it read 23 to 29 ms a step and the training ran
about 34 ms, so every cell was stopped at its deadline, three to seven epochs short (the
calibration's 400 steps include each process's start-up, which leaves the card to the
others for a while). ``--slowdown F`` plans with F times the calibrated step (1.5 there
would have fit).

``--keep-checkpoints PATTERNS`` keeps the trained weights of those cells in
``<results>/checkpoints/`` (where ``stnlib paper --keep-checkpoints`` puts them), so
``benchmarks/turns.py`` can read a GPU run too.

    python benchmarks/paper_gpu.py --cells 'stcnn-*/R,stcnn-*/RTS' --budget-s 450 \\
        --results results/gpu

Cells stopped at the deadline (the summary lists them under ``unfinished``) finish with

    python benchmarks/paper_gpu.py --resume --budget-s 120 --work <the same --work>

which reads the plan the first run saved (``<work>/train-plan.json``: each cell's command,
results folder and kept checkpoints), resumes each unfinished cell from its last epoch
with the same settings, and merges those that finish.

``--paper-args`` passes further options of ``stnlib paper`` to every cell, e.g.
``--paper-args='--turn-ramp 0.1 --weight-decay 0.01 --optimizer adamw'`` (checked before
anything starts; the options this script sets itself are refused there).

On a CPU (``--device cpu``, small ``--train-size``) it runs the same way, for testing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from stnlib import paper
from stnlib.bench import check_positive
from stnlib.checkpoint import atomic_write
from stnlib.data import mnist


def _slug(cell: str) -> str:
    """A cell's name as a file name: ``"stcnn-aff/R"`` -> ``"stcnn-aff_R"``."""
    return cell.replace("/", "_")


#: ``stnlib paper`` settings (argparse dests) this script sets itself: not allowed in
#: ``--paper-args``, however they are spelled there.
_OWN_SETTINGS = ("cells", "device", "threads", "epochs", "sampler", "batch_size", "lr",
                 "results", "no_progress", "force", "train_size", "test_size", "fast", "list",
                 "keep_checkpoints")
_UNSET = object()


def _paper_args(text: str) -> list[str]:
    """``--paper-args`` split like a shell would, checked against ``stnlib paper``'s own
    parser (a ValueError names the bad option), so no cell starts with a typo."""
    try:
        extra = shlex.split(text)
    except ValueError as error:
        raise ValueError(f"--paper-args {text!r}: {error}") from None
    subparsers = argparse.ArgumentParser(prog="python -m stnlib").add_subparsers()
    paper.add_cli(subparsers)
    parser = subparsers.choices["paper"]
    # What the parser itself read, so an abbreviation (--epoch) or --opt=value counts too.
    parser.set_defaults(**dict.fromkeys(_OWN_SETTINGS, _UNSET))

    def refuse(message: str) -> None:  # argparse would print its usage and exit
        raise ValueError(f"--paper-args {text!r}: {message} (python -m stnlib paper --help)")

    parser.exit_on_error, parser.error = False, refuse
    try:
        given, unknown = parser.parse_known_args(extra)
    except argparse.ArgumentError as error:  # a bad value, e.g. --turn-ramp abc
        refuse(str(error))
    own = [name for name in _OWN_SETTINGS if getattr(given, name) is not _UNSET]
    if own:
        raise ValueError(f"--paper-args: --{own[0].replace('_', '-')} is set by this script; "
                         f"use its own option (python benchmarks/paper_gpu.py --help)")
    if unknown:
        raise ValueError(f"--paper-args: {unknown[0]} is not an option of `python -m stnlib "
                         f"paper` (python -m stnlib paper --help lists them)")
    return extra


def _command(cell: str, args: argparse.Namespace, results: Path, epochs: int,
             train_size: int | None, test_size: int | None, extra: list[str],
             keep: bool = False) -> list[str]:
    command = [sys.executable, "-m", "stnlib", "paper", "--cells", cell, "--device",
               args.device, "--threads", str(args.threads), "--epochs", str(epochs),
               "--sampler", args.sampler, "--batch-size", str(args.batch_size),
               "--lr", str(args.lr), "--results", str(results), "--no-progress", "--force"]
    if train_size is not None:
        command += ["--train-size", str(train_size)]
    if test_size is not None:
        command += ["--test-size", str(test_size)]
    if keep:
        command += ["--keep-checkpoints", cell]
    return command + extra


def _kept_cells(patterns: str | None, cells: list[str]) -> list[str]:
    """The cells of this run whose checkpoints ``--keep-checkpoints`` asks to keep."""
    if patterns is None:
        return []
    kept = [c for c in paper.select_cells(patterns, "--keep-checkpoints") if c in cells]
    if not kept:
        raise ValueError(f"--keep-checkpoints {patterns!r} matches none of the cells this "
                         f"run trains ({', '.join(cells)})")
    return kept


def _move_checkpoint(cell: str, trained: Path, results: Path) -> Path:
    """Move a finished cell's kept checkpoint from its own folder to
    ``results/checkpoints/`` (copied to a temporary file there, then renamed: an
    interruption leaves the old file or the new one, never half of one). As with
    ``stnlib paper --force``, a checkpoint of an earlier run of the cell is moved to
    ``checkpoints/earlier/`` first (:func:`stnlib.paper.set_aside_checkpoint`); its record
    stays in ``table1.json`` under ``"earlier"``."""
    name = f"{_slug(cell)}.pt"
    source, target = trained / "checkpoints" / name, results / "checkpoints" / name
    paper.set_aside_checkpoint(target)
    atomic_write(target, "wb", lambda f: f.write(source.read_bytes()))
    source.unlink()
    return target


def _launch(commands: dict[str, list[str]], logs: Path, deadline: float) -> dict[str, int]:
    """Run the commands at once; returns each one's exit status (-9: stopped at deadline)."""
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, STNLIB_PROGRESS="lines", PYTHONUNBUFFERED="1",
               CUBLAS_WORKSPACE_CONFIG=":4096:8")
    env.pop("STNLIB_FAST", None)
    files = {cell: (logs / f"{_slug(cell)}.log").open("w") for cell in commands}
    procs = {cell: subprocess.Popen(command, env=env, stderr=subprocess.STDOUT,
                                    stdout=files[cell])
             for cell, command in commands.items()}
    while any(p.poll() is None for p in procs.values()) and time.time() < deadline:
        time.sleep(1)
    for cell, p in procs.items():
        if p.poll() is None:
            p.kill()
            p.wait()
        files[cell].close()
    return {cell: p.returncode for cell, p in procs.items()}


def _tail(path: Path, lines: int = 5) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", help="patterns as for `stnlib paper` (required unless "
                                         "--resume)")
    parser.add_argument("--resume", action="store_true",
                        help="train on the cells an earlier run of this --work stopped at its "
                             "deadline (from their run checkpoints), merge those that finish")
    parser.add_argument("--budget-s", type=float, required=True,
                        help="wall seconds for the whole script, calibration included")
    parser.add_argument("--results", default="results/gpu", help="where table1.json goes")
    parser.add_argument("--work", default="runs/paper-gpu", help="per-cell folders and logs")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    parser.add_argument("--sampler", choices=("stnlib", "torch"), default="stnlib",
                        help="the transformer's sampler; 'torch' (F.grid_sample, the same "
                             "result within 1e-5) launches far fewer GPU kernels per step")
    parser.add_argument("--batch-size", type=int, default=paper.Budget().batch_size)
    parser.add_argument("--lr", type=float, default=paper.Budget().lr,
                        help="peak learning rate of the one-cycle schedule")
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--calibration-steps", type=int, default=400,
                        help="steps timed per cell first; the time includes start-up, so "
                             "fewer steps overestimate a step (100 steps: about 2x on an H200)")
    parser.add_argument("--paper-args", default="",
                        help="further `stnlib paper` options for every cell, one string, "
                             "e.g. --paper-args='--turn-ramp 0.1'")
    parser.add_argument("--keep-checkpoints", default=None, metavar="PATTERNS",
                        help="cells whose trained weights to keep in <results>/checkpoints/ "
                             "(patterns as for --cells)")
    parser.add_argument("--train-size", type=int, default=None, help="for tests only")
    parser.add_argument("--margin-s", type=float, default=45.0,
                        help="kept for start-up and the final test of each cell")
    parser.add_argument("--slowdown", type=float, default=1.0,
                        help="plan the epochs with this many times the calibrated seconds a "
                             "step (many processes sharing a card train slower than their "
                             "staggered calibration suggests: 1.4x with seven on an H200)")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except ValueError as error:  # bad --cells / --device: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2


def step_seconds(record: dict[str, Any]) -> float:
    """Seconds per training step of a finished calibration cell, never zero.

    ``train_s`` is recorded to 0.1 s, so a calibration shorter than 0.05 s reads 0.0;
    it counts as 0.05 s (half the rounding step), which leaves the epochs to the
    ``--max-epochs`` cap instead of dividing by zero.
    """
    return max(float(record["train_s"]), 0.05) / record["steps"]


def _run(args: argparse.Namespace) -> int:
    check_positive(args, "budget_s", "max_epochs", "calibration_steps", "threads",
                   "batch_size", "lr", "slowdown")
    if args.resume:
        return _resume(args)
    if args.cells is None:
        raise ValueError("--cells is required (or --resume, to finish an earlier run)")
    start = time.time()
    deadline = start + args.budget_s
    cells = paper.select_cells(args.cells)
    paper.check_device(args.device)
    extra = _paper_args(args.paper_args)
    kept = _kept_cells(args.keep_checkpoints, cells)
    for train in (True, False):  # unpack MNIST once, before the processes race to
        mnist(train=train)
    work = Path(args.work)
    for stale in ("calibrate", "train"):  # a cell's leftover run would not match this budget
        shutil.rmtree(work / stale, ignore_errors=True)

    train_size = args.train_size or 60000
    calibration_size = min(args.calibration_steps * args.batch_size, train_size)
    calibration = {cell: _command(cell, args, work / "calibrate" / _slug(cell), 1,
                                  calibration_size, 200, extra)
                   for cell in cells}
    status = _launch(calibration, work / "calibrate-logs", deadline)
    step_s = {}
    for cell in cells:
        record = paper.load_results(work / "calibrate" / _slug(cell))["cells"][cell]
        if status[cell] != 0 or record.get("status") != "done":
            log = work / "calibrate-logs" / f"{_slug(cell)}.log"
            print(f"calibration of {cell} failed (exit {status[cell]}):\n{_tail(log)}",
                  file=sys.stderr)
            return 1
        step_s[cell] = step_seconds(record)
    calibrate_s = time.time() - start

    steps_per_epoch = max(1, train_size // args.batch_size)
    available = deadline - time.time() - args.margin_s
    epochs = {cell: max(1, min(args.max_epochs, math.floor(
                  available / (steps_per_epoch * step_s[cell] * args.slowdown))))
              for cell in cells}
    runs = {cell: _command(cell, args, work / "train" / _slug(cell), epochs[cell],
                           args.train_size, None, extra, keep=cell in kept) for cell in cells}
    atomic_write(work / PLAN, "w", lambda f: json.dump(
        {"commands": runs, "results": args.results, "kept": kept}, f, indent=1))
    status = _launch(runs, work / "train-logs", deadline)
    finished, checkpoints = _merge(cells, status, work, kept, Path(args.results))
    print(json.dumps({
        "device": args.device, "cells": len(cells), "calibration_s": round(calibrate_s, 1),
        "step_ms_shared": {c: round(1000 * s, 2) for c, s in step_s.items()},
        "epochs": epochs, "error_pct": finished,
        "paper_pct": {c: paper.PAPER_ERROR[c] for c in cells},
        "unfinished": [c for c in cells if c not in finished],
        "checkpoints": checkpoints,
        "wall_s": round(time.time() - start, 1)}, indent=1))
    return 0


#: The training commands of a run, saved in its ``--work`` folder for ``--resume``.
PLAN = "train-plan.json"


def _merge(cells: list[str], status: dict[str, int], work: Path, kept: list[str],
           results_dir: Path) -> tuple[dict[str, float], list[str]]:
    """Merge the cells that finished (exit 0, record done) into ``results_dir``'s table,
    moving kept checkpoints beside it; returns their errors and the checkpoints moved."""
    finished, checkpoints = {}, []
    with paper.editing_results(results_dir) as results:
        for cell in cells:
            record = paper.load_results(work / "train" / _slug(cell))["cells"][cell]
            if status[cell] == 0 and record.get("status") == "done":
                if cell in kept:
                    checkpoints.append(str(_move_checkpoint(cell, work / "train" / _slug(cell),
                                                            results_dir)))
                results["cells"][cell] = paper.with_earlier(record, results["cells"][cell])
                finished[cell] = record["error_pct"]
    return finished, checkpoints


def _resume(args: argparse.Namespace) -> int:
    """``--resume``: train on the cells of ``<work>/train-plan.json`` that are not done,
    each from its run checkpoint with the command it was started with (less ``--force``,
    which would start it over), until ``--budget-s``; merge those that finish."""
    start = time.time()
    work = Path(args.work)
    try:
        plan = json.loads((work / PLAN).read_text())
    except FileNotFoundError:
        raise ValueError(f"--resume: {work / PLAN} not found; --work must name the folder "
                         f"of an earlier run (its --work)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"--resume: {work / PLAN} is not a plan this script wrote "
                         f"({error}); run the cells again without --resume") from None
    todo = {cell: [a for a in command if a != "--force"]
            for cell, command in plan["commands"].items()
            if paper.load_results(work / "train" / _slug(cell))["cells"][cell].get("status")
            != "done"}
    finished, checkpoints = {}, []
    if todo:  # else the table stays untouched
        status = _launch(todo, work / "resume-logs", start + args.budget_s)
        finished, checkpoints = _merge(list(todo), status, work, plan["kept"],
                                       Path(plan["results"]))
    print(json.dumps({
        "resumed": list(todo), "error_pct": finished,
        "unfinished": [c for c in todo if c not in finished],
        "checkpoints": checkpoints, "wall_s": round(time.time() - start, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
