"""Smoke test of the distortion benchmark: well-formed records (no timing asserts)."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import pytest

from stnlib.bench import distort as bench
from stnlib.bench import parse_args


def _args(*argv: str) -> argparse.Namespace:
    return parse_args("distort", argv)


def test_records_are_well_formed_and_tc_has_its_reference():
    records = bench.run(_args("--variants", "RTS,TC", "--batch", "8", "--repeat", "2",
                              "--warmup", "1", "--clock", "wall"))
    assert [r["variant"] for r in records] == ["RTS", "TC"]
    for record in records:
        json.dumps(record)
        assert record["benchmark"] == "distort" and record["batch"] == 8
        assert record["clock"] == "wall" and record["repeat"] == 2
        assert record["distort_ms"] > 0 and math.isfinite(record["distort_ms"])
    rts, tc = records
    assert "sampler_route_ms" not in rts and "ratio" not in rts
    assert tc["sampler_route_ms"] > 0
    assert tc["ratio"] == pytest.approx(tc["distort_ms"] / tc["sampler_route_ms"], abs=2e-3)
    assert tc["max_abs_diff"] < 1e-5  # the two routes make the same canvas


def test_cli_prints_json_lines_and_refuses_bad_options():
    cmd = [sys.executable, "-m", "stnlib", "bench", "distort", "--variants", "TC",
           "--batch", "4", "--repeat", "1", "--warmup", "0"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    (line,) = result.stdout.strip().splitlines()
    assert json.loads(line)["variant"] == "TC"
    for bad, message in ((["--variants", "TC,X"], "--variants 'TC,X': each must be one of"),
                         (["--batch", "0"], "--batch must be positive, got 0")):
        result = subprocess.run([*cmd[:5], *bad], capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.startswith(f"error: {message}")
        assert "Traceback" not in result.stderr
