"""ImageSet batches, subsets, and the rotated / scaled / shifted test variants."""

from __future__ import annotations

import pytest
import torch

from stnlib.data import (
    ImageSet,
    RandomAffine,
    random_similarity_theta,
    rotate,
    similarity_theta,
    transformed,
    warp,
)


def _set(n=10, size=8) -> ImageSet:
    images = torch.arange(n * size * size, dtype=torch.int64).remainder(256).to(torch.uint8)
    return ImageSet(images.view(n, size, size), torch.arange(n) % 3)


def test_imageset_adds_channel_and_validates():
    s = _set()
    assert len(s) == 10 and s.image_shape == (1, 8, 8) and s.labels.dtype == torch.int64
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\) with N = 10"):
        ImageSet(torch.zeros(10, 8, 8), torch.zeros(9, dtype=torch.long))
    with pytest.raises(TypeError, match="integer class indices"):
        ImageSet(torch.zeros(10, 8, 8), torch.zeros(10))
    with pytest.raises(TypeError, match="uint8"):
        ImageSet(torch.zeros(10, 8, 8, dtype=torch.int32), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        ImageSet(torch.zeros(10, 8), torch.zeros(10, dtype=torch.long))
    assert ImageSet(torch.zeros(4, 1, 6, 6, 6), torch.zeros(4, dtype=torch.long)).image_shape \
        == (1, 6, 6, 6)


def test_batches_cover_everything_once_as_float_in_unit_range():
    s = _set(10)
    batches = list(s.batches(4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    images = torch.cat([x for x, _ in batches])
    assert images.dtype == torch.float32 and images.shape == (10, 1, 8, 8)
    torch.testing.assert_close(images, s.images.float() / 255)
    assert [len(y) for _, y in s.batches(4, drop_last=True)] == [4, 4]


def test_shuffled_batches_are_seeded_and_need_a_generator():
    s = _set(20)
    with pytest.raises(ValueError, match="generator"):
        next(s.batches(5, shuffle=True))

    def order(gen):
        return torch.cat([x.flatten(1)[:, 0] for x, _ in s.batches(5, shuffle=True,
                                                                      generator=gen)])

    state = torch.get_rng_state()
    a, b = order(7), order(torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not torch.equal(a, order(8))
    assert torch.equal(a.sort().values, s.float_images()[:, 0, 0, 0].sort().values)
    assert torch.equal(torch.get_rng_state(), state)


def test_subset_first_n_random_n_and_indices():
    s = _set(10)
    assert torch.equal(s.subset(3).labels, s.labels[:3])
    random = s.subset(5, seed=1)
    assert len(random) == 5 and torch.equal(random.labels, s.subset(5, seed=1).labels)
    assert torch.equal(s.subset([9, 0]).images, s.images[[9, 0]])
    with pytest.raises(ValueError, match="0 < n <= 10"):
        s.subset(11)


def test_similarity_theta_identity_and_inverse_convention():
    torch.testing.assert_close(similarity_theta(), torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]))
    # scale 2 enlarges the content: output samples the source at half the distance
    torch.testing.assert_close(similarity_theta(scale=2.0)[0, :, :2], torch.eye(2) / 2)
    # a shift of +0.5 moves content right: output x samples source x - 0.5
    assert similarity_theta(translate_x=0.5)[0, 0, 2].item() == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="scale must be > 0"):
        similarity_theta(scale=0.0)


def test_rotate_90_turns_counter_clockwise_on_screen():
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 7] = 1.0  # right of the centre
    out = rotate(image, 90.0, sampler="torch")
    assert out[0, 0].argmax().item() == 1 * 9 + 4  # now above the centre (row 1, col 4)
    torch.testing.assert_close(rotate(image, 0.0, sampler="torch"), image)


def test_stnlib_and_torch_warps_agree():
    pytest.importorskip("stnlib.sampler")
    images = torch.rand(3, 1, 12, 12)
    theta = random_similarity_theta(3, degrees=(-30, 30), scale=(0.8, 1.2), generator=1)
    torch.testing.assert_close(warp(images, theta, "stnlib"), warp(images, theta, "torch"),
                               rtol=0, atol=1e-5)


def test_transformed_is_deterministic_by_seed():
    s = _set(6, 12)
    fixed = transformed(s, degrees=45, sampler="torch")
    assert fixed.images.dtype == torch.float32 and torch.equal(fixed.labels, s.labels)
    a = transformed(s, degrees=(-45, 45), scale=(0.9, 1.1), seed=3, sampler="torch")
    b = transformed(s, degrees=(-45, 45), scale=(0.9, 1.1), seed=3, sampler="torch")
    c = transformed(s, degrees=(-45, 45), scale=(0.9, 1.1), seed=4, sampler="torch")
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    with pytest.raises(TypeError, match="degrees must be a number or a"):
        transformed(s, degrees="45", sampler="torch")


def test_random_affine_draws_from_the_given_generator():
    aug = RandomAffine(degrees=(-20, 20), translate_x=(-0.1, 0.1), sampler="torch")
    images = torch.rand(4, 1, 10, 10)
    a = aug(images, torch.Generator().manual_seed(0))
    b = aug(images, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == images.shape and "RandomAffine" in repr(aug)


def test_random_affine_warps_on_the_images_device():
    """fit() hands the transform the batch on the model's device; theta is drawn on the CPU."""
    aug = RandomAffine(degrees=(-20, 20), scale=(0.9, 1.1))
    out = aug(torch.zeros(3, 1, 28, 28, device="meta"), torch.Generator().manual_seed(0))
    assert out.device.type == "meta" and out.shape == (3, 1, 28, 28)


def test_mnist_imageset(mnist):
    train, test = mnist
    assert len(train) == 60_000 and len(test) == 10_000
    assert train.image_shape == (1, 28, 28) and train.images.dtype == torch.uint8
    x, y = next(test.batches(16))
    assert x.shape == (16, 1, 28, 28) and 0 <= x.min() and x.max() <= 1 and y.dtype == torch.int64
