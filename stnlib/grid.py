"""The grid generator: where in the source does each target pixel look?

Notebook 03. :func:`affine_grid` builds the regular grid of normalized target coordinates
(one ``(x, y, 1)`` per output pixel, ``-1..1`` across the image, see :mod:`stnlib.affine`
for what ``align_corners`` means) and multiplies it by ``theta``. The result is the
sampling grid that :func:`stnlib.grid_sample` reads. Same results as
``torch.nn.functional.affine_grid`` (which is never called here).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["affine_grid", "base_grid", "normalized_linspace"]


def normalized_linspace(
    steps: int, align_corners: bool, dtype: torch.dtype, device: torch.device | None = None
) -> torch.Tensor:
    """Normalized coordinates of the centres of ``steps`` pixels along one axis, ``(steps,)``.

    ``align_corners=True``: from -1 to +1 (the corner centres). ``False``: the centres of
    ``steps`` equal cells tiling [-1, 1], i.e. ``linspace(-1, 1) * (steps - 1) / steps``.
    A 1-pixel axis is its own centre, 0.
    """
    if steps <= 1:
        return torch.zeros(steps, dtype=dtype, device=device)
    coords = torch.linspace(-1, 1, steps, dtype=dtype, device=device)
    if not align_corners:
        coords = coords * (steps - 1) / steps
    return coords


def base_grid(
    spatial_size: Sequence[int],
    align_corners: bool,
    dtype: torch.dtype,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Homogeneous target coordinates ``(H, W, 3)`` holding ``(x, y, 1)`` for ``(H, W)``,
    or ``(D, H, W, 4)`` holding ``(x, y, z, 1)`` for ``(D, H, W)``."""
    # axes in (x, y[, z]) order, i.e. the reverse of the (D,) H, W size order
    axes = [normalized_linspace(s, align_corners, dtype, device) for s in reversed(spatial_size)]
    mesh = torch.meshgrid(*reversed(axes), indexing="ij")  # each (D,) H, W
    ones = torch.ones(tuple(spatial_size), dtype=dtype, device=device)
    return torch.stack([*reversed(mesh), ones], dim=-1)


def _check(theta: torch.Tensor, size: Sequence[int]) -> tuple[int, ...]:
    if not isinstance(theta, torch.Tensor):
        raise TypeError(f"theta must be a torch.Tensor, got {type(theta).__name__}")
    if not theta.is_floating_point():
        raise ValueError(
            f"Expected theta to have floating point type, but got {theta.dtype}; "
            "convert it with theta.float()"
        )
    try:
        size = tuple(int(s) for s in size)
    except (TypeError, ValueError):
        raise TypeError(
            f"size must be a sequence of ints such as (N, C, H, W), got {size!r}"
        ) from None
    if len(size) not in (4, 5):
        raise ValueError(
            "affine_grid only supports 4D and 5D sizes, for 2D and 3D affine transforms, "
            f"respectively. Got size {size}."
        )
    d = len(size) - 2
    if theta.dim() != 3 or tuple(theta.shape[1:]) != (d, d + 1):
        raise ValueError(
            f"Expected a batch of {d}D affine matrices of shape Nx{d}x{d + 1} for size "
            f"{size}. Got {tuple(theta.shape)}."
        )
    if theta.shape[0] != size[0]:
        raise ValueError(
            f"theta has batch size {theta.shape[0]} but size asks for N={size[0]}; "
            "pass size=(theta.shape[0], C, ...) or one theta per image"
        )
    if min(size) <= 0:
        raise ValueError(f"Expected non-zero, positive output size. Got {size}")
    # checked on CPU only: on a GPU the check would wait for the device at every call
    if theta.device.type == "cpu" and not bool(torch.isfinite(theta).all()):
        raise ValueError(
            "theta contains NaN or inf (did the localization net diverge? lower the learning "
            "rate or check its inputs); every entry must be finite"
        )
    return size


def affine_grid(
    theta: torch.Tensor, size: Sequence[int], align_corners: bool = False
) -> torch.Tensor:
    """Sampling grid of an affine transform.

    2D: ``theta (N, 2, 3)``, ``size (N, C, H, W)`` -> ``grid (N, H, W, 2)``.
    3D: ``theta (N, 3, 4)``, ``size (N, C, D, H, W)`` -> ``grid (N, D, H, W, 3)``.

    ``grid[n, i, j] = theta[n] @ (x_j, y_i, 1)``: the normalized source location read by
    target pixel ``(i, j)``; its last dimension is ``(x, y[, z])``. Differentiable with
    respect to ``theta``. Unlike torch, a non-finite theta on the CPU raises ``ValueError``
    (on a GPU the check is skipped: it would synchronise with the device at every call).
    """
    size = _check(theta, size)
    n, spatial = size[0], size[2:]
    base = base_grid(spatial, align_corners, theta.dtype, theta.device)
    points = base.reshape(1, -1, base.shape[-1])  # (1, H*W, 3): one row per target pixel
    grid = points @ theta.transpose(1, 2)  # (N, H*W, 2) = each point times theta^T
    return grid.reshape(n, *spatial, len(spatial))
