"""benchmarks/cell_speed.py: seconds a training step per Table 1 cell under this CPU's own
kernels and held to AVX2, and the table's budget projected (run here for a few steps on a
few hundred digits; tests never assert on the times themselves)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stnlib import paper
from stnlib.conv import overlap_add as real_overlap_add
from stnlib.train import CPU_PROFILES

RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("cell_speed")


def test_each_profile_is_measured_in_its_own_process_and_projected(script, mnist, tmp_path,
                                                                  capsys, monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")  # the parent's: not passed on
    out = tmp_path / "speed.json"
    assert script.main(["--cells", "cnn/R", "--threads", "1", "--steps", "4", "--warmup",
                        "2", "--repeat", "2", "--train-size", "320", "--results", str(RESULTS),
                        "--out", str(out)]) == 0
    records = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == records
    (record,) = records
    table = paper.finished_cells(RESULTS)["cnn/R"]
    assert record["cell"] == "cnn/R" and record["threads"] == 1
    assert record["epochs"] == table["epochs"] and record["table"]["train_s"] == table["train_s"]
    assert record["steps_per_epoch"] == 320 // 64 and record["steps_timed"] == 4
    assert set(record["ms_per_step"]) == {"native", "avx2"}
    for profile, runs in record["ms_per_step_runs"].items():  # two each, the median counts
        assert len(runs) == 2 and min(runs) >= 0
        assert record["ms_per_step"][profile] == pytest.approx(sum(runs) / 2, abs=0.01)
    # the profile reached the worker (its variables set before torch loaded there), and
    # the parent's ATEN_CPU_CAPABILITY did not reach the native one
    assert record["cpu_capability"]["avx2"] != "AVX512"
    assert record["cpu_capability"]["native"] != "DEFAULT"
    assert record["env"] == {"native": {}, "avx2": CPU_PROFILES["avx2"]}
    assert set(record["over_native"]) <= {"avx2"}
    for profile, ms in record["ms_per_step"].items():
        projected = ms / 1000 * record["steps_per_epoch"] * record["epochs"]
        assert record["projected_train_s"][profile] == pytest.approx(projected, abs=0.51)
        assert record["within_15_min"][profile] == (record["projected_train_s"][profile]
                                                    <= 15 * 60 + 0.5)


def test_epochs_come_from_the_table_or_the_option(script, mnist, tmp_path, capsys):
    assert script.main(["--cells", "cnn/E", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'table1.json'} has no finished cnn/E" in err and "--epochs" in err
    assert script.main(["--cells", "fcn/E", "--results", str(tmp_path), "--epochs", "1",
                        "--threads", "1", "--steps", "2", "--warmup", "1", "--train-size",
                        "192", "--profiles", "native", "--repeat", "1"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["epochs"] == 1 and "table" not in record and record["over_native"] == {}


def test_a_fold_profile_trains_the_models_with_conv_grad_fold(script, mnist, tmp_path, capsys,
                                                            monkeypatch):
    built = []
    real = paper.cell_model
    monkeypatch.setattr(paper, "cell_model",
                        lambda *a, **k: built.append(k.get("conv_grad")) or real(*a, **k))
    assert script.split_profile("avx2+fold") == ("avx2", {"conv_grad": "fold"})
    assert script.split_profile("native") == ("native", {})
    # the worker (here in this process, as measure() runs it in a fresh one)
    out = tmp_path / "worker.json"
    assert script.main(["--worker", str(out), "--cells", "stcnn-aff/R", "--steps", "1",
                        "--warmup", "1", "--threads", "1", "--epochs", "1", "--train-size",
                        "128", "--conv-grad", "fold"]) == 0
    assert built == ["fold", "fold"] and json.loads(out.read_text())["step_s"] >= 0
    assert script.main(["--cells", "stcnn-aff/R", "--epochs", "1", "--threads", "1", "--steps",
                        "1", "--warmup", "1", "--train-size", "128", "--repeat", "1",
                        "--profiles", "native", "native+fold"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["conv_grad"] == {"native": "native", "native+fold": "fold"}
    assert record["env"] == {"native": {}, "native+fold": {}}
    assert set(record["over_native"]) == {"native+fold"} and "loc_pool" not in record


def test_a_pool2_profile_pools_the_localisation_input_of_rts_and_tc_cells_only(
        script, mnist, tmp_path, capsys, monkeypatch):
    built = []
    real = paper.cell_model
    monkeypatch.setattr(paper, "cell_model",
                        lambda *a, **k: built.append(k.get("loc_pool")) or real(*a, **k))
    tested, real_test = [], paper.distorted_test_set  # a real run's test set comes first
    monkeypatch.setattr(paper, "distorted_test_set",
                        lambda *a: tested.append((a, len(built))) or real_test(*a))
    assert script.split_profile("native+fold+pool2") == (
        "native", {"conv_grad": "fold", "loc_pool": 2})
    out = tmp_path / "worker.json"
    assert script.main(["--worker", str(out), "--cells", "stcnn-aff/RTS", "--steps", "1",
                        "--warmup", "1", "--threads", "1", "--epochs", "1", "--train-size",
                        "128", "--loc-pool", "2"]) == 0
    assert built == [2, 2] and json.loads(out.read_text())["step_s"] >= 0
    assert tested == [(("RTS", 128), 0)]  # before any model was built
    assert script.main(["--cells", "stcnn-aff/RTS", "--epochs", "1", "--threads", "1",
                        "--steps", "1", "--warmup", "1", "--train-size", "128", "--repeat", "1",
                        "--profiles", "native+fold", "native+fold+pool2"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["loc_pool"] == {"native+fold": 1, "native+fold+pool2": 2}
    assert record["conv_grad"] == {"native+fold": "fold", "native+fold+pool2": "fold"}
    assert set(record["over_native+fold"]) == {"native+fold+pool2"}
    assert record["test_set_first"] is True
    # an R cell's 28x28 input is too small to pool: said before anything is measured
    assert script.main(["--cells", "stcnn-aff/RTS,stcnn-aff/R", "--epochs", "1",
                        "--profiles", "native", "native+pool2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cell stcnn-aff/R, profile native+pool2: loc_pool=2 leaves "
                          "the localisation network a 14x14 input") and err.count("\n") == 1


def test_a_sampled_profile_makes_tc_batches_through_the_sampler(script, mnist, tmp_path,
                                                                capsys, monkeypatch):
    from stnlib.bench import distort as bench_distort

    routed = []
    real = bench_distort.sampled_tc
    monkeypatch.setattr(bench_distort, "sampled_tc",
                        lambda images, params: routed.append(images.shape) or real(images, params))
    assert script.split_profile("native+fold+pool2+sampled") == (
        "native", {"conv_grad": "fold", "loc_pool": 2, "tc_route": "sampler"})
    common = ["--cells", "stcnn-aff/TC", "--steps", "1", "--warmup", "1", "--threads", "1",
              "--epochs", "1", "--train-size", "128"]
    assert script.main(["--worker", str(tmp_path / "a.json"), *common]) == 0
    assert routed == []  # the placed digit, as distort makes it
    assert script.main(["--worker", str(tmp_path / "b.json"), *common, "--tc-route",
                        "sampler"]) == 0
    assert routed == [(64, 1, 28, 28)] * 3  # 1 + (1 + 1) steps, each batch through the sampler
    # refused for a cell without TC's batches, before anything is measured
    assert script.main(["--cells", "stcnn-aff/TC,stcnn-aff/RTS", "--epochs", "1",
                        "--profiles", "native+fold+pool2", "native+fold+pool2+sampled"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cell stcnn-aff/RTS, profile native+fold+pool2+sampled: "
                          "tc_route='sampler' times TC's batches through the sampler; only "
                          "TC cells have them") and err.count("\n") == 1


def test_a_torchfold_profile_folds_with_torchs_f_fold(script, mnist, tmp_path, capsys,
                                                      monkeypatch):
    import torch.nn.functional as F

    import stnlib.conv

    folds = []
    real_input_grad = stnlib.conv.input_grad

    def input_grad(*args, **kwargs):  # which col2im the fold's backward resolves
        folds.append(kwargs.get("fold") or stnlib.conv.overlap_add)
        return real_input_grad(*args, **kwargs)

    monkeypatch.setattr(stnlib.conv, "input_grad", input_grad)
    assert script.split_profile("native+fold+torchfold") == (
        "native", {"conv_grad": "fold", "col2im": "torch"})
    common = ["--cells", "stcnn-aff/R", "--steps", "1", "--warmup", "1", "--threads", "1",
              "--epochs", "1", "--train-size", "128", "--conv-grad", "fold"]
    assert script.main(["--worker", str(tmp_path / "a.json"), *common]) == 0
    assert folds and all(f is real_overlap_add for f in folds)
    folds.clear()
    assert script.main(["--worker", str(tmp_path / "b.json"), *common, "--col2im",
                        "torch"]) == 0
    assert len(folds) == 3 and all(f is F.fold for f in folds)  # 1 + (1 + 1) steps
    assert stnlib.conv.overlap_add is real_overlap_add  # put back after the steps
    assert script.main(["--cells", "stcnn-aff/R", "--epochs", "1", "--threads", "1",
                        "--steps", "1", "--warmup", "1", "--train-size", "128", "--repeat", "1",
                        "--profiles", "native+fold", "native+fold+torchfold"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["col2im"] == {"native+fold": "stnlib", "native+fold+torchfold": "torch"}
    assert set(record["over_native+fold"]) == {"native+fold+torchfold"}


@pytest.mark.parametrize(("argv", "message"), [
    (["--threads", "0"], "--threads must be positive counts"),
    (["--steps", "0"], "--steps must be positive"),
    (["--repeat", "0"], "--repeat must be positive"),
    (["--cells", "resnet/R"], "--cells 'resnet/R' matches no cell"),
])
def test_bad_options_are_one_line_errors(script, argv, message, capsys):
    assert script.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and err.count("\n") == 1
