"""stnlib.sampler.grid_sample against torch.nn.functional.grid_sample (the oracle).

Smoke / exactness over every mode x padding x align_corners x 2D/3D / gradients /
gradcheck / errors. Grids are random and non-integer on purpose where gradients are
compared: at integer pixel coordinates the bilinear gradient has a kink, and both
torch and stnlib take the right-hand derivative there (checked separately below).
"""

from __future__ import annotations

import itertools
import zlib

import pytest
import torch
import torch.nn.functional as F

from stnlib import sampler
from stnlib.affine import identity_theta
from stnlib.grid import affine_grid
from stnlib.sampler import grid_sample

MODES = ["bilinear", "nearest"]
PADDINGS = ["zeros", "border", "reflection"]
SIZES_2D = [(5, 7), (1, 1), (1, 6), (4, 1), (28, 28), (9, 3)]
SIZES_3D = [(3, 4, 5), (1, 1, 1), (2, 1, 3), (5, 3, 1)]
PAD_ALIGN = list(itertools.product(PADDINGS, [0, 1]))
COMBOS = list(itertools.product(MODES, PADDINGS, [False, True]))


@pytest.fixture
def no_torch_oracle(monkeypatch):
    """Make torch's grid generator and sampler raise while the from-scratch code runs."""

    def forbidden(*args, **kwargs):
        raise AssertionError("from-scratch code called torch's implementation")

    for name in ("affine_grid", "grid_sample"):
        monkeypatch.setattr(F, name, forbidden)
    for name in ("grid_sampler", "grid_sampler_2d", "grid_sampler_3d", "affine_grid_generator"):
        monkeypatch.setattr(torch, name, forbidden)


def _random_case(spatial, out_spatial, dtype, seed, n=2, c=3, spread=1.4):
    """Random input and a random grid reaching outside [-1, 1] (exercises the padding)."""
    gen = torch.Generator().manual_seed(seed)
    d = len(spatial)
    x = torch.randn(n, c, *spatial, generator=gen, dtype=dtype)
    grid = (torch.rand(n, *out_spatial, d, generator=gen, dtype=dtype) * 2 - 1) * spread
    return x, grid


def _grads(fn, x, grid, weights):
    x = x.detach().requires_grad_()
    grid = grid.detach().requires_grad_()
    out = fn(x, grid)
    gx, gg = torch.autograd.grad((out * weights).sum(), (x, grid))
    return out, gx, gg


@pytest.mark.parametrize(("mode", "padding_mode", "align_corners"), COMBOS)
@pytest.mark.parametrize("spatial", SIZES_2D + SIZES_3D, ids=str)
def test_matches_torch_float32(mode, padding_mode, align_corners, spatial):
    out_spatial = (4, 6) if len(spatial) == 2 else (3, 2, 4)
    seed = zlib.crc32(repr((mode, padding_mode, align_corners, spatial)).encode())
    x, grid = _random_case(spatial, out_spatial, torch.float32, seed)
    args = (mode, padding_mode, align_corners)
    # seeded like the case: drawn from the global generator, the weights (and so the
    # float32 rounding of the grid gradient) depended on which tests ran before
    weights = torch.randn(x.shape[0], x.shape[1], *out_spatial,
                          generator=torch.Generator().manual_seed(seed + 1))
    out, gx, gg = _grads(lambda i, g: grid_sample(i, g, *args), x, grid, weights)
    ref, rgx, rgg = _grads(lambda i, g: F.grid_sample(i, g, *args), x, grid, weights)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(gx, rgx, atol=1e-5, rtol=0)
    torch.testing.assert_close(gg, rgg, atol=1e-4, rtol=1e-5)  # sums of many terms


@pytest.mark.parametrize(("mode", "padding_mode", "align_corners"), COMBOS)
@pytest.mark.parametrize("dims", [2, 3])
def test_random_thetas_match_torch_float64(mode, padding_mode, align_corners, dims):
    """Grids from random affine thetas, non-square outputs, against torch in float64."""
    gen = torch.Generator().manual_seed(dims * 100 + len(mode) + len(padding_mode))
    spatial = (7, 10) if dims == 2 else (5, 6, 7)
    out_size = (3, 2, 9, 5) if dims == 2 else (3, 2, 4, 3, 5)
    theta = identity_theta(3, dim=dims, dtype=torch.float64)
    theta = theta + 0.6 * torch.randn(theta.shape, generator=gen, dtype=torch.float64)
    grid = affine_grid(theta, out_size, align_corners=align_corners)
    x = torch.randn(3, 2, *spatial, generator=gen, dtype=torch.float64)
    args = (mode, padding_mode, align_corners)
    weights = torch.randn(out_size, generator=gen, dtype=torch.float64)
    out, gx, gg = _grads(lambda i, g: grid_sample(i, g, *args), x, grid, weights)
    ref, rgx, rgg = _grads(lambda i, g: F.grid_sample(i, g, *args), x, grid, weights)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(gx, rgx, atol=1e-12, rtol=0)
    torch.testing.assert_close(gg, rgg, atol=1e-10, rtol=0)


@pytest.mark.parametrize(("padding_mode", "align_corners"), PAD_ALIGN)
@pytest.mark.parametrize("dims", [2, 3])
def test_gradcheck(padding_mode, align_corners, dims):
    spatial = (3, 4) if dims == 2 else (2, 3, 2)
    out_spatial = (2, 3) if dims == 2 else (2, 2, 2)
    x, grid = _random_case(spatial, out_spatial, torch.float64, seed=dims, n=2, c=2, spread=1.8)
    x.requires_grad_()
    grid.requires_grad_()

    def bilinear(i, g):
        return grid_sample(i, g, "bilinear", padding_mode, bool(align_corners))

    assert torch.autograd.gradcheck(bilinear, (x, grid))

    def nearest(i):
        return grid_sample(i, grid.detach(), "nearest", padding_mode, bool(align_corners))

    assert torch.autograd.gradcheck(nearest, (x,))


def test_nearest_grid_gradient_is_zero_like_torch():
    x, grid = _random_case((4, 5), (3, 3), torch.float64, seed=3)
    grid.requires_grad_()
    (g,) = torch.autograd.grad(grid_sample(x, grid, "nearest").sum(), grid)
    assert torch.equal(g, torch.zeros_like(grid))


def test_kink_at_integer_coordinates_takes_right_derivative():
    """At an integer pixel coordinate, the gradient uses the pixel pair (x, x + 1), like torch."""
    x = torch.tensor([[[[0.0, 1.0, 5.0, 6.0]]]], dtype=torch.float64)
    grid = torch.tensor([[[[-0.25, 0.0]]]], dtype=torch.float64, requires_grad=True)  # pixel 1
    for fn in (grid_sample, F.grid_sample):
        (g,) = torch.autograd.grad(fn(x, grid, align_corners=False).sum(), grid)
        # d out / d x_pixel = x[2] - x[1] = 4; d x_pixel / d x_normalized = W / 2 = 2
        assert g[0, 0, 0, 0].item() == pytest.approx(8.0)


@pytest.mark.parametrize(("mode", "padding_mode", "align_corners"), COMBOS)
def test_border_exactly_on_corner_pixels_matches_torch(mode, padding_mode, align_corners):
    """Identity grids with align_corners=True put points exactly on the border, where torch
    passes no gradient through border/reflection clipping; so does stnlib."""
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64)
    grid = affine_grid(identity_theta(1, dtype=torch.float64), x.shape, align_corners)
    args = (mode, padding_mode, align_corners)
    w = torch.randn(1, 2, 4, 5, dtype=torch.float64)
    _, gx, gg = _grads(lambda i, g: grid_sample(i, g, *args), x, grid, w)
    _, rgx, rgg = _grads(lambda i, g: F.grid_sample(i, g, *args), x, grid, w)
    torch.testing.assert_close(gx, rgx)
    torch.testing.assert_close(gg, rgg)


@pytest.mark.parametrize(("mode", "padding_mode", "align_corners"), COMBOS)
@pytest.mark.parametrize("spatial", [(4, 8), (1, 1), (5, 9), (3, 4, 5), (8, 2, 4)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identity_theta_returns_input(mode, padding_mode, align_corners, spatial, dtype):
    """Nearest returns the input bit for bit. Bilinear too wherever the identity grid is
    exactly representable; otherwise (e.g. 1/9 in float32) the grid itself is rounded,
    by torch as by stnlib, and both give the same values within a few ulps."""
    x = torch.rand(2, 3, *spatial, dtype=dtype)
    theta = identity_theta(2, dim=len(spatial), dtype=dtype)
    grid = affine_grid(theta, x.shape, align_corners=align_corners)
    out = grid_sample(x, grid, mode, padding_mode, align_corners)
    representable = all(s & (s - 1) == 0 for s in spatial) and not align_corners
    if mode == "nearest" or representable:
        assert torch.equal(out, x)
    else:
        tol = 1e-6 if dtype == torch.float32 else 1e-14
        torch.testing.assert_close(out, x, atol=tol, rtol=0)
        ref = F.grid_sample(x, grid, mode, padding_mode, align_corners)
        torch.testing.assert_close(out, ref, atol=tol, rtol=0)


def test_never_calls_torch(no_torch_oracle):
    x = torch.rand(2, 1, 5, 6, requires_grad=True)
    theta = identity_theta(2) + 0.1
    for mode, padding_mode in itertools.product(MODES, PADDINGS):
        out = grid_sample(x, affine_grid(theta, (2, 1, 4, 4)), mode, padding_mode)
        out.sum().backward()
    x3 = torch.rand(1, 1, 3, 4, 5)
    grid3 = affine_grid(identity_theta(1, dim=3), (1, 1, 2, 2, 2), align_corners=True)
    assert grid_sample(x3, grid3, align_corners=True).shape == (1, 1, 2, 2, 2)


def test_shapes_and_dtype_preserved():
    x = torch.rand(3, 4, 10, 12, dtype=torch.float64)
    grid = torch.zeros(3, 5, 7, 2, dtype=torch.float64)
    out = grid_sample(x, grid)
    assert out.shape == (3, 4, 5, 7) and out.dtype == torch.float64
    assert grid_sample(torch.rand(2, 1, 3, 4, 5), torch.zeros(2, 6, 1, 2, 3)).shape == (
        2, 1, 6, 1, 2,
    )


def test_nan_grid_gives_nan_not_a_crash():
    x = torch.rand(1, 1, 4, 4)
    grid = torch.full((1, 2, 2, 2), float("nan"))
    for padding_mode in PADDINGS:
        out = grid_sample(x, grid, padding_mode=padding_mode)
        assert out.shape == (1, 1, 2, 2)
    grid = torch.full((1, 1, 1, 2), float("inf"))
    assert grid_sample(x, grid).item() == 0.0  # far outside reads the zero background


def test_reflect_coordinates_matches_torch_rule():
    """The reflection step alone, on many coordinates, against a direct port of torch's
    scalar reflect_coordinates (fmod form), for both conventions and 1-pixel axes."""

    def torch_rule(v, twice_low, twice_high):
        if twice_low == twice_high:
            return 0.0
        low, span = twice_low / 2, (twice_high - twice_low) / 2
        v = abs(v - low)
        extra = v % span
        flips = int(v // span)
        return extra + low if flips % 2 == 0 else span - extra + low

    coords = torch.linspace(-13.3, 17.9, 301, dtype=torch.float64)
    for size, align_corners in itertools.product([1, 2, 5], [False, True]):
        bounds = (0, 2 * (size - 1)) if align_corners else (-1, 2 * size - 1)
        got = sampler.reflect_coordinates(coords, size, align_corners)
        expected = [torch_rule(v, *bounds) for v in coords.tolist()]
        expected = torch.tensor(expected, dtype=torch.float64)
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_named_steps():
    assert sampler.unnormalize(torch.tensor([-1.0, 1.0]), 4, True).tolist() == [0.0, 3.0]
    assert sampler.unnormalize(torch.tensor([-1.0, 1.0]), 4, False).tolist() == [-0.5, 3.5]
    assert sampler.clip_coordinates(torch.tensor([-2.0, 1.5, 9.0]), 4).tolist() == [0, 1.5, 3]
    corners = sampler.corner_offsets([10, 7])
    assert corners == [((0, 0), 0), ((1, 0), 1), ((0, 1), 10), ((1, 1), 11)]
    factors = sampler.weight_factors([torch.tensor([0.25]), torch.tensor([0.5])])
    weights = [sampler.corner_weights(factors, bits).item() for bits, _ in corners]
    assert weights == [0.375, 0.125, 0.375, 0.125] and sum(weights) == 1.0
    coords = [torch.tensor([[2.25]]), torch.tensor([[-0.5]])]
    base, fracs = sampler.corner_indices(coords, [10, 7])
    assert base.item() == (-1 + sampler.PAD_LOW) * 10 + 2 + sampler.PAD_LOW
    assert [f.item() for f in fracs] == [0.25, 0.5]


@pytest.mark.parametrize(
    ("input", "grid", "kwargs", "error", "match"),
    [
        (torch.rand(1, 1, 4, 4), torch.zeros(1, 2, 2, 2), {"mode": "cubic"}, ValueError, "mode"),
        (torch.rand(1, 1, 4, 4), torch.zeros(1, 2, 2, 2), {"mode": "bicubic"}, ValueError,
         "bicubic is not implemented"),
        (torch.rand(1, 1, 4, 4), torch.zeros(1, 2, 2, 2), {"padding_mode": "wrap"}, ValueError,
         "padding_mode"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.uint8), torch.zeros(1, 2, 2, 2), {}, TypeError,
         r"floating point input, but got torch.uint8.*input.float\(\) / 255"),
        (torch.rand(1, 1, 4, 4), torch.zeros(1, 2, 2, 2, dtype=torch.float64), {}, TypeError,
         "same dtype, but input has torch.float32 and grid has torch.float64"),
        (torch.rand(2, 1, 4, 4), torch.zeros(3, 2, 2, 2), {}, ValueError, "same batch size"),
        (torch.rand(1, 1, 4, 4), torch.zeros(1, 2, 2, 3), {}, ValueError,
         "size 2 in last dimension"),
        (torch.rand(1, 1, 4, 4, 4), torch.zeros(1, 2, 2, 2, 2), {}, ValueError,
         "size 3 in last dimension"),
        (torch.rand(1, 1, 4, 4), torch.zeros(1, 2, 2, 2, 3), {}, ValueError,
         "same number of dimensions"),
        (torch.rand(1, 4, 4), torch.zeros(1, 2, 2), {}, ValueError, "4D or 5D"),
        (torch.rand(1, 1, 0, 4), torch.zeros(1, 2, 2, 2), {}, ValueError, "non-empty spatial"),
        ([[1.0]], torch.zeros(1, 2, 2, 2), {}, TypeError, "input must be a torch.Tensor"),
    ],
)
def test_errors(input, grid, kwargs, error, match):
    with pytest.raises(error, match=match):
        grid_sample(input, grid, **kwargs)


def test_device_mismatch_is_reported():
    x = torch.rand(1, 1, 4, 4)
    grid = torch.zeros(1, 2, 2, 2, device="meta")
    with pytest.raises(ValueError, match="same device, but input is on cpu and grid is on meta"):
        grid_sample(x, grid)


def test_public_export():
    import stnlib

    assert stnlib.grid_sample is grid_sample


def test_flat_index_stays_exact_beyond_float32_integers():
    """A padded image of 5000 x 5000 has flat indices above 2**24, where float32 cannot
    count by one; corner_indices then sums in float64 and the index is exact."""
    coords = [torch.tensor([[4998.0]]), torch.tensor([[4998.0]])]
    base, _ = sampler.corner_indices(coords, [5000, 5000])
    assert base.item() == (4998 + sampler.PAD_LOW) * 5000 + 4998 + sampler.PAD_LOW


def test_second_derivative_is_refused_not_wrong():
    """The hand-written backward is once-differentiable: asking for a second derivative
    raises instead of silently returning a wrong one."""
    x, grid = _random_case((4, 5), (3, 3), torch.float64, seed=5)
    grid.requires_grad_()
    weights = torch.rand(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad((grid_sample(x, grid) * weights).sum(), grid, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()


def test_corner_indices_is_differentiable_in_the_fraction():
    """Used on its own (as in the notebook), frac = coord - floor(coord) has slope 1."""
    coord = torch.tensor([[1.25, -0.5]], requires_grad=True)
    _, (frac,) = sampler.corner_indices([coord], [8])
    frac.sum().backward()
    assert coord.grad.tolist() == [[1.0, 1.0]]
