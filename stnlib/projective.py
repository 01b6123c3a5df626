"""Projective (homography) grid generator: the 8-parameter transformer of notebook 06.

Convention (the same as ``stnlib.affine_grid`` and torch): a homography ``H (N, 3, 3)``
maps *normalized target* coordinates ``(x_t, y_t, 1)`` of the output grid to homogeneous
*normalized source* coordinates ``(x', y', w')``; the sampling point is
``(x_s, y_s) = (x' / w', y' / w')``. ``x`` runs along the width, ``y`` along the height,
both in ``[-1, 1]`` (what ``-1`` and ``1`` mean is set by ``align_corners``).

The 8 free parameters are the first eight entries of ``H`` in row-major order with
``H[2, 2] = 1``::

    H = [[p0, p1, p2],
         [p3, p4, p5],
         [p6, p7, 1 ]]

so ``p = (1, 0, 0, 0, 1, 0, 0, 0)`` is the identity, and with ``p6 = p7 = 0`` the
homography is the affine map ``theta = [[p0, p1, p2], [p3, p4, p5]]``: the projective
grid then equals ``affine_grid(theta)`` exactly.
"""

from __future__ import annotations

import torch

#: The 8 parameters of the identity homography.
PROJECTIVE_IDENTITY: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)

# |w'| is kept at least this large so a degenerate homography cannot produce inf/nan.
_MIN_W = 1e-6


def _target_points(
    size: tuple[int, int], align_corners: bool, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Normalized (x, y) coordinates of every output pixel centre, shape (H * W, 2), row-major.

    ``align_corners=False``: x_j = (2 j + 1) / W - 1 (pixel centres; -1/1 are the outer edges).
    ``align_corners=True``:  x_j = 2 j / (W - 1) - 1 (-1/1 are the centres of the corner pixels).
    """
    height, width = size

    def axis(n: int) -> torch.Tensor:
        if align_corners:
            if n == 1:
                return torch.zeros(1, dtype=dtype, device=device)
            return torch.linspace(-1.0, 1.0, n, dtype=dtype, device=device)
        return (torch.arange(n, dtype=dtype, device=device) * 2 + 1) / n - 1

    ys, xs = torch.meshgrid(axis(height), axis(width), indexing="ij")
    return torch.stack((xs, ys), dim=-1).reshape(-1, 2)


def _check_size(size: object, name: str = "size") -> tuple[int, int, int, int]:
    """``size`` as ``(N, C, H, W)`` of positive ints, or a ValueError saying what is wrong."""
    try:
        dims = tuple(int(s) for s in size)  # type: ignore[union-attr]
    except TypeError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise ValueError(
            f"{name} must be the output size (N, C, H, W) as 4 positive ints, got {size!r}; "
            "for example size=images.shape or (N, 1, 28, 28)"
        )
    return dims  # type: ignore[return-value]


def homography_from_params(params: torch.Tensor) -> torch.Tensor:
    """Eight parameters per sample -> homography matrices.

    Args:
        params: (N, 8) floating tensor ``(p0, ..., p7)`` (see the module docstring).

    Returns:
        ``H`` (N, 3, 3) with ``H[:, 2, 2] = 1``.
    """
    if not isinstance(params, torch.Tensor):
        raise TypeError(f"params must be a torch.Tensor of shape (N, 8), got {type(params)}")
    if params.dim() != 2 or params.shape[1] != 8:
        raise ValueError(
            f"params must have shape (N, 8) (the 8 free entries of a 3x3 homography), "
            f"got {tuple(params.shape)}"
        )
    ones = torch.ones(params.shape[0], 1, dtype=params.dtype, device=params.device)
    return torch.cat((params, ones), dim=1).reshape(-1, 3, 3)


def projective_grid(
    theta: torch.Tensor, size: tuple[int, ...] | torch.Size, align_corners: bool = False
) -> torch.Tensor:
    """Sampling grid of a homography, in the convention of ``affine_grid``.

    Args:
        theta: ``(N, 3, 3)`` homographies or ``(N, 8)`` parameters (see the module docstring),
            mapping normalized target coordinates to normalized source coordinates.
        size: the output size ``(N, C, H, W)``.
        align_corners: as in ``torch.nn.functional.affine_grid``.

    Returns:
        grid (N, H, W, 2): normalized source (x, y) for every output pixel, ready for
        ``stnlib.grid_sample``.
    """
    if not isinstance(theta, torch.Tensor):
        raise TypeError(f"theta must be a torch.Tensor of shape (N, 3, 3) or (N, 8), got "
                        f"{type(theta)}")
    if not theta.is_floating_point():
        raise TypeError(f"theta must be a floating tensor, got dtype {theta.dtype}; "
                        "use theta.float()")
    if theta.dim() == 2 and theta.shape[1] == 8:
        theta = homography_from_params(theta)
    if theta.dim() != 3 or theta.shape[1:] != (3, 3):
        raise ValueError(
            f"theta must have shape (N, 3, 3) (homographies) or (N, 8) (parameters), got "
            f"{tuple(theta.shape)}; for an affine theta (N, 2, 3) use stnlib.affine_grid"
        )
    n, _, height, width = _check_size(size)
    if theta.shape[0] != n:
        raise ValueError(f"theta has {theta.shape[0]} matrices but size asks for N={n}; "
                         "they must agree")
    points = _target_points((height, width), align_corners, theta.dtype, theta.device)
    homogeneous = torch.cat((points, torch.ones_like(points[:, :1])), dim=1)  # (HW, 3)
    mapped = homogeneous @ theta.transpose(1, 2)  # (N, HW, 3)
    w = mapped[..., 2:]
    floor = torch.where(w >= 0, torch.full_like(w, _MIN_W), torch.full_like(w, -_MIN_W))
    w = torch.where(w.abs() < _MIN_W, floor, w)
    return (mapped[..., :2] / w).reshape(n, height, width, 2)


def homography_from_points(points_from: torch.Tensor, points_to: torch.Tensor) -> torch.Tensor:
    """The homography that maps four points onto four others (direct linear transform).

    Args:
        points_from: (N, 4, 2) points ``(x, y)``, no three on a line.
        points_to: (N, 4, 2) where each of them must land.

    Returns:
        ``H`` (N, 3, 3) with ``H[:, 2, 2] = 1`` and ``H (x, y, 1) ~ (x', y', 1)``.
    """
    for name, value in (("points_from", points_from), ("points_to", points_to)):
        if not isinstance(value, torch.Tensor) or value.dim() != 3 or value.shape[1:] != (4, 2):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
            raise ValueError(f"{name} must be a tensor of shape (N, 4, 2), got {shape}")
    if points_from.shape != points_to.shape:
        raise ValueError(f"points_from {tuple(points_from.shape)} and points_to "
                         f"{tuple(points_to.shape)} must have the same shape")
    x, y = points_from[..., 0], points_from[..., 1]
    u, v = points_to[..., 0], points_to[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    # u = (p0 x + p1 y + p2) / (p6 x + p7 y + 1), likewise v: two linear equations per point.
    rows_u = torch.stack((x, y, ones, zeros, zeros, zeros, -u * x, -u * y), dim=-1)
    rows_v = torch.stack((zeros, zeros, zeros, x, y, ones, -v * x, -v * y), dim=-1)
    a = torch.cat((rows_u, rows_v), dim=1)  # (N, 8, 8)
    b = torch.cat((u, v), dim=1).unsqueeze(-1)  # (N, 8, 1)
    return homography_from_params(torch.linalg.solve(a, b).squeeze(-1))
