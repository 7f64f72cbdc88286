"""Smoke test of the benchmark harness: the quick step benchmark runs and prints its ratios."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.timeout(300)
def test_headless_step_cells_and_data_science_benchmarks_run(tmp_path: Path) -> None:
    """The step-cell and data-science benchmarks run end to end at tiny sizes: every step executes, then restores."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import datascience, headless
    finally:
        sys.path.remove(str(ROOT))
    cells = headless.measure_cells(str(tmp_path / "cells"), cells=2, reps=1, warm_up=False)
    assert set(cells) >= {"plain", "nbclient_magic", "execute_new", "execute_restore"}
    assert all(cells[k] > 0 for k in ("plain", "nbclient_magic", "execute_new", "execute_restore"))
    found = datascience.measure(str(tmp_path / "ds"), rows=500, trees=2, reps=1, warm_up=False)
    assert found["first"] > 0 and found["rerun"] > 0 and found["plain"] > 0
