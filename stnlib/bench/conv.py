"""Input-gradient speed of a one-channel convolution: stnlib's fold against torch's kernels.

``python -m stnlib bench conv`` prints one JSON line per case (``BxC_outxKxS``: a batch of B
one-channel SxS images, C_out KxK filters, stride 1, no padding; the default is the Table
1 classifier's first convolution at batch 64, on the 28x28 output of the transformer, and
the same on the 60x60 canvas). It times the gradient with respect to the input, given
the output's gradient (as in a training step, in channels-last memory), three ways, in
turns, median over ``--repeat`` runs:

- ``native_ms``: torch's kernel (``aten.convolution_backward``, oneDNN on a CPU), what
  ``nn.Conv2d`` runs (``--conv-grad native``);
- ``torch_fold_ms``: ``W^T @ grad_output`` and torch's ``F.fold``, the fold as
  :mod:`stnlib.conv` first computed it;
- ``fold_ms``: :func:`stnlib.conv.input_grad`, the same product and
  :func:`stnlib.conv.overlap_add`: what ``--conv-grad fold`` runs now.

The record also gives the ratios and the largest difference of each fold from the
native result (float rounding). Timing options as in ``bench sampler``; prefer ``--clock
wall`` on a quiet machine here: the CPU clock also counts threads that spin while they
wait (with one thread, CPU-clock runs read up to twice what wall-clock runs did).
``results/overlap-add/`` holds ``--clock wall --repeat 100`` runs with one and two
threads (Intel Xeon).
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F

from stnlib.bench import add_timing_arguments, check_positive, median_ms_in_turns

DEFAULT_CASES = "64x32x9x28,64x32x9x60"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", default=DEFAULT_CASES,
                        help="comma-separated BxC_outxKxS: batch, filters, kernel side, "
                             f"image side (default {DEFAULT_CASES})")
    add_timing_arguments(parser, "timed runs per case")
    parser.add_argument("--seed", type=int, default=0)


def parse_case(text: str) -> tuple[int, int, int, int]:
    """``"64x32x9x28"`` -> ``(64, 32, 9, 28)``: four positive ints, the kernel no larger
    than the image."""
    try:
        size = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        size = ()
    if len(size) != 4 or min(size) <= 0 or size[2] > size[3]:
        raise ValueError(f"case {text!r} is not BxC_outxKxS (four positive ints, kernel K "
                         "at most the side S), e.g. 64x32x9x28")
    return size  # type: ignore[return-value]


def _routes(weight: torch.Tensor, size: tuple[int, int]
            ) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    from stnlib.conv import input_grad

    shape = [1, 1, *size]

    def native(grad_output: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten.convolution_backward(
            grad_output, torch.empty(shape).expand(grad_output.shape[0], -1, -1, -1), weight,
            None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, False, False])[0]

    return {"native": native,
            "torch_fold": lambda g: input_grad(g, weight, size, fold=F.fold),
            "fold": lambda g: input_grad(g, weight, size)}


def time_case(case: tuple[int, int, int, int], args: argparse.Namespace) -> dict:
    """One record: each route's median milliseconds, ratios and differences, and the CPU."""
    from stnlib.train import machine

    batch, channels, kernel, side = case
    generator = torch.Generator().manual_seed(args.seed)
    weight = torch.randn(channels, 1, kernel, kernel, generator=generator) / kernel
    out = side - kernel + 1
    grad_output = torch.randn(batch, channels, out, out, generator=generator).contiguous(
        memory_format=torch.channels_last)
    routes = _routes(weight, (side, side))
    results = {name: route(grad_output) for name, route in routes.items()}
    ms = median_ms_in_turns({name: functools.partial(route, grad_output)
                             for name, route in routes.items()}, args)
    native = results["native"]
    return {
        "benchmark": "conv", "case": "x".join(map(str, case)), "threads": args.threads,
        "clock": args.clock, "repeat": args.repeat,
        **{f"{name}_ms": round(value, 3) for name, value in ms.items()},
        "fold_vs_native": round(ms["fold"] / ms["native"], 3),
        "fold_vs_torch_fold": round(ms["fold"] / ms["torch_fold"], 3),
        "max_abs_diff_fold": float((results["fold"] - native).abs().max()),
        "max_abs_diff_torch_fold": float((results["torch_fold"] - native).abs().max()),
        "max_abs_native": float(native.abs().max()),
        "load_avg_1min": round(os.getloadavg()[0], 2), **machine(),
    }


def run(args: argparse.Namespace) -> list[dict]:
    """One record per case (see the module docstring for what is measured)."""
    check_positive(args, "repeat")
    cases = [parse_case(text.strip()) for text in args.cases.split(",") if text.strip()]
    if not cases:
        raise ValueError(f"--cases {args.cases!r} names no case, e.g. --cases 64x32x9x28")
    torch.set_num_threads(args.threads)
    return [time_case(case, args) for case in cases]
