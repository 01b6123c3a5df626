"""Every exercise check of notebooks 00-05: a right answer passes, a wrong one fails with a
hint, ``None`` reports "not attempted", and an answer of the wrong form fails politely."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stnlib import exercises as ex

C30, S30 = math.cos(math.radians(30)), math.sin(math.radians(30))


def _reference_affine_grid(theta, size, align_corners):
    return F.affine_grid(theta, list(size), align_corners=align_corners)


def _transposed_affine_grid(theta, size, align_corners):
    grid = F.affine_grid(theta, list(size), align_corners=align_corners)
    return grid.flip(-1)  # y before x: a classic mistake


def _raising_affine_grid(theta, size, align_corners):
    raise RuntimeError("not written yet")


# (check, right answer, wrong answer, a word the wrong answer's hint must contain)
CASES = [
    (ex.check_pooling_shifts, {0, 1}, {0, 1, 2}, "window"),
    (ex.check_pipeline_order, ["localization", "grid generator", "sampler"],
     ["sampler", "grid generator", "localization"], "theta"),
    (ex.check_rotation_theta, [[C30, -S30, 0], [S30, C30, 0]],
     [[C30, S30, 0], [-S30, C30, 0]], "-30"),
    (ex.check_rotation_theta, torch.tensor([[C30, -S30, 0], [S30, C30, 0]]),
     [[math.cos(30), -math.sin(30), 0], [math.sin(30), math.cos(30), 0]], "radians"),
    (ex.check_scale_then_translate, [[0.5, 0, 0.25], [0, 0.5, 0]],
     [[0.5, 0, 0.125], [0, 0.5, 0]], "S @ T"),
    (ex.check_inverse_theta, [[0.5, 0, -0.25], [0, 0.5, 0.25]],
     [[0.5, 0, -0.5], [0, 0.5, 0.5]], "-A^-1 t"),
    (ex.check_normalized_x, -27 / 28, -1.0, "align_corners=True"),
    (ex.check_normalized_x, torch.tensor(-27 / 28), 0.0, "EDGES"),
    (ex.check_identity_theta, [[1, 0, 0], [0, 1, 0]], [[0, 0, 0], [0, 0, 0]], "collapse"),
    (ex.check_identity_theta, [1, 0, 0, 0, 1, 0], [1, 0, 0, 1, 0, 0], "same input point"),
    (ex.check_feature_size, 90, 160, "rounded down"),
    (ex.check_grid_shape, (4, 32, 48, 2), (4, 48, 32, 2), "height"),
    (ex.check_grid_shape, torch.Size([4, 32, 48, 2]), (4, 1, 32, 48), "(N, H_out, W_out, 2)"),
    (ex.check_grid_corner, (-0.5, -1.0), (-1.0, -0.5), "x first"),
    (ex.check_affine_grid_function, _reference_affine_grid, _transposed_affine_grid,
     "values differ"),
    (ex.check_affine_grid_function, _reference_affine_grid, _raising_affine_grid, "raised"),
    (ex.check_bilinear_value, 2.75, 3.5, "column"),
    (ex.check_padding_mode, "border", "reflection", "mirrors"),
    (ex.check_padding_mode, " Border ", "zeros", "'border'"),
    (ex.check_bilinear_weights, [[0.375, 0.125], [0.375, 0.125]],
     [[0.375, 0.375], [0.125, 0.125]], "rows are y"),
    (ex.check_zoom_direction, "in", "out", "'in' or 'out'"),
    (ex.check_undo_angle, -40, 40, "invert"),
    (ex.check_undo_angle, 320, 0, "R(40)"),
]
IDS = [f"{case[0].__name__}-{i}" for i, case in enumerate(CASES)]


@pytest.mark.parametrize(("check", "right", "wrong", "hint"), CASES, ids=IDS)
def test_right_answer_passes(check, right, wrong, hint, capsys):
    assert check(right) is True
    assert capsys.readouterr().out.startswith("Correct!")


@pytest.mark.parametrize(("check", "right", "wrong", "hint"), CASES, ids=IDS)
def test_wrong_answer_fails_with_hint(check, right, wrong, hint, capsys):
    assert check(wrong) is False
    out = capsys.readouterr().out
    assert out.startswith("Not yet. Hint:")
    assert hint in out


@pytest.mark.parametrize("check", sorted({c[0] for c in CASES}, key=lambda f: f.__name__))
def test_none_is_not_attempted(check, capsys):
    assert check(None) is False
    assert "Not attempted yet" in capsys.readouterr().out


@pytest.mark.parametrize("check", sorted({c[0] for c in CASES}, key=lambda f: f.__name__))
@pytest.mark.parametrize("junk", ["banana", 3.5, [[1, 2], [3]], object()])
def test_answer_of_wrong_form_fails_politely(check, junk, capsys):
    assert check(junk) is False
    assert capsys.readouterr().out.startswith("Not yet. Hint:")
