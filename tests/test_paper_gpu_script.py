"""benchmarks/paper_gpu.py: several Table 1 cells at once inside a wall-clock budget
(run here on the CPU with a tiny training set; on a GPU it is the same code)."""

from __future__ import annotations

import json

import pytest

from stnlib import paper
from stnlib.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("paper_gpu")


def test_step_seconds_of_a_calibration_too_short_to_time_is_not_zero(script):
    """train_s is recorded to 0.1 s: a tiny calibration can read 0.0, which once divided
    the budget by zero."""
    assert script.step_seconds({"train_s": 0.0, "steps": 5}) == pytest.approx(0.01)
    assert script.step_seconds({"train_s": 12.0, "steps": 400}) == pytest.approx(0.03)


def test_calibrates_then_trains_each_cell_into_one_results_file(script, tmp_path, capsys):
    results, work = tmp_path / "results", tmp_path / "work"
    rc = script.main(["--device", "cpu", "--cells", "fcn/R,cnn/R", "--budget-s", "300",
                      "--max-epochs", "2", "--calibration-steps", "5", "--train-size", "320",
                      "--margin-s", "5", "--sampler", "torch", "--batch-size", "32",
                      "--lr", "0.001", "--results", str(results),
                      "--work", str(work), "--paper-args", "--turn-ramp 0.5",
                      "--keep-checkpoints", "cnn/*,stcnn-aff/R"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == {"fcn/R": 2, "cnn/R": 2} and summary["unfinished"] == []
    table = paper.load_results(results)["cells"]
    record = table["cnn/R"]
    assert record["status"] == "done" and record["epochs"] == 2 and record["device"] == "cpu"
    assert record["sampler"] == "torch" and record["batch_size"] == 32 and record["lr"] == 0.001
    assert record["turn_ramp"] == 0.5 and table["fcn/R"]["turn_ramp"] == 0.5  # --paper-args
    assert record["steps"] == 2 * 320 // 32 and record["error_pct"] == summary["error_pct"]["cnn/R"]
    assert (work / "train-logs" / "cnn_R.log").exists()
    # --keep-checkpoints: cnn/R's weights moved beside the results, fcn/R's not kept
    kept = results / "checkpoints" / "cnn_R.pt"
    assert summary["checkpoints"] == [str(kept)]
    assert sorted(p.name for p in (results / "checkpoints").iterdir()) == ["cnn_R.pt"]
    assert not list(work.rglob("*.pt"))
    model = load_checkpoint(kept)
    assert sum(p.numel() for p in model.parameters()) == record["parameters"]


def test_keep_checkpoints_must_name_a_cell_of_the_run(script, tmp_path, capsys):
    assert script.main(["--cells", "cnn/R", "--budget-s", "9", "--device", "cpu",
                        "--results", str(tmp_path), "--work", str(tmp_path / "w"),
                        "--keep-checkpoints", "stcnn-*/R"]) == 2
    err = capsys.readouterr().err
    assert "--keep-checkpoints 'stcnn-*/R' matches none of the cells this run trains (cnn/R)" in err
    assert not (tmp_path / "w").exists()  # refused before anything started


def test_bad_arguments_are_one_line_errors(script, tmp_path, capsys):
    common = ["--results", str(tmp_path), "--work", str(tmp_path / "w")]
    assert script.main(["--cells", "resnet/R", "--budget-s", "9", "--device", "cpu",
                        *common]) == 2
    assert "error: --cells 'resnet/R' matches no cell" in capsys.readouterr().err
    assert script.main(["--cells", "cnn/R", "--budget-s", "0", "--device", "cpu",
                        *common]) == 2
    assert "error: --budget-s must be positive" in capsys.readouterr().err
    assert script.main(["--cells", "cnn/R", "--budget-s", "9", "--device", "tpu",
                        *common]) == 2
    assert "error: device must be a torch device" in capsys.readouterr().err
    assert script.main(["--cells", "cnn/R", "--budget-s", "9", "--device", "cpu",
                        "--batch-size", "0", *common]) == 2
    assert "error: --batch-size must be positive" in capsys.readouterr().err
    for extra, message in (("--epochs 3", "--paper-args: --epochs is set by this script"),
                           ("--epoch=3", "--paper-args: --epochs is set by this script"),
                           ("--turn-ramp 0.1 --for", "--paper-args: --force is set by"),
                           ("--bogus 1", "--paper-args: --bogus is not an option"),
                           ("--turn-ramp x", "argument --turn-ramp: invalid float value: 'x'"),
                           ("--optimizer rmsprop", "--optimizer: invalid choice: 'rmsprop'"),
                           ("--padding", "--padding: expected one argument"),
                           ("--turn-ramp '0.1", "No closing quotation")):
        assert script.main(["--cells", "cnn/R", "--budget-s", "9", "--device", "cpu",
                            f"--paper-args={extra}", *common]) == 2
        err = capsys.readouterr().err
        assert message in err
        assert err.startswith("error: ") and err.count("\n") == 1  # one line, no usage
