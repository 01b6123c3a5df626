"""Affine transforms as homogeneous matrices, and the coordinate conventions they act in.

Notebook 01. Every helper is batched and differentiable: arguments are Python floats or
tensors of shape ``()`` / ``(N,)`` (broadcast against each other), and the result has a
leading batch dimension ``N``. 2D helpers return ``(N, 3, 3)`` matrices acting on column
vectors ``(x, y, 1)``; 3D helpers return ``(N, 4, 4)`` matrices acting on ``(x, y, z, 1)``.
:func:`to_theta` drops the last row to give the ``theta (N, 2, 3)`` / ``(N, 3, 4)`` that
:func:`stnlib.affine_grid` takes.

Convention: normalized coordinates
----------------------------------
``affine_grid`` and ``grid_sample`` speak *normalized* coordinates: ``x`` runs along the
width, ``y`` along the height (``z`` along the depth in 3D), and the image spans
``[-1, 1]`` on every axis, whatever its size. ``theta`` maps a normalized *target*
(output) location to the normalized *source* (input) location that is read there.

Pixel index ``i`` (``0 <= i < size``) names the *centre* of a pixel. Where exactly
``-1`` and ``+1`` fall depends on ``align_corners``:

* ``align_corners=True``: ``-1`` and ``+1`` are the **centres of the corner pixels**,
  ``pixel = (normalized + 1) / 2 * (size - 1)``. (With ``size == 1`` every normalized
  value lands on pixel 0 and the inverse does not exist.)
* ``align_corners=False`` (the default, as in torch): ``-1`` and ``+1`` are the **outer
  edges of the corner pixels**, ``pixel = ((normalized + 1) * size - 1) / 2``, so
  ``-1 -> -0.5`` and ``+1 -> size - 0.5``. This does not depend on resolution: the same
  normalized point sits at the same place in a 28x28 and a 56x56 image.

OpenCV (``cv2.warpAffine``) instead takes a matrix ``M`` in *pixels* that maps a *source*
pixel to a *destination* pixel. :func:`theta_from_pixel_matrix` and
:func:`pixel_matrix_from_theta` convert between the two worlds.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

Scalar = float | torch.Tensor

__all__ = [
    "compose",
    "identity_theta",
    "invert",
    "normalized_to_pixel",
    "pixel_matrix_from_theta",
    "pixel_to_normalized",
    "rotation_2d",
    "rotation_about_pixel",
    "rotation_axis_angle",
    "rotation_x",
    "rotation_y",
    "rotation_z",
    "scaling_2d",
    "scaling_3d",
    "shear_2d",
    "theta_from_pixel_matrix",
    "to_homogeneous",
    "to_theta",
    "translation_2d",
    "translation_3d",
]


# ---------------------------------------------------------------------------
# Building matrices from numbers
# ---------------------------------------------------------------------------


def _batch(*values: Scalar) -> list[torch.Tensor]:
    """Turn floats / 0-d / (N,) tensors into 1-D tensors of one common length N.

    Floating tensors keep their dtype (promoted together) and device; plain numbers use
    the default dtype. Gradients flow through the tensors."""
    for i, value in enumerate(values):
        if isinstance(value, torch.Tensor):
            if value.dim() > 1:
                raise ValueError(
                    f"argument {i + 1} must be a float or a tensor of shape () or (N,), "
                    f"got shape {tuple(value.shape)}"
                )
        elif not isinstance(value, (int, float)):
            raise TypeError(f"argument {i + 1} must be a float or a tensor, got {type(value)}")
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    floating = [t.dtype for t in tensors if t.is_floating_point()]
    dtype = functools.reduce(torch.promote_types, floating, floating[0]) if floating else None
    dtype = dtype or torch.get_default_dtype()
    device = tensors[0].device if tensors else None
    out = [torch.as_tensor(v, device=device).to(dtype).reshape(-1) for v in values]
    try:
        return list(torch.broadcast_tensors(*out))
    except RuntimeError:
        shapes = [tuple(t.shape) for t in out]
        raise ValueError(f"batch sizes of the arguments do not agree: {shapes}") from None


def _matrix(rows: Sequence[Sequence[torch.Tensor | float]], like: torch.Tensor) -> torch.Tensor:
    """Stack a nested list of (N,) tensors / numbers into an (N, rows, cols) matrix."""
    def entry(e: torch.Tensor | float) -> torch.Tensor:
        return e if isinstance(e, torch.Tensor) else torch.full_like(like, e)

    return torch.stack([torch.stack([entry(e) for e in r], dim=-1) for r in rows], dim=-2)


def rotation_2d(angle: Scalar) -> torch.Tensor:
    """Rotation by ``angle`` radians (counter-clockwise for y up; on screen, where y points
    down, it turns clockwise). Returns ``(N, 3, 3)``."""
    (a,) = _batch(angle)
    c, s = torch.cos(a), torch.sin(a)
    return _matrix([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], a)


def scaling_2d(sx: Scalar, sy: Scalar | None = None) -> torch.Tensor:
    """Scaling by ``sx`` along x and ``sy`` along y (``sy`` defaults to ``sx``). ``(N, 3, 3)``."""
    sx, sy = _batch(sx, sx if sy is None else sy)
    return _matrix([[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]], sx)


def shear_2d(shx: Scalar, shy: Scalar = 0.0) -> torch.Tensor:
    """Shear: ``x' = x + shx * y`` and ``y' = y + shy * x``. ``(N, 3, 3)``."""
    shx, shy = _batch(shx, shy)
    return _matrix([[1.0, shx, 0.0], [shy, 1.0, 0.0], [0.0, 0.0, 1.0]], shx)


def translation_2d(tx: Scalar, ty: Scalar) -> torch.Tensor:
    """Translation by ``(tx, ty)``. ``(N, 3, 3)``."""
    tx, ty = _batch(tx, ty)
    return _matrix([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]], tx)


def rotation_x(angle: Scalar) -> torch.Tensor:
    """3D rotation by ``angle`` radians about the x axis (right-handed). ``(N, 4, 4)``."""
    (a,) = _batch(angle)
    c, s = torch.cos(a), torch.sin(a)
    rows = [[1.0, 0.0, 0.0, 0.0], [0.0, c, -s, 0.0], [0.0, s, c, 0.0], [0.0, 0.0, 0.0, 1.0]]
    return _matrix(rows, a)


def rotation_y(angle: Scalar) -> torch.Tensor:
    """3D rotation by ``angle`` radians about the y axis (right-handed). ``(N, 4, 4)``."""
    (a,) = _batch(angle)
    c, s = torch.cos(a), torch.sin(a)
    rows = [[c, 0.0, s, 0.0], [0.0, 1.0, 0.0, 0.0], [-s, 0.0, c, 0.0], [0.0, 0.0, 0.0, 1.0]]
    return _matrix(rows, a)


def rotation_z(angle: Scalar) -> torch.Tensor:
    """3D rotation by ``angle`` radians about the z axis (right-handed). ``(N, 4, 4)``."""
    (a,) = _batch(angle)
    c, s = torch.cos(a), torch.sin(a)
    rows = [[c, -s, 0.0, 0.0], [s, c, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    return _matrix(rows, a)


def rotation_axis_angle(axis: torch.Tensor | Sequence[float], angle: Scalar) -> torch.Tensor:
    """3D rotation by ``angle`` radians about ``axis`` (``(3,)`` or ``(N, 3)``, any non-zero
    length), by Rodrigues' formula ``R = I + sin(a) K + (1 - cos(a)) K^2`` where ``K`` is the
    cross-product matrix of the unit axis. ``(N, 4, 4)``."""
    axis = torch.as_tensor(axis)
    if not axis.is_floating_point():
        axis = axis.to(torch.get_default_dtype())
    if axis.shape[-1:] != (3,) or axis.dim() > 2:
        raise ValueError(f"axis must have shape (3,) or (N, 3), got {tuple(axis.shape)}")
    norm = axis.norm(dim=-1, keepdim=True)
    if bool((norm == 0).any()):
        raise ValueError("axis must be non-zero: a rotation axis needs a direction")
    u = (axis / norm).reshape(-1, 3)
    ux, uy, uz, a = _batch(u[:, 0], u[:, 1], u[:, 2], angle)
    zero = torch.zeros_like(ux)
    k = _matrix([[zero, -uz, uy], [uz, zero, -ux], [-uy, ux, zero]], ux)
    eye = torch.eye(3, dtype=k.dtype, device=k.device)
    r = eye + torch.sin(a)[:, None, None] * k + (1 - torch.cos(a))[:, None, None] * (k @ k)
    return to_homogeneous(torch.cat([r, zero[:, None, None].expand(-1, 3, 1)], dim=-1))


def scaling_3d(sx: Scalar, sy: Scalar | None = None, sz: Scalar | None = None) -> torch.Tensor:
    """Scaling by ``(sx, sy, sz)`` (``sy``, ``sz`` default to ``sx``). ``(N, 4, 4)``."""
    sx, sy, sz = _batch(sx, sx if sy is None else sy, sx if sz is None else sz)
    rows = [[sx, 0.0, 0.0, 0.0], [0.0, sy, 0.0, 0.0], [0.0, 0.0, sz, 0.0], [0.0, 0.0, 0.0, 1.0]]
    return _matrix(rows, sx)


def translation_3d(tx: Scalar, ty: Scalar, tz: Scalar) -> torch.Tensor:
    """Translation by ``(tx, ty, tz)``. ``(N, 4, 4)``."""
    tx, ty, tz = _batch(tx, ty, tz)
    rows = [[1.0, 0.0, 0.0, tx], [0.0, 1.0, 0.0, ty], [0.0, 0.0, 1.0, tz], [0.0, 0.0, 0.0, 1.0]]
    return _matrix(rows, tx)


# ---------------------------------------------------------------------------
# Combining matrices
# ---------------------------------------------------------------------------


def _check_matrix(mat: torch.Tensor, name: str, shapes: Sequence[tuple[int, int]]) -> None:
    if not isinstance(mat, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(mat).__name__}")
    if mat.dim() != 3 or tuple(mat.shape[-2:]) not in shapes:
        expected = " or ".join(f"(N, {r}, {c})" for r, c in shapes)
        raise ValueError(f"{name} must have shape {expected}, got {tuple(mat.shape)}")


def compose(*mats: torch.Tensor) -> torch.Tensor:
    """Chain transforms **in the order they are applied**, left to right.

    ``compose(A, B, C)`` applies ``A`` first, then ``B``, then ``C``: it returns the
    matrix product ``C @ B @ A`` (column vectors). So ``compose(scaling_2d(2),
    translation_2d(1, 0))`` scales, then shifts. All ``(N, 3, 3)`` or all ``(N, 4, 4)``;
    batch sizes broadcast (N or 1).
    """
    if not mats:
        raise ValueError("compose needs at least one matrix")
    for i, m in enumerate(mats):
        _check_matrix(m, f"mats[{i}]", [(3, 3), (4, 4)])
    result = mats[0]
    for m in mats[1:]:
        if m.shape[-1] != result.shape[-1]:
            raise ValueError(
                f"cannot compose {tuple(result.shape)} with {tuple(m.shape)}: "
                "mix 2D (N, 3, 3) and 3D (N, 4, 4) matrices separately"
            )
        result = m @ result
    return result


def to_homogeneous(theta: torch.Tensor) -> torch.Tensor:
    """``theta (N, 2, 3) -> (N, 3, 3)`` or ``(N, 3, 4) -> (N, 4, 4)`` by appending the
    row ``(0, ..., 0, 1)``."""
    _check_matrix(theta, "theta", [(2, 3), (3, 4)])
    n, d = theta.shape[0], theta.shape[1]
    last = torch.zeros(n, 1, d + 1, dtype=theta.dtype, device=theta.device)
    last[:, 0, d] = 1
    return torch.cat([theta, last], dim=1)


def to_theta(mat: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 3) -> theta (N, 2, 3)`` or ``(N, 4, 4) -> (N, 3, 4)``: drop the last row.
    The matrix must be affine (last row ``(0, ..., 0, 1)``)."""
    _check_matrix(mat, "mat", [(3, 3), (4, 4)])
    d = mat.shape[-1] - 1
    expected = torch.zeros(d + 1, dtype=mat.dtype, device=mat.device)
    expected[d] = 1
    if not torch.allclose(mat[:, d].detach(), expected.expand(mat.shape[0], -1), atol=1e-6):
        raise ValueError(
            "mat is not affine: its last row must be (0, ..., 0, 1); "
            "a projective matrix has no theta"
        )
    return mat[:, :d, :]


def invert(mat: torch.Tensor) -> torch.Tensor:
    """Inverse transform. Takes homogeneous ``(N, 3, 3)`` / ``(N, 4, 4)`` or a theta
    ``(N, 2, 3)`` / ``(N, 3, 4)`` and returns the same kind."""
    _check_matrix(mat, "mat", [(3, 3), (4, 4), (2, 3), (3, 4)])
    if mat.shape[-2] != mat.shape[-1]:
        return to_theta(torch.linalg.inv(to_homogeneous(mat)))
    return torch.linalg.inv(mat)


def identity_theta(
    n: int,
    dim: int = 2,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The identity theta: ``(n, 2, 3)`` for ``dim=2``, ``(n, 3, 4)`` for ``dim=3``."""
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    eye = torch.eye(dim, dim + 1, dtype=dtype, device=device)
    return eye.unsqueeze(0).repeat(n, 1, 1)


def rotation_about_pixel(
    angle: Scalar, center: Sequence[float], size: Sequence[int], align_corners: bool = False
) -> torch.Tensor:
    """theta ``(N, 2, 3)`` that rotates an image of ``size (H, W)`` by ``angle`` radians
    about the pixel ``center = (x, y)`` (not the image centre): move the centre to the
    origin, rotate, move it back, all in normalized coordinates. Because normalized x and y
    have different pixel scales in non-square images, the rotation is built in pixels and
    converted with :func:`theta_from_pixel_matrix`, which keeps right angles right."""
    cx, cy = float(center[0]), float(center[1])
    m = compose(translation_2d(-cx, -cy), rotation_2d(angle), translation_2d(cx, cy))
    return theta_from_pixel_matrix(to_theta(m), size, size, align_corners)


# ---------------------------------------------------------------------------
# Pixel <-> normalized coordinates (see the module docstring for the convention)
# ---------------------------------------------------------------------------


def _axis_scale(size: Sequence[int], align_corners: bool) -> list[tuple[float, float]]:
    """Per axis in (x, y[, z]) order: (a, b) with ``pixel = a * normalized + b``."""
    if len(size) not in (2, 3) or any(int(s) < 1 for s in size):
        raise ValueError(f"size must be (H, W) or (D, H, W) of positive ints, got {tuple(size)}")
    out = []
    for s in reversed([int(s) for s in size]):
        a = (s - 1) / 2 if align_corners else s / 2
        out.append((a, (s - 1) / 2))
    return out


def normalized_to_pixel(
    coords: torch.Tensor, size: Sequence[int], align_corners: bool = False
) -> torch.Tensor:
    """Normalized ``coords (..., 2)`` as ``(x, y)`` (or ``(..., 3)`` as ``(x, y, z)``) to
    pixel coordinates, for an image of spatial ``size (H, W)`` (or ``(D, H, W)``).
    Exactly the unnormalization ``grid_sample`` performs."""
    scale = _axis_scale(size, align_corners)
    if coords.shape[-1] != len(scale):
        raise ValueError(
            f"coords must end in {len(scale)} (one per axis of size {tuple(size)}), "
            f"got shape {tuple(coords.shape)}"
        )
    a = coords.new_tensor([s[0] for s in scale])
    b = coords.new_tensor([s[1] for s in scale])
    return coords * a + b


def pixel_to_normalized(
    coords: torch.Tensor, size: Sequence[int], align_corners: bool = False
) -> torch.Tensor:
    """Pixel ``coords (..., 2)`` as ``(x, y)`` (or ``(..., 3)``) to normalized ``[-1, 1]``
    coordinates, the inverse of :func:`normalized_to_pixel`. Fails for a 1-pixel axis with
    ``align_corners=True``, where every normalized value names the same pixel."""
    scale = _axis_scale(size, align_corners)
    if coords.shape[-1] != len(scale):
        raise ValueError(
            f"coords must end in {len(scale)} (one per axis of size {tuple(size)}), "
            f"got shape {tuple(coords.shape)}"
        )
    if any(a == 0 for a, _ in scale):
        raise ValueError(
            f"size {tuple(size)} has a 1-pixel axis: with align_corners=True every normalized "
            "value maps to pixel 0, so there is no inverse; use align_corners=False"
        )
    a = coords.new_tensor([s[0] for s in scale])
    b = coords.new_tensor([s[1] for s in scale])
    return (coords - b) / a


def _pixel_from_normalized_matrix(
    size: Sequence[int], align_corners: bool, like: torch.Tensor
) -> torch.Tensor:
    """Homogeneous matrix (d+1, d+1) of :func:`normalized_to_pixel`."""
    scale = _axis_scale(size, align_corners)
    d = len(scale)
    mat = torch.eye(d + 1, dtype=like.dtype, device=like.device)
    for i, (a, b) in enumerate(scale):
        mat[i, i], mat[i, d] = a, b
    return mat


def _normalized_from_pixel_matrix(
    size: Sequence[int], align_corners: bool, like: torch.Tensor
) -> torch.Tensor:
    """Homogeneous matrix (d+1, d+1) of :func:`pixel_to_normalized`."""
    scale = _axis_scale(size, align_corners)
    if any(a == 0 for a, _ in scale):
        raise ValueError(
            f"size {tuple(size)} has a 1-pixel axis: with align_corners=True its normalized "
            "coordinate is undefined; use align_corners=False for 1-pixel images"
        )
    d = len(scale)
    mat = torch.eye(d + 1, dtype=like.dtype, device=like.device)
    for i, (a, b) in enumerate(scale):
        mat[i, i], mat[i, d] = 1 / a, -b / a
    return mat


def _as_batched_theta(mat: torch.Tensor | Sequence, name: str, d: int) -> torch.Tensor:
    mat = torch.as_tensor(mat)
    if not mat.is_floating_point():
        mat = mat.to(torch.get_default_dtype())
    if mat.dim() == 2:
        mat = mat.unsqueeze(0)
    if mat.dim() != 3 or tuple(mat.shape[-2:]) != (d, d + 1):
        raise ValueError(
            f"{name} must have shape ({d}, {d + 1}) or (N, {d}, {d + 1}) for {d}D sizes, "
            f"got {tuple(mat.shape)}"
        )
    if not bool(torch.isfinite(mat).all()):
        raise ValueError(f"{name} contains NaN or inf; every entry must be finite")
    return mat


def _check_sizes(src_size: Sequence[int], dst_size: Sequence[int]) -> int:
    src_size, dst_size = tuple(src_size), tuple(dst_size)
    if len(src_size) != len(dst_size) or len(src_size) not in (2, 3):
        raise ValueError(
            f"src_size and dst_size must both be (H, W) (or both (D, H, W)), "
            f"got {src_size} and {dst_size}"
        )
    return len(src_size)


def theta_from_pixel_matrix(
    M: torch.Tensor | Sequence,
    src_size: Sequence[int],
    dst_size: Sequence[int],
    align_corners: bool = False,
) -> torch.Tensor:
    """The ``theta (N, 2, 3)`` for :func:`stnlib.affine_grid` that performs the same warp as
    ``cv2.warpAffine(src, M, (W_dst, H_dst))``.

    ``M (2, 3)`` or ``(N, 2, 3)`` maps a *source* pixel ``(x, y)`` to a *destination* pixel
    (OpenCV's forward matrix, pixel centres at integers); ``theta`` maps normalized
    destination coordinates to normalized source ones. So
    ``theta = to_normalized_src @ inverse(M) @ to_pixel_dst``. Sizes are ``(H, W)``
    (``(D, H, W)`` with ``M (3, 4)`` for 3D). Use the same ``align_corners`` for
    ``affine_grid`` and ``grid_sample``; with ``padding_mode="zeros"`` and bilinear sampling
    the result equals OpenCV's ``BORDER_CONSTANT`` output up to its 1/32-pixel fixed-point
    interpolation.
    """
    d = _check_sizes(src_size, dst_size)
    m = _as_batched_theta(M, "M", d)
    m_inv = torch.linalg.inv(to_homogeneous(m))  # destination pixel -> source pixel
    theta = (
        _normalized_from_pixel_matrix(src_size, align_corners, m)
        @ m_inv
        @ _pixel_from_normalized_matrix(dst_size, align_corners, m)
    )
    return theta[:, :d, :]


def pixel_matrix_from_theta(
    theta: torch.Tensor,
    src_size: Sequence[int],
    dst_size: Sequence[int],
    align_corners: bool = False,
) -> torch.Tensor:
    """Inverse of :func:`theta_from_pixel_matrix`: the OpenCV matrix ``M (N, 2, 3)``
    (source pixel -> destination pixel) of ``theta (N, 2, 3)``. Sizes are ``(H, W)``.
    theta must be invertible (a flattening theta has no pixel matrix)."""
    d = _check_sizes(src_size, dst_size)
    theta = _as_batched_theta(theta, "theta", d)
    det = torch.linalg.det(theta[:, :, :d])
    if bool((det.abs() < 1e-12).any()):
        raise ValueError("theta is singular (its linear part has determinant 0): no inverse")
    dst_to_src = (
        _pixel_from_normalized_matrix(src_size, align_corners, theta)
        @ to_homogeneous(theta)
        @ _normalized_from_pixel_matrix(dst_size, align_corners, theta)
    )
    return torch.linalg.inv(dst_to_src)[:, :d, :]
