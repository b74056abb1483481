"""A small chaos run in CI: benchmarks/chaos.py kills the launcher's services at random
moments while runs go; no run may be left stuck and no AWS resource made twice."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.worker


def test_a_short_chaos_run_leaves_nothing_stuck_and_nothing_twice():
    result = subprocess.run(
        [
            sys.executable,
            "chaos.py",
            "--seconds",
            "45",
            "--kills",
            "6",
            "--sources",
            "2",
            "--settle",
            "120",
            "--seed",
            "7",
        ],
        cwd=ROOT / "benchmarks",
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-4000:]
    kills = int(re.search(r"kills made: (\d+)", out).group(1))
    started = int(re.search(r"runs started: (\d+)", out).group(1))
    assert kills >= 4 and started >= 4, out
    assert ", stuck 0" in out, out
    assert "duplicate AWS resources: 0" in out, out
