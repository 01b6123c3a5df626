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


def test_a_moved_checkpoint_sets_an_earlier_one_aside(script, tmp_path):
    trained, results = tmp_path / "train", tmp_path / "results"
    for folder, text in ((trained, b"new weights"), (results, b"old weights")):
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "checkpoints" / "cnn_R.pt").write_bytes(text)
    target = script._move_checkpoint("cnn/R", trained, results)
    assert target.read_bytes() == b"new weights"
    assert not (trained / "checkpoints" / "cnn_R.pt").exists()
    [aside] = (results / "checkpoints" / "earlier").glob("*/cnn_R.pt")
    assert aside.read_bytes() == b"old weights"


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


def test_a_cell_stopped_at_the_deadline_finishes_with_resume(script, tmp_path, capsys,
                                                             monkeypatch):
    """A cell the deadline stops keeps its run checkpoint; --resume trains it on from there
    with the command it started with and merges it, as if never stopped."""
    import os
    import subprocess
    import time

    results, work = tmp_path / "results", tmp_path / "work"
    real_launch = script._launch

    def stopped_after_first_epoch(commands, logs, deadline):
        if logs.name != "train-logs":
            return real_launch(commands, logs, deadline)
        env = {k: v for k, v in os.environ.items() if k != "STNLIB_FAST"}
        (cell, command), = commands.items()
        saved = work / "train" / "cnn_R" / "runs" / "cnn_R.pt"
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        while not saved.exists() and process.poll() is None:
            time.sleep(0.02)
        process.kill()  # as at the deadline
        process.wait()
        return {cell: process.returncode}

    monkeypatch.setattr(script, "_launch", stopped_after_first_epoch)
    common = ["--work", str(work), "--budget-s", "300"]
    assert script.main(["--device", "cpu", "--cells", "cnn/R", "--max-epochs", "8",
                        "--calibration-steps", "5", "--train-size", "320", "--margin-s", "5",
                        "--batch-size", "32", "--results", str(results),
                        "--keep-checkpoints", "cnn/R", *common]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == {"cnn/R": 8}
    assert summary["unfinished"] == ["cnn/R"] and summary["error_pct"] == {}
    assert paper.load_results(results)["cells"]["cnn/R"]["status"] == "not run"
    assert (work / "train" / "cnn_R" / "runs" / "cnn_R.pt").exists()

    monkeypatch.setattr(script, "_launch", real_launch)
    assert script.main(["--resume", *common]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["resumed"] == ["cnn/R"] and summary["unfinished"] == []
    record = paper.load_results(results)["cells"]["cnn/R"]
    assert record["status"] == "done" and record["epochs"] == 8 and record["steps"] == 80
    assert record["error_pct"] == summary["error_pct"]["cnn/R"]
    assert [s["from_step"] for s in record["resumed"]][0] == 0
    assert record["resumed"][-1]["from_step"] > 0  # trained on, not started over
    assert summary["checkpoints"] == [str(results / "checkpoints" / "cnn_R.pt")]
    assert (work / "resume-logs" / "cnn_R.log").exists()
    # nothing left to do: a second --resume trains nothing and leaves the table alone
    assert script.main(["--resume", *common]) == 0
    assert json.loads(capsys.readouterr().out)["resumed"] == []
    assert paper.load_results(results)["cells"]["cnn/R"] == record


def test_resume_needs_an_earlier_run_and_cells_are_needed_without_it(script, tmp_path,
                                                                     capsys):
    assert script.main(["--resume", "--budget-s", "9", "--work", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert f"--resume: {tmp_path / 'w' / 'train-plan.json'} not found" in err
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "train-plan.json").write_text('{"commands": ')  # cut short
    assert script.main(["--resume", "--budget-s", "9", "--work", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "train-plan.json is not a plan this script wrote" in err and err.count("\n") == 1
    assert script.main(["--budget-s", "9", "--work", str(tmp_path / "w")]) == 2
    assert "--cells is required (or --resume" in capsys.readouterr().err
    assert script.main(["--cells", "cnn/R", "--budget-s", "9", "--slowdown", "0",
                        "--work", str(tmp_path / "w")]) == 2
    assert "--slowdown must be positive" in capsys.readouterr().err
