"""Notebook 05's figures: built without a display, with clear errors on bad shapes."""

from __future__ import annotations

import pytest
import torch

from stnlib import viz
from stnlib.data import ImageSet
from stnlib.models import CNN
from stnlib.train import History, rotation_sweep


def test_transformed_digits_figure():
    x = torch.rand(5, 1, 28, 28)
    fig = viz.transformed_digits_figure(x, x.flip(-1), labels=torch.arange(5), n=4)
    assert len(fig.axes) == 8
    with pytest.raises(ValueError, match="inputs and warped"):
        viz.transformed_digits_figure(x, x[:3])


def test_training_curves_figure_single_and_several():
    h = History(epoch=[1, 2], train_loss=[0.5, 0.2], train_acc=[0.8, 0.9],
                test_acc=[0.85, 0.95], lr=[1e-3, 1e-4], epoch_s=[1.0, 1.0], eval_s=[0.1, 0.1])
    assert len(viz.training_curves_figure(h).axes) == 2
    fig = viz.training_curves_figure({"CNN": h, "ST-CNN": h.to_dict()})
    assert len(fig.axes[1].lines) == 2


def test_theta_distribution_figure():
    theta = torch.tensor([[1.0, 0, 0], [0, 1, 0]]) + 0.1 * torch.randn(50, 2, 3)
    assert len(viz.theta_distribution_figure(theta).axes) == 6
    with pytest.raises(ValueError, match=r"\(N, 2, 3\)"):
        viz.theta_distribution_figure(torch.zeros(4, 6))


def test_rotation_sweep_and_figure():
    data = ImageSet(torch.rand(20, 1, 28, 28), torch.arange(20) % 10)
    acc = rotation_sweep({"cnn": CNN(channels=(2, 4), hidden=8)}, data, [0, 45], sampler="torch")
    assert list(acc) == ["cnn"] and len(acc["cnn"]) == 2
    fig = viz.accuracy_vs_rotation_figure([0, 45], acc)
    assert len(fig.axes[0].lines) == 1
    with pytest.raises(ValueError, match="values for"):
        viz.accuracy_vs_rotation_figure([0], acc)
