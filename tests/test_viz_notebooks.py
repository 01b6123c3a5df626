"""The figures of notebooks 00-04 build headless (Agg) with the expected axes, and the one
computation among them (forward_splat) is right."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from stnlib import viz  # noqa: E402


@pytest.fixture
def digit():
    image = torch.zeros(12, 12)
    image[2:10, 5:7] = 1.0
    image[2:4, 3:7] = 0.7
    return image


def _render(fig):
    """Draw the figure for real (PNG through Agg): catches errors that only show at draw."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)
    assert buffer.getvalue().startswith(b"\x89PNG")


def _axes_with_images(fig):
    return sum(bool(ax.images) for ax in fig.axes)


def test_image_row_one_axis_per_image(digit):
    fig = viz.image_row([digit, digit[None], digit.T], ["a", "b", "c"], suptitle="row")
    assert len(fig.axes) == 3 and _axes_with_images(fig) == 3
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    _render(fig)


def test_image_row_accepts_a_batch_tensor(digit):
    assert len(viz.image_row(digit.expand(4, 1, 12, 12)).axes) == 4


@pytest.mark.parametrize(("images", "titles", "match"), [
    ([], None, "images"), ([torch.zeros(4, 4)], ["a", "b"], "titles"),
    ([torch.zeros(2, 3, 4, 4)], None, "image"),
])
def test_image_row_bad_input(images, titles, match):
    with pytest.raises(ValueError, match=match):
        viz.image_row(images, titles)


def test_pipeline_diagram_names_the_three_parts():
    fig = viz.pipeline_diagram()
    text = " ".join(t.get_text() for t in fig.axes[0].texts)
    for part in ("localization", "grid generator", "sampler", "theta"):
        assert part in text
    _render(fig)


def test_align_corners_figure_labels_both_settings():
    fig = viz.align_corners_figure(width=4)
    assert len(fig.axes) == 2
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert "-0.75" in labels and "+0.75" in labels  # pixel centres, align_corners=False
    labels = [t.get_text() for t in fig.axes[1].texts]
    assert "-1.00" in labels and "+1.00" in labels  # corner centres, align_corners=True
    _render(fig)


def test_forward_splat_identity_is_a_copy(digit):
    theta = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    assert torch.equal(viz.forward_splat(digit, theta), digit)


def test_forward_splat_leaves_holes_where_inverse_mapping_does_not():
    image = torch.ones(1, 16, 16)
    theta = torch.tensor([[0.5, 0, 0], [0, 0.5, 0]])  # magnify 2x
    forward = viz.forward_splat(image, theta)
    assert forward.shape == (16, 16)
    assert 0.2 < (forward == 0).float().mean() < 0.9  # holes: every other row/column
    inverse = F.grid_sample(image[None], F.affine_grid(theta[None], [1, 1, 16, 16],
                                                       align_corners=False),
                            align_corners=False)
    assert bool((inverse == 1).all())  # inverse mapping: every output pixel gets a value


def test_grids_over_images_two_rows(digit):
    thetas = torch.tensor([[[1.0, 0, 0], [0, 1, 0]], [[0.5, -0.5, 0.2], [0.5, 0.5, 0]]])
    grids = F.affine_grid(thetas, [2, 1, 12, 12], align_corners=False)
    outs = F.grid_sample(digit.expand(2, 1, 12, 12), grids, align_corners=False)
    fig = viz.grids_over_images(digit, list(grids), list(outs), ["id", "rot"])
    assert len(fig.axes) == 4 and _axes_with_images(fig) == 4
    assert len(fig.axes[0].lines) > 4  # grid lines drawn over the input
    _render(fig)


def test_bilinear_figure_shows_four_weights_summing_to_one():
    image = torch.tensor([[0.0, 1, 2], [3, 4, 5]])
    fig = viz.bilinear_figure(image, 1.25, 0.5)
    weights = [float(t.get_text()[2:]) for t in fig.axes[0].texts if t.get_text().startswith("w=")]
    assert len(weights) == 4 and sum(weights) == pytest.approx(1.0, abs=1e-3)
    _render(fig)


def test_subgradient_and_theta_gradient_figures(digit):
    xs = torch.linspace(0, 3, 31)
    fig = viz.subgradient_figure(xs, xs.sin(), xs.cos())
    assert len(fig.axes) == 2
    fig = viz.theta_gradient_figure(digit, torch.randn(12, 12, 2), torch.randn(2, 3))
    assert len(fig.axes) == 2 and len(fig.axes[1].patches) == 6  # six theta bars
    _render(fig)


def test_invariance_figure_one_panel_per_transform():
    fig = viz.invariance_figure({"rotation (degrees)": ([-90, 0, 90], [0.2, 0.99, 0.2]),
                                 "scale": ([0.5, 1.0], [0.4, 0.99])})
    assert len(fig.axes) == 2
    assert fig.axes[0].get_xlabel() == "rotation (degrees)"
    assert list(fig.axes[0].lines[0].get_ydata()) == pytest.approx([20, 99, 20])
    _render(fig)


@pytest.mark.parametrize(("curves", "match"), [({}, "at least one"),
                                               ({"scale": ([1, 2], [0.5])}, "accuracies")])
def test_invariance_figure_bad_input(curves, match):
    with pytest.raises(ValueError, match=match):
        viz.invariance_figure(curves)
