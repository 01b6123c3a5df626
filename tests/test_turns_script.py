"""benchmarks/turns.py: turn summaries of R / RTS checkpoints as JSON (run here on the
first few hundred test digits; the committed files come from all 10,000)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stnlib import paper
from stnlib.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("turns")


def test_records_each_checkpoint_and_updates_the_file(script, mnist, tmp_path, capsys):
    source = Path(__file__).resolve().parents[1] / "results"  # the committed checkpoints
    for name in ("stcnn-aff_R.pt", "stcnn-tps_RTS.pt"):
        shutil.copy(source / "checkpoints" / name, tmp_path / name)
    out = tmp_path / "turns.json"
    assert script.main([str(tmp_path / "stcnn-aff_R.pt"), "--out", str(out),
                        "--test-size", "300"]) == 0
    printed = json.loads(capsys.readouterr().out)
    record = printed["stcnn-aff_R.pt"]
    expected = paper.turn_summary(paper.remaining_turn(
        load_checkpoint(tmp_path / "stcnn-aff_R.pt"), "R", 300))
    assert record["cell"] == "stcnn-aff/R" and record["test_images"] == 300
    assert record["undone_pct"] == round(expected["undone_pct"], 2)
    assert record["error_pct_far"] == round(expected["error_pct_far"], 2)
    assert record["model_config"]["transformer"] == "aff"
    # a second call adds to the same file
    assert script.main([str(tmp_path / "stcnn-tps_RTS.pt"), "--out", str(out),
                        "--test-size", "300"]) == 0
    capsys.readouterr()
    saved = json.loads(out.read_text())["checkpoints"]
    assert set(saved) == {"stcnn-aff_R.pt", "stcnn-tps_RTS.pt"}
    assert saved["stcnn-aff_R.pt"] == record and saved["stcnn-tps_RTS.pt"]["cell"] == \
        "stcnn-tps/RTS"
    # paper.load_turns reads it back by cell
    assert paper.load_turns(tmp_path) == {"stcnn-aff/R": record,
                                          "stcnn-tps/RTS": saved["stcnn-tps_RTS.pt"]}


def test_load_turns_names_a_missing_or_broken_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no turns.json in .*benchmarks/turns.py"):
        paper.load_turns(tmp_path)
    for text in ("{not json", '{"what": "no checkpoints"}', '{"checkpoints": [1]}',
                 '{"checkpoints": {"stcnn-aff_R.pt": {"error_pct": 1.0}}}'):
        (tmp_path / "turns.json").write_text(text)
        with pytest.raises(ValueError, match="is not a readable turns.json.*git checkout"):
            paper.load_turns(tmp_path)


def test_bad_names_and_missing_files_are_one_line_errors(script, tmp_path, capsys):
    out = tmp_path / "turns.json"
    for name, message in (("cnn_R.pt", "expected an R or RTS checkpoint of an ST model"),
                          ("stcnn-aff_P.pt", "expected an R or RTS checkpoint"),
                          ("stcnn-aff_R.pt", "no checkpoint at")):
        assert script.main([str(tmp_path / name), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err
    for flag in ("--test-size", "--threads"):
        assert script.main([str(tmp_path / "stcnn-aff_R.pt"), "--out", str(out), flag, "0"]) == 2
        assert capsys.readouterr().err == f"error: {flag} must be positive, got 0\n"
    assert not out.exists()
    for text in ("{ broken", '{"what": "something else"}'):  # an --out it cannot add to
        out.write_text(text)
        assert script.main([str(tmp_path / "stcnn-aff_R.pt"), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {out} is not a readable turns.json") and err.count("\n") == 1
        assert "give another --out" in err and out.read_text() == text  # left as it was
