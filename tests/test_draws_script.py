"""benchmarks/draws.py: each checkpoint's error on several draws of its test set (run here
on the first few hundred test digits; the committed files come from all 10,000)."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
import torch

from stnlib import paper
from stnlib.checkpoint import load_checkpoint
from stnlib.train import evaluate

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "checkpoints"


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("draws")


def test_draw_test_seeds_start_with_the_fixed_test_set():
    assert paper.draw_test_seeds("R", 3) == [1001, 2001, 3001]
    assert paper.draw_test_seeds("TC", 1) == [paper.TEST_SEEDS["TC"]]
    with pytest.raises(ValueError, match="variant must be one of R, RTS, P, E, TC, got 'X'"):
        paper.draw_test_seeds("X", 2)
    with pytest.raises(ValueError, match="draws must be positive, got 0"):
        paper.draw_test_seeds("R", 0)


def test_a_test_seed_distorts_the_same_digits_afresh(mnist):
    fixed = paper.distorted_test_set("R", size=50)
    again = paper.distorted_test_set("R", size=50, test_seed=paper.TEST_SEEDS["R"])
    other = paper.distorted_test_set("R", size=50, test_seed=2001)
    assert torch.equal(fixed.images, again.images)
    assert torch.equal(fixed.labels, other.labels)  # the same digits ...
    changed = (fixed.images != other.images).flatten(1).any(1)
    assert changed.all()  # ... each turned by a new angle
    with pytest.raises(ValueError, match="variant must be one of"):
        paper.distorted_test_set("RT", size=5)


def test_checkpoint_cell_reads_the_names_paper_writes():
    assert paper.checkpoint_cell("results/checkpoints/cnn_P.pt") == "cnn/P"
    assert paper.checkpoint_cell(Path("x") / "stcnn-tps_RTS.pt") == "stcnn-tps/RTS"
    for name in ("stcnn-aff_R.ckpt", "stcnn-aff_X.pt", "stcnn-proj_TC.pt", "model.pt"):
        with pytest.raises(ValueError, match="expected a checkpoint named <model>_<variant>"):
            paper.checkpoint_cell(name)


def test_records_the_errors_on_each_draw_and_updates_the_file(script, mnist, tmp_path,
                                                               capsys):
    for name in ("stcnn-aff_R.pt", "stcnn-tps_R.pt", "stcnn-aff_RTS.pt"):
        shutil.copy(COMMITTED / name, tmp_path / name)
    out = tmp_path / "draws.json"
    assert script.main([str(tmp_path / "stcnn-aff_R.pt"), str(tmp_path / "stcnn-tps_R.pt"),
                        "--draws", "3", "--test-size", "300", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"stcnn-aff_R.pt", "stcnn-tps_R.pt"}
    model = load_checkpoint(tmp_path / "stcnn-aff_R.pt")
    expected = [100 * (1 - evaluate(model, paper.distorted_test_set("R", 300, test_seed=s)))
                for s in (1001, 2001, 3001)]
    record = printed["stcnn-aff_R.pt"]
    assert record["cell"] == "stcnn-aff/R" and record["test_images"] == 300
    assert record["test_seeds"] == [1001, 2001, 3001]
    assert record["error_pct"] == [round(e, 3) for e in expected]
    assert record["mean_pct"] == round(statistics.fmean(expected), 3)
    assert record["sd_pct"] == round(statistics.stdev(expected), 3)
    assert (record["min_pct"], record["max_pct"]) == (round(min(expected), 3),
                                                      round(max(expected), 3))
    assert record["paper_error_pct"] == 0.7
    assert record["draws_at_or_below_paper"] == sum(round(e, 3) <= 0.7 for e in expected)
    assert printed["stcnn-tps_R.pt"]["cell"] == "stcnn-tps/R"
    # a second call adds to the same file; one draw has no spread
    assert script.main([str(tmp_path / "stcnn-aff_RTS.pt"), "--draws", "1",
                        "--test-size", "200", "--out", str(out)]) == 0
    capsys.readouterr()
    saved = json.loads(out.read_text())
    assert saved["command"].startswith("python benchmarks/draws.py")
    records = saved["checkpoints"]
    assert set(records) == {"stcnn-aff_R.pt", "stcnn-tps_R.pt", "stcnn-aff_RTS.pt"}
    assert records["stcnn-aff_R.pt"] == record
    rts = records["stcnn-aff_RTS.pt"]
    assert rts["test_seeds"] == [1002] and rts["sd_pct"] is None and rts["test_images"] == 200


def test_bad_arguments_are_one_line_errors_that_leave_out_alone(script, tmp_path, capsys):
    out = tmp_path / "draws.json"
    for name, message in (("stcnn-aff_X.pt", "expected a checkpoint named"),
                          ("stcnn-aff_R.pt", "no checkpoint at")):
        assert script.main([str(tmp_path / name), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    (tmp_path / "a").mkdir()
    shutil.copy(COMMITTED / "stcnn-aff_R.pt", tmp_path / "a" / "stcnn-aff_R.pt")
    shutil.copy(COMMITTED / "stcnn-aff_R.pt", tmp_path / "stcnn-aff_R.pt")
    assert script.main([str(tmp_path / "stcnn-aff_R.pt"), str(tmp_path / "a" / "stcnn-aff_R.pt"),
                        "--out", str(out)]) == 2
    assert "two checkpoints share a file name" in capsys.readouterr().err
    for flag in ("--draws", "--test-size", "--threads"):
        assert script.main([str(tmp_path / "stcnn-aff_R.pt"), "--out", str(out), flag, "0"]) == 2
        assert capsys.readouterr().err == f"error: {flag} must be positive, got 0\n"
    assert not out.exists()
    out.write_text("{ broken")
    assert script.main([str(tmp_path / "stcnn-aff_R.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out} is not a readable draws.json") and err.count("\n") == 1
    assert "give another --out" in err and out.read_text() == "{ broken"


def test_load_draws_reads_records_by_cell_and_names_a_broken_file(script, mnist, tmp_path,
                                                                  capsys):
    with pytest.raises(FileNotFoundError, match="no draws.json in .*benchmarks/draws.py"):
        paper.load_draws(tmp_path)
    shutil.copy(COMMITTED / "stcnn-aff_R.pt", tmp_path / "stcnn-aff_R.pt")
    assert script.main([str(tmp_path / "stcnn-aff_R.pt"), "--draws", "2", "--test-size", "100",
                        "--out", str(tmp_path / "draws.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert paper.load_draws(tmp_path) == {"stcnn-aff/R": printed["stcnn-aff_R.pt"]}
    for text in ("{not json", '{"checkpoints": [1]}', '{"checkpoints": {"a.pt": {}}}'):
        (tmp_path / "draws.json").write_text(text)
        with pytest.raises(ValueError, match="is not a readable draws.json.*git checkout"):
            paper.load_draws(tmp_path)


def test_error_draws_figure_rows_dots_and_the_paper_line():
    from stnlib import viz

    figure = viz.error_draws_figure({"seed 0": [0.9, 0.8, 1.0], "seed 1": [0.7]},
                                    {"paper": 0.7, "paper, proj": 0.8}, title="R")
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["seed 1", "seed 0"]
    lines = {line.get_label(): line for line in ax.get_lines()}
    dots = lines["a draw of the test set"]
    assert list(dots.get_xdata()) == [0.9, 0.8, 1.0] and list(dots.get_ydata()) == [1, 1, 1]
    assert list(lines["the fixed test set (the table's)"].get_xdata()) == [0.9]
    assert list(lines["paper: 0.7%"].get_xdata()) == [0.7, 0.7]
    assert list(lines["paper, proj: 0.8%"].get_xdata()) == [0.8, 0.8]
    assert ax.get_title() == "R"
    with pytest.raises(ValueError, match="draws is empty"):
        viz.error_draws_figure({})
    with pytest.raises(ValueError, match="draws\\['x'\\] has no errors"):
        viz.error_draws_figure({"x": []})


def test_all_draws_gathers_every_folder_top_first(tmp_path):
    def write(folder: Path, *cells: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        records = {cell.replace("/", "_") + ".pt": {"cell": cell, "error_pct": [1.0, 0.9]}
                   for cell in cells}
        paper.write_checkpoint_records(folder / "draws.json", records, what="w", command="c")

    write(tmp_path / "b", "stcnn-aff/R")
    write(tmp_path / "a" / "deeper", "stcnn-tps/R")
    write(tmp_path, "stcnn-tps/RTS", "stcnn-aff/R")
    (tmp_path / "c").mkdir()  # a folder without draws.json is skipped
    found = paper.all_draws(tmp_path)
    assert [(d["folder"], d["cell"]) for d in found] == [
        (".", "stcnn-aff/R"), (".", "stcnn-tps/RTS"), ("a/deeper", "stcnn-tps/R"),
        ("b", "stcnn-aff/R")]
    assert found[0]["error_pct"] == [1.0, 0.9]
    assert [d["folder"] for d in paper.all_draws(tmp_path, cells="stcnn-*/R")] == [
        ".", "a/deeper", "b"]
    with pytest.raises(ValueError, match="cells 'x/R' matches no cell"):
        paper.all_draws(tmp_path, cells="x/R")
    (tmp_path / "b" / "draws.json").write_text("[]")
    with pytest.raises(ValueError, match="b.draws.json is not a readable draws.json"):
        paper.all_draws(tmp_path)


def test_pooled_draws_pools_one_recipe_s_runs(tmp_path):
    for folder, errors in (("s0", [0.8, 0.7, 0.9]), ("s1", [1.0, 0.6, 0.8])):
        (tmp_path / folder).mkdir()
        record = {"cell": "stcnn-aff/R", "error_pct": errors, "mean_pct": sum(errors) / 3}
        paper.write_checkpoint_records(tmp_path / folder / "draws.json",
                                       {"stcnn-aff_R.pt": record}, what="w", command="c")
    both = paper.pooled_draws(tmp_path, "stcnn-aff/R", ["s0", "s1"])
    assert both["runs"] == 2 and both["errors"] == 6 and both["paper_error_pct"] == 0.7
    assert both["fixed_mean_pct"] == pytest.approx(0.9)
    assert both["fixed_sd_pct"] == pytest.approx(statistics.stdev([0.8, 1.0]))
    assert both["draws_mean_pct"] == pytest.approx(4.8 / 6)
    assert both["seed_means_sd_pct"] == pytest.approx(0.0, abs=1e-12)  # 0.8 and 0.8
    assert both["at_or_below_paper"] == 2  # 0.7 and 0.6
    one = paper.pooled_draws(tmp_path, "stcnn-aff/R", ["s1"])
    assert one["fixed_sd_pct"] is None and one["seed_means_sd_pct"] is None
    with pytest.raises(ValueError, match="s0: no draws.json record of stcnn-tps/R; write it "
                                         "with benchmarks/draws.py"):
        paper.pooled_draws(tmp_path, "stcnn-tps/R", ["s0"])
    with pytest.raises(ValueError, match="no folders given"):
        paper.pooled_draws(tmp_path, "stcnn-aff/R", [])
