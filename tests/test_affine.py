"""stnlib.affine: homogeneous matrices, coordinate conventions, and the OpenCV bridge."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stnlib import affine as A
from stnlib.grid import affine_grid
from stnlib.sampler import grid_sample

# ---------------------------------------------------------------------------
# Matrices
# ---------------------------------------------------------------------------


def test_rotation_2d_quarter_turn():
    r = A.rotation_2d(math.pi / 2)
    assert r.shape == (1, 3, 3)
    point = torch.tensor([1.0, 0.0, 1.0])
    torch.testing.assert_close(r[0] @ point, torch.tensor([0.0, 1.0, 1.0]))


def test_batching_and_broadcasting():
    angles = torch.tensor([0.0, 0.5, 1.0])
    assert A.rotation_2d(angles).shape == (3, 3, 3)
    s = A.scaling_2d(torch.tensor([1.0, 2.0]), 3.0)
    assert s.shape == (2, 3, 3) and s[1, 0, 0] == 2 and s[1, 1, 1] == 3
    assert A.translation_3d(1.0, torch.tensor([0.0, 1.0, 2.0]), 0.0).shape == (3, 4, 4)
    assert A.rotation_2d(torch.tensor(0.3, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(ValueError, match="batch sizes of the arguments do not agree"):
        A.scaling_2d(torch.ones(2), torch.ones(3))
    with pytest.raises(ValueError, match=r"shape \(\) or \(N,\)"):
        A.rotation_2d(torch.ones(2, 2))
    with pytest.raises(TypeError, match="float or a tensor"):
        A.rotation_2d("90deg")


def test_shear_and_translation():
    p = torch.tensor([2.0, 3.0, 1.0])
    torch.testing.assert_close(A.shear_2d(0.5)[0] @ p, torch.tensor([3.5, 3.0, 1.0]))
    torch.testing.assert_close(A.shear_2d(0.0, 2.0)[0] @ p, torch.tensor([2.0, 7.0, 1.0]))
    torch.testing.assert_close(A.translation_2d(1, -1)[0] @ p, torch.tensor([3.0, 2.0, 1.0]))


def test_compose_applies_left_to_right():
    scale_then_shift = A.compose(A.scaling_2d(2.0), A.translation_2d(1.0, 0.0))
    p = torch.tensor([1.0, 1.0, 1.0])
    torch.testing.assert_close(scale_then_shift[0] @ p, torch.tensor([3.0, 2.0, 1.0]))
    shift_then_scale = A.compose(A.translation_2d(1.0, 0.0), A.scaling_2d(2.0))
    torch.testing.assert_close(shift_then_scale[0] @ p, torch.tensor([4.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="mix 2D"):
        A.compose(A.scaling_2d(1.0), A.scaling_3d(1.0))
    with pytest.raises(ValueError, match="at least one"):
        A.compose()


def test_rotations_3d():
    a = 0.7
    axes = (([1, 0, 0], A.rotation_x), ([0, 1, 0], A.rotation_y), ([0, 0, 1], A.rotation_z))
    for axis, rot in axes:
        torch.testing.assert_close(A.rotation_axis_angle(axis, a), rot(a))
    axes = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]])
    r = A.rotation_axis_angle(axes, torch.tensor([0.4, 1.0]))
    lin = r[:, :3, :3]
    torch.testing.assert_close(lin @ lin.transpose(1, 2), torch.eye(3).expand(2, 3, 3))
    torch.testing.assert_close(torch.linalg.det(lin), torch.ones(2))
    # the axis itself is fixed
    axis = torch.tensor([1.0, 2.0, 3.0]) / math.sqrt(14)
    torch.testing.assert_close(lin[0] @ axis, axis)
    # quarter turn about z takes x to y (right-handed)
    torch.testing.assert_close(A.rotation_z(math.pi / 2)[0, :3, :3] @ torch.tensor([1.0, 0, 0]),
                               torch.tensor([0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="non-zero"):
        A.rotation_axis_angle([0.0, 0.0, 0.0], 1.0)
    with pytest.raises(ValueError, match=r"\(3,\) or \(N, 3\)"):
        A.rotation_axis_angle([1.0, 0.0], 1.0)


def test_invert_and_theta_round_trip():
    m = A.compose(A.rotation_2d(torch.tensor([0.3, -1.2])), A.scaling_2d(1.5, 0.5),
                  A.translation_2d(0.2, -0.4))
    torch.testing.assert_close(A.invert(m) @ m, torch.eye(3).expand(2, 3, 3))
    theta = A.to_theta(m)
    assert theta.shape == (2, 2, 3)
    torch.testing.assert_close(A.to_homogeneous(theta), m)
    torch.testing.assert_close(A.invert(theta), A.to_theta(A.invert(m)))
    m3 = A.compose(A.rotation_y(0.4), A.scaling_3d(2.0), A.translation_3d(1.0, 2.0, 3.0))
    torch.testing.assert_close(A.invert(A.to_theta(m3)), A.to_theta(torch.linalg.inv(m3)))
    projective = torch.eye(3).unsqueeze(0).clone()
    projective[0, 2, 0] = 0.1
    with pytest.raises(ValueError, match="not affine"):
        A.to_theta(projective)
    with pytest.raises(ValueError, match=r"\(N, 2, 3\) or \(N, 3, 4\)"):
        A.to_homogeneous(torch.zeros(1, 3, 3))


def test_identity_theta():
    assert torch.equal(A.identity_theta(2), torch.tensor([[1.0, 0, 0], [0, 1, 0]]).expand(2, 2, 3))
    t3 = A.identity_theta(1, dim=3, dtype=torch.float64)
    assert t3.shape == (1, 3, 4) and t3.dtype == torch.float64
    with pytest.raises(ValueError, match="dim must be 2 or 3"):
        A.identity_theta(1, dim=4)


def test_affine_module_is_exported():
    import stnlib

    assert stnlib.affine is A and "affine" in stnlib.__all__
    assert stnlib.theta_from_pixel_matrix is A.theta_from_pixel_matrix


def test_helpers_are_differentiable():
    angle = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([1.5], dtype=torch.float64, requires_grad=True)

    def chain(a, s):
        return A.to_theta(A.compose(A.rotation_2d(a), A.scaling_2d(s), A.shear_2d(s, a)))

    assert torch.autograd.gradcheck(chain, (angle, scale))
    axis = torch.tensor([0.3, -1.0, 0.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda ax, a: A.rotation_axis_angle(ax, a), (axis, angle))


# ---------------------------------------------------------------------------
# Pixel <-> normalized coordinates
# ---------------------------------------------------------------------------


def test_convention_align_corners_true_is_corner_centres():
    size = (5, 9)  # (H, W)
    corners = torch.tensor([[0.0, 0.0], [8.0, 4.0]])  # pixel centres (x, y)
    torch.testing.assert_close(A.pixel_to_normalized(corners, size, align_corners=True),
                               torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))


def test_convention_align_corners_false_is_outer_edges():
    size = (5, 9)
    edges = torch.tensor([[-0.5, -0.5], [8.5, 4.5]])  # outer edges of the corner pixels
    torch.testing.assert_close(A.pixel_to_normalized(edges, size, align_corners=False),
                               torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))


@pytest.mark.parametrize("align_corners", [False, True])
def test_normalized_pixel_round_trip_and_grid_agreement(align_corners):
    size = (4, 6, 7)  # (D, H, W)
    pix = torch.rand(10, 3, dtype=torch.float64) * 5
    back = A.normalized_to_pixel(A.pixel_to_normalized(pix, size, align_corners), size,
                                 align_corners)
    torch.testing.assert_close(back, pix)
    # the identity grid holds the normalized coordinates of the pixel centres
    grid = affine_grid(A.identity_theta(1, dtype=torch.float64), (1, 1, 6, 7), align_corners)
    pixels = A.normalized_to_pixel(grid, (6, 7), align_corners)
    xs, ys = torch.meshgrid(torch.arange(7.0), torch.arange(6.0), indexing="xy")
    torch.testing.assert_close(pixels[0], torch.stack([xs, ys], -1).double())


def test_pixel_conversion_errors():
    with pytest.raises(ValueError, match="must end in 2"):
        A.pixel_to_normalized(torch.zeros(4, 3), (5, 5))
    with pytest.raises(ValueError, match="1-pixel axis"):
        A.pixel_to_normalized(torch.zeros(1, 2), (1, 5), align_corners=True)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(D, H, W\)"):
        A.normalized_to_pixel(torch.zeros(1, 2), (0, 5))
    # a 1-pixel axis without align_corners is fine: its centre is normalized 0
    assert A.pixel_to_normalized(torch.zeros(1, 2), (1, 1)).tolist() == [[0.0, 0.0]]


# ---------------------------------------------------------------------------
# The OpenCV bridge
# ---------------------------------------------------------------------------


def reference_warp_affine(src: torch.Tensor, m: torch.Tensor, dsize: tuple[int, int]):
    """cv2.warpAffine(src, M, (W, H), flags=INTER_LINEAR, borderMode=BORDER_CONSTANT, 0) by its
    documented definition ``dst(x, y) = src(M^-1 (x, y))``, pixel centres at integers, computed
    exactly in float64 (real OpenCV rounds the interpolation weights to 1/32 pixel). A loop
    over destination pixels, deliberately unlike the code under test."""
    h_dst, w_dst = dsize
    h_src, w_src = src.shape
    inv = torch.linalg.inv(torch.cat([m.double(), torch.tensor([[0.0, 0.0, 1.0]])]))
    dst = torch.zeros(h_dst, w_dst, dtype=torch.float64)

    def pixel(x, y):
        return float(src[y, x]) if 0 <= x < w_src and 0 <= y < h_src else 0.0

    for y in range(h_dst):
        for x in range(w_dst):
            sx, sy, _ = (inv @ torch.tensor([x, y, 1.0], dtype=torch.float64)).tolist()
            x0, y0 = math.floor(sx), math.floor(sy)
            ax, ay = sx - x0, sy - y0
            dst[y, x] = ((1 - ax) * (1 - ay) * pixel(x0, y0) + ax * (1 - ay) * pixel(x0 + 1, y0)
                         + (1 - ax) * ay * pixel(x0, y0 + 1) + ax * ay * pixel(x0 + 1, y0 + 1))
    return dst


def _warp(src, m, src_size, dst_size, align_corners, mode="bilinear"):
    theta = A.theta_from_pixel_matrix(m, src_size, dst_size, align_corners)
    grid = affine_grid(theta, (1, 1, *dst_size), align_corners)
    return grid_sample(src[None, None], grid, mode, "zeros", align_corners)[0, 0]


def _rotation_about(cx, cy, angle, scale=1.0, tx=0.0, ty=0.0):
    """cv2.getRotationMatrix2D((cx, cy), degrees(angle), scale) plus a shift."""
    a, b = scale * math.cos(angle), scale * math.sin(angle)
    return torch.tensor([[a, b, (1 - a) * cx - b * cy + tx], [-b, a, b * cx + (1 - a) * cy + ty]],
                        dtype=torch.float64)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(
    ("m", "src_size", "dst_size"),
    [
        (_rotation_about(4.0, 3.0, 0.4, 1.2, 0.5, -1.0), (7, 9), (7, 9)),
        (_rotation_about(2.5, 5.5, -1.1, 0.8), (11, 6), (8, 13)),
        (torch.tensor([[1.3, 0.4, -2.0], [-0.2, 0.9, 1.5]], dtype=torch.float64), (6, 8), (9, 5)),
    ],
    ids=["rts-square", "rs-resize", "general"],
)
def test_warp_matches_reference_warp_affine(m, src_size, dst_size, align_corners):
    """Tolerance 1e-9: both sides compute the same bilinear formula in float64."""
    src = torch.rand(src_size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = reference_warp_affine(src, m, dst_size)
    got = _warp(src, m, src_size, dst_size, align_corners)
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("align_corners", [False, True])
def test_integer_transforms_are_exact_in_float32(align_corners):
    """Flips, quarter turns and whole-pixel shifts land on pixel centres, where no
    interpolation rounding can differ: float32 nearest sampling equals the reference exactly."""
    src = torch.arange(30, dtype=torch.float32).reshape(5, 6)
    cases = [
        (torch.tensor([[-1.0, 0, 5], [0, 1, 0]]), (5, 6)),  # horizontal flip
        (torch.tensor([[0.0, 1, 0], [-1, 0, 5]]), (6, 5)),  # quarter turn: (x, y) -> (y, 5 - x)
        (torch.tensor([[1.0, 0, 2], [0, 1, -1]]), (5, 6)),  # shift right 2, up 1
    ]
    for m, dst_size in cases:
        expected = reference_warp_affine(src.double(), m.double(), dst_size).float()
        got = _warp(src, m, (5, 6), dst_size, align_corners, mode="nearest")
        assert torch.equal(got, expected)


@pytest.mark.parametrize("align_corners", [False, True])
def test_bridge_round_trip(align_corners):
    gen = torch.Generator().manual_seed(1)
    m = torch.eye(2, 3, dtype=torch.float64) + 0.3 * torch.randn(4, 2, 3, generator=gen,
                                                                 dtype=torch.float64)
    theta = A.theta_from_pixel_matrix(m, (20, 30), (10, 40), align_corners)
    assert theta.shape == (4, 2, 3)
    back = A.pixel_matrix_from_theta(theta, (20, 30), (10, 40), align_corners)
    torch.testing.assert_close(back, m)
    # identity pixel matrix on equal sizes is the identity theta in both conventions
    eye = A.theta_from_pixel_matrix(torch.eye(2, 3), (7, 9), (7, 9), align_corners)
    torch.testing.assert_close(eye, A.identity_theta(1))
    # a whole-image shift by one pixel is 2 / W in normalized units (align_corners=False)
    shift = A.theta_from_pixel_matrix(torch.tensor([[1.0, 0, 1], [0, 1, 0]]), (4, 8), (4, 8))
    assert shift[0, 0, 2].item() == pytest.approx(-2 / 8)


def test_bridge_3d_round_trip():
    m = torch.eye(3, 4, dtype=torch.float64)
    m[:, 3] = torch.tensor([1.0, -2.0, 0.5])
    theta = A.theta_from_pixel_matrix(m, (4, 5, 6), (4, 5, 6))
    assert theta.shape == (1, 3, 4)
    torch.testing.assert_close(A.pixel_matrix_from_theta(theta, (4, 5, 6), (4, 5, 6)), m[None])


def test_rotation_about_pixel_keeps_that_pixel():
    size = (9, 11)
    theta = A.rotation_about_pixel(0.9, center=(2.0, 6.0), size=size)
    src = torch.zeros(1, 1, *size, dtype=torch.float64)
    src[0, 0, 6, 2] = 1.0
    grid = affine_grid(theta.double(), src.shape)
    out = grid_sample(src, grid)
    assert out[0, 0, 6, 2].item() == pytest.approx(1.0)


def test_bridge_errors():
    with pytest.raises(ValueError, match=r"M must have shape \(2, 3\) or \(N, 2, 3\)"):
        A.theta_from_pixel_matrix(torch.eye(3), (4, 4), (4, 4))
    with pytest.raises(ValueError, match="both be"):
        A.theta_from_pixel_matrix(torch.eye(2, 3), (4, 4), (4, 4, 4))
    with pytest.raises(ValueError, match="NaN or inf"):
        A.theta_from_pixel_matrix(torch.full((2, 3), float("nan")), (4, 4), (4, 4))
    with pytest.raises(ValueError, match="singular"):
        A.pixel_matrix_from_theta(torch.zeros(1, 2, 3), (4, 4), (4, 4))
    with pytest.raises(ValueError, match="1-pixel axis"):
        A.theta_from_pixel_matrix(torch.eye(2, 3), (1, 4), (4, 4), align_corners=True)


def test_bridge_against_torch_sampler_too():
    """Same warp through torch's own affine_grid/grid_sample (the oracle)."""
    src = torch.rand(7, 9, dtype=torch.float64)
    m = _rotation_about(4.0, 3.0, 0.7)
    theta = A.theta_from_pixel_matrix(m, (7, 9), (7, 9))
    grid = F.affine_grid(theta, [1, 1, 7, 9], align_corners=False)
    out = F.grid_sample(src[None, None], grid, align_corners=False)[0, 0]
    torch.testing.assert_close(out, reference_warp_affine(src, m, (7, 9)), atol=1e-9, rtol=0)
