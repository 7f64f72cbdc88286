"""Smoke test of the headless benchmarks: the step-cell and data-science measurements run (not their figures)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_headless_step_cells_and_data_science_benchmarks_run(tmp_path: Path) -> None:
    """The step-cell and data-science benchmarks run end to end at tiny sizes: every step executes, then restores."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import datascience, headless
    finally:
        sys.path.remove(str(ROOT))
    cells = headless.measure_cells(str(tmp_path / "cells"), cells=2, reps=1, warm_up=False)
    assert all(cells[k] > 0 for k in ("plain", "nbclient_magic", "execute_new", "execute_restore"))
    found = datascience.measure(str(tmp_path / "ds"), rows=500, trees=2, reps=1, warm_up=False)
    assert found["first"] > 0 and found["rerun"] > 0 and found["plain"] > 0
