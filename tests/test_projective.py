"""Projective grid: identity, equals the affine grid when the last row is [0, 0, 1],
homography from four points, gradcheck, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stnlib.projective import (
    PROJECTIVE_IDENTITY,
    homography_from_params,
    homography_from_points,
    projective_grid,
)


def _random_affine(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 3, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(3, 1, 5, 7), (2, 3, 2, 4), (1, 1, 28, 28)])
def test_last_row_001_equals_affine_grid(size, align_corners):
    theta = _random_affine(size[0])
    bottom = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64).expand(size[0], 1, 3)
    homography = torch.cat((theta, bottom), dim=1)
    ours = projective_grid(homography, size, align_corners=align_corners)
    reference = F.affine_grid(theta, size, align_corners=align_corners)
    assert ours.shape == (size[0], size[2], size[3], 2)
    torch.testing.assert_close(ours, reference, atol=1e-12, rtol=0)


@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_params_give_identity_grid(align_corners):
    params = torch.tensor([PROJECTIVE_IDENTITY] * 2)
    grid = projective_grid(params, (2, 1, 6, 9), align_corners=align_corners)
    identity = F.affine_grid(torch.eye(2, 3).expand(2, 2, 3), (2, 1, 6, 9),
                             align_corners=align_corners)
    torch.testing.assert_close(grid, identity, atol=1e-6, rtol=0)


def test_params_and_matrix_agree():
    params = torch.randn(4, 8, dtype=torch.float64) * 0.1 + torch.tensor(PROJECTIVE_IDENTITY,
                                                                         dtype=torch.float64)
    matrix = homography_from_params(params)
    assert matrix.shape == (4, 3, 3) and torch.all(matrix[:, 2, 2] == 1)
    torch.testing.assert_close(projective_grid(params, (4, 1, 5, 5)),
                               projective_grid(matrix, (4, 1, 5, 5)))


def test_perspective_division_against_hand_computation():
    homography = torch.tensor([[[1.0, 0.2, 0.1], [0.0, 0.9, -0.1], [0.3, -0.2, 1.0]]],
                              dtype=torch.float64)
    grid = projective_grid(homography, (1, 1, 3, 3), align_corners=True)
    x, y = 1.0, -1.0  # the top-right pixel: row 0, column 2
    w = 0.3 * x - 0.2 * y + 1.0
    expected = torch.tensor([(x + 0.2 * y + 0.1) / w, (0.9 * y - 0.1) / w], dtype=torch.float64)
    torch.testing.assert_close(grid[0, 0, 2], expected)


def test_homography_from_points_maps_the_four_points():
    generator = torch.Generator().manual_seed(1)
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]],
                           dtype=torch.float64)
    points_from = corners + 0.2 * torch.randn(5, 4, 2, generator=generator, dtype=torch.float64)
    points_to = corners + 0.2 * torch.randn(5, 4, 2, generator=generator, dtype=torch.float64)
    homography = homography_from_points(points_from, points_to)
    mapped = torch.cat((points_from, torch.ones(5, 4, 1, dtype=torch.float64)), -1)
    mapped = mapped @ homography.transpose(1, 2)
    torch.testing.assert_close(mapped[..., :2] / mapped[..., 2:], points_to)


def test_gradcheck():
    params = (torch.tensor(PROJECTIVE_IDENTITY, dtype=torch.float64)
              + 0.05 * torch.randn(2, 8, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: projective_grid(p, (2, 1, 4, 5)), (params,))


def test_degenerate_homography_stays_finite():
    homography = torch.zeros(1, 3, 3)
    assert torch.isfinite(projective_grid(homography, (1, 1, 4, 4))).all()


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="theta must have shape"):
        projective_grid(torch.zeros(2, 2, 3), (2, 1, 4, 4))
    with pytest.raises(TypeError, match="floating"):
        projective_grid(torch.zeros(2, 3, 3, dtype=torch.long), (2, 1, 4, 4))
    with pytest.raises(ValueError, match="size must be"):
        projective_grid(torch.eye(3)[None], (1, 4, 4))
    with pytest.raises(ValueError, match="N=3"):
        projective_grid(torch.eye(3)[None], (3, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        homography_from_params(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="points_from"):
        homography_from_points(torch.zeros(2, 3, 2), torch.zeros(2, 4, 2))
