"""Checks of notebook 07's exercises: right answers pass, typical mistakes get their hint."""

from __future__ import annotations

import math

import pytest
import torch

from stnlib import affine
from stnlib import exercises as ex

SHIFT = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -0.5]]


def _pose() -> torch.Tensor:
    return affine.compose(affine.rotation_z(math.radians(30)),
                          affine.translation_3d(0.1, 0.0, 0.0)).double()


def test_depth_shift_right_answers(capsys):
    assert ex.check_depth_shift_theta(SHIFT)
    assert ex.check_depth_shift_theta(torch.tensor([SHIFT]))  # (1, 3, 4) is fine too
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize("tz, hint", [(0.5, "wrong direction"), (-8, "normalized units"),
                                      (8, "normalized units"), (-0.25, "8 * 2 / 32")])
def test_depth_shift_mistakes(capsys, tz, hint):
    answer = [row[:] for row in SHIFT]
    answer[2][3] = tz
    assert not ex.check_depth_shift_theta(answer)
    assert hint in capsys.readouterr().out


def test_depth_shift_wrong_axis_and_form(capsys):
    assert not ex.check_depth_shift_theta([[1, 0, 0, -0.5], [0, 1, 0, 0], [0, 0, 1, 0]])
    assert "third row" in capsys.readouterr().out
    assert not ex.check_depth_shift_theta([1, 2, 3])
    assert "3x4 matrix" in capsys.readouterr().out
    assert not ex.check_depth_shift_theta(None)
    assert "Not attempted" in capsys.readouterr().out


def test_undo_pose_right_answer(capsys):
    assert ex.check_undo_pose_theta(affine.to_theta(_pose())[0])
    assert ex.check_undo_pose_theta(affine.to_theta(_pose()))
    assert "Correct" in capsys.readouterr().out


def test_undo_pose_mistakes(capsys):
    inverse = affine.to_theta(torch.linalg.inv(_pose()))[0]
    assert not ex.check_undo_pose_theta(inverse)
    assert "P^-1" in capsys.readouterr().out
    no_shift = affine.to_theta(_pose())[0].clone()
    no_shift[:, 3] = 0
    assert not ex.check_undo_pose_theta(no_shift)
    assert "translation column" in capsys.readouterr().out
    flipped = affine.to_theta(_pose())[0].clone()
    flipped[:, :3] = flipped[:, :3].T.clone()
    assert not ex.check_undo_pose_theta(flipped)
    assert "-30 degrees" in capsys.readouterr().out
    assert not ex.check_undo_pose_theta("theta")
    assert "3x4 matrix" in capsys.readouterr().out
