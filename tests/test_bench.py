"""The benchmarks keep running (tiny sizes here; real figures by hand, see README)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_sign_benchmark_runs():
    out = _run("bench/bench_sign.py", "1")
    assert "x baseline" in out and "sign_request" in out


def test_audit_benchmark_runs():
    out = _run("bench/bench_audit.py", "--quick")
    for figure in ("write_checkpoint", "verify_log, full", "verify incrementally",
                   "evidence report", "append, 8 writers, SQLite"):
        assert figure in out


def test_stall_benchmark_runs():
    out = _run("bench/bench_stall.py", "--entries", "20", "--rounds", "1", "--pages", "2")
    assert "x baseline" in out and "six uploads at once" in out and "errors 0" in out


def test_stats_benchmark_runs():
    out = _run("bench/bench_stats.py", "--quick")
    assert "x baseline" in out and "whole year, every group: 1999 requests" in out
