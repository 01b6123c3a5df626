"""stnlib.models3d: the 3D localization net, SpatialTransformer3d, CNN3d and STCNN3d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stnlib.checkpoint import load_checkpoint, save_checkpoint
from stnlib.models3d import (
    Classifier3d,
    CNN3d,
    LocalizationNet3d,
    SpatialTransformer3d,
    STCNN3d,
    params_to_theta_3d,
)

SAMPLERS = ["stnlib", "torch"]


def _volumes(n: int = 3, size=(32, 32, 32), seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, *size, generator=torch.Generator().manual_seed(seed))


# --- identity initialisation ------------------------------------------------------------


def test_localization_net_starts_at_the_identity_theta():
    loc = LocalizationNet3d()
    theta = loc(_volumes())
    assert theta.shape == (3, 3, 4)
    torch.testing.assert_close(theta, torch.eye(3, 4).expand(3, 3, 4), atol=0, rtol=0)


def test_rigid_localization_net_starts_at_the_identity_theta():
    loc = LocalizationNet3d(transform="rigid")
    assert loc.head[-1].out_features == 6
    torch.testing.assert_close(loc(_volumes()), torch.eye(3, 4).expand(3, 3, 4), atol=0, rtol=0)


def test_rigid_params_are_rotation_vectors():
    """(r, t) -> [exp(K(r)) | t] equals the axis-angle rotation about r / |r| by |r|."""
    from stnlib import affine

    params = torch.tensor([[0.3, -0.2, 0.9, 0.1, 0.2, -0.3], [0.0, 0.0, 1.5, 0.0, 0.0, 0.0]])
    theta = params_to_theta_3d(params, "rigid")
    r = params[:, :3]
    expected = affine.rotation_axis_angle(r, r.norm(dim=1))[:, :3, :3]
    torch.testing.assert_close(theta[:, :, :3], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(theta[:, :, 3], params[:, 3:])
    # about z by 1.5 rad, by hand
    c, s = torch.cos(torch.tensor(1.5)), torch.sin(torch.tensor(1.5))
    torch.testing.assert_close(theta[1, :, :3], torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]]))
    torch.testing.assert_close(params_to_theta_3d(params.repeat(1, 2), "affine"),
                               params.repeat(1, 2).view(2, 3, 4))
    with pytest.raises(ValueError, match="transform must be one of"):
        params_to_theta_3d(params, "projective")


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_transformer_is_the_identity_at_initialisation(sampler):
    st = SpatialTransformer3d(input_size=(16, 32, 48), sampler=sampler)
    vol = _volumes(2, (16, 32, 48))
    warped, theta = st(vol)
    assert warped.shape == vol.shape and theta.shape == (2, 3, 4)
    torch.testing.assert_close(warped, vol, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_identity_at_half_resolution_is_2x2x2_averaging(sampler):
    """With align_corners=False an output voxel centre sits between two input voxels on
    every axis: trilinear sampling there is the mean of the 8 neighbours."""
    st = SpatialTransformer3d(input_size=32, output_size=16, sampler=sampler)
    vol = _volumes(2)
    warped, _ = st(vol)
    torch.testing.assert_close(warped, F.avg_pool3d(vol, 2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_stcnn3d_equals_cnn3d_at_initialisation(sampler):
    vol = _volumes(4)
    cnn = CNN3d(seed=3).eval()
    for transform in ("affine", "rigid"):
        stcnn = STCNN3d(seed=3, sampler=sampler, transform=transform).eval()
        with torch.no_grad():
            torch.testing.assert_close(stcnn(vol), cnn(vol), atol=1e-5, rtol=0)


# --- shapes -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(32, 32, 32), (16, 32, 48), (64, 32, 32)])
def test_model_shapes(size):
    vol = _volumes(2, size)
    assert CNN3d(input_size=size)(vol).shape == (2, 10)
    stcnn = STCNN3d(input_size=size, num_classes=4)
    logits, warped, theta = stcnn(vol, return_transformed=True)
    assert logits.shape == (2, 4)
    assert warped.shape == (2, 1, *(s // 2 for s in size))
    assert theta.shape == (2, 3, 4)


def test_two_channel_volumes():
    vol = torch.rand(2, 2, 32, 32, 32)
    assert STCNN3d(in_channels=2)(vol).shape == (2, 10)
    assert CNN3d(in_channels=2)(vol).shape == (2, 10)


def test_the_transformer_learns_gradients_reach_theta():
    model = STCNN3d()
    vol = _volumes(4)
    F.cross_entropy(model(vol), torch.tensor([0, 1, 2, 3])).backward()
    last = model.transformer.localization.head[-1]
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0
    assert last.bias.grad.abs().sum() > 0


def test_sampler_switch_keeps_the_output():
    model = STCNN3d().eval()
    with torch.no_grad():
        # move theta away from the identity so the sampler really interpolates
        model.transformer.localization.head[-1].bias.add_(0.05 * torch.randn(12))
        vol = _volumes(2)
        a = model(vol)
        model.sampler = "torch"
        b = model(vol)
    assert model.config["sampler"] == "torch"
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="sampler must be one of"):
        model.sampler = "cv2"


def test_same_seed_same_weights():
    a, b, c = STCNN3d(seed=1), STCNN3d(seed=1), STCNN3d(seed=2)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.classifier.head[1].weight, c.classifier.head[1].weight)


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", [CNN3d(), STCNN3d(), LocalizationNet3d(),
                                   SpatialTransformer3d()])
def test_wrong_input_shape_names_the_expected_shape(model):
    expected = r"expects volumes \(N, 1, 32, 32, 32\).*got \(2, 1, 32, 32\)"
    with pytest.raises(ValueError, match=expected):
        model(torch.zeros(2, 1, 32, 32))


@pytest.mark.parametrize("make, match", [
    (lambda: LocalizationNet3d(input_size=8), "too small"),
    (lambda: Classifier3d(input_size=12), "divisible by 8"),
    (lambda: CNN3d(input_size=33), "divisible by downsample"),
    (lambda: STCNN3d(input_size=(32, 32)), r"\(D, H, W\)"),
    (lambda: SpatialTransformer3d(sampler="scipy"), "sampler must be one of"),
    (lambda: STCNN3d(transform="tps"), "transform must be one of"),
])
def test_bad_settings(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# --- checkpoints and training -----------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    model = STCNN3d(channels=(4, 8, 8), seed=4).eval()
    with torch.no_grad():
        model.transformer.localization.head[-1].bias.add_(0.1)
    save_checkpoint(tmp_path / "m.pt", model)
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert type(loaded) is STCNN3d and not loaded.training
    vol = _volumes(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(vol), model(vol))
    assert type(load_checkpoint(save_checkpoint(tmp_path / "c.pt", CNN3d()))) is CNN3d


def test_fast_training_lowers_the_loss():
    """A few steps of stnlib.train.fit on posed synthetic volumes lower the training loss
    of the ST-CNN (the fast-mode code path of notebook 07, without MNIST)."""
    from stnlib.data import ImageSet
    from stnlib.train import fit
    from stnlib.volumes import extrude, pose_volumes, random_poses

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 4
    digits = torch.zeros(64, 12, 12)
    for k in range(4):  # four bar patterns, one per class
        digits[labels == k, 1 + 3 * k:3 + 3 * k, 2:10] = 1.0
        digits[labels == k, 2:10, 1 + 2 * k:3 + 2 * k] = 1.0 if k % 2 else 0.0
    vols = pose_volumes(extrude(digits, size=16, thickness=3),
                        random_poses(64, gen, max_angle=30))
    train = ImageSet(vols, labels)
    model = STCNN3d(input_size=16, num_classes=4, channels=(4, 8, 8), loc_channels=(4, 8),
                    seed=0)

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return F.cross_entropy(model(vols), labels).item()

    before = loss()
    fit(model, train, epochs=5, batch_size=16, lr=5e-3, seed=0, progress=False)
    after = loss()
    assert after < 0.8 * before, (before, after)
