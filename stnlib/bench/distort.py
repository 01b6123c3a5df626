"""Distortion speed: one training batch of each Table 1 variant, as ``distort`` makes it.

``python -m stnlib bench distort`` prints one JSON line per variant: the milliseconds
:func:`stnlib.distort.distort` takes for a batch (``--batch``, the table's 64 by default)
of random 28x28 images, median over ``--repeat`` runs. A training step of a Table 1 cell
distorts one such batch, so this is the share of a step the data costs.

TC is timed next to its reference, the route through the sampler: sampling
:func:`stnlib.distort.distortion_grid` (a whole-pixel shift) with ``stnlib.grid_sample`` and
pasting the same clutter. ``distort`` places the digit instead (``_place``); the record
gives both times, their ratio and the largest difference of the two outputs (the
sampler's float rounding, about 2e-6). ``results/tc-place/distort_speed.json`` holds a run
on a 2-core Intel Xeon (TC: 1.8 against 9.3 ms with two threads, 2.4 against 18.5 with
one); inside a training step the difference is smaller (``results/tc-place/README.md``).

Timing clock (``--clock``) as in ``bench sampler``: ``cpu`` (default) is this process's
CPU time, robust to other jobs on a shared machine; ``wall`` uses ``perf_counter``.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable

import torch

from stnlib.bench import add_timing_arguments, check_positive, median_ms_in_turns


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variants", default="R,RTS,P,E,TC",
                        help="comma-separated variants (default: all five)")
    parser.add_argument("--batch", type=int, default=64, help="digits a batch (default 64)")
    add_timing_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)


def sampled_tc(images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """TC through the sampler: the (B, 1, 28, 28) digits sampled on the grid of the drawn
    ``params`` (a whole-pixel shift), then the same clutter: (B, 1, 60, 60)."""
    from stnlib.distort import _paste_clutter, distortion_grid
    from stnlib.sampler import grid_sample

    grid = distortion_grid("TC", params).to(images.dtype)
    canvas = grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return _paste_clutter(canvas, images, params).clamp(0.0, 1.0)


def sampled_tc_transform(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A TC batch through the sampler, with freshly drawn parameters: ``distort(images,
    "TC", generator)`` as it was made before the digit was placed (a ``train_transform``)."""
    from stnlib.distort import draw_params

    return sampled_tc(images, draw_params("TC", images.shape[0], generator))


def _routes(variant: str) -> dict[str, Callable[[torch.Tensor, torch.Generator], object]]:
    from stnlib.distort import distort

    routes: dict[str, Callable] = {"distort": lambda x, g: distort(x, variant, g)}
    if variant == "TC":
        routes["sampler_route"] = sampled_tc_transform
    return routes


def time_variant(variant: str, args: argparse.Namespace) -> dict[str, float]:
    """Median milliseconds a batch of each route of ``variant``, the routes taking turns
    run by run so that a burst of load hits them alike."""
    from stnlib.distort import distort

    # As a Table 1 run distorts its test set (in batches of 1000) before it trains: those
    # large tensors, made and freed, raise glibc's mmap threshold, and the batches after
    # reuse memory instead of faulting in fresh pages for every temporary (which would
    # charge the sampler route, with its larger temporaries, far more than a run pays).
    distort(torch.rand(1000, 1, 28, 28), variant, torch.Generator().manual_seed(args.seed))
    images = torch.rand(args.batch, 1, 28, 28, generator=torch.Generator().manual_seed(args.seed))
    calls = {f"{name}_ms": functools.partial(route, images,
                                             torch.Generator().manual_seed(args.seed))
             for name, route in _routes(variant).items()}
    return median_ms_in_turns(calls, args)


def tc_max_abs_diff(args: argparse.Namespace) -> float:
    """Largest difference between ``distort``'s TC batch and the sampler route's, same draws."""
    from stnlib.distort import distort

    images = torch.rand(args.batch, 1, 28, 28, generator=torch.Generator().manual_seed(args.seed))
    placed, params = distort(images, "TC", torch.Generator().manual_seed(args.seed),
                             return_params=True)
    return float((placed - sampled_tc(images, params)).abs().max())


def run(args: argparse.Namespace) -> list[dict]:
    """One record per variant (see the module docstring for what is measured)."""
    from stnlib.distort import VARIANTS

    check_positive(args, "batch", "repeat")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"--variants {args.variants!r}: each must be one of "
                         f"{', '.join(VARIANTS)}, e.g. --variants RTS,TC")
    torch.set_num_threads(args.threads)
    records = []
    for variant in variants:
        t = time_variant(variant, args)
        record = {"benchmark": "distort", "variant": variant, "batch": args.batch,
                  "threads": args.threads, "clock": args.clock, "repeat": args.repeat,
                  "distort_ms": round(t["distort_ms"], 3)}
        if "sampler_route_ms" in t:
            record["sampler_route_ms"] = round(t["sampler_route_ms"], 3)
            record["ratio"] = round(t["distort_ms"] / t["sampler_route_ms"], 3)
            record["max_abs_diff"] = tc_max_abs_diff(args)
        record["load_avg_1min"] = round(os.getloadavg()[0], 2)
        records.append(record)
    return records
