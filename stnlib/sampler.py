"""The differentiable sampler: read the input at the (fractional) places the grid names.

Notebook 04. :func:`grid_sample` does what ``torch.nn.functional.grid_sample`` does, in
five named steps a learner can read one at a time:

1. :func:`unnormalize` - grid values in ``[-1, 1]`` become pixel coordinates.
2. :func:`apply_padding` - coordinates outside the image are clipped (``border``) or
   mirrored (``reflection``, see :func:`reflect_coordinates`) back inside; ``zeros``
   leaves them where they are, so they read the zero background.
3. :func:`corner_indices` - the pixels around each point: its top-left corner
   ``floor(x), floor(y)`` as one flat index, and the fractional offsets ``x - floor(x)``.
4. :func:`corner_weights` - bilinear weights ``(1 - fx)(1 - fy)``, ``fx (1 - fy)``, ... (in
   3D eight trilinear weights), which sum to 1.
5. combine - ``output = sum over corners of weight * input[corner]``
   (:class:`_LinearInterpolation`), with the backward pass written by hand: the gradient
   for the input scatters ``weight * grad_output`` back to the corners, the gradient for
   the grid is how the output changes when a weight changes.

Two tricks keep it fast without hiding the math: the input gets a zero border (so the
corner of a point just outside the image reads 0 with no masks), and the four corners are
read from four *shifted views* of the same flat image with one shared index, so no index
tensor four times the output size is ever built.

Conventions match torch exactly (see :mod:`stnlib.affine` for ``align_corners``); where
the gradient has a kink torch's choice is kept: the derivative of bilinear weights at an
integer coordinate is taken from the right (the corner pair ``floor(x), floor(x) + 1``),
and ``border``/``reflection`` clipping passes no gradient at the border itself.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

__all__ = [
    "apply_padding",
    "clip_coordinates",
    "corner_indices",
    "corner_weights",
    "grid_sample",
    "reflect_coordinates",
    "unnormalize",
]

MODES = ("bilinear", "nearest")
PADDING_MODES = ("zeros", "border", "reflection")


# ---------------------------------------------------------------------------
# Step 1: normalized [-1, 1] -> pixel coordinates
# ---------------------------------------------------------------------------


def unnormalize(coord: torch.Tensor, size: int, align_corners: bool) -> torch.Tensor:
    """Normalized ``coord`` (any shape) along an axis of ``size`` pixels -> pixel units.

    ``align_corners=True``: -1 -> 0 and +1 -> size - 1 (centres of the corner pixels).
    ``align_corners=False``: -1 -> -0.5 and +1 -> size - 0.5 (outer edges of the image).
    """
    if align_corners:
        return (coord + 1) / 2 * (size - 1)
    return ((coord + 1) * size - 1) / 2


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
    one place: every coordinate becomes 0.
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
    """Pixel coordinates after the padding mode: ``zeros`` keeps them (outside reads 0),
    ``border`` clips them, ``reflection`` mirrors then clips (like torch)."""
    if padding_mode == "border":
        return clip_coordinates(coord, size)
    if padding_mode == "reflection":
        return clip_coordinates(reflect_coordinates(coord, size, align_corners), size)
    return coord


# ---------------------------------------------------------------------------
# Steps 3 and 4: the corners around each point, and their weights
# ---------------------------------------------------------------------------

# The input is padded with zeros: PAD_LOW pixel before and PAD_HIGH after each axis. A
# point clamped to [-1, size] then has all its corners inside the padded image, and a
# corner outside the original image reads 0, which is what padding_mode="zeros" means.
PAD_LOW, PAD_HIGH = 1, 2


def corner_indices(
    coords: list[torch.Tensor], padded_sizes: list[int]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Top-left(-front) corner of each point as a flat index into the padded image, and
    the fractional offsets from it.

    ``coords`` are pixel coordinates ``[x, y]`` (or ``[x, y, z]``), each ``(N, P)``;
    ``padded_sizes`` the padded ``[W, H(, D)]``. Returns ``base (N, P)`` int64 and
    ``fracs = [x - floor(x), ...]`` (differentiable). Points far outside are first clamped
    to ``[-1, size]``, where every corner reads the zero border.
    """
    base = 0
    stride = 1
    fracs = []
    for coord, padded in zip(coords, padded_sizes, strict=True):
        size = padded - PAD_LOW - PAD_HIGH
        coord = coord.clamp(-1, size)
        # nan_to_num: a NaN coordinate must still give a valid index (its output is NaN)
        low = torch.nan_to_num(coord.detach().floor(), nan=-1.0)
        fracs.append(coord - low)
        base = base + (low.long() + PAD_LOW) * stride
        stride *= padded
    return base, fracs


def corner_offsets(padded_sizes: list[int]) -> list[tuple[tuple[int, ...], int]]:
    """Each corner as ``(bits, offset)``: ``bits[a]`` is 0 (floor) or 1 (floor + 1) along
    axis ``a`` (x first), ``offset`` how far its flat index is from the base corner."""
    strides = [1]
    for padded in padded_sizes[:-1]:
        strides.append(strides[-1] * padded)
    corners = []
    for bits_reversed in itertools.product((0, 1), repeat=len(padded_sizes)):
        bits = bits_reversed[::-1]  # x varies fastest: (0,0), (1,0), (0,1), (1,1)
        corners.append((bits, sum(b * s for b, s in zip(bits, strides, strict=True))))
    return corners


def corner_weights(
    fracs: list[torch.Tensor], bits: tuple[int, ...]
) -> torch.Tensor:
    """Weight of one corner: the product over axes of ``frac`` (for the far corner, bit 1)
    or ``1 - frac`` (for the near one, bit 0). ``(N, P)``."""
    weight = None
    for frac, bit in zip(fracs, bits, strict=True):
        w = frac if bit else 1 - frac
        weight = w if weight is None else weight * w
    return weight


# ---------------------------------------------------------------------------
# Step 5: combine the corners (forward), scatter them back (backward)
# ---------------------------------------------------------------------------


def _read(image: torch.Tensor, base: torch.Tensor, offset: int) -> torch.Tensor:
    """``image[n, c, base[n, p] + offset]`` for all n, c, p: ``(N, C, P)``. The shifted view
    ``image[..., offset:]`` lets every corner share one index tensor."""
    index = base.unsqueeze(1).expand(-1, image.shape[1], -1)
    return image[..., offset:].gather(2, index)


class _LinearInterpolation(torch.autograd.Function):
    """``out (N, C, P) = sum over corners of weight * image[base + offset]``.

    ``image (N, C, S)`` is the flat zero-padded input, ``base (N, P)`` the corner indices,
    ``fracs`` the fractional offsets (``d`` tensors ``(N, P)``). Backward by hand:

    * ``grad_image[base + offset] += weight * grad_out`` (one ``scatter_add_`` per corner);
    * ``grad_frac[a] = sum_corners sum_c grad_out * image[corner] * d weight / d frac[a]``,
      where ``d weight / d frac[a]`` is the weight with the factor for axis ``a`` replaced
      by +1 (far corner) or -1 (near corner).
    """

    @staticmethod
    def forward(ctx, image, base, corners, *fracs):
        ctx.save_for_backward(image, base, *fracs)
        ctx.corners = corners
        out = None
        for bits, offset in corners:
            term = _read(image, base, offset) * corner_weights(fracs, bits).unsqueeze(1)
            out = term if out is None else out.add_(term)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        image, base, *fracs = ctx.saved_tensors
        need_image, need_fracs = ctx.needs_input_grad[0], any(ctx.needs_input_grad[3:])
        grad_image = torch.zeros_like(image) if need_image else None
        grad_fracs = [torch.zeros_like(f) for f in fracs] if need_fracs else None
        index = base.unsqueeze(1).expand_as(grad_out)
        for bits, offset in ctx.corners:
            if need_image:
                weight = corner_weights(fracs, bits).unsqueeze(1)
                grad_image[..., offset:].scatter_add_(2, index, grad_out * weight)
            if need_fracs:
                # how much the loss changes per unit of this corner's weight
                grad_weight = (grad_out * _read(image, base, offset)).sum(1)
                for axis, bit in enumerate(bits):
                    others = [f for a, f in enumerate(fracs) if a != axis]
                    other_bits = bits[:axis] + bits[axis + 1 :]
                    slope = corner_weights(others, other_bits) if others else 1.0
                    if bit:
                        grad_fracs[axis] += grad_weight * slope
                    else:
                        grad_fracs[axis] -= grad_weight * slope
        return grad_image, None, None, *(grad_fracs or [None] * len(fracs))


class _NearestRead(torch.autograd.Function):
    """``out = image[base]`` with a zero gradient for the coordinates: nearest-neighbour
    sampling is piecewise constant in the grid (torch returns zeros there too)."""

    @staticmethod
    def forward(ctx, image, base, *coords):
        ctx.save_for_backward(base)
        ctx.image_shape = image.shape
        ctx.coord_like = [(c.shape, c.dtype) for c in coords]
        return _read(image, base, 0)

    @staticmethod
    def backward(ctx, grad_out):
        (base,) = ctx.saved_tensors
        grad_image = None
        if ctx.needs_input_grad[0]:
            grad_image = grad_out.new_zeros(ctx.image_shape)
            grad_image.scatter_add_(2, base.unsqueeze(1).expand_as(grad_out), grad_out)
        zeros = [grad_out.new_zeros(shape, dtype=dtype) for shape, dtype in ctx.coord_like]
        return grad_image, None, *zeros


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
    out_spatial = grid.shape[1:-1]
    sizes_xyz = sizes[::-1]  # [W, H(, D)], the order of the grid's last dimension
    points = grid.reshape(n, -1, len(sizes))  # (N, P, d), P = number of output pixels

    # Steps 1-2: pixel coordinates, after the padding mode, one (N, P) tensor per axis
    coords = [
        apply_padding(unnormalize(points[..., a], size, align_corners), size, padding_mode,
                      align_corners)
        for a, size in enumerate(sizes_xyz)
    ]
    padded = F.pad(input, (PAD_LOW, PAD_HIGH) * len(sizes))  # zero border, see corner_indices
    padded_sizes = [s + PAD_LOW + PAD_HIGH for s in sizes_xyz]
    image = padded.reshape(n, c, -1)

    if mode == "nearest":
        # round half to even, like torch's nearbyint; the nearest pixel is a 1-corner read
        rounded = [coord.detach().round() for coord in coords]
        base, _ = corner_indices(rounded, padded_sizes)
        out = _NearestRead.apply(image, base, *coords)
    else:
        # Steps 3-5: corners, weights, weighted sum
        base, fracs = corner_indices(coords, padded_sizes)
        out = _LinearInterpolation.apply(image, base, corner_offsets(padded_sizes), *fracs)
    return out.reshape(n, c, *out_spatial)
