"""Check functions for the notebooks' exercises.

Each ``check_*`` takes the learner's answer, prints whether it is right (and a hint
when it is not) and returns ``True``/``False``, so a notebook cell reads
``check_rotation_theta(my_theta)``. ``None`` means "not attempted yet".
"""

from __future__ import annotations

from typing import Any

import torch


def _verdict(answer: Any, ok: bool | None, praise: str, hint: str) -> bool:
    """Print the outcome of one check and return it.

    ``answer is None`` prints "not attempted yet" (the exercise cell's starting state).
    ``ok`` is computed by the caller only when the answer has the right form; pass
    ``ok=None`` with a ``hint`` that explains the form when it does not.
    """
    if answer is None:
        print("Not attempted yet: replace None with your answer and run the cell again.")
        return False
    if ok:
        print(f"Correct! {praise}")
        return True
    print(f"Not yet. Hint: {hint}")
    return False


def _as_tensor(answer: Any, shape: tuple[int, ...]) -> torch.Tensor | None:
    """The answer as a float64 tensor of ``shape``, or None if it cannot be one."""
    try:
        tensor = torch.as_tensor(answer, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return None
    return tensor if tuple(tensor.shape) == shape else None


# ---------------------------------------------------------------------------
# Notebooks 00-05 (the core lesson). Conventions used by the questions:
# theta maps normalized *target* (output) coordinates to normalized *source*
# (input) coordinates, x before y, exactly as torch.nn.functional.affine_grid.
# ---------------------------------------------------------------------------


def _close(tensor: torch.Tensor | None, expected: Any, atol: float = 1e-4) -> bool | None:
    """Whether ``tensor`` equals ``expected`` (None when the answer had the wrong form)."""
    if tensor is None:
        return None
    return bool(torch.allclose(tensor, torch.as_tensor(expected, dtype=torch.float64), atol=atol))


def _as_number(answer: Any) -> float | None:
    """The answer as a float, or None if it is not one number."""
    tensor = _as_tensor(answer, ())
    if tensor is None:
        tensor = _as_tensor(answer, (1,))
    return None if tensor is None else float(tensor.reshape(()))


# --- 00: why spatial transformers ------------------------------------------


def check_pooling_shifts(answer: Any) -> bool:
    """00. A 4x4 image has one bright pixel in column 0; it goes through a 2x2 max-pool
    (stride 2). Which horizontal shifts ``{0, 1, 2, 3}`` of that pixel leave the pooled
    output unchanged? ``answer``: a set (or list) of ints."""
    try:
        shifts = {int(s) for s in answer} if answer is not None else None
    except (TypeError, ValueError):
        shifts = None
    ok = None if shifts is None else shifts == {0, 1}
    return _verdict(
        answer, ok,
        "Max-pooling forgives a shift only while the pixel stays inside the same 2x2 window: "
        "that is local invariance, a pixel or two, not a rotation or a zoom.",
        "give a set of ints such as {0, 2}. Pool the 4x4 image by hand: columns 0-1 form "
        "one window and columns 2-3 the next; where does the bright pixel land after each shift?",
    )


def check_pipeline_order(answer: Any) -> bool:
    """00. Put the three parts of a spatial transformer in the order data flows through
    them: ``"sampler"``, ``"localization"``, ``"grid generator"`` (a list of str)."""
    try:
        steps = [str(s).strip().lower().replace("_", " ") for s in answer]
    except TypeError:
        steps = None
    ok = None if steps is None else steps == ["localization", "grid generator", "sampler"]
    return _verdict(
        answer, ok,
        "The localization net predicts theta, the grid generator turns theta into "
        "sampling coordinates, and the sampler reads the input image at those coordinates.",
        "a list of the three names. Ask what each part needs as input: the sampler needs "
        "a grid, the grid generator needs theta, and theta comes from the image.",
    )


# --- 01: affine math --------------------------------------------------------


def check_rotation_theta(answer: Any) -> bool:
    """01. theta (2, 3) of a rotation by +30 degrees, R = [[cos, -sin], [sin, cos]],
    with no translation."""
    import math

    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    theta = _as_tensor(answer, (2, 3))
    ok = _close(theta, [[c, -s, 0.0], [s, c, 0.0]])
    hint = "a 2x3 matrix (nested list or tensor): [[cos a, -sin a, tx], [sin a, cos a, ty]]."
    if ok is False and _close(theta, [[c, s, 0.0], [-s, c, 0.0]]):
        hint = "that is a rotation by -30 degrees: the minus sign belongs on the top-right sin."
    elif ok is False and _close(theta[:, :2].flatten().sort().values, sorted([c, c, s, -s])) \
            is False:
        hint = "use radians: math.cos(math.radians(30)); the last column stays 0."
    return _verdict(answer, ok, "cos 30 = 0.866 and sin 30 = 0.5 sit in the first two columns.",
                    hint)


def check_scale_then_translate(answer: Any) -> bool:
    """01. theta (2, 3) that FIRST scales by 0.5 (both axes) and THEN translates by
    (+0.25, 0), as one matrix: theta = T @ S in homogeneous coordinates."""
    theta = _as_tensor(answer, (2, 3))
    ok = _close(theta, [[0.5, 0.0, 0.25], [0.0, 0.5, 0.0]])
    hint = "a 2x3 matrix. Write S and T as 3x3 matrices and multiply T @ S: the matrix on " \
           "the right acts first."
    if ok is False and _close(theta, [[0.5, 0.0, 0.125], [0.0, 0.5, 0.0]]):
        hint = "that is S @ T: the translation was applied first and then scaled to 0.125. " \
               "The matrix that acts first goes on the right."
    return _verdict(answer, ok, "T @ S: the translation is not scaled because it comes last.",
                    hint)


def check_inverse_theta(answer: Any) -> bool:
    """01. The inverse of theta = [[2, 0, 0.5], [0, 2, -0.5]], as a (2, 3) theta."""
    theta = _as_tensor(answer, (2, 3))
    ok = _close(theta, [[0.5, 0.0, -0.25], [0.0, 0.5, 0.25]])
    hint = "a 2x3 matrix. Append the row [0, 0, 1], invert the 3x3 matrix " \
           "(torch.linalg.inv) and drop the last row again."
    if ok is False and _close(theta, [[0.5, 0.0, -0.5], [0.0, 0.5, 0.5]]):
        hint = "the translation of the inverse is -A^-1 t, not -t: it is scaled too."
    return _verdict(answer, ok, "inverse(theta) undoes theta: A^-1 and -A^-1 t.", hint)


def check_normalized_x(answer: Any) -> bool:
    """01. With ``align_corners=False``, the normalized x coordinate of the centre of
    pixel column 0 in an image 28 pixels wide."""
    value = _as_number(answer)
    ok = None if value is None else abs(value - (-27 / 28)) < 1e-4
    hint = "one number. With align_corners=False, -1 and +1 are the outer EDGES of the " \
           "image, so a pixel centre sits half a pixel (1/28 in normalized units) inside."
    if value is not None and abs(value + 1) < 1e-6:
        hint = "-1 is the centre of pixel 0 only with align_corners=True. Here -1 is the " \
               "left edge, half a pixel to the left of the centre."
    return _verdict(answer, ok, "x = (2*0 + 1) / 28 - 1 = -27/28 = -0.964.", hint)


# --- 02: localization network -----------------------------------------------


def check_identity_theta(answer: Any) -> bool:
    """02. The 6 numbers the last layer of the localization net outputs at initialisation
    (weight 0, bias = the identity), as theta (2, 3)."""
    theta = _as_tensor(answer, (2, 3))
    if theta is None:
        flat = _as_tensor(answer, (6,))
        theta = None if flat is None else flat.reshape(2, 3)
    ok = _close(theta, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return _verdict(
        answer, ok,
        "the identity theta copies the input, so training starts from 'do nothing'.",
        "a 2x3 matrix (or 6 numbers). Which matrix maps every output point to the same "
        "input point? Zeros everywhere would collapse the image onto its centre pixel.",
    )


def check_feature_size(answer: Any) -> bool:
    """02. A 1x28x28 digit goes through Conv2d(1, 8, 7) -> MaxPool2d(2) -> Conv2d(8, 10, 5)
    -> MaxPool2d(2) (no padding, stride 1 convolutions). How many numbers are there
    after flattening?"""
    value = _as_number(answer)
    ok = None if value is None else value == 90
    hint = "one int. A k x k convolution without padding takes k-1 pixels off a side; a " \
           "2x2 max-pool halves it (rounding down). Then multiply channels x height x width."
    if value == 160:
        hint = "28-7+1 = 22, pooled to 11; 11-5+1 = 7, pooled to 3 (rounded down), not 4."
    return _verdict(answer, ok, "28 -> 22 -> 11 -> 7 -> 3: 10 channels x 3 x 3 = 90.", hint)


# --- 03: grid generator -----------------------------------------------------


def check_grid_shape(answer: Any) -> bool:
    """03. The shape of ``affine_grid(theta, size=(4, 1, 32, 48))`` for theta (4, 2, 3)."""
    try:
        shape = tuple(int(s) for s in answer)
    except (TypeError, ValueError):
        shape = None
    ok = None if shape is None else shape == (4, 32, 48, 2)
    hint = "a tuple of 4 ints: (N, H_out, W_out, 2), one (x, y) pair per output pixel."
    if shape == (4, 48, 32, 2):
        hint = "height comes before width, as in the image (N, C, H, W)."
    return _verdict(answer, ok, "(N, H_out, W_out, 2): no channel axis, all channels share "
                    "the same grid.", hint)


def check_grid_corner(answer: Any) -> bool:
    """03. theta = [[1, 0, 0.5], [0, 1, 0]] and ``align_corners=True``: the (x, y) stored in
    ``grid[0, 0, 0]``, the top-left output pixel."""
    point = _as_tensor(answer, (2,))
    ok = _close(point, [-0.5, -1.0])
    hint = "two numbers (x, y). With align_corners=True the top-left pixel is at (-1, -1) " \
           "before theta; apply x' = x + 0.5, y' = y."
    if ok is False and _close(point, [-1.0, -0.5]):
        hint = "the grid stores x first, then y: the translation 0.5 acts on x."
    return _verdict(answer, ok, "(-1 + 0.5, -1): this output pixel reads the input a quarter "
                    "of the way in from the left.", hint)


def check_affine_grid_function(answer: Any) -> bool:
    """03. Your own ``my_affine_grid(theta, size, align_corners)`` for 2D, compared with
    ``torch.nn.functional.affine_grid`` on random thetas, sizes and both align_corners."""
    import torch.nn.functional as F

    if answer is None:
        return _verdict(None, None, "", "")
    if not callable(answer):
        return _verdict(answer, None, "", "pass the function itself, not its result.")
    gen = torch.Generator().manual_seed(0)
    problem = ""
    for size, align in [((2, 1, 5, 7), False), ((3, 2, 4, 4), True), ((1, 1, 1, 6), False)]:
        theta = torch.randn(size[0], 2, 3, generator=gen)
        expected = F.affine_grid(theta, list(size), align_corners=align)
        try:
            got = torch.as_tensor(answer(theta, size, align))
        except Exception as error:  # noqa: BLE001 - any failure of learner code is a hint
            problem = f"calling it raised {type(error).__name__}: {error}"
            break
        if tuple(got.shape) != tuple(expected.shape):
            problem = f"for size={size} it returned shape {tuple(got.shape)}, " \
                      f"expected {tuple(expected.shape)}"
            break
        if not torch.allclose(got.to(expected.dtype), expected, atol=1e-5):
            problem = f"for size={size}, align_corners={align} the values differ; check the " \
                      "pixel-centre coordinates and that x comes before y"
            break
    return _verdict(answer, not problem, "your grid matches torch's.", problem)


# --- 04: sampler ------------------------------------------------------------


def check_bilinear_value(answer: Any) -> bool:
    """04. Bilinear interpolation of the image [[0, 1, 2], [3, 4, 5]] (H=2, W=3) at pixel
    coordinates x = 1.25 (column), y = 0.5 (row)."""
    value = _as_number(answer)
    ok = None if value is None else abs(value - 2.75) < 1e-4
    hint = "one number. Interpolate along x in both rows (1.25 and 4.25), then along y " \
           "between them."
    if value is not None and abs(value - 3.5) < 1e-4:
        hint = "x is the column and y the row: 1.25 is between columns 1 and 2."
    return _verdict(answer, ok, "0.5 * 1.25 + 0.5 * 4.25 = 2.75.", hint)


def check_padding_mode(answer: Any) -> bool:
    """04. Which ``padding_mode`` makes a sample far outside the image return the value of
    the nearest edge pixel?"""
    ok = None if not isinstance(answer, str) else answer.strip().lower() == "border"
    hint = "one of the strings 'zeros', 'border', 'reflection'."
    if isinstance(answer, str) and answer.strip().lower() == "reflection":
        hint = "'reflection' mirrors the coordinate back inside; far away it may land on " \
               "any pixel, not the nearest edge."
    return _verdict(answer, ok, "'border' clamps the coordinate to the edge.", hint)


def check_bilinear_weights(answer: Any) -> bool:
    """04. Sample a 2x2 image at pixel coordinates x = 0.25, y = 0.5. The gradient of the
    sample with respect to the image, as a (2, 2) tensor."""
    weights = _as_tensor(answer, (2, 2))
    ok = _close(weights, [[0.375, 0.125], [0.375, 0.125]])
    hint = "a 2x2 matrix. The output is sum(weight * pixel), so d out / d pixel is that " \
           "pixel's bilinear weight: (1 - |dx|) * (1 - |dy|)."
    if ok is False and _close(weights, [[0.375, 0.375], [0.125, 0.125]]):
        hint = "rows are y and columns are x: x = 0.25 is close to column 0."
    return _verdict(answer, ok, "the gradient w.r.t. the image is the bilinear weights; "
                    "they sum to 1.", hint)


# --- 05: training -----------------------------------------------------------


def check_zoom_direction(answer: Any) -> bool:
    """05. The transformer learned theta = [[0.6, 0, 0], [0, 0.6, 0]]. Does its output
    show the digit larger (``"in"``) or smaller (``"out"``) than the input?"""
    ok = None if not isinstance(answer, str) else answer.strip().lower() in {"in", "larger"}
    hint = "the string 'in' or 'out'. The output's corners read the input at +-0.6: " \
           "does the output show more or less of the input than before?"
    return _verdict(answer, ok, "a scale below 1 samples a smaller window of the input and "
                    "stretches it over the whole output: it zooms in.", hint)


def check_undo_angle(answer: Any) -> bool:
    """05. A test digit was made with ``grid_sample(upright, affine_grid(R(40 deg)))``.
    Which rotation angle (degrees) must the transformer's theta have to make it upright?"""
    value = _as_number(answer)
    ok = None if value is None else abs((value + 40) % 360) < 1e-3 or \
        abs((value + 40) % 360 - 360) < 1e-3
    hint = "one number in degrees. output(p) = rotated(theta p) = upright(R(40) theta p): " \
           "which theta makes R(40) @ theta the identity?"
    if value is not None and abs(value - 40) < 1e-3:
        hint = "applying R(40) again rotates further: the transformer has to invert it."
    return _verdict(answer, ok, "theta = R(40)^-1 = R(-40).", hint)


# ---------------------------------------------------------------------------
# Notebook 06: the paper's distorted MNIST (owner: issue 7).
# ---------------------------------------------------------------------------


def check_projective_from_affine(answer: Any) -> bool:
    """06. The 8 projective parameters ``(p0, ..., p7)`` whose grid equals
    ``affine_grid`` of theta = [[0.8, -0.2, 0.1], [0.3, 0.9, 0.0]]."""
    params = _as_tensor(answer, (8,))
    expected = [0.8, -0.2, 0.1, 0.3, 0.9, 0.0, 0.0, 0.0]
    ok = _close(params, expected)
    hint = ("8 numbers: the first six are theta's rows read left to right, the last two fill "
            "the bottom row [p6, p7, 1] of the homography.")
    if ok is False and _close(params[6:], [0.0, 0.0]) is False:
        hint = ("the bottom row must be [0, 0, 1] for the division by w to do nothing: "
                "p6 = p7 = 0.")
    return _verdict(answer, ok, "with a bottom row [0, 0, 1], w = 1 everywhere and the "
                    "homography is exactly the affine map.", hint)


def check_tps_identity(answer: Any) -> bool:
    """06. What the TPS localisation network outputs at initialisation: the 16 control
    points of the regular 4x4 grid over [-1, 1], as (16, 2) (x varies fastest) or (32,)."""
    from stnlib.tps import tps_control_points

    points = _as_tensor(answer, (16, 2))
    if points is None:
        flat = _as_tensor(answer, (32,))
        points = None if flat is None else flat.reshape(16, 2)
    ok = _close(points, tps_control_points(dtype=torch.float64))
    hint = ("16 points (x, y) with x and y in {-1, -1/3, 1/3, 1}: torch.linspace(-1, 1, 4) "
            "and torch.meshgrid(..., indexing='ij'), stacked as (x, y).")
    if ok is False and _close(points.flip(-1), tps_control_points(dtype=torch.float64)):
        hint = "x comes first in each pair (x along the width, as in grids): swap the columns."
    return _verdict(answer, ok, "each control point samples itself, and a thin-plate spline "
                    "through those points is the identity warp.", hint)


def check_scaled_shift_homography(answer: Any) -> bool:
    """06. The 3x3 matrix the grid needs (normalized target -> source) to show a 28x28 digit
    shrunk to 0.8 of its size about the centre, then moved 7 pixels to the right."""
    matrix = _as_tensor(answer, (3, 3))
    expected = [[1.25, 0.0, -0.625], [0.0, 1.25, 0.0], [0.0, 0.0, 1.0]]
    ok = _close(matrix, expected)
    hint = ("a 3x3 matrix. Work in normalized units: 7 pixels of a 28-pixel image is 7 / 14 = "
            "0.5. Forward the digit point p goes to 0.8 p + (0.5, 0); the grid needs the "
            "inverse, p = (q - (0.5, 0)) / 0.8.")
    if ok is False and _close(matrix, [[0.8, 0.0, 0.5], [0.0, 0.8, 0.0], [0.0, 0.0, 1.0]]):
        hint = ("that is the forward map (digit -> image). The grid asks, for each output "
                "pixel, where to read in the digit: invert it.")
    elif ok is False and _close(matrix, [[1.25, 0.0, -8.75], [0.0, 1.25, 0.0], [0, 0, 1.0]]):
        hint = "the shift must be in normalized units: 7 pixels = 7 / 14 = 0.5."
    return _verdict(answer, ok, "scale 1 / 0.8 = 1.25 and shift -0.5 / 0.8 = -0.625: the grid "
                    "always holds the inverse of the motion you see.", hint)


# --- 07: the 3D spatial transformer ------------------------------------------


def check_depth_shift_theta(answer: Any) -> bool:
    """07. theta (3, 4) that moves the content of a 32 x 32 x 32 volume 8 voxels towards
    +z (deeper slices), with ``align_corners=False`` and nothing else changed."""
    theta = _as_tensor(answer, (3, 4))
    if theta is None:
        theta = _as_tensor(answer, (1, 3, 4))
        theta = None if theta is None else theta[0]
    expected = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -0.5]]
    ok = _close(theta, expected)
    hint = ("a 3x4 matrix [[1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz]]. One voxel is 2 / 32 "
            "in normalized units, and theta says where each output voxel *reads*.")
    if ok is False and _close(theta, [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0.5]]):
        hint = ("right size, wrong direction: theta maps output to input, so to see the content "
                "at z + 0.5 each output voxel must read from z - 0.5.")
    elif ok is False and theta is not None and abs(abs(float(theta[2, 3])) - 8) < 1e-3:
        hint = "theta works in normalized units (-1..1 across the volume), not in voxels."
    elif ok is False and theta is not None and abs(abs(float(theta[2, 3])) - 0.25) < 1e-3:
        hint = "the volume spans 2 normalized units over 32 voxels: 8 voxels are 8 * 2 / 32."
    elif ok is False and theta is not None and abs(float(theta[0, 3])) > 1e-3:
        hint = "the last column is (tx, ty, tz) for (x, y, z): depth is z, the third row."
    return _verdict(answer, ok, "8 voxels = 0.5 normalized, and the sign flips because the "
                    "grid reads from where the content comes from.", hint)


def check_undo_pose_theta(answer: Any) -> bool:
    """07. A canonical volume was put in pose ``P = compose(rotation_z(30 deg),
    translation_3d(0.1, 0, 0))`` (rotate, then shift; P maps canonical to posed
    coordinates). Which theta (3, 4) must a spatial transformer predict so that its output
    is the canonical volume again?"""
    import math

    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    theta = _as_tensor(answer, (3, 4))
    if theta is None:
        theta = _as_tensor(answer, (1, 3, 4))
        theta = None if theta is None else theta[0]
    pose = torch.tensor([[c, -s, 0.0, 0.1], [s, c, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0],
                         [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    ok = _close(theta, pose[:3])
    hint = ("a 3x4 matrix. The transformer's output is the canonical volume and its input the "
            "posed one, and theta maps output coordinates to input coordinates.")
    if ok is False and _close(theta, torch.linalg.inv(pose)[:3]):
        hint = ("that is P^-1, the theta that *made* the posed volume from the canonical one. "
                "To go back, each canonical output voxel must read where P sent it.")
    elif ok is False and _close(theta[:, :3], pose[:3, :3]):
        hint = "the rotation part is right; check the translation column (tx, ty, tz)."
    elif ok is False and _close(theta[:, :3], pose[:3, :3].T):
        hint = "that rotation turns by -30 degrees; the minus sign belongs above the diagonal."
    return _verdict(answer, ok, "theta = P itself: the grid of the canonical output reads "
                    "the posed input at P x. Learned thetas are poses.", hint)
