"""benchmarks/rounding.py: the same seed under this CPU's kernels and under emulated older
ones (run here for two steps on a few hundred digits; the committed results/rounding.json
comes from the table's recipe on all of MNIST)."""

from __future__ import annotations

import json

import pytest
import torch

from stnlib.train import machine


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("rounding")


def test_compare_tells_identical_weights_from_rounded_ones(script):
    reference = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([[3.0]])}
    same = script.compare({k: v.clone() for k, v in reference.items()}, reference)
    assert same == {"identical": True, "max_abs_diff": 0.0, "rel_l2_diff": 0.0}
    nudged = {"a": torch.tensor([1.0, -2.0 + 2**-20]), "b": torch.tensor([[3.0]])}
    found = script.compare(nudged, reference)
    assert not found["identical"] and found["max_abs_diff"] == pytest.approx(2**-20)
    assert found["rel_l2_diff"] == pytest.approx(2**-20 / 14**0.5)
    start = {"a": torch.tensor([1.0, -2.0 + 2**-18]), "b": torch.tensor([[3.0]])}
    assert script.compare(nudged, reference, start)["diff_per_travel"] == pytest.approx(0.25)


def test_the_control_is_bit_identical_and_each_profile_is_named(script, mnist, tmp_path,
                                                                 capsys, monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")  # the parent's: not passed on
    out = tmp_path / "rounding.json"
    assert script.main(["--cell", "cnn/R", "--steps", "1", "2", "--train-size", "128",
                        "--profiles", "scalar", "--out", str(out)]) == 0
    records = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == records
    assert [(r["profile"], r["steps"]) for r in records] == [
        ("scalar", 1), ("scalar", 2), ("native-again", 1), ("native-again", 2)]
    control = records[2:]
    assert all(r["identical"] and r["max_abs_diff"] == r["diff_per_travel"] == 0
               for r in control)
    assert control[0]["cpu_capability"] == control[0]["native_cpu_capability"]
    assert records[0]["cpu_capability"] == "DEFAULT"
    assert records[0]["env"] == {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}
    assert all(r["cell"] == "cnn/R" and r["cpu"] == machine()["cpu"] for r in records)


def test_bad_options_stop_before_any_process_starts(script, capsys):
    for argv, message in ((["--steps", "10", "5"], "--steps must be increasing"),
                          (["--steps", "0"], "--steps must be increasing"),
                          (["--cell", "stcnn-proj/TC"], "cell must be one of"),
                          (["--threads", "0"], "--threads must be positive")):
        assert script.main(argv) == 2
        assert message in capsys.readouterr().err



def test_a_run_that_fails_is_named_not_a_traceback(script, capsys, monkeypatch):
    import shutil

    monkeypatch.setattr(script.sys, "executable", shutil.which("false"))  # exits 1 at once
    assert script.main(["--steps", "1", "--profiles", "avx2"]) == 2
    assert "error: the native run stopped with the error printed above" in capsys.readouterr().err
