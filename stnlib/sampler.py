"""The differentiable sampler: read the input at the (fractional) places the grid names.

Notebook 04. :func:`grid_sample` does what ``torch.nn.functional.grid_sample`` does, in
five named steps a learner can read one at a time:

1. :func:`unnormalize` - grid values in ``[-1, 1]`` become pixel coordinates.
2. :func:`apply_padding` - coordinates outside the image are clipped (``border``) or
   mirrored (``reflection``, see :func:`reflect_coordinates`) back inside; ``zeros``
   leaves them outside (only clamped to ``[-1, size]``), so they read the zero background.
3. :func:`corner_indices` - the pixels around each point: its top-left corner
   ``floor(x), floor(y)`` as one flat index, and the fractional offsets ``x - floor(x)``.
4. :func:`corner_weights` - bilinear weights ``(1 - fx)(1 - fy)``, ``fx (1 - fy)``, ... (in
   3D eight trilinear weights, built from :func:`weight_factors`), which sum to 1.
5. combine - ``output = sum over corners of weight * input[corner]``
   (:class:`_LinearInterpolation`; it computes that sum as nested linear interpolations,
   along x, then y, then z), with the backward pass written by hand: the gradient
   for the input scatters ``weight * grad_output`` back to the corners, the gradient for
   the grid is how the output changes when a weight changes.

Two tricks keep it fast without hiding the math: the input gets a zero border (so the
corner of a point just outside the image reads 0 with no masks), and the four corners are
read from four *shifted views* of the same flat image with one shared index, so no index
tensor four times the output size is ever built. Steps 1-2 run through autograd (they are
cheap); steps 3-5 are one ``torch.autograd.Function``.

Speed: every step above is a separate pass over memory (and, unless done in place, a new
tensor), while torch's native kernel does all of it in one loop per output pixel. That is
what limits this code: ``python -m stnlib bench sampler`` measures forward+backward at
roughly 3-4x native for 2D batches and about 1.6x for 3D on one CPU thread.
``torch.compile(grid_sample)`` brought the 256x1x28x28 case to about 2.5x but did not help
the other shapes in our runs. A good part of the cost is the operating system handing
out fresh memory pages for the temporaries. ``sampler="torch"`` in the models is the
fast path.

Conventions match torch exactly (see :mod:`stnlib.affine` for ``align_corners``); where
the gradient has a kink torch's choice is kept: the derivative of bilinear weights at an
integer coordinate is taken from the right (the corner pair ``floor(x), floor(x) + 1``),
and ``border``/``reflection`` clipping passes no gradient at the border itself.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = [
    "apply_padding",
    "clip_coordinates",
    "corner_indices",
    "corner_offsets",
    "corner_weights",
    "grid_sample",
    "reflect_coordinates",
    "unnormalize",
    "weight_factors",
]

MODES = ("bilinear", "nearest")
PADDING_MODES = ("zeros", "border", "reflection")


# ---------------------------------------------------------------------------
# Step 1: normalized [-1, 1] -> pixel coordinates
# ---------------------------------------------------------------------------
# Each step works on one axis at a time: ``coord`` holds x (or y, or z) of every point,
# ``size`` is the number of pixels along that axis (W for x, H for y, D for z).


def unnormalize(coord: torch.Tensor, size: int, align_corners: bool) -> torch.Tensor:
    """Normalized ``coord`` (any shape) along an axis of ``size`` pixels -> pixel units.

    ``align_corners=True``: -1 -> 0 and +1 -> size - 1 (centres of the corner pixels).
    ``align_corners=False``: -1 -> -0.5 and +1 -> size - 0.5 (outer edges of the image).
    """
    # torch's arithmetic; the steps after the first work in place, saving allocations
    if align_corners:
        return (coord + 1).div_(2).mul_(size - 1)
    return (coord + 1).mul_(size).sub_(1).div_(2)


# ---------------------------------------------------------------------------
# Step 2: padding modes move coordinates back into the image
# ---------------------------------------------------------------------------


def clip_coordinates(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Clamp pixel coordinates to ``[0, size - 1]`` (``padding_mode="border"``).

    Like torch, the border itself counts as outside for the gradient: a coordinate that
    sits exactly on 0 or size - 1 gets zero gradient.
    """
    clipped = coord.clamp(0, size - 1)
    inside = (coord > 0) & (coord < size - 1)
    return torch.where(inside, clipped, clipped.detach())


def reflect_coordinates(coord: torch.Tensor, size: int, align_corners: bool) -> torch.Tensor:
    """Mirror pixel coordinates at the image border until they fall inside.

    The mirrors sit at the centres of the corner pixels, ``[0, size - 1]``, with
    ``align_corners=True``, and at the image edges, ``[-0.5, size - 0.5]``, without. A
    coordinate ``d`` past the low mirror has travelled ``flips = floor(d / span)`` full
    spans; after an even number it moves forwards from ``low``, after an odd number
    backwards from ``high``. A 1-pixel axis with ``align_corners=True`` has both mirrors in
    one place: every coordinate becomes 0 (with zero gradient).
    """
    low, high = (0.0, size - 1.0) if align_corners else (-0.5, size - 0.5)
    span = high - low
    if span == 0:
        return coord * 0
    distance = (coord - low).abs()
    flips = torch.floor(distance / span)
    extra = distance - flips * span  # how far into the current span, in [0, span)
    return torch.where(flips % 2 == 0, low + extra, high - extra)


def apply_padding(
    coord: torch.Tensor, size: int, padding_mode: str, align_corners: bool
) -> torch.Tensor:
    """Pixel coordinates after the padding mode: ``border`` clips them, ``reflection``
    mirrors then clips (like torch), ``zeros`` only clamps them to ``[-1, size]``: that far
    out every corner reads the zero border already (see :data:`PAD_LOW`), and the clamp
    keeps the indices small."""
    if padding_mode == "border":
        return clip_coordinates(coord, size)
    if padding_mode == "reflection":
        return clip_coordinates(reflect_coordinates(coord, size, align_corners), size)
    return coord.clamp(-1, size)


# ---------------------------------------------------------------------------
# Steps 3 and 4: the corners around each point, and their weights
# ---------------------------------------------------------------------------

# The input is padded with zeros: PAD_LOW pixel before and PAD_HIGH after each axis. A
# point in [-1, size] then has all its corners inside the padded image, and a corner
# outside the original image reads 0, which is what padding_mode="zeros" means.
PAD_LOW, PAD_HIGH = 1, 2


def _strides(padded_sizes: list[int]) -> list[int]:
    """Flat-index step of one pixel along x, y(, z) in the padded image: 1, W, W * H."""
    strides = [1]
    for padded in padded_sizes[:-1]:
        strides.append(strides[-1] * padded)
    return strides


def corner_indices(
    coords: list[torch.Tensor], padded_sizes: list[int]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Top-left(-front) corner of each point as a flat index into the padded image, and
    the fractional offsets from it.

    ``coords`` are pixel coordinates ``[x, y(, z)]``, each ``(N, P)`` in ``[-1, size]``;
    ``padded_sizes`` the padded ``[W, H(, D)]``. Returns ``base (N, P)`` int64 (the sum of
    ``(floor(coord) + PAD_LOW) * stride`` over axes) and ``fracs = [coord - floor(coord)]``.
    """
    strides = _strides(padded_sizes)
    # float32 holds integers exactly only up to 2**24: bigger images count in float64
    exact = torch.float64 if strides[-1] * padded_sizes[-1] >= 2**24 else coords[0].dtype
    base = torch.full_like(coords[0], PAD_LOW * sum(strides), dtype=exact)
    fracs = []
    for coord, stride in zip(coords, strides, strict=True):
        # nan_to_num: a NaN coordinate must still give a valid index (its output is NaN)
        low = coord.detach().floor().nan_to_num_(nan=-1.0)
        base.add_(low, alpha=stride)
        fracs.append(coord - low)
    return base.long(), fracs


def corner_offsets(padded_sizes: list[int]) -> list[tuple[tuple[int, ...], int]]:
    """Each corner as ``(bits, offset)``: ``bits[a]`` is 0 (floor) or 1 (floor + 1) along
    axis ``a`` (x first), ``offset`` how far its flat index is from the base corner."""
    strides = _strides(padded_sizes)
    corners = []
    for bits_reversed in itertools.product((0, 1), repeat=len(padded_sizes)):
        bits = bits_reversed[::-1]  # x varies fastest: (0,0), (1,0), (0,1), (1,1)
        corners.append((bits, sum(b * s for b, s in zip(bits, strides, strict=True))))
    return corners


def weight_factors(fracs: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per axis, the interpolation factors ``(1 - frac, frac)``: the weight of the near
    corner (bit 0) and of the far corner (bit 1) along that axis."""
    return [(1 - frac, frac) for frac in fracs]


def corner_weights(
    factors: list[tuple[torch.Tensor, torch.Tensor]],
    bits: tuple[int, ...],
    skip_axis: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weight of one corner, ``(N, P)``: the product over axes of ``factors[axis][bit]``,
    e.g. ``(1 - fx) * fy`` for ``bits = (0, 1)``. The weights of all corners sum to 1.

    ``skip_axis`` leaves that axis' factor out: the slope of the weight along that axis
    is then ``+/-`` the result (used by the backward pass). ``out`` is an optional buffer
    to write into; with a single factor the result is that factor itself (do not modify).
    """
    chosen = [factors[axis][bit] for axis, bit in enumerate(bits) if axis != skip_axis]
    if not chosen:
        return torch.ones_like(factors[0][0])
    if len(chosen) == 1:
        return chosen[0]
    weight = torch.mul(chosen[0], chosen[1], out=out)
    for factor in chosen[2:]:
        weight.mul_(factor)
    return weight


# ---------------------------------------------------------------------------
# Step 5: combine the corners (forward), scatter them back (backward)
# ---------------------------------------------------------------------------


def _read(
    image: torch.Tensor, base: torch.Tensor, offset: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``image[n, c, base[n, p] + offset]`` for all n, c, p: ``(N, C, P)``. The shifted view
    ``image[..., offset:]`` lets every corner share one index tensor."""
    index = base.unsqueeze(1).expand(-1, image.shape[1], -1)
    return torch.gather(image[..., offset:], 2, index, out=out)


def _sum_channels(t: torch.Tensor) -> torch.Tensor:
    """``(N, C, P) -> (N, P)``, without a copy when C == 1."""
    return t[:, 0] if t.shape[1] == 1 else t.sum(1)


class _LinearInterpolation(torch.autograd.Function):
    """``out (N, C, P) = sum over corners of weight * image[base + offset]``.

    Takes the flat zero-padded ``image (N, C, S)``, the padded sizes and pixel coordinates
    ``x, y(, z)``, each ``(N, P)`` in ``[-1, size]``. Backward by hand:

    * ``grad_image[corner] += weight * grad_out`` (one ``scatter_add_`` per corner);
    * ``grad_coord[a] = sum over corners and channels of
      grad_out * image[corner] * (d weight / d coord_a)``, where the slope of a weight
      along axis ``a`` is the weight without its axis-``a`` factor, times +1 for the far
      corner and -1 for the near one. (At an integer coordinate this is the derivative
      from the right, as in torch.)
    """

    @staticmethod
    def forward(ctx, image, padded_sizes, *coords):
        base, fracs = corner_indices(list(coords), padded_sizes)
        ctx.save_for_backward(image, base, *fracs)
        ctx.corners = corner_offsets(padded_sizes)
        values = [_read(image, base, offset) for _, offset in ctx.corners]
        # sum of corner_weights * values, as nested linear interpolations: first along x
        # between each pair of corners (near, far), then along y (then z); in 2D that is
        # lerp(lerp(v00, v10, fx), lerp(v01, v11, fx), fy): 3 operations instead of 8
        for frac in fracs:
            weight = frac.unsqueeze(1)  # (N, 1, P), broadcast over channels
            pairs = zip(values[0::2], values[1::2], strict=True)
            values = [near.lerp_(far, weight) for near, far in pairs]  # near + w * (far - near)
        return values[0]

    @staticmethod
    @once_differentiable  # a second derivative through this is not implemented
    def backward(ctx, grad_out):
        image, base, *fracs = ctx.saved_tensors
        factors = weight_factors(fracs)
        need_coords = any(ctx.needs_input_grad[2:])
        grad_image = torch.zeros_like(image) if ctx.needs_input_grad[0] else None
        grad_coords = [torch.zeros_like(f) for f in fracs] if need_coords else None
        index = base.unsqueeze(1).expand_as(grad_out)
        weight = value = weighted = None  # reused buffers
        for bits, offset in ctx.corners:
            if grad_image is not None:
                weight = corner_weights(factors, bits, out=weight)
                weighted = torch.mul(grad_out, weight.unsqueeze(1), out=weighted)
                grad_image[..., offset:].scatter_add_(2, index, weighted)
            if grad_coords is not None:
                # how much the loss changes per unit of this corner's weight
                value = _read(image, base, offset, out=value)
                grad_weight = _sum_channels(value.mul_(grad_out))
                for axis, bit in enumerate(bits):
                    slope = corner_weights(factors, bits, skip_axis=axis)
                    grad_coords[axis].addcmul_(grad_weight, slope, value=1 if bit else -1)
        return grad_image, None, *(grad_coords or [None] * len(fracs))


class _NearestRead(torch.autograd.Function):
    """``out = image[nearest pixel]`` with a zero gradient for the coordinates:
    nearest-neighbour sampling is piecewise constant in the grid (torch returns zeros
    there too). Ties round to even, like torch's ``nearbyint``."""

    @staticmethod
    def forward(ctx, image, padded_sizes, *coords):
        base, _ = corner_indices([c.round() for c in coords], padded_sizes)
        ctx.save_for_backward(base)
        ctx.image_shape, ctx.n_coords = image.shape, len(coords)
        return _read(image, base, 0)

    @staticmethod
    @once_differentiable  # a second derivative through this is not implemented
    def backward(ctx, grad_out):
        (base,) = ctx.saved_tensors
        grad_image = None
        if ctx.needs_input_grad[0]:
            grad_image = grad_out.new_zeros(ctx.image_shape)
            grad_image.scatter_add_(2, base.unsqueeze(1).expand_as(grad_out), grad_out)
        zeros = grad_out.new_zeros(base.shape)
        return grad_image, None, *([zeros] * ctx.n_coords)


# ---------------------------------------------------------------------------
# The public function
# ---------------------------------------------------------------------------


def _check(input: torch.Tensor, grid: torch.Tensor, mode: str, padding_mode: str) -> None:
    for name, t in (("input", input), ("grid", grid)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"grid_sample(): {name} must be a torch.Tensor, got {type(t).__name__}")
    if mode not in MODES:
        hint = "; bicubic is not implemented here, use torch's" if mode == "bicubic" else ""
        raise ValueError(
            f"grid_sample(): expected mode to be 'bilinear' or 'nearest', but got: '{mode}'{hint}"
        )
    if padding_mode not in PADDING_MODES:
        raise ValueError(
            "grid_sample(): expected padding_mode to be 'zeros', 'border', or 'reflection', "
            f"but got: '{padding_mode}'"
        )
    if input.dim() not in (4, 5) or grid.dim() != input.dim():
        raise ValueError(
            "grid_sample(): expected 4D or 5D input and grid with same number of dimensions, "
            f"but got input with sizes {list(input.shape)} and grid with sizes {list(grid.shape)}"
        )
    if not input.is_floating_point():
        raise TypeError(
            f"grid_sample(): expected a floating point input, but got {input.dtype}; "
            "convert images first, e.g. input.float() / 255"
        )
    if grid.device != input.device:
        raise ValueError(
            "grid_sample(): expected input and grid to be on same device, but input is on "
            f"{input.device} and grid is on {grid.device}; move one with .to(other.device)"
        )
    if grid.dtype != input.dtype:
        raise TypeError(
            "grid_sample(): expected input and grid to have same dtype, but input has "
            f"{input.dtype} and grid has {grid.dtype}; convert one with .to(other.dtype)"
        )
    if grid.shape[0] != input.shape[0]:
        raise ValueError(
            "grid_sample(): expected grid and input to have same batch size, but got input "
            f"with sizes {list(input.shape)} and grid with sizes {list(grid.shape)}"
        )
    d = input.dim() - 2
    if grid.shape[-1] != d:
        raise ValueError(
            f"grid_sample(): expected grid to have size {d} in last dimension (one coordinate "
            f"per spatial axis of the {input.dim()}D input), but got grid with sizes "
            f"{list(grid.shape)}"
        )
    if any(s == 0 for s in input.shape[2:]):
        raise ValueError(
            "grid_sample(): expected input to have non-empty spatial dimensions, but input "
            f"has sizes {list(input.shape)}"
        )


def grid_sample(
    input: torch.Tensor,
    grid: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
) -> torch.Tensor:
    """Sample ``input`` at the normalized locations in ``grid``, from scratch.

    2D: ``input (N, C, H, W)``, ``grid (N, H_out, W_out, 2)`` -> ``(N, C, H_out, W_out)``.
    3D: ``input (N, C, D, H, W)``, ``grid (N, D_out, H_out, W_out, 3)`` ->
    ``(N, C, D_out, H_out, W_out)``. ``grid[..., 0]`` is x (along W), then y, then z.

    ``mode``: ``"bilinear"`` (trilinear in 3D, as torch names it) or ``"nearest"`` (ties
    round to even, like torch). ``padding_mode``: ``"zeros"``, ``"border"`` or
    ``"reflection"``. Differentiable with respect to ``input`` and ``grid``. Same results
    as ``torch.nn.functional.grid_sample``, which this never calls.
    """
    _check(input, grid, mode, padding_mode)
    n, c, *sizes = input.shape  # sizes: [H, W] or [D, H, W]
    d = len(sizes)
    points = grid.reshape(n, -1, d).unbind(-1)  # x, y(, z) of every output pixel, (N, P)

    # Steps 1-2, one axis at a time: pixel coordinates after the padding mode, each (N, P)
    coords = [
        apply_padding(unnormalize(coord, size, align_corners), size, padding_mode, align_corners)
        for coord, size in zip(points, reversed(sizes), strict=True)  # x with W, y with H
    ]
    padded = F.pad(input, (PAD_LOW, PAD_HIGH) * d)  # zero border, see corner_indices
    padded_sizes = [s + PAD_LOW + PAD_HIGH for s in reversed(sizes)]
    image = padded.reshape(n, c, -1)
    # Steps 3-5: corners, weights, weighted sum (nearest: the one nearest corner)
    interpolate = _NearestRead if mode == "nearest" else _LinearInterpolation
    out = interpolate.apply(image, padded_sizes, *coords)
    return out.reshape(n, c, *grid.shape[1:-1])
