"""Smoke test of the benchmark harness: the quick step benchmark runs and prints its ratios."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_step_benchmark_prints_a_ratio() -> None:
    """`python -m benchmarks --quick --only step` finishes and prints a step cost with its ratio to a plain call."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "step", "--no-dbos"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    ratio_line = (
        r"^\[step\] no-op step \(new, executes, default durability\): [\d.]+ ms \| plain call: .* \| ratio [\d.]+"
    )
    assert re.search(ratio_line, proc.stdout, re.MULTILINE), proc.stdout
