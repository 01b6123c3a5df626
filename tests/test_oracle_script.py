"""benchmarks/oracle.py: the Table 1 CNN on digits undone by a perfect transformer (run
here with a tiny training set; the committed results/oracle.json comes from full runs)."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("oracle")


def test_trains_each_variant_once_into_one_file(script, mnist, tmp_path, capsys,
                                               monkeypatch):
    monkeypatch.setenv("STNLIB_PROGRESS", "off")  # stdout: the JSON alone
    path = tmp_path / "oracle.json"
    tiny = ["--epochs", "1", "--train-size", "128", "--test-size", "50", "--results", str(path)]
    assert script.main(["--variants", "none,R", *tiny]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(path.read_text())["variants"]
    assert printed == saved and set(saved) == {"none", "R"}
    record = saved["R"]
    assert 0 <= record["error_pct"] <= 100 and record["test_images"] == 50
    assert record["steps"] == 128 // 64 and record["paper_st_cnn_pct"] == 0.7
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert "test_seed" not in saved["none"]
    # done variants are skipped; --force trains again, to the same result (seeded)
    assert script.main(["--variants", "R", *tiny]) == 0
    assert "R: done already" in capsys.readouterr().err
    assert json.loads(path.read_text())["variants"]["R"] == record
    assert script.main(["--variants", "R", "--force", *tiny]) == 0
    again = json.loads(path.read_text())["variants"]["R"]
    assert again["error_pct"] == record["error_pct"]
    assert again["final_train_loss"] == record["final_train_loss"]


def test_sigma_px_trains_and_tests_on_milder_p(script, mnist, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STNLIB_PROGRESS", "off")
    tiny = ["--variants", "none,P", "--epochs", "1", "--train-size", "128", "--test-size", "50"]
    records = {}
    for name, extra in (("mild", ["--sigma-px", "1"]), ("plain", [])):
        path = tmp_path / f"{name}.json"
        assert script.main([*tiny, "--results", str(path), *extra]) == 0
        capsys.readouterr()
        records[name] = json.loads(path.read_text())["variants"]
    assert records["mild"]["P"]["sigma_px"] == 1.0 and "sigma_px" not in records["plain"]["P"]
    # the table's cells are tested on the paper's spread: no context for another one
    assert "cnn_pct" in records["plain"]["P"] and "cnn_pct" not in records["mild"]["P"]
    assert "sigma_px" not in records["mild"]["none"]  # plain MNIST has no offsets
    assert records["mild"]["none"] == {**records["plain"]["none"],
                                       "train_s": records["mild"]["none"]["train_s"],
                                       "finished_utc": records["mild"]["none"]["finished_utc"]}
    assert records["mild"]["P"]["final_train_loss"] != records["plain"]["P"]["final_train_loss"]
    path = tmp_path / "paper.json"  # the paper's own spread: the plain record, context too
    assert script.main([*tiny, "--results", str(path), "--sigma-px", "5"]) == 0
    capsys.readouterr()
    own = json.loads(path.read_text())["variants"]["P"]
    assert "sigma_px" not in own and "cnn_pct" in own
    assert own["final_train_loss"] == records["plain"]["P"]["final_train_loss"]
    path = tmp_path / "refused.json"
    assert script.main(["--variants", "none,R", "--sigma-px", "1", "--results", str(path)]) == 2
    assert "variant 'R' has no Gaussian offsets" in capsys.readouterr().err
    assert not path.exists()  # refused before anything trained


def test_recipe_options_reach_the_model_and_the_record(script, mnist, tmp_path, capsys,
                                                       monkeypatch):
    monkeypatch.setenv("STNLIB_PROGRESS", "off")
    tiny = ["--variants", "R", "--epochs", "1", "--train-size", "128", "--test-size", "50"]
    table = tmp_path / "table.json"
    assert script.main([*tiny, "--results", str(table)]) == 0
    other = tmp_path / "other.json"
    assert script.main([*tiny, "--results", str(other), "--batch-size", "32", "--lr", "0.004",
                        "--label-smoothing", "0.1", "--padding", "same", "--seed", "1"]) == 0
    capsys.readouterr()
    plain = json.loads(table.read_text())["variants"]["R"]
    record = json.loads(other.read_text())["variants"]["R"]
    assert "padding" not in plain and "label_smoothing" not in plain
    assert plain["device"] == record["device"] == "cpu"
    assert (record["batch_size"], record["steps"], record["lr"], record["seed"]) == \
        (32, 128 // 32, 0.004, 1)
    assert record["padding"] == "same" and record["label_smoothing"] == 0.1
    assert record["final_train_loss"] != plain["final_train_loss"]
    # the table's ST-CNN errors are context for the table's recipe only
    assert "st_cnn_pct" in plain and "st_cnn_pct" not in record and "cnn_pct" not in record
    assert record["paper_st_cnn_pct"] == 0.7
    # --padding alone changes what trains (the padded CNN), not just the record
    padded = tmp_path / "padded.json"
    assert script.main([*tiny, "--results", str(padded), "--padding", "same"]) == 0
    capsys.readouterr()
    alone = json.loads(padded.read_text())["variants"]["R"]
    assert alone["padding"] == "same" and alone["final_train_loss"] != plain["final_train_loss"]
    assert "st_cnn_pct" not in alone


def test_bad_arguments_are_one_line_errors(script, tmp_path, capsys):
    path = tmp_path / "oracle.json"
    assert script.main(["--variants", "E", "--results", str(path)]) == 2
    assert "error: --variants must name some of none, R, RTS, P, TC" in capsys.readouterr().err
    assert script.main(["--variants", "R", "--epochs", "0", "--results", str(path)]) == 2
    assert "must be positive" in capsys.readouterr().err
    assert script.main(["--variants", "R", "--train-size", "0", "--results", str(path)]) == 2
    assert "error: --train-size must be positive, got 0" in capsys.readouterr().err
    assert script.main(["--variants", "R", "--label-smoothing", "1", "--results",
                        str(path)]) == 2
    assert "error: --label-smoothing must be in [0, 1)" in capsys.readouterr().err
    assert script.main(["--variants", "R", "--lr", "-1", "--results", str(path)]) == 2
    assert "error: --lr must be positive, got -1.0" in capsys.readouterr().err
    assert script.main(["--variants", "R", "--device", "tpu", "--results", str(path)]) == 2
    assert "error: device must be" in capsys.readouterr().err
    assert script.main(["--variants", "R", "--results", str(tmp_path)]) == 2
    assert "is a folder: name the JSON file" in capsys.readouterr().err
    path.write_text("{ broken")
    assert script.main(["--variants", "R", "--results", str(path)]) == 2
    assert "is not a readable oracle.json" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
