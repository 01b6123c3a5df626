"""Smoke test of the convolution input-gradient benchmark: well-formed records, the three
routes agreeing (no timing asserts)."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import pytest

from stnlib.bench import conv as bench
from stnlib.bench import parse_args


def _args(*argv: str) -> argparse.Namespace:
    return parse_args("conv", argv)


def test_records_time_three_routes_that_agree():
    records = bench.run(_args("--cases", "16x8x5x24,2x3x3x3", "--repeat", "2", "--warmup", "1",
                              "--clock", "wall"))
    assert [r["case"] for r in records] == ["16x8x5x24", "2x3x3x3"]
    for record in records:
        json.dumps(record)
        assert record["benchmark"] == "conv" and record["repeat"] == 2
        assert record["cpu"] and record["cpu_capability"]  # speeds depend on the CPU
        for route in ("native", "torch_fold", "fold"):
            assert record[f"{route}_ms"] > 0 and math.isfinite(record[f"{route}_ms"])
        # ratios of the unrounded medians; the ms are rounded to the microsecond
        slack = 1e-3 / min(record[f"{r}_ms"] for r in ("native", "torch_fold", "fold")) + 2e-3
        assert record["fold_vs_native"] == pytest.approx(
            record["fold_ms"] / record["native_ms"], rel=slack)
        assert record["fold_vs_torch_fold"] == pytest.approx(
            record["fold_ms"] / record["torch_fold_ms"], rel=slack)
        assert record["max_abs_native"] > 0.1  # a real gradient, which both folds match
        assert record["max_abs_diff_fold"] < 1e-5 * record["max_abs_native"] * 10
        assert record["max_abs_diff_torch_fold"] < 1e-5 * record["max_abs_native"] * 10


def test_cli_prints_json_lines_and_refuses_bad_cases():
    cmd = [sys.executable, "-m", "stnlib", "bench", "conv", "--cases", "2x4x3x8",
           "--repeat", "1", "--warmup", "0"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    (line,) = result.stdout.strip().splitlines()
    assert json.loads(line)["case"] == "2x4x3x8"
    for bad, message in ((["--cases", "64x32x9"], "case '64x32x9' is not BxC_outxKxS"),
                         (["--cases", "2x4x9x8"], "case '2x4x9x8' is not BxC_outxKxS"),
                         (["--cases", ","], "--cases ',' names no case"),
                         (["--repeat", "0"], "--repeat must be positive, got 0")):
        result = subprocess.run([*cmd[:5], *bad], capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.startswith(f"error: {message}")
        assert "Traceback" not in result.stderr
