"""Progress styles: live bars, one line per epoch, or nothing; chosen by argument or env."""

from __future__ import annotations

import re

import pytest
import torch

from stnlib.data import ImageSet
from stnlib.models import CNN
from stnlib.progress import ENV_VAR, epoch_line, progress_style
from stnlib.train import fit


def test_style_from_argument_and_environment(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert progress_style(True) == "bars"
    assert progress_style(False) == "off"
    assert progress_style("lines") == "lines"
    monkeypatch.setenv(ENV_VAR, " Lines ")
    assert progress_style(True) == "lines"
    assert progress_style("bars") == "bars"  # an explicit argument wins over the variable
    assert progress_style(False) == "off"


def test_unknown_styles_are_clear_errors(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "verbose")
    with pytest.raises(ValueError, match=r"STNLIB_PROGRESS='verbose'.*bars, lines, off"):
        progress_style(True)
    with pytest.raises(ValueError, match="progress must be True, False or one of"):
        progress_style("tqdm")


def test_epoch_line():
    assert epoch_line(3, 12, 0.12341, 0.97123, 0.98012, 12.34) == (
        "epoch 3/12: loss 0.1234, accuracy 0.9712, test accuracy 0.9801 (12.3 s)")
    assert epoch_line(1, 1, 1.0, 0.5, None, 2.0) == (
        "epoch 1/1: loss 1.0000, accuracy 0.5000 (2.0 s)")


def _toy_run(progress, capsys):
    gen = torch.Generator().manual_seed(0)
    data = ImageSet(torch.rand(64, 1, 16, 16, generator=gen), torch.arange(64) % 2)
    model = CNN(num_classes=2, input_size=(16, 16), channels=(2, 4), hidden=8, seed=0)
    fit(model, data, data, epochs=2, batch_size=32, progress=progress, threads=1)
    return capsys.readouterr()


def test_fit_prints_one_line_per_epoch_and_no_bars(monkeypatch, capsys):
    monkeypatch.setenv(ENV_VAR, "lines")
    out = _toy_run(True, capsys)
    lines = out.out.splitlines()
    assert len(lines) == 2
    pattern = (r"epoch {}/2: loss \d\.\d{{4}}, accuracy \d\.\d{{4}}, "
               r"test accuracy \d\.\d{{4}} \(\d+\.\d s\)")
    for number, line in enumerate(lines, 1):
        assert re.fullmatch(pattern.format(number), line), line
    assert "\r" not in out.err and "%|" not in out.err


def test_fit_bars_and_off(monkeypatch, capsys):
    monkeypatch.delenv(ENV_VAR, raising=False)
    bars = _toy_run(True, capsys)
    assert "training" in bars.err and "epoch" not in bars.out
    off = _toy_run(False, capsys)
    assert off.out == "" and off.err == ""
