"""Thin-plate-spline grid: identity, control points land where the parameters say,
affine reproduction, kernel solved once, gradcheck, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stnlib import tps
from stnlib.tps import tps_control_points, tps_grid, tps_transform_points


def test_control_points_regular_4x4():
    control = tps_control_points()
    assert control.shape == (16, 2)
    torch.testing.assert_close(control[:4, 0], torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]))
    torch.testing.assert_close(control[::4, 1], torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]))


@pytest.mark.parametrize("align_corners", [False, True])
def test_identity(align_corners):
    source = tps_control_points(dtype=torch.float64).expand(3, 16, 2)
    grid = tps_grid(source, (3, 1, 7, 9), align_corners=align_corners)
    identity = F.affine_grid(torch.eye(2, 3, dtype=torch.float64).expand(3, 2, 3), (3, 1, 7, 9),
                             align_corners=align_corners)
    torch.testing.assert_close(grid, identity, atol=1e-10, rtol=0)


def test_warped_control_points_land_where_the_parameters_say():
    generator = torch.Generator().manual_seed(0)
    source = tps_control_points(dtype=torch.float64) + 0.2 * torch.randn(
        2, 16, 2, generator=generator, dtype=torch.float64)
    # With align_corners=True a 4x4 output grid sits exactly on the control points.
    grid = tps_grid(source, (2, 1, 4, 4), align_corners=True)
    torch.testing.assert_close(grid.reshape(2, 16, 2), source, atol=1e-10, rtol=0)
    landed = tps_transform_points(source, tps_control_points(dtype=torch.float64))
    torch.testing.assert_close(landed, source, atol=1e-10, rtol=0)


def test_affine_source_points_give_the_affine_grid():
    theta = torch.tensor([[[0.8, -0.3, 0.1], [0.2, 1.1, -0.2]]], dtype=torch.float64)
    control = tps_control_points(dtype=torch.float64)
    source = control @ theta[0, :, :2].T + theta[0, :, 2]
    grid = tps_grid(source[None], (1, 1, 11, 13))
    torch.testing.assert_close(grid, F.affine_grid(theta, (1, 1, 11, 13), align_corners=False),
                               atol=1e-10, rtol=0)


def test_flat_parameters_accepted_and_kernel_cached():
    source = tps_control_points().expand(2, 16, 2)
    tps._grid_matrix.cache_clear()
    first = tps_grid(source.reshape(2, 32), (2, 1, 5, 5))
    second = tps_grid(source, (2, 1, 5, 5))
    torch.testing.assert_close(first, second)
    assert tps._grid_matrix.cache_info().hits == 1


def test_gradcheck():
    source = (tps_control_points(dtype=torch.float64)
              + 0.1 * torch.randn(2, 16, 2, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda s: tps_grid(s, (2, 1, 5, 6)), (source,))


def test_3x3_control_grid_works_too():
    source = tps_control_points(3, dtype=torch.float64).expand(1, 9, 2)
    grid = tps_grid(source, (1, 1, 3, 3), align_corners=True)
    torch.testing.assert_close(grid.reshape(1, 9, 2), source, atol=1e-10, rtol=0)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="source_points must have shape"):
        tps_grid(torch.zeros(2, 15, 2), (2, 1, 4, 4))
    with pytest.raises(TypeError, match="floating"):
        tps_grid(torch.zeros(2, 16, 2, dtype=torch.long), (2, 1, 4, 4))
    with pytest.raises(ValueError, match="N=3"):
        tps_grid(torch.zeros(2, 16, 2), (3, 1, 4, 4))
    with pytest.raises(ValueError, match="grid_size"):
        tps_control_points(1)
