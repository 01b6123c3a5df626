"""Table 1 models and runner: shapes, identity initialisation, parameter counts, cell
selection, results files, checkpoints, and a fast-mode end-to-end run of one cell."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import stnlib
from stnlib import paper
from stnlib.checkpoint import load_checkpoint, save_checkpoint
from stnlib.paper import (
    CELLS,
    PAPER_ERROR,
    PaperNet,
    cell_model,
    fast_budget,
    load_results,
    markdown_table,
    select_cells,
)


def test_every_cell_has_a_paper_number_and_a_working_model():
    assert len(CELLS) == len(set(CELLS)) == len(PAPER_ERROR) == 36
    for cell in CELLS:
        model = cell_model(cell, sampler="torch")
        size = model.input_size
        logits = model(torch.rand(2, 1, size, size))
        assert logits.shape == (2, 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize("kind", ["aff", "proj", "tps"])
@pytest.mark.parametrize("classifier", ["fcn", "cnn"])
def test_transformer_starts_as_identity(kind, classifier):
    images = torch.rand(3, 1, 28, 28)
    model = PaperNet(classifier, kind, sampler="torch")
    torch.testing.assert_close(model.rectify(images), images, atol=1e-5, rtol=0)
    canvas = torch.rand(3, 1, 42, 42)  # a larger canvas is resampled to 28x28, no warp
    wide = PaperNet(classifier, kind, input_size=42, sampler="torch")
    reference = PaperNet(classifier, "aff", input_size=42, sampler="torch").rectify(canvas)
    assert wide.rectify(canvas).shape == (3, 1, 28, 28)
    torch.testing.assert_close(wide.rectify(canvas), reference, atol=1e-5, rtol=0)
    # sampling_grid is the grid rectify samples with: at the start, the identity grid
    identity = stnlib.affine_grid(torch.eye(2, 3).expand(3, 2, 3), (3, 1, 28, 28))
    torch.testing.assert_close(wide.sampling_grid(canvas), identity, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="no spatial transformer"):
        PaperNet(classifier).sampling_grid(images)


def test_transformer_trains_its_localisation_net():
    model = PaperNet("cnn", "tps", sampler="torch")
    model(torch.rand(4, 1, 28, 28)).sum().backward()
    assert model.localisation[-1].weight.grad.abs().sum() > 0


def test_parameter_counts_roughly_equal():
    def count(model):
        return sum(p.numel() for p in model.parameters())

    fcn, cnn = count(PaperNet("fcn")), count(PaperNet("cnn"))
    assert abs(fcn - cnn) / cnn < 0.1
    for kind, extra in (("aff", 6), ("proj", 8), ("tps", 32)):
        assert count(PaperNet("cnn", kind)) - count(PaperNet("cnn", "aff")) == 51 * (extra - 6)


def test_seeded_init_is_reproducible_and_leaves_global_state_alone():
    state = torch.get_rng_state()
    first, second = PaperNet("cnn", "proj", seed=3), PaperNet("cnn", "proj", seed=3)
    assert torch.equal(state, torch.get_rng_state())
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


def test_checkpoint_round_trip(tmp_path):
    model = cell_model("stcnn-tps/RTS", sampler="torch", seed=1)
    path = save_checkpoint(tmp_path / "m.pt", model)
    loaded = load_checkpoint(path)
    images = torch.rand(2, 1, 42, 42)
    torch.testing.assert_close(loaded(images), model.eval()(images))


def test_select_cells():
    assert select_cells("stcnn-*/R") == ["stcnn-aff/R", "stcnn-proj/R", "stcnn-tps/R"]
    assert select_cells("cnn/TC, fcn/R") == ["cnn/TC", "fcn/R"]
    assert select_cells(None) == list(CELLS) == select_cells("all")
    with pytest.raises(ValueError, match="matches no cell"):
        select_cells("resnet/R")


def test_results_file_lists_every_cell_and_marks_unrun(tmp_path):
    results = load_results(tmp_path)
    assert all(results["cells"][c]["status"] == "not run" for c in CELLS)
    text = markdown_table(results)
    assert text.count("not run yet") == 36 and "| ST-CNN TPS |" in text
    for text in ("{ broken", '{"cells": [1, 2]}', "[]"):
        (tmp_path / "table1.json").write_text(text)
        with pytest.raises(ValueError, match="table1.json is not a readable table1.json .*"
                                             "git checkout .*or move it away to start afresh"):
            load_results(tmp_path)


def test_run_text_names_error_seed_epochs_and_machine():
    record = {"error_pct": 0.7249, "seed": 2, "epochs": 59, "device": "cuda (NVIDIA H200)"}
    assert paper.run_text(record) == "0.72% (seed 2, 59 ep, H200)"
    assert paper.run_text({**record, "device": "cpu"}) == "0.72% (seed 2, 59 ep, cpu)"
    assert paper.run_text({**record, "device": "cuda (NVIDIA H100 80GB HBM3)"}).endswith(
        "H100)")
    assert paper.run_text({**record, "device": "cuda (Tesla T4)"}).endswith("Tesla T4)")
    assert paper.run_text({**record, "device": "cuda (NVIDIA GeForce RTX 4090)"}).endswith(
        ", GeForce RTX 4090)")


def test_speed_text_reads_a_cell_speed_record():
    record = {"ms_per_step": {"native": 30.71, "native+fold": 25.66},
              "over_native": {"native+fold": 0.8361},
              "projected_train_s": {"native": 863, "native+fold": 721}, "epochs": 30}
    assert paper.speed_text(record, "native", "native+fold") == (
        " 30.7 ->  25.7 ms a step (0.84)   30 epochs: 14.4 -> 12.0 min")
    # the other way round: no record of that ratio, so it is the rounded times'
    assert paper.speed_text(record, "native+fold", "native").startswith(
        " 25.7 ->  30.7 ms a step (1.20)")
    results = Path(__file__).resolve().parents[1] / "results"
    for committed in paper.load_json(results / "cell_speed_fold.json"):
        assert " ms a step (" in paper.speed_text(committed, "native", "native+fold")


def test_load_json_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "oracle.json"
    with pytest.raises(FileNotFoundError, match=r"oracle.json is missing: restore it with "
                                                r"`git checkout .*oracle.json` or write it again"):
        paper.load_json(path)
    path.write_text('{"variants": {"R": {"error_pct": 0.5}}}')
    assert paper.load_json(path) == {"variants": {"R": {"error_pct": 0.5}}}
    assert paper.load_json(path, lambda d: d["variants"]["R"]["error_pct"]) == 0.5
    for text, problem in (("{ broken", "JSONDecodeError"), ('{"runs": []}', "KeyError"),
                          ('{"variants": 3}', "TypeError")):
        path.write_text(text)
        with pytest.raises(ValueError, match=rf"oracle.json is not a readable oracle.json "
                                             rf"\({problem}.*; restore it .* or move it away"):
            paper.load_json(path, lambda d: d["variants"]["R"], otherwise="move it away")
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match="UnicodeDecodeError"):
        paper.load_json(path)


def test_finished_runs_gathers_each_cells_done_records_in_folder_order(tmp_path):
    for folder, error in (("a", 1.0), ("b", 2.0)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "table1.json").write_text(json.dumps({"cells": {
            "cnn/R": {"status": "done", "error_pct": error},
            "stcnn-aff/R": {"status": "running"}}}))
    runs = paper.finished_runs(tmp_path / "b", tmp_path / "a", tmp_path / "none")
    assert list(runs) == ["cnn/R"]
    assert [r["error_pct"] for r in runs["cnn/R"]] == [2.0, 1.0]
    assert paper.finished_runs() == {}
    assert paper.finished_cells(tmp_path / "a") == {"cnn/R": {"status": "done", "error_pct": 1.0}}
    assert paper.finished_cells(tmp_path / "none") == {}


def test_oracle_runs_gathers_each_variants_records_in_folder_order(tmp_path):
    for folder, error in (("a", 0.6), ("b", 0.7)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "oracle.json").write_text(json.dumps({"variants": {
            "R": {"error_pct": error, "seed": folder}, **({"none": {"error_pct": 0.8}}
                                                          if folder == "a" else {})}}))
    (tmp_path / "empty").mkdir()  # a seed folder without oracle records
    runs = paper.oracle_runs(tmp_path / "b", tmp_path / "empty", tmp_path / "a")
    assert [r["seed"] for r in runs["R"]] == ["b", "a"]
    assert runs["none"] == [{"error_pct": 0.8}] and paper.oracle_runs() == {}
    (tmp_path / "b" / "oracle.json").write_text('{"runs": []}')
    with pytest.raises(ValueError, match=r"b.oracle.json is not a readable oracle.json .*"
                                         r"run benchmarks/oracle.py again"):
        paper.oracle_runs(tmp_path / "a", tmp_path / "b")


def test_conv_grad_fold_builds_the_same_model_with_a_faster_first_convolution():
    from stnlib.conv import FoldGradConv2d

    native, fold = cell_model("stcnn-aff/R"), cell_model("stcnn-aff/R", conv_grad="fold")
    assert type(native.classifier[0]) is torch.nn.Conv2d
    assert type(fold.classifier[0]) is FoldGradConv2d
    assert all(type(m) is not FoldGradConv2d for m in fold.localisation.modules())
    state = native.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in fold.state_dict().items())  # same init
    assert "conv_grad" not in native.config and fold.config["conv_grad"] == "fold"
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(native(x), fold(x))
    for model in (native, fold):
        model(x).logsumexp(1).sum().backward()
    for (name, a), b in zip(native.named_parameters(), fold.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="conv_grad must be one of"):
        cell_model("stcnn-aff/R", conv_grad="fast")
    with pytest.raises(ValueError, match="an FCN has no convolutions"):
        cell_model("stfcn-aff/R", conv_grad="fold")


def test_a_cell_trained_with_conv_grad_fold_says_so(mnist, tmp_path):
    from stnlib.conv import FoldGradConv2d

    budget = dataclasses.replace(fast_budget(), conv_grad="fold")
    record = paper.run(["stcnn-aff/R"], budget, tmp_path, progress=False,
                       keep_checkpoints=("stcnn-aff/R",))["cells"]["stcnn-aff/R"]
    assert record["conv_grad"] == "fold"
    model = load_checkpoint(tmp_path / "checkpoints" / "stcnn-aff_R.pt")
    assert isinstance(model.classifier[0], FoldGradConv2d)
    plain = paper.run(["stcnn-aff/R"], fast_budget(), tmp_path / "plain",
                      progress=False)["cells"]["stcnn-aff/R"]
    assert "conv_grad" not in plain  # the table's records, as before
    assert abs(plain["final_train_loss"] - record["final_train_loss"]) < 1e-3


def test_errors():
    with pytest.raises(ValueError, match="classifier"):
        PaperNet("rnn")
    with pytest.raises(ValueError, match="transformer"):
        PaperNet("cnn", "similarity")
    with pytest.raises(ValueError, match="input must have shape"):
        PaperNet("cnn", "aff")(torch.rand(2, 1, 42, 42))
    with pytest.raises(ValueError, match="cell must be one of"):
        cell_model("stcnn-proj/TC")


def test_fast_end_to_end_one_cell_resumable(mnist, tmp_path):
    budget = fast_budget()
    results = paper.run(["stcnn-proj/E"], budget, tmp_path, progress=False,
                        keep_checkpoints=("stcnn-proj/E",))
    record = results["cells"]["stcnn-proj/E"]
    assert record["status"] == "done" and 0 <= record["error_pct"] <= 100
    assert record["steps"] == budget.train_size // budget.batch_size
    assert record["test_images"] == budget.test_size and record["seed"] == 0
    assert {"cpu", "cpu_capability"} <= record.keys() and record["device"] == "cpu"
    saved = json.loads((tmp_path / "table1.json").read_text())
    assert saved["cells"]["stcnn-proj/E"] == record
    assert saved["cells"]["cnn/R"]["status"] == "not run"
    assert "not run yet" in (tmp_path / "table1.md").read_text()
    model = load_checkpoint(tmp_path / "checkpoints" / "stcnn-proj_E.pt")
    assert isinstance(model, PaperNet) and model.config["transformer"] == "proj"
    # A finished cell is not retrained; the same seed gives the same result when forced.
    again = paper.run(["stcnn-proj/E"], budget, tmp_path, progress=False)
    assert again["cells"]["stcnn-proj/E"]["finished_utc"] == record["finished_utc"]
    forced = paper.run(["stcnn-proj/E"], budget, tmp_path, progress=False, force=True)
    assert forced["cells"]["stcnn-proj/E"]["error_pct"] == record["error_pct"]
    # ... and the earlier result is kept, not lost.
    assert forced["cells"]["stcnn-proj/E"]["earlier"] == [record]
    longer = dataclasses.replace(budget, epochs=2)
    third = paper.run(["stcnn-proj/E"], longer, tmp_path, progress=False, force=True)
    cell = third["cells"]["stcnn-proj/E"]
    assert [r["finished_utc"] for r in cell["earlier"]] == [
        forced["cells"]["stcnn-proj/E"]["finished_utc"], record["finished_utc"]]
    assert all("earlier" not in r for r in cell["earlier"])
    steps = budget.train_size // budget.batch_size
    assert paper.budget_history(third, "stcnn-proj/E") == [
        (1, steps, record["error_pct"]), (1, steps, record["error_pct"]),
        (2, 2 * steps, cell["error_pct"])]
    assert paper.budget_history(third, "cnn/R") == []
    table = (tmp_path / "table1.md").read_text()
    assert f"| stcnn-proj/E | {record['error_pct']:.2f} (1), " in table


def test_a_kept_checkpoint_replaced_by_a_forced_run_is_set_aside(mnist, tmp_path):
    from stnlib.checkpoint import read_checkpoint

    budget, keep = fast_budget(), ("cnn/E",)
    first = paper.run(["cnn/E"], budget, tmp_path, progress=False,
                      keep_checkpoints=keep)["cells"]["cnn/E"]
    kept = tmp_path / "checkpoints" / "cnn_E.pt"
    assert read_checkpoint(kept)["run"] == {"cell": "cnn/E",
                                            **{k: first[k] for k in paper.KEPT_RUN_KEYS}}
    weights = kept.read_bytes()
    longer = dataclasses.replace(budget, epochs=2)
    second = paper.run(["cnn/E"], longer, tmp_path, progress=False, force=True,
                       keep_checkpoints=keep)["cells"]["cnn/E"]
    stamp = first["finished_utc"].replace(":", "-")  # 2026-11-26T15-01-01Z
    aside = tmp_path / "checkpoints" / "earlier" / stamp / "cnn_E.pt"
    assert aside.read_bytes() == weights  # the first run's weights, untouched
    assert read_checkpoint(kept)["run"]["epochs"] == 2 == second["epochs"]
    assert second["earlier"][0]["finished_utc"] == first["finished_utc"]
    assert paper.checkpoint_cell(aside) == "cnn/E" and isinstance(load_checkpoint(aside),
                                                                   PaperNet)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt")) == ["cnn_E.pt"]
    # the same run set aside twice (a copy came back): a second folder, nothing overwritten
    twice = tmp_path / "twice" / "cnn_E.pt"
    twice.parent.mkdir()
    for _ in range(2):
        twice.write_bytes(weights)
        paper.set_aside_checkpoint(twice)
    assert sorted(p.parent.name for p in (twice.parent / "earlier").glob("*/cnn_E.pt")) == [
        stamp, f"{stamp}-2"]
    # older checkpoints carry no "run"; a file that is no checkpoint is not deleted either
    for payload in (b"not a checkpoint", None):
        if payload is None:
            save_checkpoint(twice, load_checkpoint(kept))  # an stnlib checkpoint, no run
            payload = twice.read_bytes()
        else:
            twice.write_bytes(payload)
        moved = paper.set_aside_checkpoint(twice)
        assert moved.parent.name.startswith("replaced-") and moved.read_bytes() == payload
        assert not twice.exists() and paper.set_aside_checkpoint(twice) is None


def test_an_interrupted_cell_resumes_and_its_record_says_where(mnist, tmp_path, monkeypatch):
    import stnlib.train

    budget = fast_budget()
    real_fit = stnlib.train.fit

    def killed_after_one_step(*args, **kwargs):
        real_fit(*args, **{**kwargs, "max_steps": 1})  # writes the checkpoint at step 1
        raise KeyboardInterrupt

    monkeypatch.setattr(stnlib.train, "fit", killed_after_one_step)
    with pytest.raises(KeyboardInterrupt):
        paper.run(["cnn/E"], budget, tmp_path, progress=False)
    assert (tmp_path / "runs" / "cnn_E.pt").exists()
    monkeypatch.setattr(stnlib.train, "fit", real_fit)
    record = paper.run(["cnn/E"], budget, tmp_path, progress=False)["cells"]["cnn/E"]
    assert [seg["from_step"] for seg in record["resumed"]] == [0, 1]
    assert record["resumed"][1]["cpu"] == record["cpu"]
    assert not (tmp_path / "runs" / "cnn_E.pt").exists()
    uninterrupted = paper.run(["cnn/E"], budget, tmp_path, progress=False, force=True)
    assert "resumed" not in uninterrupted["cells"]["cnn/E"]
    assert uninterrupted["cells"]["cnn/E"]["error_pct"] == record["error_pct"]


def test_ink_kept_and_parameters_of_the_fixed_test_sets(mnist):
    params = paper.distorted_test_params("P", size=300)
    assert params["corner_offsets"].shape == (300, 4, 2)
    # the same draws as the test set: they rebuild its images
    from stnlib.data import mnist as load
    from stnlib.distort import distortion_grid

    digits = load(train=False).subset(20).float_images()
    grid = distortion_grid("P", paper.distorted_test_params("P", size=20)).float()
    rebuilt = stnlib.grid_sample(digits, grid, align_corners=False).clamp(0, 1)
    test_images = paper.distorted_test_set("P", size=20).float_images()
    torch.testing.assert_close(rebuilt, test_images, atol=0.5 / 255 + 1e-6, rtol=0)
    kept = paper.distorted_test_ink_kept("P", size=300)
    assert kept.shape == (300,) and kept.dtype == torch.float64
    assert ((kept >= 0) & (kept <= 1)).all() and kept.median() > 0.97 and kept.min() < 0.9
    torch.testing.assert_close(paper.distorted_test_ink_kept("TC", size=50),
                               torch.ones(50, dtype=torch.float64))
    # digits that lost ink are darker in the distorted test set than those that kept it all
    images = paper.distorted_test_set("P", size=300).images.double().flatten(1).sum(1)
    assert images[kept < 0.8].mean() < images[kept > 0.99].mean()


def test_tc_test_set_is_the_same_placed_or_sampled(mnist):
    """Table 1's TC cells were tested before ``distort`` placed TC's digit instead of
    sampling its whole-pixel shift: the stored (uint8) test set is the same either way."""
    from stnlib.bench.distort import sampled_tc

    test, placed, params = paper._distorted_test("TC", 1000)  # one batch of 1000
    sampled = sampled_tc(test.float_images(), params)
    assert 0 < (placed - sampled).abs().max() < 1e-5  # the sampler's float rounding
    assert torch.equal(paper._stored(placed), paper._stored(sampled))
    assert torch.equal(paper._stored(placed), paper.distorted_test_set("TC", 1000).images)


def test_oracle_test_set_is_the_stored_test_set_undone(mnist):
    from stnlib.data import mnist as load
    from stnlib.distort import undo

    oracle = paper.oracle_test_set("RTS", size=40)
    assert oracle.images.shape == (40, 1, 28, 28) and oracle.images.dtype == torch.uint8
    stored = paper.distorted_test_set("RTS", size=40)
    torch.testing.assert_close(oracle.labels, stored.labels)
    expected = undo(stored.float_images(), "RTS", paper.distorted_test_params("RTS", size=40))
    torch.testing.assert_close(oracle.float_images(), expected, atol=0.5 / 255 + 1e-6, rtol=0)
    # upright and full size again: far closer to the clean digits than the canvas is
    clean = load(train=False).subset(40).float_images()
    cos = torch.nn.functional.cosine_similarity(oracle.float_images().flatten(1),
                                                clean.flatten(1))
    assert cos.min() > 0.8


def test_notebook_figures_and_checks(capsys):
    from stnlib import exercises as ex
    from stnlib import viz
    from stnlib.tps import tps_control_points

    images = torch.rand(3, 1, 28, 28)
    assert viz.distortion_variants_figure({"R": images, "TC": torch.rand(2, 1, 60, 60)}).axes
    assert viz.rectification_figure(images, {"aff": images}).axes
    assert viz.warp_grids_figure({"id": torch.zeros(5, 5, 2)}).axes
    results = load_results("/nonexistent")
    results["cells"]["cnn/R"] = {"status": "done", "error_pct": 1.5, "paper_error_pct": 1.2,
                                "epochs": 5, "steps": 50}
    assert "1 (35 not run yet)" in viz.table1_figure(results).axes[0].get_title()
    with pytest.raises(ValueError, match="trained more than once"):
        viz.error_by_budget_figure(results)
    results["cells"]["cnn/R"]["earlier"] = [
        {"status": "done", "error_pct": 3.0, "epochs": 1, "steps": 10}]
    figure = viz.error_by_budget_figure(results)
    assert figure.axes[0].get_title() == "cnn/R"
    assert list(figure.axes[0].lines[0].get_xdata()) == [1, 5]
    with pytest.raises(ValueError, match="trained more than once"):
        viz.error_by_budget_figure(results, cells="stcnn-*")
    with pytest.raises(ValueError, match="outputs"):
        viz.rectification_figure(images, {"aff": images[:2]})
    # the border of an identity grid (align_corners=False) runs through the outer pixel
    # centres of the input, once around; each grid's row name takes its outline's colour
    big = torch.rand(3, 1, 42, 42)
    identity = stnlib.affine_grid(torch.eye(2, 3).expand(3, 2, 3), (3, 1, 28, 28))
    figure = viz.rectification_figure(big, {"aff": images, "tps": images},
                                      grids={"tps": identity})
    (line,) = figure.axes[0].lines
    xs, ys = line.get_data()
    assert len(xs) == 4 * 27 + 1 and xs.min() == pytest.approx(0.25, abs=1e-5) and \
        ys.max() == pytest.approx(41 - 0.25, abs=1e-5)
    assert figure.axes[2 * 3].yaxis.label.get_color() == "tab:orange"
    with pytest.raises(ValueError, match=r"grids: \['proj'\] are not rows"):
        viz.rectification_figure(images, {"aff": images}, grids={"proj": identity})
    with pytest.raises(ValueError, match="grids\\['aff'\\]: expected 3 grids"):
        viz.rectification_figure(images, {"aff": images}, grids={"aff": identity[:2]})
    kept = torch.tensor([100.0, 100.0, 97.0, 85.0, 30.0, 0.0])
    wrong = torch.tensor([False, False, True, False, True, True])
    figure = viz.error_by_group_figure(kept, wrong, edges=(0, 50, 90, 100), xlabel="% ink",
                                       paper_error=0.8)
    rates = [bar.get_height() for bar in figure.axes[0].patches]
    assert rates == pytest.approx([100.0, 0.0, 100 / 3])  # groups [0, 50), [50, 90), [90, 100]
    assert [bar.get_height() for bar in figure.axes[1].patches] == pytest.approx(
        [200 / 3, 0.0, 100 / 3])
    moved = viz.error_by_group_figure(torch.tensor([1.0, 7.0, 30.0]), torch.tensor([0, 0, 1]),
                                      edges=(0, 5, 10, float("inf")), xlabel="px")
    assert [t.get_text() for t in moved.axes[0].get_xticklabels()] == ["0-5", "5-10", "10+"]
    with pytest.raises(ValueError, match="edges must be at least two increasing numbers"):
        viz.error_by_group_figure(kept, wrong, edges=(0, 90, 50, 100), xlabel="")
    with pytest.raises(ValueError, match="outside the edges 0 to 90: widen the edges"):
        viz.error_by_group_figure(kept, wrong, edges=(0, 50, 90), xlabel="")
    with pytest.raises(ValueError, match="one length"):
        viz.error_by_group_figure(kept, wrong[:3], edges=(0, 100), xlabel="")
    with pytest.raises(ValueError, match="values holds 1 NaN"):
        viz.error_by_group_figure(torch.tensor([1.0, float("nan")]), torch.tensor([0, 1]),
                                  edges=(0, 100), xlabel="")
    assert ex.check_projective_from_affine([0.8, -0.2, 0.1, 0.3, 0.9, 0, 0, 0])
    assert not ex.check_projective_from_affine([0.8, -0.2, 0.1, 0.3, 0.9, 0, 0.1, 0])
    assert ex.check_tps_identity(tps_control_points().reshape(32))
    assert not ex.check_tps_identity(tps_control_points().flip(-1))
    assert "swap" in capsys.readouterr().out
    assert ex.check_scaled_shift_homography([[1.25, 0, -0.625], [0, 1.25, 0], [0, 0, 1]])
    assert not ex.check_scaled_shift_homography([[0.8, 0, 0.5], [0, 0.8, 0], [0, 0, 1]])
    assert "invert" in capsys.readouterr().out
    assert not ex.check_tps_identity(None)


def test_cli_lists_and_filters_cells(capsys):
    import argparse

    parser = argparse.ArgumentParser()
    paper.add_cli(parser.add_subparsers())
    args = parser.parse_args(["paper", "--list", "--cells", "stcnn-*/TC,cnn/R"])
    assert args.func(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["cnn/R", "stcnn-aff/TC"]
    args = parser.parse_args(["paper", "--list", "--cells", "nothing"])
    assert args.func(args) == 2  # one line on stderr, no traceback
    assert "error: --cells 'nothing' matches no cell" in capsys.readouterr().err


def test_cli_rejects_a_zero_budget_instead_of_using_the_default(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    paper.add_cli(parser.add_subparsers())
    for flag, message in (("--epochs", "epochs must be a positive int, got 0"),
                          ("--lr", "lr must be a positive finite number or None, got 0.0")):
        args = parser.parse_args(["paper", "--fast", "--no-progress", "--cells", "cnn/R",
                                  "--results", str(tmp_path), flag, "0"])
        assert args.func(args) == 2
        assert f"error: {message}" in capsys.readouterr().err
        assert paper.load_results(tmp_path)["cells"]["cnn/R"].get("status") != "done"


def test_cli_weight_decay_is_used_recorded_and_shown(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    paper.add_cli(parser.add_subparsers())
    common = ["paper", "--fast", "--no-progress", "--cells", "cnn/R", "--optimizer", "adamw"]
    args = parser.parse_args([*common, "--results", str(tmp_path / "a"),
                              "--weight-decay", "0.5"])
    assert args.func(args) == 0
    record = paper.load_results(tmp_path / "a")["cells"]["cnn/R"]
    assert record["weight_decay"] == 0.5 and record["optimizer"] == "adamw"
    assert "| adamw/onecycle wd 0.5 |" in (tmp_path / "a" / "table1.md").read_text()
    args = parser.parse_args([*common, "--results", str(tmp_path / "b")])
    assert args.func(args) == 0
    plain = paper.load_results(tmp_path / "b")["cells"]["cnn/R"]
    assert plain["weight_decay"] == 0.0 and "| adamw/onecycle |" in paper.markdown_table(
        paper.load_results(tmp_path / "b"))
    assert plain["final_train_loss"] != record["final_train_loss"]  # it did decay
    args = parser.parse_args([*common, "--results", str(tmp_path / "c"),
                              "--weight-decay", "-1"])
    assert args.func(args) == 2
    assert "error: weight_decay must be a finite number >= 0" in capsys.readouterr().err


def test_cli_names_the_flag_whose_pattern_matches_no_cell(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    paper.add_cli(parser.add_subparsers())
    args = parser.parse_args(["paper", "--fast", "--no-progress", "--cells", "cnn/R",
                              "--results", str(tmp_path), "--keep-checkpoints", "cnn/X"])
    assert args.func(args) == 2  # checked before any training starts
    assert "error: --keep-checkpoints 'cnn/X' matches no cell" in capsys.readouterr().err
    assert paper.load_results(tmp_path)["cells"]["cnn/R"].get("status") != "done"


def test_cli_refuses_a_cell_another_process_is_training_into_the_same_folder(tmp_path,
                                                                            capsys):
    import argparse

    from stnlib.checkpoint import checkpoint_lock

    parser = argparse.ArgumentParser()
    paper.add_cli(parser.add_subparsers())
    args = parser.parse_args(["paper", "--fast", "--no-progress", "--cells", "cnn/R",
                              "--results", str(tmp_path)])
    with checkpoint_lock(tmp_path / "runs" / "cnn_R.pt"):  # the same cell, running
        assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "cnn_R.pt is being trained into right now by process" in err
    assert "another --results folder" in err
    assert paper.load_results(tmp_path)["cells"]["cnn/R"].get("status") != "done"
    assert args.func(args) == 0  # once it is free the cell trains


def test_device_is_checked_and_recorded(monkeypatch):
    assert paper.check_device("cpu") == "cpu"
    for bad, message in (("tpu", "torch device such as 'cpu' or 'cuda'"),
                         ("meta", "must be 'cpu' or 'cuda"),
                         ("cuda:x", "torch device such as")):
        with pytest.raises(ValueError, match=message):
            paper.check_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="torch sees no CUDA GPU here.*--device cpu"):
        paper.check_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="sees 1 GPU"):
        paper.check_device("cuda:1")
    assert paper.check_device("cuda") == "cuda"


def test_markdown_names_the_device_each_cell_trained_on():
    results = paper.load_results("/nonexistent")
    done = {"status": "done", "error_pct": 1.0, "paper_error_pct": 0.7, "train_images": 60000,
            "epochs": 1, "steps": 937, "batch_size": 64, "optimizer": "adam",
            "schedule": "onecycle", "lr": 0.002, "seed": 0, "sampler": "stnlib",
            "train_s": 9.0, "test_images": 10000}
    results["cells"]["cnn/R"] = dict(done)  # recorded before devices were: the CPU
    results["cells"]["cnn/P"] = dict(done, device="cuda (NVIDIA H200)", cpu="AMD EPYC",
                                     cpu_capability="AVX512")
    results["cells"]["cnn/E"] = dict(done, device="cpu", cpu="AMD EPYC", cpu_capability="AVX2")
    results["cells"]["cnn/RTS"] = dict(done, device="cpu", cpu="AMD EPYC", cpu_capability="AVX2",
                                       cpu_limits={"ATEN_CPU_CAPABILITY": "avx2"}, train_s=8.0)
    text = paper.markdown_table(results)
    assert "| sampler | device | train s |" in text
    assert "| cnn/R | 1.00 | 0.7 |" in text and "| stnlib | cpu | 9 |" in text
    assert "| stnlib | cuda (NVIDIA H200) | 9 |" in text
    assert "| stnlib | cpu (AMD EPYC, AVX2) | 9 |" in text
    assert "| stnlib | cpu (AMD EPYC, held to AVX2) | 8 |" in text


def test_a_second_process_writing_the_same_results_folder_keeps_its_cells(tmp_path,
                                                                         monkeypatch):
    def fake_run_cell(cell, budget, results_dir, **_):
        if cell == "cnn/R":  # meanwhile another process finishes cnn/P into the same folder
            other = paper.load_results(results_dir)
            other["cells"]["cnn/P"] = {"status": "done", "error_pct": 8.0, "epochs": 15,
                                       "steps": 1, "paper_error_pct": 1.5}
            paper.save_results(other, results_dir)
        return {"status": "done", "error_pct": 1.5, "epochs": 1, "steps": 1,
                "paper_error_pct": paper.PAPER_ERROR[cell]}

    monkeypatch.setattr(paper, "run_cell", fake_run_cell)
    monkeypatch.setattr(paper, "markdown_table", lambda results: "")  # fake records are short
    results = paper.run(["cnn/R"], paper.Budget(), tmp_path, progress=False)
    assert results["cells"]["cnn/R"]["error_pct"] == 1.5
    assert results["cells"]["cnn/P"]["error_pct"] == 8.0  # not overwritten by a stale copy
    assert paper.load_results(tmp_path)["cells"]["cnn/P"]["error_pct"] == 8.0


# Each process waits for the go file, then counts in its own cell 150 times, every count a
# read-change-write of the whole table1.json.
_COUNTER = """
import sys, time
from pathlib import Path
from stnlib import paper
cell, folder = sys.argv[1], sys.argv[2]
print("ready", flush=True)
while not (Path(folder) / "go").exists():
    time.sleep(0.01)
for _ in range(150):
    with paper.editing_results(folder) as results:
        record = results["cells"][cell]
        results["cells"][cell] = {**record, "status": "counting",
                                  "count": record.get("count", 0) + 1}
"""


def test_processes_writing_one_results_folder_at_once_lose_no_result(tmp_path):
    cells = ("cnn/R", "cnn/P", "stcnn-aff/R")
    counters = [subprocess.Popen([sys.executable, "-c", _COUNTER, cell, str(tmp_path)],
                                 stdout=subprocess.PIPE, text=True) for cell in cells]
    try:
        assert [c.stdout.readline().strip() for c in counters] == ["ready"] * 3
        (tmp_path / "go").touch()  # all three start writing together
        assert [c.wait(timeout=300) for c in counters] == [0, 0, 0]
    finally:
        for c in counters:
            c.kill()
            c.wait()
    results = paper.load_results(tmp_path)
    assert [results["cells"][c]["count"] for c in cells] == [150, 150, 150]
    assert not (tmp_path / "table1.json.lock").exists()
    assert (tmp_path / "table1.md").read_text() == markdown_table(results)


def test_editing_results_writes_nothing_when_the_block_fails(tmp_path):
    with paper.editing_results(tmp_path) as results:
        results["cells"]["cnn/R"]["note"] = "kept"
    before = (tmp_path / "table1.json").read_text()
    with pytest.raises(KeyError):
        with paper.editing_results(tmp_path) as results:
            results["cells"]["cnn/R"]["note"] = "lost"
            raise KeyError("a bug in the block")
    assert (tmp_path / "table1.json").read_text() == before
    assert load_results(tmp_path)["cells"]["cnn/R"]["note"] == "kept"


def test_cli_refuses_a_cell_another_run_holds_from_its_check_to_its_record(tmp_path, capsys):
    """Between training and writing the record the first run's checkpoint lock is gone; the
    cell's own lock still stops a second run (which would evaluate or retrain it again)."""
    import argparse

    from stnlib.checkpoint import file_lock

    parser = argparse.ArgumentParser()
    paper.add_cli(parser.add_subparsers())
    args = parser.parse_args(["paper", "--fast", "--no-progress", "--cells", "cnn/R",
                              "--results", str(tmp_path)])
    with file_lock(tmp_path / "runs" / "cnn_R", 0):  # the first run's cell lock
        start = time.monotonic()
        assert args.func(args) == 2
        assert time.monotonic() - start < 30  # stopped at once, trained nothing
    err = capsys.readouterr().err
    assert err.startswith("error: cell cnn/R is being trained into ") and err.count("\n") == 1
    assert "wait for that run to finish, or give this one another --results folder" in err
    assert paper.load_results(tmp_path)["cells"]["cnn/R"].get("status") != "done"
    assert not list((tmp_path / "runs").glob("*.pt*"))


COMMITTED = sorted((Path(__file__).resolve().parents[1] / "results").glob("**/table1.json"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.parent.name)
def test_committed_results_are_readable_and_their_markdown_is_current(path):
    """Every committed results folder (the CPU table, the GPU runs, other seeds): the JSON
    loads, each finished cell is plausible, and table1.md is what the JSON renders to (a
    hand edit of either, or a JSON copied without its table, fails here)."""
    results = load_results(path.parent)
    finished = [r for r in results["cells"].values() if r["status"] == "done"]
    assert finished
    for record in [*finished, *(e for r in finished for e in r.get("earlier", []))]:
        assert 0 <= record["error_pct"] <= 100 and record["test_images"] == 10000
        assert record["steps"] == record["epochs"] * (record["train_images"]
                                                      // record["batch_size"])
    assert path.with_suffix(".md").read_text() == markdown_table(results)


def test_committed_results_include_the_cpu_table():
    assert [p.parent.name for p in COMMITTED].count("results") == 1


def test_cli_loc_lr_scale_is_used_recorded_and_shown(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    paper.add_cli(parser.add_subparsers())
    common = ["paper", "--fast", "--no-progress", "--sampler", "torch"]
    args = parser.parse_args([*common, "--cells", "stcnn-aff/R", "--results",
                              str(tmp_path / "a"), "--loc-lr-scale", "0.1"])
    assert args.func(args) == 0
    record = paper.load_results(tmp_path / "a")["cells"]["stcnn-aff/R"]
    assert record["loc_lr_scale"] == 0.1
    assert "| 0.002 (loc x0.1) |" in (tmp_path / "a" / "table1.md").read_text()
    args = parser.parse_args([*common, "--cells", "stcnn-aff/R", "--results",
                              str(tmp_path / "b")])
    assert args.func(args) == 0
    plain = paper.load_results(tmp_path / "b")["cells"]["stcnn-aff/R"]
    assert "loc_lr_scale" not in plain and "(loc x" not in (tmp_path / "b" / "table1.md"
                                                             ).read_text()
    assert plain["final_train_loss"] != record["final_train_loss"]  # it was used
    for cell, value, message in (
            ("cnn/R", "0.1", "cell cnn/R has no localisation network"),
            ("stcnn-aff/R", "0", "lr_scales['localisation'] must be a positive finite")):
        args = parser.parse_args([*common, "--cells", cell, "--results", str(tmp_path / "c"),
                                  "--loc-lr-scale", value])
        assert args.func(args) == 2
        assert message in capsys.readouterr().err


def test_cli_turn_ramp_is_used_recorded_and_shown(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    paper.add_cli(parser.add_subparsers())
    common = ["paper", "--fast", "--no-progress", "--sampler", "torch"]
    runs = {}
    for name, extra in (("ramp", ["--turn-ramp", "0.5"]), ("plain", [])):
        args = parser.parse_args([*common, "--cells", "stcnn-aff/R", "--results",
                                  str(tmp_path / name), *extra])
        assert args.func(args) == 0
        runs[name] = paper.load_results(tmp_path / name)["cells"]["stcnn-aff/R"]
    assert runs["ramp"]["turn_ramp"] == 0.5 and "turn_ramp" not in runs["plain"]
    assert "(turn ramp 0.5) |" in (tmp_path / "ramp" / "table1.md").read_text()
    assert "turn ramp" not in (tmp_path / "plain" / "table1.md").read_text()
    assert runs["ramp"]["final_train_loss"] != runs["plain"]["final_train_loss"]  # it was used
    for cell, value, message in (
            ("stcnn-aff/P", "0.1", "cell stcnn-aff/P: turn_ramp=0.1: variant 'P' has no turn"),
            ("cnn/R", "1.5", r"turn_ramp must be in [0, 1]")):
        args = parser.parse_args([*common, "--cells", cell, "--results", str(tmp_path / "c"),
                                  "--turn-ramp", value])
        assert args.func(args) == 2
        assert message in capsys.readouterr().err


def test_cli_sigma_px_is_used_for_training_and_test_recorded_and_shown(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    paper.add_cli(parser.add_subparsers())
    common = ["paper", "--fast", "--no-progress", "--sampler", "torch", "--cells", "cnn/P"]
    runs = {}
    for name, extra in (("mild", ["--sigma-px", "0"]), ("paper", ["--sigma-px", "5"]),
                        ("plain", [])):
        args = parser.parse_args([*common, "--results", str(tmp_path / name), *extra])
        assert args.func(args) == 0
        runs[name] = paper.load_results(tmp_path / name)["cells"]["cnn/P"]
    assert runs["mild"]["sigma_px"] == 0.0
    assert "sigma_px" not in runs["plain"] and "sigma_px" not in runs["paper"]  # the paper's
    assert "| cnn/P (offsets sigma 0.0 px) |" in (tmp_path / "mild" / "table1.md").read_text()
    assert "offsets sigma" not in (tmp_path / "plain" / "table1.md").read_text()
    for key in ("final_train_loss", "error_pct"):
        assert runs["paper"][key] == runs["plain"][key]
    assert runs["mild"]["final_train_loss"] != runs["plain"]["final_train_loss"]  # training
    # ... and the test set: the same weights read the milder test digits differently.
    fast = paper.fast_budget()
    plain = paper.distorted_test_set("P", fast.test_size)
    mild = paper.distorted_test_set("P", fast.test_size, sigma_px=0.0)
    assert plain.labels.equal(mild.labels) and not plain.images.equal(mild.images)
    for cell, value, message in (
            ("cnn/R", "2", "cell cnn/R: sigma_px=2.0: variant 'R' has no Gaussian offsets"),
            ("cnn/E", "-1", "sigma_px must be a finite number of pixels in [0, 28]")):
        args = parser.parse_args([*common[:-2], "--cells", cell, "--results",
                                  str(tmp_path / "c"), "--sigma-px", value])
        assert args.func(args) == 2
        assert message in capsys.readouterr().err


def test_sigma_sweep_reads_each_spread_from_the_records(tmp_path):
    from stnlib import viz

    def write(folder: Path, errors: dict[str, float], sigma: float | None,
              oracle: float | None = None) -> None:
        cells = {cell: {"status": "done", "error_pct": error,
                        **({"sigma_px": sigma} if sigma is not None else {})}
                 for cell, error in errors.items()}
        folder.mkdir(parents=True)
        (folder / "table1.json").write_text(json.dumps({"cells": cells}))
        if oracle is not None:
            record = {"error_pct": oracle, **({"sigma_px": sigma} if sigma is not None else {})}
            (folder / "oracle.json").write_text(json.dumps({"variants": {"P": record}}))

    # folder names are only names: the spread comes from each record
    write(tmp_path / "sweep" / "b", {"cnn/P": 1.4, "stcnn-aff/P": 0.9}, 3.0, oracle=0.8)
    write(tmp_path / "sweep" / "a", {"cnn/P": 0.8}, 1.5)
    write(tmp_path / "main", {"cnn/P": 8.0, "stcnn-aff/P": 3.0, "cnn/R": 1.7}, None, oracle=1.8)
    sweep = paper.sigma_sweep(tmp_path / "sweep", main=tmp_path / "main")
    assert sweep == {1.5: {"cnn/P": 0.8}, 3.0: {"cnn/P": 1.4, "stcnn-aff/P": 0.9, "oracle": 0.8},
                     5.0: {"cnn/P": 8.0, "stcnn-aff/P": 3.0, "oracle": 1.8}}
    assert list(paper.sigma_sweep(tmp_path / "sweep")) == [1.5, 3.0]
    assert paper.sigma_sweep(tmp_path / "sweep", cells="stcnn-*") == {3.0: {
        "stcnn-aff/P": 0.9, "oracle": 0.8}}
    figure = viz.error_by_sigma_figure(sweep, {"paper CNN": 1.5, "paper ST-CNN": 0.8})
    lines = {line.get_label(): line.get_data() for line in figure.axes[0].get_lines()}
    assert list(lines["cnn/P"][0]) == [1.5, 3.0, 5.0] and list(lines["cnn/P"][1]) == [0.8, 1.4, 8.0]
    assert list(lines["perfect transformer + CNN"][1]) == [0.8, 1.8]
    assert list(lines["paper CNN"][1]) == [1.5, 1.5]
    with pytest.raises(ValueError, match="no \\*/table1.json under"):
        paper.sigma_sweep(tmp_path / "nothing")
    with pytest.raises(ValueError, match="variant must be one of \\('P', 'E'\\)"):
        paper.sigma_sweep(tmp_path / "sweep", variant="R")
    with pytest.raises(ValueError, match="sweep is empty"):
        viz.error_by_sigma_figure({})
    write(tmp_path / "sweep" / "c", {"stcnn-aff/P": 0.7}, 3.0)  # a second run of a cell
    with pytest.raises(ValueError, match=r"stcnn-aff/P at sigma 3 px is in both "
                                         r".*b.table1.json and .*c.table1.json"):
        paper.sigma_sweep(tmp_path / "sweep")
    assert paper.sigma_sweep(tmp_path / "sweep", cells="cnn/*")[3.0] == {"cnn/P": 1.4,
                                                                         "oracle": 0.8}
    write(tmp_path / "sweep" / "d", {}, 3.0, oracle=0.6)  # a second oracle at 3 px
    with pytest.raises(ValueError, match=r"oracle at sigma 3 px is in both .*b.oracle.json"):
        paper.sigma_sweep(tmp_path / "sweep", cells="cnn/*")
    (tmp_path / "sweep" / "a" / "oracle.json").write_text("{ broken")
    with pytest.raises(ValueError, match="oracle.json is not a readable oracle.json"):
        paper.sigma_sweep(tmp_path / "sweep")


@pytest.mark.parametrize("variant", ["R", "RTS"])
def test_remaining_turn_is_the_drawn_angle_through_an_identity_transformer(variant, mnist):
    model = cell_model(f"stcnn-aff/{variant}", sampler="torch")
    result = paper.remaining_turn(model, variant, size=40, batch_size=16)
    assert result["drawn"].shape == result["remaining"].shape == result["correct"].shape == (40,)
    assert result["drawn"].abs().max() > 20
    torch.testing.assert_close(result["remaining"], result["drawn"], atol=1e-6, rtol=0)
    assert paper.undone_fraction(result["drawn"], result["remaining"]) == pytest.approx(
        0, abs=1e-9)


def test_grid_turn_is_zero_through_the_perfect_transformer_and_sees_partial_turns():
    from stnlib.distort import distortion_matrix

    angle = torch.tensor([-80.0, -30.0, 0.0, 45.0, 90.0], dtype=torch.float64)
    matrix = distortion_matrix("R", {"angle": angle})
    for share in (1.0, 0.5, 0.0):  # undo this share of each turn, through the grid
        undo = distortion_matrix("R", {"angle": share * angle}).inverse()[:, :2]
        grid = stnlib.affine_grid(undo, (5, 1, 28, 28), align_corners=False)
        torch.testing.assert_close(paper.grid_turn(grid, matrix), (1 - share) * angle,
                                   atol=1e-6, rtol=0)


def test_undone_fraction_and_remaining_turn_bad_input():
    drawn = torch.linspace(-90, 90, 50, dtype=torch.float64)
    assert paper.undone_fraction(drawn, 0.25 * drawn + 7) == pytest.approx(0.75)
    assert paper.undone_fraction(drawn, torch.full_like(drawn, 3.0)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="variant must be 'R' or 'RTS'"):
        paper.remaining_turn(cell_model("stcnn-aff/P", sampler="torch"), "P", size=4)
    with pytest.raises(ValueError, match="PaperNet with a spatial transformer"):
        paper.remaining_turn(cell_model("cnn/R", sampler="torch"), "R", size=4)



def test_turn_summary_sums_up_a_remaining_turn_result():
    drawn = torch.tensor([-90.0, -80.0, 0.0, 10.0, 80.0, 90.0], dtype=torch.float64)
    result = {"drawn": drawn, "remaining": 0.5 * drawn,
              "correct": torch.tensor([True, False, True, True, True, False])}
    summary = paper.turn_summary(result)
    assert summary == pytest.approx({"error_pct": 100 / 3, "error_pct_far": 50.0,
                                     "undone_pct": 50.0, "left_far_deg": 42.5})
    assert paper.turn_summary(result, far_degrees=85)["error_pct_far"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="no digit is turned 95"):
        paper.turn_summary(result, far_degrees=95)

def test_remaining_turn_figure_bins_the_turns_and_names_the_share_undone():
    from stnlib import viz

    drawn = torch.tensor([-85.0, -80.0, -5.0, 5.0, 80.0, 88.0], dtype=torch.float64)
    figure = viz.remaining_turn_figure({"half": {"drawn": drawn, "remaining": drawn / 2}},
                                       bin_degrees=30)
    ax = figure.axes[0]
    xs, ys = ax.lines[0].get_data()
    assert list(xs) == [-75.0, -15.0, 15.0, 75.0]  # bins [-90,-60), [-30,0), [0,30), [60,90)
    assert list(ys) == pytest.approx([-41.25, -2.5, 2.5, 42.0])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "half: undoes 50%", "no transformer", "perfect transformer"]
    with pytest.raises(ValueError, match="turns is empty"):
        viz.remaining_turn_figure({})
    with pytest.raises(ValueError, match=r"turns\['x'\]: 'drawn' and 'remaining' must be"):
        viz.remaining_turn_figure({"x": {"drawn": drawn, "remaining": drawn[:3]}})


def test_same_padding_keeps_the_classifier_map_7x7_and_round_trips(tmp_path):
    valid, same = cell_model("stcnn-aff/R", sampler="torch"), cell_model(
        "stcnn-aff/R", sampler="torch", padding="same")
    assert valid.classifier[-1].in_features == 32 * 2 * 2
    assert same.classifier[-1].in_features == 32 * 7 * 7
    assert "padding" not in valid.config and same.config["padding"] == "same"
    assert cell_model("cnn/RTS", padding="same")(torch.rand(2, 1, 42, 42)).shape == (2, 10)
    images = torch.rand(3, 1, 28, 28)
    save_checkpoint(tmp_path / "same.pt", same)
    loaded = load_checkpoint(tmp_path / "same.pt")
    assert loaded.config == same.config
    torch.testing.assert_close(loaded(images), same(images))
    with pytest.raises(ValueError, match="padding='same' is for the CNN classifier"):
        cell_model("stfcn-aff/R", padding="same")
    with pytest.raises(ValueError, match="padding must be one of"):
        PaperNet("cnn", "aff", padding="full")


@pytest.mark.parametrize("cell, option, value, mark", [
    ("cnn/R", "padding", "same", "(same-padded CNN)"),
    ("stcnn-aff/R", "loc_size", "large", "(large localisation net)"),
    ("stcnn-tps/RTS", "loc_pool", 2, "(localisation net reads the input pooled by 2)"),
])
def test_cli_model_options_are_used_recorded_and_shown(tmp_path, cell, option, value, mark):
    import argparse

    parser = argparse.ArgumentParser()
    paper.add_cli(parser.add_subparsers())
    args = parser.parse_args(["paper", "--fast", "--no-progress", "--cells", cell,
                              "--results", str(tmp_path), f"--{option.replace('_', '-')}",
                              str(value), "--keep-checkpoints", cell])
    assert args.func(args) == 0
    record = paper.load_results(tmp_path)["cells"][cell]
    assert record[option] == value and record["parameters"] == sum(
        p.numel() for p in cell_model(cell, **{option: value}).parameters())
    assert f"| {cell} {mark} |" in (tmp_path / "table1.md").read_text()
    kept = load_checkpoint(tmp_path / "checkpoints" / f"{cell.replace('/', '_')}.pt")
    assert kept.config[option] == value


def test_large_localisation_network_widens_only_the_localisation_and_round_trips(tmp_path):
    standard = cell_model("stcnn-tps/RTS", sampler="torch")
    large = cell_model("stcnn-tps/RTS", sampler="torch", loc_size="large")
    widths = [(m.in_channels, m.out_channels) if isinstance(m, torch.nn.Conv2d)
              else (m.in_features, m.out_features)
              for m in large.localisation if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert widths == [(1, 32), (32, 64), (64 * 7 * 7, 128), (128, 32)]  # 42 -> 19 -> 7
    for a, b in zip(standard.classifier.state_dict().values(),
                    large.classifier.state_dict().values(), strict=True):
        assert a.shape == b.shape  # the classifier is the table's
    assert "loc_size" not in standard.config and large.config["loc_size"] == "large"
    images = torch.rand(3, 1, 42, 42)
    torch.testing.assert_close(large.warp_params(images),  # the identity at the start
                               paper.identity_params("tps").expand(3, -1))
    fcn = cell_model("stfcn-aff/R", loc_size="large")
    assert fcn.localisation[1].out_features == 128
    assert fcn(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    save_checkpoint(tmp_path / "large.pt", large)
    loaded = load_checkpoint(tmp_path / "large.pt")
    assert loaded.config == large.config
    torch.testing.assert_close(loaded(images), large(images))
    with pytest.raises(ValueError, match="loc_size='large' sizes the localisation network; a "
                                         "model without a spatial transformer has none"):
        cell_model("cnn/R", loc_size="large")
    with pytest.raises(ValueError, match="loc_size must be one of"):
        PaperNet("cnn", "aff", loc_size="huge")


def test_pooled_localisation_network_reads_the_max_pooled_input_and_round_trips(tmp_path):
    plain = cell_model("stcnn-aff/RTS", sampler="torch")
    pooled = cell_model("stcnn-aff/RTS", sampler="torch", loc_pool=2)
    layers = [m for m in pooled.localisation if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    widths = [(m.in_channels, m.out_channels) if isinstance(m, torch.nn.Conv2d)
              else (m.in_features, m.out_features) for m in layers]
    assert widths == [(1, 20), (20, 20), (20 * 2 * 2, 50), (50, 6)]  # 42 -> 21 -> 8 -> 2
    for a, b in zip(plain.classifier.state_dict().values(),
                    pooled.classifier.state_dict().values(), strict=True):
        assert a.shape == b.shape  # the classifier is the table's
    assert "loc_pool" not in plain.config and pooled.config["loc_pool"] == 2
    torch.manual_seed(0)
    images = torch.rand(3, 1, 42, 42)
    torch.testing.assert_close(pooled.warp_params(images),  # the identity at the start
                               paper.identity_params("aff").expand(3, -1))
    for model in (plain, pooled):  # a trained-looking last layer
        torch.nn.init.normal_(model.localisation[-1].weight, std=0.1)
    # Only the largest pixel of each 2x2 block reaches the network: the others may change.
    blocks = torch.nn.functional.max_pool2d(images, 2, return_indices=True)[1]
    keep = torch.zeros(3, 1, 42 * 42).scatter_(2, blocks.flatten(2), 1).view_as(images)
    dimmed = images * keep + 0.5 * images * (1 - keep)
    torch.testing.assert_close(pooled.warp_params(dimmed), pooled.warp_params(images))
    assert not torch.allclose(plain.warp_params(dimmed), plain.warp_params(images))
    save_checkpoint(tmp_path / "pooled.pt", pooled)
    loaded = load_checkpoint(tmp_path / "pooled.pt")
    assert loaded.config == pooled.config
    torch.testing.assert_close(loaded(images), pooled(images))
    assert cell_model("stcnn-aff/TC", loc_pool=2).localisation[-3].in_features == 20 * 4 * 4
    fcn = cell_model("stfcn-proj/RTS", loc_pool=2)
    assert fcn.localisation[2].in_features == 21 * 21  # pool, flatten, linear
    assert fcn(images).shape == (3, 10)


@pytest.mark.parametrize("cell, loc_pool, message", [
    ("stcnn-aff/R", 2, "loc_pool=2 leaves the localisation network a 14x14 input; its two "
                       "5x5 convolutions and 2x2 pools need at least 16x16"),
    ("stcnn-aff/TC", 4, "loc_pool=4 leaves the localisation network a 15x15 input"),
    ("cnn/RTS", 2, "loc_pool=2 pools the localisation network's input; a model without a "
                   "spatial transformer has none"),
    ("stcnn-aff/RTS", 0, "loc_pool must be a whole number >= 1, got 0"),
    ("stcnn-aff/RTS", 1.5, "loc_pool must be a whole number >= 1, got 1.5"),
    ("stcnn-aff/RTS", True, "loc_pool must be a whole number >= 1, got True"),
])
def test_loc_pool_errors_name_the_problem(cell, loc_pool, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        cell_model(cell, loc_pool=loc_pool)


@pytest.mark.parametrize("cell, option, message", [
    ("cnn/R", ["--loc-size", "large"], "loc_size='large' sizes the localisation network"),
    ("stcnn-aff/R", ["--loc-pool", "2"], "loc_pool=2 leaves the localisation network a 14x14 "
                                         "input"),
    ("stcnn-aff/RTS,stcnn-aff/R", ["--loc-pool", "2"], "loc_pool=2 leaves"),  # RTS not trained
])
def test_cli_model_option_errors_come_before_training(tmp_path, capsys, cell, option, message):
    import argparse

    parser = argparse.ArgumentParser()
    paper.add_cli(parser.add_subparsers())
    args = parser.parse_args(["paper", "--fast", "--no-progress", "--cells", cell,
                              "--results", str(tmp_path), *option])
    assert args.func(args) == 2
    assert f"error: cell {cell.split(',')[-1]}: {message}" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written, not even an empty runs/ folder


def test_run_checks_every_cells_options_before_the_first_trains(tmp_path):
    from dataclasses import replace

    budget = replace(paper.fast_budget(), loc_pool=2)  # fine for RTS, not for R
    with pytest.raises(ValueError, match="cell stcnn-aff/R: loc_pool=2 leaves"):
        paper.run(["stcnn-aff/RTS", "stcnn-aff/R"], budget, tmp_path, progress=False)
    assert not list(tmp_path.iterdir())  # the RTS cell did not train first


def test_cli_label_smoothing_is_used_recorded_and_shown(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    paper.add_cli(parser.add_subparsers())
    common = ["paper", "--fast", "--no-progress", "--cells", "cnn/R"]
    args = parser.parse_args([*common, "--results", str(tmp_path / "a"),
                              "--label-smoothing", "0.1"])
    assert args.func(args) == 0
    smoothed = paper.load_results(tmp_path / "a")["cells"]["cnn/R"]
    assert smoothed["label_smoothing"] == 0.1
    assert "| adam/onecycle ls 0.1 |" in (tmp_path / "a" / "table1.md").read_text()
    args = parser.parse_args([*common, "--results", str(tmp_path / "b")])
    assert args.func(args) == 0
    plain = paper.load_results(tmp_path / "b")["cells"]["cnn/R"]
    assert "label_smoothing" not in plain  # the table's records are unchanged
    assert plain["final_train_loss"] < smoothed["final_train_loss"]  # smoothed targets cost
    args = parser.parse_args([*common, "--results", str(tmp_path / "c"),
                              "--label-smoothing", "1"])
    assert args.func(args) == 2
    assert "error: label_smoothing must be a number in [0, 1)" in capsys.readouterr().err


def test_adopt_copies_a_finished_run_and_keeps_what_it_replaces(mnist, tmp_path, capsys):
    import argparse

    from stnlib.checkpoint import CheckpointError, read_checkpoint

    budget, keep = fast_budget(), ("cnn/E",)
    table, scratch = tmp_path / "results", tmp_path / "results" / "trial"
    before = paper.run(["cnn/E"], budget, table, progress=False,
                       keep_checkpoints=keep)["cells"]["cnn/E"]
    weights_before = (table / "checkpoints" / "cnn_E.pt").read_bytes()
    trial = paper.run(["cnn/E"], dataclasses.replace(budget, epochs=2), scratch,
                      progress=False, keep_checkpoints=keep)["cells"]["cnn/E"]
    parser = argparse.ArgumentParser()
    paper.add_cli(parser.add_subparsers())
    args = parser.parse_args(["paper", "--cells", "cnn/E", "--adopt", str(scratch),
                              "--results", str(table)])
    assert args.func(args) == 0
    assert "cnn/E: adopted" in capsys.readouterr().out
    adopted = paper.load_results(table)["cells"]["cnn/E"]
    assert {k: v for k, v in adopted.items() if k not in ("adopted_from", "earlier")} == trial
    assert adopted["adopted_from"] == "trial"  # relative to the results folder
    assert adopted["earlier"] == [before]  # the record it replaced, kept
    assert "| 2 |" in (table / "table1.md").read_text()  # the adopted run's epochs shown
    kept = table / "checkpoints" / "cnn_E.pt"
    assert kept.read_bytes() == (scratch / "checkpoints" / "cnn_E.pt").read_bytes()
    assert read_checkpoint(kept)["run"]["epochs"] == 2
    stamp = before["finished_utc"].replace(":", "-")
    aside = table / "checkpoints" / "earlier" / stamp / "cnn_E.pt"
    assert aside.read_bytes() == weights_before  # the replaced run's weights, moved
    # refusals: each one line, nothing written
    written = (table / "table1.json").read_text()
    for argv, message in (
            (["--cells", "cnn/E", "--adopt", str(scratch)], "already the run adopted from"),
            (["--cells", "cnn/R", "--adopt", str(scratch)],
             "cnn/R is not finished in " + str(scratch) + " (finished there: cnn/E)"),
            (["--cells", "cnn/E", "--adopt", str(table)], "is the results folder itself"),
            (["--cells", "cnn/E", "--adopt", str(tmp_path / "none")], "table1.json is missing"),
            (["--adopt", str(scratch)], "--adopt needs --cells"),
            (["--cells", "cnn/E", "--adopt", str(scratch), "--epochs", "3", "--force"],
             "trains nothing: it takes --cells and --results, not --epochs, --force")):
        args = parser.parse_args(["paper", *argv, "--results", str(table)])
        assert args.func(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert (table / "table1.json").read_text() == written
    # a run without a kept checkpoint: the replaced run's one is set aside, not left as if
    # it were the new record's
    bare = paper.run(["cnn/E"], budget, table / "bare", progress=False)["cells"]["cnn/E"]
    paper.adopt(["cnn/E"], table / "bare", table)
    assert not kept.exists()
    assert (table / "checkpoints" / "earlier" / trial["finished_utc"].replace(":", "-")
            / "cnn_E.pt").exists()
    assert paper.load_results(table)["cells"]["cnn/E"]["finished_utc"] == bare["finished_utc"]
    (table / "bad" / "checkpoints").mkdir(parents=True)
    (table / "bad" / "table1.json").write_text((scratch / "table1.json").read_text())
    (table / "bad" / "checkpoints" / "cnn_E.pt").write_bytes(b"not a checkpoint")
    written = (table / "table1.json").read_text()
    with pytest.raises(CheckpointError):
        paper.adopt(["cnn/E"], table / "bad", table)
    assert (table / "table1.json").read_text() == written


def test_runs_within_gathers_every_cpu_run_in_the_time_once(tmp_path):
    def run(error, train_s, when, **more):
        return {"status": "done", "error_pct": error, "paper_error_pct": 0.7,
                "train_s": train_s, "train_images": 60_000, "test_images": 10_000,
                "device": "cpu", "finished_utc": when, **more}

    def write(folder, cells):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "table1.json").write_text(json.dumps({"cells": cells}))

    trial = run(0.9, 500.0, "t2")
    write(".", {"stcnn-aff/R": {**run(1.2, 1400.0, "t1"),  # over 15 minutes
                                "earlier": [run(1.9, 130.0, "t0")]},
                "stcnn-aff/TC": {**trial, "adopted_from": "x/trial",
                                 "earlier": [run(1.5, 3000.0, "t3")]},
                "cnn/R": run(1.6, 500.0, "t4")})  # not an ST-CNN cell
    write("x/trial", {"stcnn-aff/TC": trial})
    write("gpu", {"stcnn-aff/R": run(0.7, 100.0, "t5", device="cuda (NVIDIA H200)")})
    write("sigma", {"stcnn-aff/R": run(0.6, 100.0, "t6", sigma_px=3)})
    write("small", {"stcnn-aff/R": run(0.5, 10.0, "t7", train_images=256)})
    write("fast", {"stcnn-aff/R": run(0.95, 600.0, "t8")})
    runs = paper.runs_within(tmp_path)
    assert list(runs) == ["stcnn-aff/R", "stcnn-aff/TC"]
    assert [(r["folder"], r["error_pct"]) for r in runs["stcnn-aff/R"]] == [
        (".", 1.9), ("fast", 0.95)]  # fastest first; the 1400 s, GPU, sigma, subset runs out
    (adopted,) = runs["stcnn-aff/TC"]  # found twice, counted once, where it was trained
    assert adopted["folder"] == "x/trial" and adopted["error_pct"] == 0.9
    assert "earlier" not in adopted
    assert [r["error_pct"] for r in paper.runs_within(tmp_path, limit_s=2000,
                                                      cells="stcnn-aff/R")["stcnn-aff/R"]] == [
        1.9, 0.95, 1.2]
    assert paper.runs_within(tmp_path / "x" / "trial", cells="cnn/*") == {}


def test_the_committed_tc_cell_meets_both_goals_in_one_run():
    results = Path(__file__).parent.parent / "results"
    tc = paper.finished_cells(results)["stcnn-aff/TC"]
    assert tc["error_pct"] <= tc["paper_error_pct"] and tc["train_s"] <= paper.TIME_GOAL_S
    assert tc["device"] == "cpu" and tc["threads"] == 2
    (within,) = [r for r in paper.runs_within(results, cells="stcnn-aff/TC")["stcnn-aff/TC"]
                 if r["finished_utc"] == tc["finished_utc"]]
    assert within["folder"] == tc["adopted_from"]  # counted where it was trained
    plain = paper.plain_run(tc)  # the run it replaced: the table's own recipe, batch 64
    assert plain["batch_size"] == 64 and "loc_pool" not in plain and plain["epochs"] == 32
    aff_r = paper.finished_cells(results)["stcnn-aff/R"]
    assert paper.plain_run(aff_r) is aff_r
    with pytest.raises(ValueError, match="was adopted"):
        paper.plain_run({"adopted_from": "x", "earlier": [{"adopted_from": "y"}]})


def test_the_readme_shows_the_committed_table():
    repo = Path(__file__).parent.parent
    table = markdown_table(load_results(repo / "results")).split("\n\n")[1]
    assert table.startswith("| model | R | RTS | P | E | TC |")
    assert table in (repo / "README.md").read_text(encoding="utf-8"), (
        "README.md's Table 1 differs from results/table1.json: paste the first table of "
        "results/table1.md into it")
