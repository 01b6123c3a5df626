"""Sampler speed: stnlib's from-scratch grid_sample against torch's native one.

``python -m stnlib bench sampler`` prints one JSON line per case (``N x C x H x W`` or
``N x C x D x H x W``, a batch of random near-identity affine grids, as in training):
forward and forward+backward times of both implementations measured in the same
process, interleaved, median over ``--repeat`` runs, their ratio, and peak memory.

Timing clock (``--clock``): ``cpu`` (default) is the CPU time of this process
(``time.process_time``). On a shared machine it does not count the time spent waiting for
a core while other jobs run, so the ratio stays meaningful under load; with
``--threads 1`` (default) it is exactly the work done. ``wall`` uses ``perf_counter``.

Peak memory (``--memory``, on by default): the largest total size of the tensors that
one forward+backward creates and holds at the same time (outputs, saved tensors,
temporaries, gradients; the inputs themselves excluded), tracked op by op with a
``TorchDispatchMode`` that sees every tensor an ATen op returns and notices when its
storage is freed. Unlike the process RSS it does not depend on what the allocator kept
from earlier runs, so it is deterministic and comparable between the two implementations.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from stnlib.bench import add_timing_arguments, median_ms_in_turns

DEFAULT_CASES = "256x1x28x28,64x1x60x60,32x3x64x64,8x1x32x32x32"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", default=DEFAULT_CASES,
                        help="comma-separated NxCxHxW or NxCxDxHxW sizes")
    add_timing_arguments(parser, "timed runs per case")
    parser.add_argument("--mode", choices=("bilinear", "nearest"), default="bilinear")
    parser.add_argument("--padding-mode", choices=("zeros", "border", "reflection"),
                        default="zeros")
    parser.add_argument("--align-corners", action="store_true")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                        help="measure peak tensor memory (default on)")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile(stnlib.grid_sample)")
    parser.add_argument("--seed", type=int, default=0)


def parse_case(text: str) -> tuple[int, ...]:
    """``"256x1x28x28"`` -> ``(256, 1, 28, 28)``; 4 or 5 positive ints."""
    try:
        size = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        size = ()
    if len(size) not in (4, 5) or min(size) <= 0:
        raise ValueError(
            f"case {text!r} is not NxCxHxW or NxCxDxHxW with positive ints, e.g. 256x1x28x28"
        )
    return size


def make_inputs(size: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images in [0, 1] and the grid of random near-identity thetas, both requiring
    grad (as in training, where the grid comes from the localization net)."""
    from stnlib.affine import identity_theta
    from stnlib.grid import affine_grid

    gen = torch.Generator().manual_seed(seed)
    d = len(size) - 2
    theta = identity_theta(size[0], dim=d) + 0.1 * torch.randn(size[0], d, d + 1, generator=gen)
    grid = affine_grid(theta, size).detach().requires_grad_()
    return torch.rand(size, generator=gen).requires_grad_(), grid


def _samplers(args: argparse.Namespace) -> dict[str, Callable]:
    from stnlib.sampler import grid_sample

    kwargs = dict(mode=args.mode, padding_mode=args.padding_mode, align_corners=args.align_corners)
    samplers = {
        "stnlib": lambda x, g: grid_sample(x, g, **kwargs),
        "torch": lambda x, g: F.grid_sample(x, g, **kwargs),
    }
    if getattr(args, "compile", False):
        compiled = torch.compile(grid_sample)
        samplers["compiled"] = lambda x, g: compiled(x, g, **kwargs)
    return samplers


def _fwd(fn: Callable, x: torch.Tensor, g: torch.Tensor) -> None:
    fn(x, g)


def _fwd_bwd(fn: Callable, x: torch.Tensor, g: torch.Tensor) -> None:
    out = fn(x, g)
    out.backward(torch.ones_like(out))
    x.grad = g.grad = None


def time_case(size: tuple[int, ...], args: argparse.Namespace) -> dict[str, float]:
    """Median milliseconds of forward and forward+backward for each sampler, interleaved
    run by run so that a burst of load hits all of them alike."""
    x, g = make_inputs(size, args.seed)
    calls = {f"{name}_{phase}_ms": functools.partial(step, fn, x, g)
             for name, fn in _samplers(args).items()
             for phase, step in (("forward", _fwd), ("fwd_bwd", _fwd_bwd))}
    return median_ms_in_turns(calls, args)


def max_abs_diff(size: tuple[int, ...], args: argparse.Namespace) -> float:
    """Largest difference between stnlib's and torch's output on the benchmark inputs."""
    x, g = make_inputs(size, args.seed)
    samplers = _samplers(argparse.Namespace(**{**vars(args), "compile": False}))
    with torch.no_grad():
        return float((samplers["stnlib"](x, g) - samplers["torch"](x, g)).abs().max())


class TensorMemory(TorchDispatchMode):
    """Peak bytes of live tensor storages created inside the ``with`` block.

    Every ATen op's outputs pass through ``__torch_dispatch__``; a storage is counted
    once, from when an op first returns it until a weak reference says it is freed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def _sweep(self) -> None:
        for key, (ref, nbytes) in list(self.live.items()):
            if ref.expired():
                del self.live[key]
                self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._sweep()
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                ref = StorageWeakRef(storage)
                if ref.cdata not in self.live:
                    self.live[ref.cdata] = (ref, storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


def peak_memory(size: tuple[int, ...], which: str, args: argparse.Namespace) -> float:
    """MiB: peak of live tensors created during one forward+backward of ``which``."""
    fn = _samplers(argparse.Namespace(**{**vars(args), "compile": False}))[which]
    x, g = make_inputs(size, args.seed)
    gc.collect()
    with TensorMemory() as tracker:
        _fwd_bwd(fn, x, g)
    return tracker.peak / 2**20


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def run(args: argparse.Namespace) -> list[dict]:
    """One record per case (see the module docstring for what is measured)."""
    sizes = [parse_case(text) for text in args.cases.split(",") if text.strip()]
    torch.set_num_threads(args.threads)
    records = []
    for size in sizes:
        t = time_case(size, args)
        record = {
            "benchmark": "sampler",
            "case": "x".join(map(str, size)),
            "mode": args.mode + ("(trilinear)" if len(size) == 5 and args.mode == "bilinear"
                                 else ""),
            "padding_mode": args.padding_mode,
            "align_corners": args.align_corners,
            "dtype": "float32",
            "threads": args.threads,
            "clock": args.clock,
            "repeat": args.repeat,
            "stnlib_forward_ms": round(t["stnlib_forward_ms"], 3),
            "torch_forward_ms": round(t["torch_forward_ms"], 3),
            "forward_ratio": _ratio(t["stnlib_forward_ms"], t["torch_forward_ms"]),
            "stnlib_fwd_bwd_ms": round(t["stnlib_fwd_bwd_ms"], 3),
            "torch_fwd_bwd_ms": round(t["torch_fwd_bwd_ms"], 3),
            "fwd_bwd_ratio": _ratio(t["stnlib_fwd_bwd_ms"], t["torch_fwd_bwd_ms"]),
        }
        if "compiled_fwd_bwd_ms" in t:
            record["compiled_forward_ms"] = round(t["compiled_forward_ms"], 3)
            record["compiled_fwd_bwd_ms"] = round(t["compiled_fwd_bwd_ms"], 3)
            record["compiled_fwd_bwd_ratio"] = _ratio(t["compiled_fwd_bwd_ms"],
                                                      t["torch_fwd_bwd_ms"])
        if args.memory:
            ours, native = peak_memory(size, "stnlib", args), peak_memory(size, "torch", args)
            record["stnlib_peak_mib"] = round(ours, 3)
            record["torch_peak_mib"] = round(native, 3)
            record["peak_ratio"] = _ratio(ours, native)
            record["memory_method"] = "peak live tensor bytes in one fwd+bwd (dispatch mode)"
        record["max_abs_diff"] = max_abs_diff(size, args)
        record["load_avg_1min"] = round(os.getloadavg()[0], 2)
        records.append(record)
    return records
