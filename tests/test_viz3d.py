"""Notebook 07's figures: built without showing, with clear errors on wrong shapes."""

from __future__ import annotations

import pytest
import torch

from stnlib import affine, affine_grid, viz


def test_grid_points_3d():
    grids = affine_grid(torch.cat([affine.identity_theta(1, dim=3),
                                   affine.to_theta(affine.rotation_x(0.5))]), (2, 1, 4, 4, 4))
    fig = viz.grid_points_3d(grids, ["a", "b"], every=1)
    assert len(fig.axes) == 2 and fig.axes[1].get_title() == "b"
    assert fig.axes[0].collections[0].get_offsets().shape[0] == 64
    with pytest.raises(ValueError, match=r"grids\[0\]: expected shape \(D, H, W, 3\)"):
        viz.grid_points_3d([torch.zeros(4, 4, 2)])
    with pytest.raises(ValueError, match="one title per grid"):
        viz.grid_points_3d(grids, ["only one"])


def test_volume_slices():
    vol = torch.rand(1, 10, 6, 6)
    fig = viz.volume_slices(vol, n=4, title="t")
    assert [ax.get_title() for ax in fig.axes] == ["z=0", "z=3", "z=6", "z=9"]
    with pytest.raises(ValueError, match=r"expected shape \(D, H, W\)"):
        viz.volume_slices(torch.rand(6, 6))


def test_mip_before_after_shows_projections():
    before = torch.zeros(2, 1, 8, 8, 8)
    before[:, 0, 2, 3, 4] = 1.0
    after = torch.rand(2, 1, 4, 4, 4)
    fig = viz.mip_before_after(before, after, titles=["x", "y"])
    assert len(fig.axes) == 12
    front = fig.axes[0].images[0].get_array()
    assert front.shape == (8, 8) and front[3, 4] == 1.0 and front.sum() == 1.0
    with pytest.raises(ValueError, match="same N"):
        viz.mip_before_after(before, after[:1])
    with pytest.raises(ValueError, match="one per row"):
        viz.mip_before_after(before, after, titles=["x"])
