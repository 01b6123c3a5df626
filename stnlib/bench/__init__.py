"""Benchmarks that print JSON: ``python -m stnlib bench {sampler,train,distort,conv}``.

Each benchmark is a module here with a ``run(args) -> list[dict]`` and an
``add_arguments(parser)``; every result is printed as one JSON line, so a run can
be piped into a file and compared. Tests never assert on wall time; these do not
assert at all, they measure, always next to a reference measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import time
from collections.abc import Callable

from stnlib.checkpoint import atomic_write_text
from stnlib.train import _cli_errors

# name -> module holding add_arguments() and run()
BENCHMARKS: dict[str, str] = {
    "sampler": "stnlib.bench.sampler",
    "train": "stnlib.bench.train",
    "distort": "stnlib.bench.distort",
    "conv": "stnlib.bench.conv",
}


def emit(record: dict) -> None:
    """Print one benchmark result as a JSON line (flushed, so progress is visible)."""
    print(json.dumps(record, sort_keys=False), flush=True)


def report(records: list[dict], out: str | os.PathLike[str] | None = None) -> None:
    """Print a benchmark script's records as one indented JSON list and, given ``out``,
    write the same text there (atomically: an interrupted write leaves the old file)."""
    text = json.dumps(records, indent=1) + "\n"
    if out is not None:
        atomic_write_text(text, out)
    print(text, end="")


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="run a benchmark, print JSON lines")
    which = bench.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        parser = which.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(parser)
        # a bad option (``--cases 28x28``): one ``error:`` line, exit status 2
        parser.set_defaults(func=_cli_errors(_runner(module)))


def parse_args(name: str, argv: list[str] | tuple[str, ...] = ()) -> argparse.Namespace:
    """The options of benchmark ``name`` (a :data:`BENCHMARKS` key) parsed from command-line
    words, defaults filled in, for calling its ``run(args)`` from Python:
    ``run(parse_args("conv", ["--cases", "64x32x9x28"]))``."""
    parser = argparse.ArgumentParser(prog=f"python -m stnlib bench {name}")
    importlib.import_module(BENCHMARKS[name]).add_arguments(parser)
    return parser.parse_args(list(argv))


def _runner(module):
    def run(args: argparse.Namespace) -> int:
        for record in module.run(args):
            emit(record)
        return 0

    return run


def add_timing_arguments(parser: argparse.ArgumentParser, runs: str = "timed runs") -> None:
    """``--repeat``, ``--warmup``, ``--threads`` and ``--clock``, as every benchmark here
    times: the median of ``--repeat`` runs after ``--warmup`` untimed ones."""
    parser.add_argument("--repeat", type=int, default=30, help=f"{runs} (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: stable on a shared machine)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="cpu: process CPU time (robust to other load); wall: perf_counter")


def clock(args: argparse.Namespace) -> Callable[[], float]:
    """``--clock``'s seconds: this process's CPU time (``cpu``) or ``perf_counter`` (``wall``)."""
    return time.process_time if args.clock == "cpu" else time.perf_counter


def median_ms_in_turns(calls: dict[str, Callable[[], object]], args: argparse.Namespace
                       ) -> dict[str, float]:
    """Median milliseconds of each of ``calls`` under ``args``' timing options: after
    ``--warmup`` untimed rounds, ``--repeat`` rounds in which every call runs once, in
    turns, so that a burst of load on a shared machine hits them all alike."""
    now = clock(args)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for run in range(args.warmup + args.repeat):
        for name, call in calls.items():
            start = now()
            call()
            if run >= args.warmup:
                times[name].append((now() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def check_positive(args: argparse.Namespace, *names: str) -> None:
    """Refuse a numeric option that is set but not above zero (NaN included).

    ``names`` are the attribute names (``"train_size"``); the ValueError names the
    flag as the user typed it: ``--train-size must be positive, got 0``. An option
    left at ``None`` (unset) passes. The benchmark scripts call this before any work.
    """
    for name in names:
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
