"""stnlib.volumes: extruded digits, random 3D poses, posing by affine_grid + grid_sample."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stnlib import affine
from stnlib.volumes import (
    digit_volumes,
    extrude,
    pose_volumes,
    random_poses,
    rotation_spread,
)


def _digits(n: int = 3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    digits = torch.zeros(n, 28, 28, dtype=torch.uint8)
    digits[:, 6:22, 8:20] = torch.randint(0, 256, (n, 16, 12), generator=gen, dtype=torch.uint8)
    return digits


# --- extrude ----------------------------------------------------------------------------


def test_extrude_puts_the_digit_on_the_central_slices():
    digits = _digits()
    vol = extrude(digits, size=32, thickness=6)
    assert vol.shape == (3, 1, 32, 32, 32) and vol.dtype == torch.float32
    padded = F.pad(digits.float() / 255, (2, 2, 2, 2))
    for z in range(13, 19):
        torch.testing.assert_close(vol[:, 0, z], padded)
    assert vol[:, :, :13].abs().sum() == 0 and vol[:, :, 19:].abs().sum() == 0


def test_extrude_accepts_float_channel_input_and_odd_sizes():
    digits = torch.rand(2, 1, 5, 7)
    vol = extrude(digits, size=9, thickness=1)
    assert vol.shape == (2, 1, 9, 9, 9)
    torch.testing.assert_close(vol[:, 0, 4, 2:7, 1:8], digits[:, 0])
    assert vol.sum() == pytest.approx(digits.sum().item(), rel=1e-6)


@pytest.mark.parametrize("bad, match", [
    (dict(digits=torch.zeros(2, 2, 28, 28)), "digits must have shape"),
    (dict(digits=torch.zeros(2, 28, 28), size=20), "smaller than the images"),
    (dict(digits=torch.zeros(2, 28, 28), thickness=0), "thickness"),
])
def test_extrude_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        extrude(**bad)


def test_extrude_rejects_non_tensors():
    with pytest.raises(TypeError, match="torch.Tensor"):
        extrude([[0, 1]])


# --- random poses -----------------------------------------------------------------------


def test_random_poses_are_rigid_and_within_range():
    poses = random_poses(500, torch.Generator().manual_seed(0), max_angle=60, max_shift=0.1)
    assert poses.shape == (500, 4, 4)
    rot, shift = poses[:, :3, :3], poses[:, :3, 3]
    eye = torch.eye(3).expand(500, 3, 3)
    torch.testing.assert_close(rot @ rot.transpose(1, 2), eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(500), atol=1e-5, rtol=0)
    angle = torch.arccos(((rot.diagonal(dim1=1, dim2=2).sum(1) - 1) / 2).clamp(-1, 1))
    assert angle.max() <= math.radians(60) + 1e-3
    assert angle.max() > math.radians(50)  # the range is used, not just a corner of it
    assert shift.abs().max() <= 0.1 and shift.abs().max() > 0.09
    torch.testing.assert_close(poses[:, 3], torch.tensor([0.0, 0, 0, 1]).expand(500, 4))


def test_random_poses_depend_only_on_the_generator():
    a = random_poses(8, torch.Generator().manual_seed(3))
    b = random_poses(8, torch.Generator().manual_seed(3))
    c = random_poses(8, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_random_poses_needs_a_generator():
    with pytest.raises(TypeError, match="torch.Generator"):
        random_poses(4, 0)
    with pytest.raises(ValueError, match="n must be"):
        random_poses(0, torch.Generator())


# --- pose_volumes -----------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["stnlib", "torch"])
def test_identity_pose_returns_the_volume(sampler):
    vol = torch.rand(2, 2, 8, 6, 4)
    out = pose_volumes(vol, torch.eye(4).expand(2, 4, 4), sampler=sampler)
    torch.testing.assert_close(out, vol, atol=1e-6, rtol=0)


def test_quarter_turn_about_z_is_a_voxel_permutation():
    """A 90 degree pose about z moves voxel (h, w) to (w, S-1-h): computed by hand from
    posed(x) = canonical(P^-1 x) with P^-1 (x, y) = (y, -x)."""
    vol = torch.rand(1, 1, 4, 6, 6)
    out = pose_volumes(vol, affine.rotation_z(math.pi / 2))
    size = 6
    expected = torch.empty_like(vol)
    for h in range(size):
        for w in range(size):
            expected[..., h, w] = vol[..., size - 1 - w, h]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_shift_by_whole_voxels_moves_the_content():
    vol = torch.zeros(1, 1, 8, 8, 8)
    vol[0, 0, 3, 4, 5] = 1.0
    # one voxel of 8 is 2 / 8 = 0.25 normalized (align_corners=False): +0.5 is 2 voxels
    out = pose_volumes(vol, affine.translation_3d(0.0, 0.0, 0.5))
    assert out[0, 0, 5, 4, 5] == pytest.approx(1.0) and out.sum() == pytest.approx(1.0)


def test_undoing_a_pose_with_theta_equal_to_the_pose():
    """The docstring's claim: a transformer whose theta is P itself restores the canonical
    volume (exactly here: quarter turns and whole-voxel shifts need no interpolation)."""
    vol = extrude(_digits(2), size=32, thickness=6)
    pose = affine.compose(affine.rotation_x(math.pi / 2), affine.rotation_z(-math.pi / 2),
                          affine.translation_3d(0.125, -0.0625, 0.0)).expand(2, 4, 4)
    posed = pose_volumes(vol, pose)
    assert not torch.allclose(posed, vol)
    theta = affine.to_theta(pose)
    grid = F.affine_grid(theta, list(vol.shape), align_corners=False)
    restored = F.grid_sample(posed, grid, align_corners=False)
    torch.testing.assert_close(restored, vol, atol=1e-5, rtol=0)


def test_stnlib_and_torch_samplers_agree():
    vol = torch.rand(3, 1, 10, 10, 10)
    poses = random_poses(3, torch.Generator().manual_seed(1))
    torch.testing.assert_close(pose_volumes(vol, poses, "stnlib"),
                               pose_volumes(vol, poses, "torch"), atol=1e-5, rtol=0)


def test_pose_volumes_errors():
    with pytest.raises(ValueError, match=r"volumes must have shape \(N, C, D, H, W\)"):
        pose_volumes(torch.zeros(2, 1, 8, 8), torch.eye(4).expand(2, 4, 4))
    with pytest.raises(ValueError, match=r"poses must have shape \(2, 4, 4\)"):
        pose_volumes(torch.zeros(2, 1, 4, 4, 4), torch.eye(4).expand(3, 4, 4))


# --- digit_volumes (needs MNIST) --------------------------------------------------------


def test_digit_volumes_are_deterministic_by_seed(mnist_arrays):
    a, pa = digit_volumes(12, train=False, seed=5)
    b, pb = digit_volumes(12, train=False, seed=5)
    c, pc = digit_volumes(12, train=False, seed=6)
    assert a.images.shape == (12, 1, 32, 32, 32) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.equal(pa, pb)
    assert not torch.equal(a.images, c.images) and not torch.equal(pa, pc)


def test_digit_volumes_hold_the_posed_digits(mnist_arrays):
    _, _, test_images, test_labels = mnist_arrays
    vols, poses = digit_volumes(4, train=False, seed=0, max_angle=0.0, max_shift=0.0)
    torch.testing.assert_close(poses, torch.eye(4).expand(4, 4, 4))
    # no pose: the central slice is the padded digit (up to uint8 rounding)
    index = [int((test_images == v[0, 16, 2:30, 2:30]).flatten(1).all(1).nonzero()[0])
             for v in vols.images]
    assert torch.equal(vols.labels, test_labels[index])
    assert vols.images[:, :, :13].sum() == 0


def test_digit_volumes_checks_n(mnist_arrays):
    with pytest.raises(ValueError, match="n must be in 1..10000"):
        digit_volumes(10001, train=False)


# --- rotation_spread --------------------------------------------------------------------


def test_rotation_spread_by_hand():
    # rotations by -a, 0, +a about z: the mean is the identity, the spread a, 0, a
    a = math.radians(20)
    mats = torch.cat([affine.rotation_z(-a), affine.rotation_z(0.0), affine.rotation_z(a)])
    torch.testing.assert_close(rotation_spread(mats), torch.tensor([20.0, 0.0, 20.0]),
                               atol=1e-3, rtol=0)
    # a common frame does not matter, scaling (a nearly-rotation theta) is ignored
    frame = affine.rotation_axis_angle([1.0, 2.0, 3.0], 1.0)
    torch.testing.assert_close(rotation_spread(frame @ mats * 1.3), rotation_spread(mats),
                               atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="matrices must have shape"):
        rotation_spread(torch.eye(3))
