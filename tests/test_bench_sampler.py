"""Smoke test of the sampler benchmark: well-formed records on a tiny case (no timing asserts)."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import pytest

from stnlib.bench import check_positive, parse_args
from stnlib.bench import sampler as bench


def _args(*argv: str) -> argparse.Namespace:
    return parse_args("sampler", argv)


TIMES = ["stnlib_forward_ms", "torch_forward_ms", "stnlib_fwd_bwd_ms", "torch_fwd_bwd_ms"]


def test_records_are_well_formed():
    args = _args("--cases", "3x2x5x7,2x1x3x4x5", "--repeat", "2", "--warmup", "1", "--no-memory",
                 "--padding-mode", "reflection", "--align-corners")
    records = bench.run(args)
    assert [r["case"] for r in records] == ["3x2x5x7", "2x1x3x4x5"]
    for record in records:
        json.dumps(record)  # serialisable
        assert record["benchmark"] == "sampler" and record["padding_mode"] == "reflection"
        assert record["align_corners"] is True and record["repeat"] == 2
        for key in TIMES:
            assert record[key] >= 0 and math.isfinite(record[key])
        assert record["max_abs_diff"] < 1e-5  # the benchmark also checks it times the same op
        assert "stnlib_peak_mib" not in record


def test_cli_prints_json_lines_with_memory():
    cmd = [sys.executable, "-m", "stnlib", "bench", "sampler", "--cases", "2x1x6x6",
           "--repeat", "1", "--warmup", "0"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["case"] == "2x1x6x6" and record["clock"] == "cpu" and record["threads"] == 1
    for key in ("stnlib_peak_mib", "torch_peak_mib"):
        assert isinstance(record[key], float) and record[key] >= 0
    assert "fwd_bwd_ratio" in record and "peak_ratio" in record


@pytest.mark.parametrize("text", ["28x28", "1x1x0x4", "axbxcxd", "1x1x2x3x4x5"])
def test_bad_case_is_rejected(text):
    with pytest.raises(ValueError, match="NxCxHxW"):
        bench.parse_case(text)


@pytest.mark.parametrize("value", [0, -1, -0.5, float("nan")])
def test_check_positive_names_the_flag(value):
    args = argparse.Namespace(train_size=value, threads=1, test_size=None)
    with pytest.raises(ValueError, match=rf"^--train-size must be positive, got {value}$"):
        check_positive(args, "threads", "test_size", "train_size")


def test_check_positive_passes_set_and_unset_options():
    args = argparse.Namespace(epochs=3, lr=1e-3, test_size=None)
    check_positive(args, "epochs", "lr", "test_size")  # no error
