"""Smoke test of the benchmarks: every concern runs at tiny sizes, and ``--compare`` flags regressions.

A run of ``python -m benchmarks --smoke --only CONCERN`` per concern (about 2 min of CPU in all) checks that each
concern still runs and prints its figures with their ratios; it does not judge the figures. ``--compare`` is
checked twice: against a crafted baseline during that run, and on saved runs (``--results``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.__main__ import CONCERNS

ROOT = Path(__file__).resolve().parent.parent
MIDSIZE_SAVE = ("midsize", "DataFrame 1 MB step output save", "DBOS step save (SQLite, base64 pickle)")
MIDSIZE_RESTORE = ("midsize", "DataFrame 1 MB step output restore", "DBOS step restore (SQLite, base64 pickle)")


def _benchmarks(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _row(
    key: tuple[str, str, str], value: float, baseline: float, spread: float | None, unit: str = "MB/s"
) -> dict[str, Any]:
    concern, name, baseline_name = key
    return {"kind": "Result", "concern": concern, "name": name, "value": value, "unit": unit, "target": "",
            "baseline_name": baseline_name, "baseline": baseline, "note": "", "spread": spread}  # fmt: skip


def _save(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"meta": {}, "results": rows}))
    return path


# The concerns the comparison run measures; every other concern gets a smoke run of its own.
COMPARED = ("midsize", "bigdata")


def _check_concern(concern: str, proc: subprocess.CompletedProcess[str], saved: dict[str, Any]) -> None:
    """The concern finished with figures against a same-run baseline; nothing skipped because it broke."""
    # A case may be skipped for a reason it states (an optional comparison); never because it broke.
    broken = [
        r
        for r in saved["results"]
        if r["kind"] == "Skipped" and re.search(r"Error|exited|Traceback|did not", r["reason"])
    ]
    assert not broken, broken
    assert re.search(rf"^# {concern} took [\d.]+ s; 1-min load average", proc.stdout, re.MULTILINE), proc.stdout
    rows = [r for r in saved["results"] if r["concern"] == concern and r["kind"] == "Result"]
    assert any(r["ratio"] is not None for r in rows), (concern, rows)
    # The figures --compare judges by their noise carry it: repetitions of the same run.
    if concern in ("throughput", "midsize", "bigdata"):
        assert all(r["spread"] is not None for r in rows), concern


@pytest.fixture
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """One smoke run of the compared concerns, against a baseline whose save ratio cannot be reached."""
    folder = tmp_path_factory.mktemp("bench")
    baseline = _save(folder / "baseline.json", [
        _row(MIDSIZE_SAVE, 1000.0, 1.0, 0.01),  # ratio 1000 with +-1 % noise: any real run is a regression
        _row(MIDSIZE_RESTORE, 0.001, 1.0, None),  # ratio 0.001: any real run is better
    ])  # fmt: skip
    out = folder / "run.json"
    only = ",".join(COMPARED)
    proc = _benchmarks("--smoke", "--only", only, "--json", str(out), "--compare", str(baseline), timeout=240)
    assert out.exists(), proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


# One item per concern, so the two test workers share them out instead of one worker running them all.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("concern", [c for c in CONCERNS if c not in COMPARED])
def test_every_concern_runs_and_prints_its_ratios(concern: str, tmp_path: Path) -> None:
    """Each registered concern finishes with figures against a same-run baseline; none is skipped."""
    out = tmp_path / "run.json"
    proc = _benchmarks("--smoke", "--only", concern, "--json", str(out), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _check_concern(concern, proc, json.loads(out.read_text()))
    if concern == "step":
        step_line = (
            r"^\[step\] no-op step \(new, executes, default durability\): [\d.]+ ms \| plain call: .* \| ratio [\d.]+"
        )
        assert re.search(step_line, proc.stdout, re.MULTILINE), proc.stdout


@pytest.mark.timeout(300)
def test_compare_during_a_run_flags_the_regression_and_the_improvement(
    smoke: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    """The run's figures are printed next to the baseline's; the unreachable ratio is a regression (exit 1).

    The run's concerns are checked as the others are: one test, so the run is made once (a module's
    fixture is made again on each test worker that needs it).
    """
    proc, saved = smoke
    for concern in COMPARED:
        _check_concern(concern, proc, saved)
    assert proc.returncode == 1, proc.stderr
    num = r"[\d.,]+"
    regression = (
        rf"^\[midsize\] DataFrame 1 MB step output save: {num} MB/s \(was 1,000 MB/s\) \| DBOS step save \(SQLite, "
        rf"base64 pickle\): {num} MB/s \(was 1 MB/s\) \| ratio {num} \(was 1000\.00\) \| REGRESSION: {num} % worse, "
        rf"beyond noise \+-{num} %$"
    )
    assert re.search(regression, proc.stdout, re.MULTILINE), proc.stdout
    better = (
        rf"^\[midsize\] DataFrame 1 MB step output restore: {num} MB/s \(was 0\.001 MB/s\) \| DBOS step restore "
        rf"\(SQLite, base64 pickle\): {num} MB/s \(was 1 MB/s\) \| ratio {num} \(was 0\.00\) \| better by {num} % "
        rf"\(noise \+-{num} %\)$"
    )
    assert re.search(better, proc.stdout, re.MULTILINE), proc.stdout
    assert re.search(r"^\[bigdata\] .*: [\d.,]+ \w+/?s? \| not in the baseline run$", proc.stdout, re.MULTILINE)
    assert proc.stdout.rstrip().endswith("# 1 regression(s) beyond the noise")


def test_compare_saved_runs_flags_only_changes_beyond_the_noise(tmp_path: Path) -> None:
    """Saved runs (--results): beyond the larger spread is flagged, within it not; 20 % assumed without one."""
    base = _save(tmp_path / "base.json", [
        _row(MIDSIZE_SAVE, 400.0, 100.0, 0.05),  # ratio 4.00
        _row(MIDSIZE_RESTORE, 600.0, 100.0, 0.05),  # ratio 6.00
        _row(("bigdata", "peak", ""), 100.0, None, None, unit="MB"),
        _row(("bigdata", "wait", "joblib.dump"), 2.0, 2.0, 0.1, unit="s"),
    ])  # fmt: skip
    new = _save(tmp_path / "new.json", [
        _row(MIDSIZE_SAVE, 360.0, 100.0, 0.02),  # 10 % slower: beyond +-5 %
        _row(MIDSIZE_RESTORE, 580.0, 100.0, 0.02),  # 3.3 % slower: within +-5 %
        _row(("bigdata", "peak", ""), 115.0, None, None, unit="MB"),  # 15 % more: within 20 % assumed
        _row(("bigdata", "wait", "joblib.dump"), 3.0, 2.0, 0.1, unit="s"),  # a cost: ratio 1.5 against 1.0
    ])  # fmt: skip
    proc = _benchmarks("--compare", str(base), "--results", str(new))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.splitlines()[1:] == [
        "[midsize] DataFrame 1 MB step output save: 360 MB/s (was 400 MB/s) | DBOS step save (SQLite, base64 pickle): "
        "100 MB/s (was 100 MB/s) | ratio 3.60 (was 4.00) | REGRESSION: 10.0 % worse, beyond noise +-5.0 %",
        "[midsize] DataFrame 1 MB step output restore: 580 MB/s (was 600 MB/s) | DBOS step restore (SQLite, base64 "
        "pickle): 100 MB/s (was 100 MB/s) | ratio 5.80 (was 6.00) | within noise (3.3 % worse, noise +-5.0 %)",
        "[bigdata] peak: 115 MB (was 100 MB) | within noise (15.0 % worse, noise +-20.0 % assumed)",
        "[bigdata] wait: 3 s (was 2 s) | joblib.dump: 2 s (was 2 s) | ratio 1.50 (was 1.00) | REGRESSION: 50.0 % "
        "worse, beyond noise +-10.0 %",
        "# 2 regression(s) beyond the noise",
    ]


def test_compare_refuses_a_file_that_is_not_a_benchmark_run(tmp_path: Path) -> None:
    """A baseline that is not --json output is refused with the reason, before anything is measured."""
    bad = tmp_path / "notes.json"
    bad.write_text('{"figures": []}')
    proc = _benchmarks("--compare", str(bad), "--only", "step")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == f"error: {bad} is not a benchmark result file written by --json (KeyError: 'results')\n"
