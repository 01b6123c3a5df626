"""LocalizationNet, SpatialTransformer, CNN and STCNN: shapes, identity init, seeding, errors."""

from __future__ import annotations

import pytest
import torch

from stnlib.localization import TRANSFORMS, LocalizationNet, identity_init_, params_to_theta
from stnlib.models import CNN, STCNN, build_model, seeded_init
from stnlib.transformer import SpatialTransformer

IDENTITY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
SAMPLERS = ["torch", "stnlib"]


@pytest.mark.parametrize("size", [(28, 28), (32, 40), (60, 60), (18, 18)])
@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
def test_localization_identity_at_init_for_any_size(size, transform):
    net = LocalizationNet(1, size, transform)
    theta = net(torch.rand(3, 1, *size))
    assert theta.shape == (3, 2, 3)
    torch.testing.assert_close(theta, IDENTITY.expand(3, 2, 3), rtol=0, atol=1e-7)


def test_identity_init_outputs_the_identity_and_still_learns():
    layer = identity_init_(torch.nn.Linear(5, 3), (1.0, 0.0, 2.0))
    out = layer(torch.randn(4, 5))
    torch.testing.assert_close(out, torch.tensor([1.0, 0.0, 2.0]).expand(4, 3), rtol=0, atol=0)
    out.pow(2).sum().backward()
    assert layer.weight.grad.abs().sum() > 0  # zero weights, but not a dead layer
    with pytest.raises(ValueError, match="2 values but the layer has 3 outputs"):
        identity_init_(torch.nn.Linear(5, 3), (1.0, 0.0))


def test_cnn_smallest_input_is_16_pixels():
    assert CNN(input_size=(16, 16))(torch.rand(2, 1, 16, 16)).shape == (2, 10)
    for size in [(15, 16), (16, 12)]:
        with pytest.raises(ValueError, match=r"at least \(16, 16\).*got \(1[256], 1[256]\)"):
            CNN(input_size=size)


def test_localization_rejects_small_or_mismatched_input():
    with pytest.raises(ValueError, match="input_size"):
        LocalizationNet(1, (16, 28))
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        LocalizationNet()(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="transform must be one of"):
        LocalizationNet(transform="shear")


def test_restricted_transforms_build_the_right_theta():
    theta = params_to_theta(torch.tensor([[0.5, -0.2, 0.3]]), "translation_scale")
    torch.testing.assert_close(theta, torch.tensor([[[0.5, 0.0, -0.2], [0.0, 0.5, 0.3]]]))
    theta = params_to_theta(torch.tensor([[0.7]]), "rotation")[0, :, :2]
    torch.testing.assert_close(theta @ theta.T, torch.eye(2))  # a pure rotation
    assert theta[0, 0] == pytest.approx(torch.cos(torch.tensor(0.7)).item())


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("size", [(28, 28), (32, 24)])
def test_transformer_at_init_returns_the_input(sampler, size):
    st = SpatialTransformer(2, size, sampler=sampler)
    x = torch.rand(4, 2, *size)
    warped, theta = st(x)
    torch.testing.assert_close(theta, IDENTITY.expand(4, 2, 3), rtol=0, atol=1e-7)
    torch.testing.assert_close(warped, x, rtol=0, atol=1e-5)


def test_transformer_output_size_and_errors():
    st = SpatialTransformer(1, (28, 28), output_size=(14, 20), sampler="torch")
    warped, _ = st(torch.rand(2, 1, 28, 28))
    assert warped.shape == (2, 1, 14, 20)
    with pytest.raises(ValueError, match="sampler must be one of"):
        SpatialTransformer(sampler="scipy")
    with pytest.raises(ValueError, match=r"got \(2, 1, 32, 32\)"):
        st(torch.rand(2, 1, 32, 32))


def test_stnlib_and_torch_samplers_give_the_same_model_output():
    model = STCNN(sampler="torch", seed=3)
    with torch.no_grad():  # move theta away from identity so the sampler really works
        model.transformer.localization.head[-1].weight.normal_(0, 0.05)
    x = torch.rand(5, 1, 28, 28)
    model.eval()
    expected, warped_t, _ = model(x, return_transformed=True)
    model.sampler = "stnlib"
    got, warped_s, _ = model(x, return_transformed=True)
    torch.testing.assert_close(warped_s, warped_t, rtol=0, atol=1e-5)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [(28, 28), (32, 32), (40, 36)])
def test_classifiers_shapes(size):
    x = torch.rand(3, 1, *size)
    assert CNN(input_size=size)(x).shape == (3, 10)
    model = STCNN(input_size=size, sampler="torch", num_classes=7)
    logits, warped, theta = model(x, return_transformed=True)
    assert logits.shape == (3, 7) and warped.shape == x.shape and theta.shape == (3, 2, 3)
    assert model(x).shape == (3, 7)
    warped2, _ = model.transformer(x)
    torch.testing.assert_close(warped2, warped)


def test_stcnn_at_init_classifies_like_its_classifier():
    """Identity transformer + normalisation after it: the ST-CNN equals its own CNN."""
    model = STCNN(sampler="torch").eval()
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(model(x), model.classifier(x), rtol=1e-5, atol=1e-5)


def test_models_normalise_inside():
    cnn = CNN()
    x = torch.zeros(1, 1, 28, 28)
    torch.testing.assert_close(cnn.normalize(x), torch.full_like(x, -0.1307 / 0.3081))


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"CNN expects input \(N, 1, 28, 28\).*\(2, 28, 28\)"):
        CNN()(torch.rand(2, 28, 28))
    with pytest.raises(ValueError, match="at least"):
        CNN(input_size=(10, 10))


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = STCNN(seed=1), STCNN(seed=1), STCNN(seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.classifier.head[1].weight, c.classifier.head[1].weight)
    with seeded_init(5):
        first = torch.rand(3)
    with seeded_init(5):
        assert torch.equal(torch.rand(3), first)


def test_config_rebuilds_the_model_and_build_model_by_name():
    model = STCNN(channels=(4, 8), hidden=16, sampler="torch", transform="rotation", seed=1)
    clone = STCNN(**model.config)
    assert clone.config == model.config
    for pa, pb in zip(model.state_dict().values(), clone.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    assert isinstance(build_model("cnn", sampler="torch"), CNN)
    with pytest.raises(ValueError, match="model must be one of"):
        build_model("resnet")
