"""Distortion generators: shapes, ranges respected, deterministic by seed, fresh draws,
and the geometry each variant promises (checked on synthetic images, no MNIST needed)."""

from __future__ import annotations

import math

import pytest
import torch

from stnlib.bench.distort import sampled_tc
from stnlib.distort import (
    OUTPUT_SIZE,
    RANGES,
    VARIANTS,
    _place,
    distort,
    distort_dataset,
    distortion_grid,
    distortion_matrix,
    draw_params,
    ink_kept,
    oracle_transform,
    train_transform,
    undo,
)
from stnlib.sampler import grid_sample


def _digits(n: int = 16, seed: int = 0) -> torch.Tensor:
    """Blobby synthetic 'digits' in [0, 1], ink in the central 20x20 like MNIST."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, 28, 28)
    images[:, :, 4:24, 4:24] = torch.rand(n, 1, 20, 20, generator=generator)
    return images


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_dtype_and_range(variant):
    out = distort(_digits(), variant, torch.Generator().manual_seed(0))
    size = OUTPUT_SIZE[variant]
    assert out.shape == (16, 1, size, size) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1 and out.sum() > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_deterministic_by_seed_and_fresh_per_draw(variant):
    images = _digits()
    first = distort(images, variant, torch.Generator().manual_seed(7))
    again = distort(images, variant, torch.Generator().manual_seed(7))
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    generator = torch.Generator().manual_seed(7)
    distort(images, variant, generator)
    assert not torch.equal(distort(images, variant, generator), first)


def test_uint8_and_unbatched_channel_accepted():
    images = (_digits(4) * 255).to(torch.uint8)
    out = distort(images[:, 0], "R", torch.Generator().manual_seed(0))
    assert out.shape == (4, 1, 28, 28) and out.dtype == torch.float32


def test_parameter_ranges():
    generator = torch.Generator().manual_seed(0)
    n = 20000
    r = draw_params("R", n, generator)["angle"]
    assert r.abs().max() <= RANGES["R_degrees"] and r.abs().max() > 0.99 * RANGES["R_degrees"]
    rts = draw_params("RTS", n, generator)
    assert rts["angle"].abs().max() <= 45
    assert RANGES["RTS_scale_min"] <= rts["scale"].min() and rts["scale"].max() <= 1.2
    room = (42 - 28 * rts["scale"]) / 2
    assert (rts["shift"].abs() <= room[:, None]).all()
    for variant, key, sigma in (("P", "corner_offsets", 5.0), ("E", "control_offsets", 1.5)):
        params = draw_params(variant, n, generator)
        assert 0.75 <= params["scale"].min() and params["scale"].max() <= 1.0
        assert abs(params[key].std().item() - sigma) < 0.05 * sigma
        assert abs(params[key].mean().item()) < 0.05 * sigma
    tc = draw_params("TC", n, generator)
    assert tc["shift"].abs().max() == 16 and tc["patch_to"].max() == 60 - 6
    assert tc["patch_source"].min() >= 1


def _centroid(images: torch.Tensor) -> torch.Tensor:
    """(x, y) centre of mass in pixels from the image centre, (N, 2)."""
    size = images.shape[-1]
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    mass = images[:, 0].double().sum((1, 2))
    x = (images[:, 0].double().sum(1) * coords).sum(1) / mass
    y = (images[:, 0].double().sum(2) * coords).sum(1) / mass
    return torch.stack((x, y), dim=1)


def test_r_rotates_a_point_by_the_drawn_angle():
    dot = torch.zeros(64, 1, 28, 28)
    dot[:, :, 13:15, 20:22] = 1.0  # centred 7 pixels right of the image centre
    out, params = distort(dot, "R", torch.Generator().manual_seed(3), return_params=True)
    angle = torch.deg2rad(params["angle"])
    expected = 7 * torch.stack((torch.cos(angle), torch.sin(angle)), dim=1)
    torch.testing.assert_close(_centroid(out), expected, atol=0.15, rtol=0)


def test_rts_places_the_digit_at_the_drawn_shift_and_scale():
    dot = torch.zeros(64, 1, 28, 28)
    dot[:, :, 12:16, 12:16] = 1.0  # a 4x4 square at the centre
    out, params = distort(dot, "RTS", torch.Generator().manual_seed(4), return_params=True)
    torch.testing.assert_close(_centroid(out), params["shift"], atol=0.15, rtol=0)
    torch.testing.assert_close(out[:, 0].double().sum((1, 2)), 16 * params["scale"] ** 2,
                               atol=0.3, rtol=0.02)


def test_p_moves_the_corners_where_drawn():
    params = draw_params("P", 8, torch.Generator().manual_seed(5))
    grid = distortion_grid("P", params)  # (8, 28, 28, 2), align_corners=False
    # The output pixel nearest to a moved corner samples (almost) the source corner.
    moved = params["scale"][:, None, None] * torch.tensor(
        [[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    moved = moved + params["corner_offsets"] / 14
    inside = (moved.abs() < 27 / 28).all(-1)
    pixel = ((moved + 1) * 14 - 0.5).round().long().clamp(0, 27)
    for n, k in inside.nonzero().tolist():
        sampled = grid[n, pixel[n, k, 1], pixel[n, k, 0]]
        source = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])[k]
        assert (sampled - source.double()).abs().max() < 0.15


def test_e_is_the_scale_plus_small_offsets():
    params = draw_params("E", 4, torch.Generator().manual_seed(6))
    grid = distortion_grid("E", params)
    control = params["control_offsets"]
    no_noise = distortion_grid("E", {"scale": params["scale"], "control_offsets": 0 * control})
    expected = torch.nn.functional.affine_grid(
        torch.eye(2, 3, dtype=torch.float64) / params["scale"][:, None, None], (4, 1, 28, 28),
        align_corners=False)
    torch.testing.assert_close(no_noise, expected, atol=1e-9, rtol=0)
    shift_px = (grid - no_noise).abs().max().item() * 14
    assert 0 < shift_px < 6 * 1.5 / params["scale"].min().item()


def test_tc_digit_at_shift_plus_clutter_from_other_digits():
    images = torch.zeros(8, 1, 28, 28)
    images[:, :, 4:24, 4:24] = 1.0  # every 'digit' is a filled 20x20 square
    out, params = distort(images, "TC", torch.Generator().manual_seed(8), return_params=True)
    for n in range(8):
        x, y = (params["shift"][n] + 16).long().tolist()
        assert out[n, 0, y + 4:y + 24, x + 4:x + 24].min() == 1.0  # the digit, exactly moved
    clutter = out.sum((1, 2, 3)) - 400
    assert (clutter > 0).all() and (clutter <= 6 * 36).all()


def test_tc_places_the_digit_as_the_sampler_would_on_its_grid():
    images = _digits(32, seed=5)
    placed, params = distort(images, "TC", torch.Generator().manual_seed(2), return_params=True)
    # without the clutter: the digit itself, exactly, at 16 + shift, and nothing else
    plain = _place(images, params["shift"])
    for n in range(32):
        x, y = (params["shift"][n] + 16).long().tolist()
        assert torch.equal(plain[n, 0, y:y + 28, x:x + 28], images[n, 0])
    assert plain.sum() == images.sum()
    # what sampling TC's grid gives (bilinear weights of 0 and 1, up to float rounding)
    sampled = grid_sample(images, distortion_grid("TC", params).float(), align_corners=False)
    torch.testing.assert_close(plain, sampled, atol=1e-5, rtol=0)
    # and the whole canvas, clutter included, as the sampler route makes it
    torch.testing.assert_close(placed, sampled_tc(images, params), atol=1e-5, rtol=0)
    assert placed.dtype == images.dtype
    doubles = distort(images.double(), "TC", torch.Generator().manual_seed(2))
    assert doubles.dtype == torch.float64
    torch.testing.assert_close(doubles.float(), placed)


def test_distort_dataset_is_fixed_by_seed():
    images = (_digits(10) * 255).to(torch.uint8)[:, 0]
    first = distort_dataset(images, "RTS", seed=11, batch_size=4)
    torch.testing.assert_close(first, distort_dataset(images, "RTS", seed=11, batch_size=4))
    assert first.shape == (10, 1, 42, 42)
    assert not torch.equal(first, distort_dataset(images, "RTS", seed=12, batch_size=4))


def test_distort_dataset_can_return_every_digits_parameters():
    images = _digits(10)
    plain = distort_dataset(images, "P", seed=3, batch_size=4)
    same, params = distort_dataset(images, "P", seed=3, batch_size=4, return_params=True)
    torch.testing.assert_close(same, plain)
    assert params["scale"].shape == (10,) and params["corner_offsets"].shape == (10, 4, 2)
    # the joined parameters rebuild the same images
    grid = distortion_grid("P", params).float()
    torch.testing.assert_close(
        torch.nn.functional.grid_sample(images, grid, align_corners=False).clamp(0, 1),
        same, atol=1e-5, rtol=0)


def test_train_transform_uses_the_given_generator():
    transform = train_transform("E")
    images = _digits(3)
    torch.testing.assert_close(transform(images, torch.Generator().manual_seed(1)),
                               distort(images, "E", torch.Generator().manual_seed(1)))
    # recorded in checkpoints by its settings, the same in every process, so runs can resume
    assert repr(transform) == repr(train_transform("E")) == "train_transform('E')"
    assert repr(train_transform("R")) != repr(transform)
    with pytest.raises(ValueError, match="variant must be one of"):
        train_transform("X")


@pytest.mark.parametrize("variant", ["R", "RTS"])
def test_turn_scale_shrinks_only_the_drawn_angles(variant):
    full = draw_params(variant, 200, torch.Generator().manual_seed(3))
    for scale in (0.0, 0.25, 1.0):
        scaled = draw_params(variant, 200, torch.Generator().manual_seed(3), turn_scale=scale)
        assert set(scaled) == set(full)
        for name in full:  # the same draws: only the angle changes, by exactly the factor
            torch.testing.assert_close(scaled[name], full[name] * scale if name == "angle"
                                       else full[name], atol=0, rtol=0)
    images = _digits(8)
    flat = distort(images, variant, torch.Generator().manual_seed(4), turn_scale=0.0)
    no_turn = draw_params(variant, 8, torch.Generator().manual_seed(4), turn_scale=0.0)
    assert (no_turn["angle"] == 0).all()
    torch.testing.assert_close(
        flat, grid_sample(images, distortion_grid(variant, no_turn).float(),
                          align_corners=False).clamp(0, 1), atol=1e-6, rtol=0)
    if variant == "R":  # an R digit with no turn is the digit itself, up to float rounding
        torch.testing.assert_close(flat, images, atol=1e-5, rtol=0)


def test_turn_scale_errors():
    generator = torch.Generator().manual_seed(0)
    for variant in ("P", "E", "TC"):
        with pytest.raises(ValueError, match=f"variant '{variant}' has no turn"):
            draw_params(variant, 2, generator, turn_scale=0.5)
        draw_params(variant, 2, generator, turn_scale=1.0)  # the default is fine everywhere
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"turn_scale must be in \[0, 1\]"):
            distort(_digits(2), "R", generator, turn_scale=bad)
    with pytest.raises(TypeError, match="turn_scale must be a number"):
        draw_params("R", 2, generator, turn_scale=True)


def test_turn_ramp_widens_the_turns_over_the_first_share_of_training():
    import pickle

    transform = train_transform("R", turn_ramp=0.1)
    assert repr(transform) == "train_transform('R', turn_ramp=0.1)"
    assert repr(pickle.loads(pickle.dumps(transform))) == repr(transform)
    assert repr(train_transform("R", turn_ramp=0)) == "train_transform('R')"  # = no ramp
    images = _digits(6)
    for step, scale in ((0, 0.0), (25, 0.25), (99, 0.99), (100, 1.0), (999, 1.0)):
        transform.set_progress(step, 1000)  # ramp: round(0.1 * 1000) = 100 steps
        assert transform.turn_scale == pytest.approx(scale, abs=1e-12)
        torch.testing.assert_close(
            transform(images, torch.Generator().manual_seed(step)),
            distort(images, "R", torch.Generator().manual_seed(step), turn_scale=scale),
            atol=0, rtol=0)
    assert train_transform("RTS").turn_scale == 1.0  # no ramp: no step needed
    with pytest.raises(RuntimeError, match="needs the training step.*set_progress"):
        train_transform("RTS", turn_ramp=0.5)(images, torch.Generator())
    with pytest.raises(ValueError, match="variant 'P' has no turn to ramp"):
        train_transform("P", turn_ramp=0.1)
    for bad in (-0.5, 2.0):
        with pytest.raises(ValueError, match=r"turn_ramp must be in \[0, 1\]"):
            train_transform("R", turn_ramp=bad)
    with pytest.raises(TypeError, match="turn_ramp must be a number"):
        train_transform("R", turn_ramp="0.1")


def test_sigma_px_scales_the_same_offsets():
    """P and E: the offsets are the same standard-normal draws times sigma_px; the paper's
    own spread given explicitly is the default, bit for bit (and is recorded as no option)."""
    import pickle

    for variant, paper_sigma in (("P", RANGES["P_sigma_px"]), ("E", RANGES["E_sigma_px"])):
        key = "corner_offsets" if variant == "P" else "control_offsets"
        default = draw_params(variant, 64, torch.Generator().manual_seed(3))
        half = draw_params(variant, 64, torch.Generator().manual_seed(3),
                           sigma_px=paper_sigma / 2)
        torch.testing.assert_close(half["scale"], default["scale"], atol=0, rtol=0)
        if variant == "E":  # no redraws: exactly half of every offset
            torch.testing.assert_close(half[key], default[key] / 2, atol=0, rtol=0)
        else:  # P redraws a folded quadrilateral, which a smaller spread folds less often
            unfolded = (half[key] == default[key] / 2).all(dim=(1, 2))
            assert unfolded.float().mean() > 0.9
        assert half[key].std() < 0.6 * default[key].std()
        images = _digits(4)
        explicit = distort(images, variant, torch.Generator().manual_seed(5),
                           sigma_px=paper_sigma)
        torch.testing.assert_close(explicit, distort(images, variant,
                                                     torch.Generator().manual_seed(5)),
                                   atol=0, rtol=0)
        still = distort(images, variant, torch.Generator().manual_seed(5), sigma_px=0)
        assert not torch.equal(still, explicit)
        transform = train_transform(variant, sigma_px=2)
        assert repr(transform) == f"train_transform({variant!r}, sigma_px=2.0)"
        assert repr(pickle.loads(pickle.dumps(transform))) == repr(transform)
        assert repr(train_transform(variant, sigma_px=paper_sigma)) == (
            f"train_transform({variant!r})")
        torch.testing.assert_close(
            transform(images, torch.Generator().manual_seed(6)),
            distort(images, variant, torch.Generator().manual_seed(6), sigma_px=2.0),
            atol=0, rtol=0)
    # E with no offsets is the plain scaling: a 4x4 spline through unmoved points.
    params = draw_params("E", 3, torch.Generator().manual_seed(0), sigma_px=0.0)
    assert (params["control_offsets"] == 0).all()
    oracle = oracle_transform("P", sigma_px=2.5)
    assert repr(oracle) == "oracle_transform('P', sigma_px=2.5)"
    distorted, drawn = distort(_digits(3), "P", torch.Generator().manual_seed(1),
                               return_params=True, sigma_px=2.5)
    torch.testing.assert_close(oracle(_digits(3), torch.Generator().manual_seed(1)),
                               undo(distorted, "P", drawn))


def test_sigma_px_errors_name_the_fix():
    generator = torch.Generator().manual_seed(0)
    for variant in ("R", "RTS", "TC"):
        with pytest.raises(ValueError, match=f"variant '{variant}' has no Gaussian offsets"):
            draw_params(variant, 2, generator, sigma_px=1.0)
    with pytest.raises(ValueError, match="has no Gaussian offsets"):
        train_transform("R", sigma_px=1.0)
    for bad in (-1.0, float("nan"), float("inf"), 29.0):
        with pytest.raises(ValueError, match=r"sigma_px must be a finite number of pixels in "
                                             r"\[0, 28\] \(the paper's: 5.0 for P\)"):
            distort(_digits(2), "P", generator, sigma_px=bad)
    with pytest.raises(TypeError, match="sigma_px must be a number of pixels"):
        train_transform("E", sigma_px="2")


@pytest.mark.parametrize("variant", VARIANTS)
def test_warps_on_the_images_device(variant):
    """Drawn from the CPU generator, warped where the images are: nothing of the warp may
    be built on the CPU ('meta' tensors have no data, so a mix fails like a GPU one would)."""
    out = distort(torch.zeros(4, 1, 28, 28, device="meta"), variant,
                  torch.Generator().manual_seed(0))
    assert out.device.type == "meta" and out.shape == (4, 1, *(2 * (OUTPUT_SIZE[variant],)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("variant", VARIANTS)
def test_same_distortions_on_the_gpu(variant):
    images = _digits(8)
    on_cpu = distort(images, variant, torch.Generator().manual_seed(5))
    on_gpu = distort(images.cuda(), variant, torch.Generator().manual_seed(5))
    assert on_gpu.is_cuda
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-5, rtol=0)


def test_ink_kept_counts_the_digit_pixels_that_land_on_the_canvas():
    ones = torch.ones(2, 1, 28, 28)
    unmoved = {"scale": torch.ones(2, dtype=torch.float64),
               "corner_offsets": torch.zeros(2, 4, 2, dtype=torch.float64)}
    torch.testing.assert_close(distortion_matrix("P", unmoved),
                               torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    torch.testing.assert_close(ink_kept(ones, "P", unmoved), torch.ones(2, dtype=torch.float64))
    # every corner 14 px (half the digit) to the right: the right half falls off the canvas
    right = dict(unmoved, corner_offsets=unmoved["corner_offsets"] + torch.tensor([14.0, 0.0]))
    torch.testing.assert_close(ink_kept(ones, "P", right), torch.full((2,), 0.5,
                                                                      dtype=torch.float64))
    # ink only in the left half: all of it stays
    left = torch.zeros(2, 1, 28, 28)
    left[..., :14] = 1
    torch.testing.assert_close(ink_kept(left, "P", right), torch.ones(2, dtype=torch.float64))
    # a rotated full square loses its corners, a central blob nothing
    turned = {"angle": torch.tensor([45.0], dtype=torch.float64)}
    assert 0.75 < float(ink_kept(ones[:1], "R", turned)) < 0.9
    assert float(ink_kept(_digits(1), "R", turned)) > 0.95
    # an empty image has nothing to lose
    assert float(ink_kept(torch.zeros(1, 1, 28, 28), "R", turned)) == 1.0


def test_ink_kept_with_drawn_parameters():
    """TC places the whole digit on the canvas by construction: nothing is lost. P moves
    corners by sigma 5 px: most digits keep nearly all their ink, a few lose much of it."""
    images = _digits(256)
    _, params = distort(images, "TC", torch.Generator().manual_seed(4), return_params=True)
    torch.testing.assert_close(ink_kept(images, "TC", params),
                               torch.ones(256, dtype=torch.float64))
    _, params = distort(images, "P", torch.Generator().manual_seed(4), return_params=True)
    kept = ink_kept(images, "P", params)
    assert kept.median() > 0.97 and kept.min() < 0.9 and (kept >= 0).all()


def test_ink_kept_errors():
    params = draw_params("E", 2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="thin-plate spline, it has no matrix"):
        ink_kept(_digits(2), "E", params)
    with pytest.raises(ValueError, match="params are for 3 digits, images has 2"):
        ink_kept(_digits(2), "P", draw_params("P", 3, torch.Generator().manual_seed(0)))


def test_errors():
    with pytest.raises(ValueError, match="variant must be one of"):
        distort(_digits(2), "X", torch.Generator())
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        distort(torch.zeros(2, 1, 30, 30), "R", torch.Generator())
    with pytest.raises(TypeError, match="generator"):
        distort(_digits(2), "R", 0)
    assert math.isfinite(distortion_grid("P", draw_params("P", 500, torch.Generator())).sum())


def _warp(images: torch.Tensor, variant: str, params: dict) -> torch.Tensor:
    grid = distortion_grid(variant, params).float()
    return grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def test_undo_is_exact_where_the_warp_moves_pixel_centres_onto_pixel_centres():
    """A quarter turn, a whole-pixel shift and an unmoved P only permute pixels: undoing
    them must give the digit back exactly (any error in the inverse shows)."""
    images, n = _digits(4), 4
    f64 = dict(dtype=torch.float64)
    cases = {
        "R": {"angle": torch.tensor([90.0, -90.0, 0.0, 90.0], **f64)},
        "RTS": {"angle": torch.tensor([90.0, 0.0, -90.0, 0.0], **f64),
                "scale": torch.ones(n, **f64),
                "shift": torch.tensor([[3.0, -5.0], [-7.0, 7.0], [0.0, 1.0], [6.0, 0.0]], **f64)},
        "P": {"scale": torch.ones(n, **f64), "corner_offsets": torch.zeros(n, 4, 2, **f64)},
    }
    for variant, params in cases.items():
        distorted = _warp(images, variant, params)
        assert not torch.allclose(distorted[:, :, :28, :28], images)  # it did move
        torch.testing.assert_close(undo(distorted, variant, params), images,
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["R", "RTS", "P", "TC"])
def test_undo_brings_drawn_distortions_back_to_the_digit(variant):
    images = _digits(32)
    distorted, params = distort(images, variant, torch.Generator().manual_seed(3),
                                return_params=True)
    back = undo(distorted, variant, params)
    assert back.shape == images.shape and back.dtype == images.dtype
    assert 0 <= back.min() and back.max() <= 1
    # Two bilinear interpolations blur the random texture, and P and TC lose some of it
    # (ink off the canvas, clutter on top), yet the digit is back where it was:
    similarity = torch.nn.functional.cosine_similarity(back.flatten(1), images.flatten(1))
    assert similarity.min() > (0.6 if variant in ("P", "TC") else 0.8)
    # ... far closer than the distorted digit (cropped or resized to 28x28) is.
    if variant in ("R", "P"):
        before = torch.nn.functional.cosine_similarity(distorted.flatten(1), images.flatten(1))
        assert (similarity > before).float().mean() > 0.9


def test_oracle_transform_distorts_then_undoes_with_the_same_draws():
    images = _digits(5)
    transform = oracle_transform("P")
    distorted, params = distort(images, "P", torch.Generator().manual_seed(4),
                                return_params=True)
    torch.testing.assert_close(transform(images, torch.Generator().manual_seed(4)),
                               undo(distorted, "P", params))
    assert repr(transform) == "oracle_transform('P')"
    import pickle

    assert repr(pickle.loads(pickle.dumps(transform))) == repr(transform)


def test_undo_errors():
    images = _digits(2)
    distorted, params = distort(images, "R", torch.Generator().manual_seed(0),
                                return_params=True)
    with pytest.raises(ValueError, match="thin-plate spline"):
        undo(distorted, "E", params)
    with pytest.raises(ValueError, match="no oracle"):
        oracle_transform("E")
    with pytest.raises(ValueError, match="params describe 2 digits, distorted holds 1"):
        undo(distorted[:1], "R", params)
    with pytest.raises(ValueError, match=r"shape \(N, 1, S, S\)"):
        undo(distorted[:, 0], "R", params)
