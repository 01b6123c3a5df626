"""The paper's distorted-MNIST variants (R, RTS, P, E, TC), drawn with stnlib's own warps.

Every variant builds a sampling grid with stnlib's grid generators (a 3x3 matrix through
:func:`stnlib.projective.projective_grid`, or a thin-plate spline through
:func:`stnlib.tps.tps_grid`) and samples the digit with ``stnlib.grid_sample`` (bilinear,
zero padding, ``align_corners=False``). TC's grid is a shift by whole pixels, where every
bilinear weight is 0 or 1 and the sampler only copies pixels: :func:`distort` places the
digit on the canvas directly (the same values, without the sampler's float rounding of
up to 2e-6; a batch in a fifth of the time or less, ``python -m stnlib bench distort``).
:func:`distortion_grid` still gives TC's grid, and a test checks the two agree.
Randomness only comes from the ``generator`` you pass, so a seed fixes a test set, and a
training loop draws fresh distortions each batch.

Sizes and ranges (Jaderberg et al. 2015, section 4.1 and appendix A.1; pixels are pixels
of the 28x28 digit):

=======  ======  =============================================================================
variant  output  distortion
=======  ======  =============================================================================
R        28x28   rotation uniform in [-90, 90] degrees about the centre
RTS      42x42   rotation in [-45, 45] degrees, scale in [0.7, 1.2], then a uniform random
                 position on the 42x42 canvas such that the scaled 28x28 box stays inside
P        28x28   scale in [0.75, 1.0], then a homography moving each of the four image
                 corners by an independent Gaussian offset, sigma 5 pixels per axis
E        28x28   scale in [0.75, 1.0], then a thin-plate spline on a 4x4 grid of control
                 points, each moved by a Gaussian offset, sigma 1.5 pixels per axis
TC       60x60   the digit at a uniform random integer position on a 60x60 canvas, plus six
                 6x6 patches cut from other digits of the batch (cut from the central 20x20,
                 where the ink is) and pasted at uniform random positions (pixel-wise max)
=======  ======  =============================================================================

Angles are in image coordinates (x right, y down), so a positive angle turns the digit
clockwise on screen. :func:`ink_kept` says how much of each digit a drawn distortion leaves
on the canvas (P moves corners far enough to push part of some digits off it).
:func:`undo` is the perfect transformer: it warps a distorted digit back with the inverse
of the very matrix that distorted it, so a classifier trained on its output shows how well
any transformer could do on a variant (:func:`oracle_transform`).

A *turn curriculum* (``train_transform("R", turn_ramp=0.1)``) is an option of ours, not the
paper's: the turns of R and RTS start at zero and widen linearly to their full range over
the first ``turn_ramp`` of the training steps (``turn_scale`` multiplies each drawn angle;
the random draws are the same, so ``turn_scale=1`` is the plain variant).

``sigma_px`` (P and E) replaces the spread of the corner or control-point offsets, in
pixels: the paper's 5 (P) and 1.5 (E) by default. It is an option of ours too, for asking
how hard a variant is at other strengths: the offsets are the same standard-normal draws
times ``sigma_px``, so a seed gives the same shapes, bent more or less.
"""

from __future__ import annotations

import math

import torch

from stnlib.projective import homography_from_points, projective_grid
from stnlib.tps import tps_control_points, tps_grid

VARIANTS: tuple[str, ...] = ("R", "RTS", "P", "E", "TC")

#: Output side length of each variant, in pixels.
OUTPUT_SIZE: dict[str, int] = {"R": 28, "RTS": 42, "P": 28, "E": 28, "TC": 60}

#: The variants with a turn, whose angles ``turn_scale`` shrinks (a turn curriculum).
TURNED: tuple[str, ...] = ("R", "RTS")

#: The variants whose offsets are Gaussian, and the ``RANGES`` key of their spread.
SIGMA_KEYS: dict[str, str] = {"P": "P_sigma_px", "E": "E_sigma_px"}

#: The ranges above, in one place (tests and the notebook read them from here).
RANGES: dict[str, float] = {
    "R_degrees": 90.0,
    "RTS_degrees": 45.0, "RTS_scale_min": 0.7, "RTS_scale_max": 1.2,
    "P_scale_min": 0.75, "P_scale_max": 1.0, "P_sigma_px": 5.0,
    "E_scale_min": 0.75, "E_scale_max": 1.0, "E_sigma_px": 1.5,
    "TC_patches": 6, "TC_patch_px": 6,
}

_DIGIT = 28  # side of an MNIST digit
_HALF = _DIGIT / 2  # pixels per normalized unit of the digit (align_corners=False)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _check_images(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, 28, 28) float in [0, 1]; uint8 and (B, 28, 28) are accepted and converted."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (B, 1, 28, 28), got {type(images)}")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1:] != (1, _DIGIT, _DIGIT):
        raise ValueError(f"images must have shape (B, 1, 28, 28) (MNIST digits), got "
                         f"{tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise TypeError(f"images must be float in [0, 1] or uint8, got dtype {images.dtype}")
    return images


def _check_variant(variant: str) -> str:
    if variant not in OUTPUT_SIZE:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    return variant


def _similarity_matrix(
    angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, canvas: int
) -> torch.Tensor:
    """(N, 3, 3) map from normalized canvas coordinates to normalized digit coordinates.

    Forward (digit -> canvas, in pixels from the centres): ``p_out = shift + scale R p_in``.
    The grid needs the inverse: ``p_in = R^-1 (p_out - shift) / scale``; pixel coordinates
    are ``canvas / 2`` (output) and ``14`` (digit) times the normalized ones.
    """
    cos, sin = torch.cos(angle), torch.sin(angle)
    inverse_rotation = torch.stack((torch.stack((cos, sin), -1), torch.stack((-sin, cos), -1)), -2)
    linear = inverse_rotation / scale[:, None, None]  # (N, 2, 2), pixels -> pixels
    matrix = torch.zeros(angle.shape[0], 3, 3, dtype=angle.dtype, device=angle.device)
    matrix[:, :2, :2] = linear * (canvas / 2) / _HALF
    matrix[:, :2, 2] = -(linear @ shift.unsqueeze(-1)).squeeze(-1) / _HALF
    matrix[:, 2, 2] = 1.0
    return matrix


_CORNERS = ((-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0))  # clockwise on screen


def _corners(device: torch.device) -> torch.Tensor:
    """The digit's four corners, normalized, (4, 2) float64."""
    return torch.tensor(_CORNERS, dtype=torch.float64, device=device)


def _moved_corners(scale: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """P: where the digit's corners land (normalized): scale * corner + offset, (N, 4, 2)."""
    return scale[:, None, None] * _corners(scale.device) + offsets / _HALF


def _convex(quads: torch.Tensor) -> torch.Tensor:
    """(N, 4, 2) -> (N,) bool: the quadrilateral is convex with the corners' orientation."""
    edges = quads.roll(-1, dims=1) - quads
    following = edges.roll(-1, dims=1)
    turn = edges[..., 0] * following[..., 1] - edges[..., 1] * following[..., 0]
    return (turn > 0).all(dim=1)


def _unit_number(name: str, value: float, meaning: str) -> float:
    """``value`` as a float if it is a number in [0, 1], else an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(value)}")
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1] ({meaning}), got {value}")
    return float(value)


def _check_turn_scale(variant: str, turn_scale: float) -> float:
    turn_scale = _unit_number("turn_scale", turn_scale, "0: no turn, 1: the full range")
    if turn_scale != 1 and variant not in TURNED:
        raise ValueError(f"turn_scale={turn_scale}: variant {variant!r} has no turn; only "
                         f"{TURNED} do (leave turn_scale at 1)")
    return turn_scale


def _check_sigma(variant: str, sigma_px: float | None) -> float | None:
    """``sigma_px`` as a float (None: the variant's own), or an error that names the fix."""
    if sigma_px is None:
        return None
    if variant not in SIGMA_KEYS:
        raise ValueError(f"sigma_px={sigma_px}: variant {variant!r} has no Gaussian offsets; "
                         f"only {tuple(SIGMA_KEYS)} do (leave sigma_px unset)")
    if isinstance(sigma_px, bool) or not isinstance(sigma_px, (int, float)):
        raise TypeError(f"sigma_px must be a number of pixels, got {type(sigma_px)}")
    if not (math.isfinite(sigma_px) and 0 <= sigma_px <= _DIGIT):
        raise ValueError(f"sigma_px must be a finite number of pixels in [0, {_DIGIT}] "
                         f"(the paper's: {RANGES[SIGMA_KEYS[variant]]} for {variant}), "
                         f"got {sigma_px}")
    # The paper's own spread is no option: None, so records and checkpoints read the same.
    return None if sigma_px == RANGES[SIGMA_KEYS[variant]] else float(sigma_px)


def offset_sigma(variant: str, sigma_px: float | None = None) -> float:
    """The spread (pixels) of a P or E variant's offsets: ``sigma_px``, or the paper's."""
    _check_variant(variant)
    sigma_px = _check_sigma(variant, sigma_px)
    return RANGES[SIGMA_KEYS[variant]] if sigma_px is None else sigma_px


def draw_params(variant: str, n: int, generator: torch.Generator,
                turn_scale: float = 1.0, sigma_px: float | None = None
                ) -> dict[str, torch.Tensor]:
    """Draw the random parameters of ``n`` distortions (float64 tensors, pixels and degrees).

    ``turn_scale`` (R and RTS only) multiplies every drawn angle: 0 gives no turn, 1 (the
    default) the variant's full range; the draws themselves are the same whatever it is.
    ``sigma_px`` (P and E only) is the offsets' spread in pixels (None: the paper's 5 and
    1.5): the offsets are the same standard-normal draws times it.

    Keys: R: ``angle``; RTS: ``angle``, ``scale``, ``shift`` (N, 2); P: ``scale``,
    ``corner_offsets`` (N, 4, 2); E: ``scale``, ``control_offsets`` (N, 16, 2);
    TC: ``shift`` (N, 2) (integer pixels), ``patch_source`` (N, 6) (index offset to the
    other digit, >= 1), ``patch_from`` (N, 6, 2), ``patch_to`` (N, 6, 2) (top-left, pixels).
    """
    _check_variant(variant)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (for example "
                        f"torch.Generator().manual_seed(0)), got {type(generator)}")
    turn_scale = _check_turn_scale(variant, turn_scale)
    if variant in SIGMA_KEYS:
        sigma = offset_sigma(variant, sigma_px)
    else:
        _check_sigma(variant, sigma_px)  # refuses a sigma_px: this variant has no offsets
    r = RANGES
    if variant == "R":
        return {"angle": _uniform(n, -r["R_degrees"], r["R_degrees"], generator) * turn_scale}
    if variant == "RTS":
        angle = _uniform(n, -r["RTS_degrees"], r["RTS_degrees"], generator) * turn_scale
        scale = _uniform(n, r["RTS_scale_min"], r["RTS_scale_max"], generator)
        room = (OUTPUT_SIZE["RTS"] - _DIGIT * scale) / 2  # the scaled box stays on the canvas
        shift = (2 * torch.rand(n, 2, generator=generator, dtype=torch.float64) - 1) * room[:, None]
        return {"angle": angle, "scale": scale, "shift": shift}
    if variant == "P":
        scale = _uniform(n, r["P_scale_min"], r["P_scale_max"], generator)
        offsets = sigma * torch.randn(n, 4, 2, generator=generator, dtype=torch.float64)
        # A rare large offset (> ~3 sigma) folds the quadrilateral, and the homography then
        # maps part of the image through infinity: draw those offsets again.
        folded = ~_convex(_moved_corners(scale, offsets))
        while folded.any():
            redraw = sigma * torch.randn(int(folded.sum()), 4, 2, generator=generator,
                                         dtype=torch.float64)
            offsets[folded] = redraw
            folded = ~_convex(_moved_corners(scale, offsets))
        return {"scale": scale, "corner_offsets": offsets}
    if variant == "E":
        scale = _uniform(n, r["E_scale_min"], r["E_scale_max"], generator)
        offsets = sigma * torch.randn(n, 16, 2, generator=generator, dtype=torch.float64)
        return {"scale": scale, "control_offsets": offsets}
    room = (OUTPUT_SIZE["TC"] - _DIGIT) // 2
    patches, side = int(r["TC_patches"]), int(r["TC_patch_px"])
    shift = torch.randint(-room, room + 1, (n, 2), generator=generator).double()
    source = torch.randint(1, max(n, 2), (n, patches), generator=generator)
    patch_from = torch.randint(4, 4 + 20 - side + 1, (n, patches, 2), generator=generator)
    patch_to = torch.randint(0, OUTPUT_SIZE["TC"] - side + 1, (n, patches, 2),
                             generator=generator)
    return {"shift": shift, "patch_source": source, "patch_from": patch_from,
            "patch_to": patch_to}


def distortion_matrix(variant: str, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The (N, 3, 3) float64 matrix of a matrix variant (R, RTS, P, TC): it maps normalized
    canvas coordinates to normalized digit coordinates (the grid's direction; its inverse
    takes the digit onto the canvas). E is a thin-plate spline, not a matrix."""
    _check_variant(variant)
    if variant == "E":
        raise ValueError("variant 'E' is a thin-plate spline, it has no matrix: use "
                         "distortion_grid('E', params)")
    if variant == "P":
        scale = params["scale"]
        # Forward, the digit's corner c lands at scale * c + offset; the matrix maps back.
        moved = _moved_corners(scale, params["corner_offsets"])
        return homography_from_points(moved, _corners(scale.device).expand(scale.shape[0], 4, 2))
    angle = params.get("angle")
    first = angle if angle is not None else params["shift"]
    n, device = first.shape[0], first.device
    zeros = torch.zeros(n, dtype=torch.float64, device=device)
    angle = zeros if angle is None else torch.deg2rad(angle)
    scale = params.get("scale", zeros + 1)
    shift = params.get("shift", torch.zeros(n, 2, dtype=torch.float64, device=device))
    return _similarity_matrix(angle, scale, shift, OUTPUT_SIZE[variant])


def distortion_grid(variant: str, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sampling grid (N, S, S, 2) (float64) of drawn parameters; S = ``OUTPUT_SIZE``."""
    _check_variant(variant)
    canvas = OUTPUT_SIZE[variant]
    if variant != "E":
        matrix = distortion_matrix(variant, params)
        return projective_grid(matrix, (matrix.shape[0], 1, canvas, canvas))
    # E: output control point c_k samples the digit at (c_k + offset_k) / scale.
    scale = params["scale"]
    control = tps_control_points(dtype=torch.float64, device=scale.device)
    source = (control + params["control_offsets"] / _HALF) / scale[:, None, None]
    return tps_grid(source, (scale.shape[0], 1, canvas, canvas))


def ink_kept(images: torch.Tensor, variant: str, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """How much of each digit's ink a distortion leaves on the canvas, in [0, 1].

    Every pixel centre of the 28x28 digit is carried onto the canvas by the inverse of
    :func:`distortion_matrix`; the ink (pixel values) of those that land off the canvas is
    lost. A digit with little ink left can be unreadable whatever the model.

    Args:
        images: the undistorted digits (N, 1, 28, 28) (or uint8, or (N, 28, 28)).
        variant: ``"R"``, ``"RTS"``, ``"P"`` or ``"TC"`` (E has no matrix).
        params: their drawn parameters (``distort(..., return_params=True)``).

    Returns:
        (N,) float64: kept ink / total ink (1 for an empty image).
    """
    images = _check_images(images)
    forward = torch.linalg.inv(distortion_matrix(variant, params))  # digit -> canvas
    if forward.shape[0] != images.shape[0]:
        raise ValueError(f"params are for {forward.shape[0]} digits, images has "
                         f"{images.shape[0]}; pass the parameters drawn for these images")
    axis = (2 * torch.arange(_DIGIT, dtype=torch.float64, device=forward.device) + 1) / _DIGIT - 1
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    centres = torch.stack((xs, ys, torch.ones_like(xs)), -1).reshape(-1, 3)  # (784, 3)
    mapped = centres @ forward.transpose(1, 2)  # (N, 784, 3)
    w = mapped[..., 2]
    on_canvas = (w > 0) & ((mapped[..., :2] / w[..., None]).abs() <= 1).all(-1)
    ink = images.flatten(1).to(forward.device, torch.float64)
    total = ink.sum(1)
    kept = (ink * on_canvas).sum(1)
    return torch.where(total > 0, kept / total.clamp_min(1e-12), torch.ones_like(total))


def _window(top_left: torch.Tensor, side: int, width: int) -> tuple[torch.Tensor, ...]:
    """Rows (N, K, side, 1), columns (N, K, 1, side) and flat indices (N, K * side * side)
    into an image ``width`` pixels wide of the ``side`` x ``side`` windows whose top-left
    pixels are ``top_left`` (N, K, 2) (x, y; integers)."""
    steps = torch.arange(side, device=top_left.device)
    rows = top_left[..., 1, None, None] + steps[:, None]
    cols = top_left[..., 0, None, None] + steps[None, :]
    flat = (rows * width + cols).expand(-1, -1, side, side).reshape(top_left.shape[0], -1)
    return rows, cols, flat


def _place(digits: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """TC: each digit (N, 1, 28, 28) on an empty 60x60 canvas, moved from the centre by
    ``shift`` (N, 2) (x, y; whole pixels): what sampling ``distortion_grid("TC")`` gives."""
    n, size = digits.shape[0], OUTPUT_SIZE["TC"]
    top_left = (size - _DIGIT) // 2 + shift.round().long()  # (N, 2)
    _, _, flat = _window(top_left[:, None], _DIGIT, size)
    canvas = digits.new_zeros(n, size * size).scatter_(1, flat, digits.reshape(n, -1))
    return canvas.reshape(n, 1, size, size)


def _paste_clutter(canvas: torch.Tensor, digits: torch.Tensor,
                   params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Paste 6x6 patches of other digits into the canvas (pixel-wise max)."""
    n, _, size, _ = canvas.shape
    side = int(RANGES["TC_patch_px"])
    other = (torch.arange(n, device=canvas.device)[:, None] + params["patch_source"]) % n  # (N, P)
    rows, cols, _ = _window(params["patch_from"], side, _DIGIT)
    patches = digits[:, 0][other[..., None, None], rows, cols]  # (N, P, side, side)
    _, _, flat_index = _window(params["patch_to"], side, size)
    flat = canvas.reshape(n, -1).scatter_reduce(
        1, flat_index, patches.reshape(n, -1).to(canvas.dtype), reduce="amax")
    return flat.reshape(n, 1, size, size)


def distort(
    images: torch.Tensor, variant: str, generator: torch.Generator,
    *, return_params: bool = False, turn_scale: float = 1.0, sigma_px: float | None = None,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Distort a batch of digits with freshly drawn random parameters.

    Args:
        images: (B, 1, 28, 28) float in [0, 1] (uint8 or (B, 28, 28) are accepted too),
            on any device: the output is on the same device.
        variant: one of ``VARIANTS``.
        generator: the only source of randomness (a CPU generator, whatever the device).
        return_params: also return the drawn parameters (see :func:`draw_params`).
        turn_scale: R and RTS only: multiplies every drawn angle (0: no turn, 1: the
            variant's full range; a turn curriculum, see :class:`TrainTransform`).
        sigma_px: P and E only: the offsets' spread in pixels (None: the paper's).

    Returns:
        distorted (B, 1, S, S) with ``S = OUTPUT_SIZE[variant]``, same dtype as the input
        (float32 for uint8 input), values in [0, 1]; and the parameters if asked.
    """
    from stnlib.sampler import grid_sample

    images = _check_images(images)
    # Drawn from the (CPU) generator, so a seed gives the same distortions on any device;
    # the warp itself runs where the images are (on a GPU, no CPU work per batch).
    params = {name: value.to(images.device) for name, value
              in draw_params(variant, images.shape[0], generator, turn_scale,
                                       sigma_px).items()}
    if variant == "TC":  # a whole-pixel shift: the digit placed, no interpolation needed
        out = _paste_clutter(_place(images, params["shift"]), images, params)
    else:
        grid = distortion_grid(variant, params).to(images.dtype)
        out = grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    out = out.clamp(0.0, 1.0)
    return (out, params) if return_params else out


def distort_dataset(
    images: torch.Tensor, variant: str, seed: int, batch_size: int = 1000,
    *, return_params: bool = False, sigma_px: float | None = None,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A fixed distorted copy of a whole dataset (for test sets), reproducible by ``seed``.

    Args:
        images: (N, 28, 28) uint8 or (N, 1, 28, 28) float in [0, 1].
        variant: one of ``VARIANTS``.
        seed: seeds the one generator used for every batch, in order.
        batch_size: digits distorted at once (TC clutter comes from the same batch).
        return_params: also return every digit's drawn parameters (the batches' joined).
        sigma_px: P and E only: the offsets' spread in pixels (None: the paper's).

    Returns:
        (N, 1, S, S) float32 in [0, 1]; and the parameters if asked.
    """
    generator = torch.Generator().manual_seed(int(seed))
    chunks, drawn = [], []
    for start in range(0, images.shape[0], batch_size):
        out, params = distort(images[start:start + batch_size], variant, generator,
                              return_params=True, sigma_px=sigma_px)
        chunks.append(out.float())
        drawn.append(params)
    distorted = torch.cat(chunks)
    if not return_params:
        return distorted
    return distorted, {name: torch.cat([p[name] for p in drawn]) for name in drawn[0]}


class TrainTransform:
    """``transform(images, generator) -> distorted`` for ``stnlib.train.fit(train_transform=)``:
    fresh distortions of ``variant`` for every training batch, drawn from the training run's
    generator. Picklable and printable (``train_transform('E')``), so a checkpoint records
    which distortion it was trained with and a later process can resume it.

    With ``turn_ramp`` > 0 (R and RTS) it is a turn curriculum: ``fit`` tells it the step
    before each batch (:meth:`set_progress`), and the drawn angles are multiplied by
    ``min(1, step / round(turn_ramp * total_steps))``: no turn at the first step, the full
    range from ``turn_ramp`` of the way through training on. The step comes from ``fit``'s
    own count, so a resumed run picks the curriculum up where it stopped.

    ``sigma_px`` (P and E) draws the offsets with that spread instead of the paper's."""

    def __init__(self, variant: str, turn_ramp: float = 0.0,
                 sigma_px: float | None = None) -> None:
        _check_variant(variant)
        self.sigma_px = _check_sigma(variant, sigma_px)
        turn_ramp = _unit_number("turn_ramp", turn_ramp, "the share of the training steps "
                                 "over which the turns widen to their full range; 0: no "
                                 "curriculum")
        if turn_ramp and variant not in TURNED:
            raise ValueError(f"turn_ramp={turn_ramp}: variant {variant!r} has no turn to "
                             f"ramp; only {TURNED} do (leave it at 0)")
        self.variant, self.turn_ramp = variant, turn_ramp
        self.step: int | None = None
        self.total_steps: int | None = None

    def set_progress(self, step: int, total_steps: int) -> None:
        """Called by ``fit`` before each batch: ``step`` batches of ``total_steps`` done."""
        self.step, self.total_steps = int(step), int(total_steps)

    @property
    def turn_scale(self) -> float:
        """The factor on this batch's angles (1 without a curriculum)."""
        if not self.turn_ramp:
            return 1.0
        if self.step is None or self.total_steps is None:
            raise RuntimeError(f"{self!r} is a turn curriculum and needs the training step: "
                               "pass it to stnlib.train.fit(train_transform=...), which calls "
                               "set_progress(step, total_steps) before each batch")
        ramp_steps = max(1, round(self.turn_ramp * self.total_steps))
        return min(1.0, self.step / ramp_steps)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return distort(images, self.variant, generator, turn_scale=self.turn_scale,
                       sigma_px=self.sigma_px)

    def __repr__(self) -> str:  # what a checkpoint records: the options only when set
        ramp = f", turn_ramp={self.turn_ramp!r}" if self.turn_ramp else ""
        sigma = f", sigma_px={self.sigma_px!r}" if self.sigma_px is not None else ""
        return f"train_transform({self.variant!r}{ramp}{sigma})"


def train_transform(variant: str, turn_ramp: float = 0.0,
                    sigma_px: float | None = None) -> TrainTransform:
    """``transform(images (B, 1, H, W), generator) -> distorted`` for
    ``stnlib.train.fit(train_transform=)``; ``turn_ramp`` > 0 (R, RTS) makes it a turn
    curriculum, ``sigma_px`` (P, E) sets the offsets' spread. See :class:`TrainTransform`."""
    return TrainTransform(variant, turn_ramp, sigma_px)


def _check_invertible(variant: str) -> None:
    """The variants :func:`undo` and :func:`oracle_transform` take: those with a matrix."""
    _check_variant(variant)
    if variant == "E":
        raise ValueError("variant 'E' is a thin-plate spline: it has no matrix to invert, "
                         "so there is no oracle for it; undo() and oracle_transform() take "
                         "R, RTS, P or TC")


def undo(distorted: torch.Tensor, variant: str, params: dict[str, torch.Tensor],
         size: int = _DIGIT) -> torch.Tensor:
    """The perfect ("oracle") transformer: warp distorted digits back with the inverse of
    the matrix that distorted them (R, RTS, P, TC; E's spline has no exact inverse).

    Args:
        distorted: (N, 1, S, S) from ``distort(..., return_params=True)``.
        variant: the variant that made them.
        params: the parameters ``distort`` drew for them (on any device).
        size: output side (28: the digit's own frame).

    Returns:
        (N, 1, size, size), same dtype and device as ``distorted``, in [0, 1]: each digit
        upright, centred and at full size again, up to what the distortion lost (ink pushed
        off the canvas, TC's clutter, the blur of two bilinear interpolations).
    """
    from stnlib.sampler import grid_sample

    _check_invertible(variant)
    if distorted.dim() != 4 or distorted.shape[1] != 1:
        raise ValueError(f"distorted must have shape (N, 1, S, S), got "
                         f"{tuple(distorted.shape)}")
    params = {name: value.to(distorted.device) for name, value in params.items()}
    inverse = torch.linalg.inv(distortion_matrix(variant, params))  # digit -> canvas
    if inverse.shape[0] != distorted.shape[0]:
        raise ValueError(f"params describe {inverse.shape[0]} digits, distorted holds "
                         f"{distorted.shape[0]}: pass the params drawn for these digits")
    grid = projective_grid(inverse, (inverse.shape[0], 1, size, size)).to(distorted.dtype)
    out = grid_sample(distorted, grid, mode="bilinear", padding_mode="zeros",
                      align_corners=False)
    return out.clamp(0.0, 1.0)


class OracleTransform:
    """``transform(images, generator) -> undone`` for ``stnlib.train.fit(train_transform=)``:
    distort a batch as :class:`TrainTransform` does, then :func:`undo` it with the drawn
    parameters. A classifier trained on this sees what a perfect transformer would hand it.
    Picklable and printable, like :class:`TrainTransform`; ``sigma_px`` (P) as there."""

    def __init__(self, variant: str, sigma_px: float | None = None) -> None:
        _check_invertible(variant)
        self.variant, self.sigma_px = variant, _check_sigma(variant, sigma_px)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        distorted, params = distort(images, self.variant, generator, return_params=True,
                                    sigma_px=self.sigma_px)
        return undo(distorted, self.variant, params)

    def __repr__(self) -> str:
        sigma = f", sigma_px={self.sigma_px!r}" if self.sigma_px is not None else ""
        return f"oracle_transform({self.variant!r}{sigma})"


def oracle_transform(variant: str, sigma_px: float | None = None) -> OracleTransform:
    """See :class:`OracleTransform`."""
    return OracleTransform(variant, sigma_px)
