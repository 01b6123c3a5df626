"""Thin-plate-spline (TPS) grid generator: the most flexible transformer of notebook 06.

Convention (as ``stnlib.affine_grid``): the warp maps *normalized target* coordinates of
the output grid to *normalized source* coordinates in the input, ``x`` along the width,
``y`` along the height, both in ``[-1, 1]``.

The warp is fixed by ``K = g * g`` control points on a regular ``g x g`` grid over
``[-1, 1]^2`` in the *target* (``g = 4``, 16 points, as in the paper). The parameters
say where each control point samples the *source*: ``source_points (N, K, 2)``. The
spline interpolates them exactly (control point ``k`` of the output samples
``source_points[:, k]``) and bends as little as possible in between:

    f(p) = a0 + a1 x + a2 y + sum_k w_k U(|p - c_k|),   U(r) = r^2 log r^2.

The coefficients are linear in the source points: ``[w; a] = L^-1 [source_points; 0]``
with ``L = [[U(|c_i - c_j|), 1, c]; [1, c]^T, 0]``. ``L`` depends only on the control
points, so it is inverted once (and cached with the output size), and the grid is a single
matrix product ``grid = M @ source_points`` with ``M (H * W, K)``.

Identity: ``source_points = tps_control_points()`` (the spline is then exactly the
identity, because it reproduces affine maps).
"""

from __future__ import annotations

import functools
import math

import torch

from stnlib.projective import _check_size, _target_points

#: Control points per side in the paper (16 in all).
GRID_SIZE = 4


def tps_control_points(
    grid_size: int = GRID_SIZE,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The regular ``grid_size x grid_size`` target control points, shape (K, 2), row-major.

    ``x`` varies fastest: point ``k = i * grid_size + j`` is ``(x_j, y_i)``, with
    ``x_j, y_i`` evenly spaced from -1 to 1.
    """
    if int(grid_size) < 2:
        raise ValueError(f"grid_size must be an int >= 2 (control points per side), "
                         f"got {grid_size!r}")
    axis = torch.linspace(-1.0, 1.0, int(grid_size), dtype=dtype, device=device)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack((xs, ys), dim=-1).reshape(-1, 2)


def _radial(squared_distance: torch.Tensor) -> torch.Tensor:
    """U = r^2 log r^2, with U(0) = 0."""
    safe = torch.where(squared_distance > 0, squared_distance, torch.ones_like(squared_distance))
    return squared_distance * torch.log(safe)


def _features(points: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
    """[U(|p - c_k|) for k, 1, x, y] for every point: (P, 2), (K, 2) -> (P, K + 3)."""
    squared = ((points[:, None, :] - control[None, :, :]) ** 2).sum(-1)
    ones = torch.ones_like(points[:, :1])
    return torch.cat((_radial(squared), ones, points), dim=1)


@functools.lru_cache(maxsize=16)
def _inverse_kernel(grid_size: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """Columns of L^-1 that multiply the source points, shape (K + 3, K). Solved once."""
    control = tps_control_points(grid_size, torch.float64, device)
    k = control.shape[0]
    big_l = torch.zeros(k + 3, k + 3, dtype=torch.float64, device=device)
    big_l[:k, :] = _features(control, control)
    big_l[k:, :k] = big_l[:k, k:].T
    return torch.linalg.inv(big_l)[:, :k].to(dtype)


@functools.lru_cache(maxsize=16)
def _grid_matrix(
    grid_size: int, height: int, width: int, align_corners: bool, dtype: torch.dtype, device: str
) -> torch.Tensor:
    """M (H * W, K): the grid is ``M @ source_points``. Cached per output size."""
    points = _target_points((height, width), align_corners, torch.float64, torch.device(device))
    control = tps_control_points(grid_size, torch.float64, device)
    inverse = _inverse_kernel(grid_size, torch.float64, device)
    return (_features(points, control) @ inverse).to(dtype)


def _check_source_points(source_points: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(N, K, 2) or (N, 2K) -> ((N, K, 2), grid_size), or a clear error."""
    if not isinstance(source_points, torch.Tensor):
        raise TypeError(f"source_points must be a torch.Tensor of shape (N, K, 2), got "
                        f"{type(source_points)}")
    if not source_points.is_floating_point():
        raise TypeError(f"source_points must be floating, got dtype {source_points.dtype}")
    if source_points.dim() == 2 and source_points.shape[1] % 2 == 0:
        source_points = source_points.reshape(source_points.shape[0], -1, 2)
    grid_size = math.isqrt(source_points.shape[1]) if source_points.dim() == 3 else 0
    if (source_points.dim() != 3 or source_points.shape[2] != 2 or grid_size < 2
            or grid_size * grid_size != source_points.shape[1]):
        raise ValueError(
            f"source_points must have shape (N, K, 2) or (N, 2K) with K = g * g control "
            f"points (g >= 2; the paper uses K = 16), got {tuple(source_points.shape)}"
        )
    return source_points, grid_size


def tps_grid(
    source_points: torch.Tensor, size: tuple[int, ...] | torch.Size, align_corners: bool = False
) -> torch.Tensor:
    """Sampling grid of a thin-plate spline, in the convention of ``affine_grid``.

    Args:
        source_points: (N, K, 2) or (N, 2K): where each of the ``K = g * g`` regular target
            control points (``tps_control_points(g)``) samples the source, normalized (x, y).
        size: the output size ``(N, C, H, W)``.
        align_corners: as in ``torch.nn.functional.affine_grid``.

    Returns:
        grid (N, H, W, 2), ready for ``stnlib.grid_sample``.
    """
    source_points, grid_size = _check_source_points(source_points)
    n, _, height, width = _check_size(size)
    if source_points.shape[0] != n:
        raise ValueError(f"source_points has N={source_points.shape[0]} but size asks for "
                         f"N={n}; they must agree")
    matrix = _grid_matrix(grid_size, height, width, bool(align_corners), source_points.dtype,
                          str(source_points.device))
    return (matrix @ source_points).reshape(n, height, width, 2)


def tps_transform_points(source_points: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Evaluate the spline at arbitrary target points.

    Args:
        source_points: (N, K, 2) or (N, 2K), as in :func:`tps_grid`.
        points: (P, 2) normalized target (x, y).

    Returns:
        (N, P, 2) the source point each target point samples.
    """
    source_points, grid_size = _check_source_points(source_points)
    if not isinstance(points, torch.Tensor) or points.dim() != 2 or points.shape[1] != 2:
        shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points)
        raise ValueError(f"points must be a tensor of shape (P, 2), got {shape}")
    control = tps_control_points(grid_size, torch.float64, points.device)
    inverse = _inverse_kernel(grid_size, torch.float64, str(points.device))
    matrix = (_features(points.double(), control) @ inverse).to(source_points.dtype)
    return matrix @ source_points
