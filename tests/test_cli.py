"""`python -m stnlib train | eval` in-process on tiny subsets: valid JSON, files, errors."""

from __future__ import annotations

import argparse
import json

import pytest

import stnlib.__main__
import stnlib.train


def main(argv: list[str]) -> int:
    """``python -m stnlib`` restricted to the commands of stnlib.train (same wiring)."""
    parser = argparse.ArgumentParser(prog="python -m stnlib")
    stnlib.train.add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


def test_train_module_is_wired_into_the_cli():
    assert "stnlib.train" in stnlib.__main__._COMMAND_MODULES


def _last_json(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def test_train_then_eval_print_json(mnist, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "cnn", "--epochs", "1", "--seed", "3", "--out", str(out),
            "--subset", "256", "--test-subset", "200", "--batch-size", "64", "--no-progress",
            "--threads", "1"]
    assert main(args) == 0
    record = _last_json(capsys)
    assert {"model", "epochs", "seed", "test_acc", "train_s"} <= set(record)
    assert record["model"] == "cnn" and record["epochs"] == 1 and record["seed"] == 3
    assert 0.0 <= record["test_acc"] <= 1.0 and record["train_s"] > 0
    assert json.loads((out / "metrics.json").read_text()) == record
    assert json.loads((out / "history.json").read_text())["completed"] is True

    assert main(["eval", str(out / "checkpoint.pt"), "--rotate", "45", "--subset", "100"]) == 0
    result = _last_json(capsys)
    assert result["rotate"] == 45.0 and result["n"] == 100 and 0 <= result["test_acc"] <= 1

    # the same out folder again without --resume: refused, nothing lost
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0  # finished run: returns at once, same result
    assert _last_json(capsys)["test_acc"] == record["test_acc"]


def test_stcnn_fast_train(mnist, tmp_path, capsys):
    assert main(["train", "--model", "stcnn", "--fast", "--sampler", "torch", "--epochs", "1",
                 "--subset", "128", "--test-subset", "64", "--out", str(tmp_path),
                 "--no-progress", "--threads", "1"]) == 0
    record = _last_json(capsys)
    assert record["model"] == "stcnn" and record["sampler"] == "torch"


def test_eval_of_a_corrupt_checkpoint_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 10)
    assert main(["eval", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "truncated or corrupt" in err


def test_train_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for option in ("--model", "--epochs", "--seed", "--out", "--resume", "--sampler", "--fast"):
        assert option in text
