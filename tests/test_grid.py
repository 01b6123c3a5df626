"""stnlib.grid.affine_grid against torch.nn.functional.affine_grid (the oracle)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from stnlib import grid as grid_module
from stnlib.affine import identity_theta
from stnlib.grid import affine_grid, base_grid

SIZES = [
    (3, 2, 5, 7),
    (2, 1, 28, 28),
    (2, 1, 1, 1),
    (4, 3, 1, 9),
    (2, 1, 8, 1),
    (2, 1, 3, 4, 5),
    (2, 1, 1, 1, 1),
    (1, 2, 6, 1, 3),
]


def _torch_grid(theta, size, align_corners):
    with warnings.catch_warnings():  # torch warns about unit sizes with align_corners=True
        warnings.simplefilter("ignore", UserWarning)
        return F.affine_grid(theta, list(size), align_corners=align_corners)


@pytest.fixture
def no_torch_oracle(monkeypatch):
    """Make F.affine_grid / F.grid_sample raise while the from-scratch code runs."""

    def forbidden(*args, **kwargs):
        raise AssertionError("from-scratch code called torch's implementation")

    monkeypatch.setattr(F, "affine_grid", forbidden)
    monkeypatch.setattr(F, "grid_sample", forbidden)
    monkeypatch.setattr(torch, "affine_grid_generator", forbidden)


@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torch(size, align_corners, dtype):
    gen = torch.Generator().manual_seed(sum(size) + align_corners)
    d = len(size) - 2
    theta = torch.randn(size[0], d, d + 1, generator=gen, dtype=dtype)
    expected = _torch_grid(theta, size, align_corners)
    got = affine_grid(theta, size, align_corners=align_corners)
    assert got.shape == expected.shape
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_never_calls_torch(no_torch_oracle):
    theta = identity_theta(2)
    grid = affine_grid(theta, (2, 1, 4, 5))
    assert grid.shape == (2, 4, 5, 2)
    grid3 = affine_grid(identity_theta(1, dim=3), (1, 1, 2, 3, 4), align_corners=True)
    assert grid3.shape == (1, 2, 3, 4, 3)


@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_grid_is_pixel_centres(align_corners):
    grid = affine_grid(identity_theta(1), (1, 1, 3, 4), align_corners=align_corners)
    xs = grid[0, 0, :, 0]
    if align_corners:  # corner pixel centres at -1 and +1
        expected = torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0])
    else:  # centres of 4 equal cells tiling [-1, 1]
        expected = torch.tensor([-0.75, -0.25, 0.25, 0.75])
    torch.testing.assert_close(xs, expected)
    assert torch.equal(grid[0, :, 0, 1], grid[0, :, 1, 1])  # y constant along a row


def test_translation_moves_grid():
    theta = identity_theta(1)
    theta[0, 0, 2] = 0.5
    shifted = affine_grid(theta, (1, 1, 3, 3))
    plain = affine_grid(identity_theta(1), (1, 1, 3, 3))
    torch.testing.assert_close(shifted[..., 0], plain[..., 0] + 0.5)
    torch.testing.assert_close(shifted[..., 1], plain[..., 1])


@pytest.mark.parametrize("size", [(2, 1, 3, 4), (2, 1, 2, 3, 2)], ids=str)
def test_gradient_matches_torch(size):
    d = len(size) - 2
    theta = torch.randn(size[0], d, d + 1, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(*size[:1], *size[2:], d, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad((affine_grid(theta, size) * weights).sum(), theta)
    (g_torch,) = torch.autograd.grad((_torch_grid(theta, size, False) * weights).sum(), theta)
    torch.testing.assert_close(g_ours, g_torch)
    assert torch.autograd.gradcheck(lambda t: affine_grid(t, size, True), (theta,))


def test_base_grid_layout():
    base = base_grid((2, 3), align_corners=True, dtype=torch.float64)
    assert base.shape == (2, 3, 3)
    assert base[1, 2].tolist() == [1.0, 1.0, 1.0]  # bottom-right: x=+1, y=+1, 1
    base3 = base_grid((2, 3, 4), align_corners=True, dtype=torch.float64)
    assert base3[0, 0, 3].tolist() == [1.0, -1.0, -1.0, 1.0]  # x is the last (W) axis


@pytest.mark.parametrize(
    ("theta", "size", "error", "match"),
    [
        (torch.zeros(2, 2, 3, dtype=torch.int64), (2, 1, 4, 4), ValueError, "floating point"),
        (torch.zeros(2, 3, 3), (2, 1, 4, 4), ValueError, r"shape Nx2x3 for size"),
        (torch.zeros(2, 2, 3), (2, 1, 4, 4, 4), ValueError, r"shape Nx3x4 for size"),
        (torch.zeros(6), (2, 1, 4, 4), ValueError, r"Got \(6,\)"),
        (torch.zeros(2, 2, 3), (2, 4, 4), ValueError, "only supports 4D and 5D sizes"),
        (torch.zeros(3, 2, 3), (2, 1, 4, 4), ValueError, "batch size 3 but size asks for N=2"),
        (torch.zeros(2, 2, 3), (2, 1, 0, 4), ValueError, "positive output size"),
        (torch.full((1, 2, 3), float("nan")), (1, 1, 4, 4), ValueError, "NaN or inf"),
        ([[1.0, 0, 0], [0, 1, 0]], (1, 1, 4, 4), TypeError, "theta must be a torch.Tensor"),
        (torch.zeros(1, 2, 3), "abc", TypeError, "size must be a sequence of ints"),
    ],
)
def test_errors(theta, size, error, match):
    with pytest.raises(error, match=match):
        affine_grid(theta, size)


def test_module_exports():
    import stnlib

    assert stnlib.affine_grid is grid_module.affine_grid
