"""Restores of an owned run decided from a snapshot of its completed steps (``_store/restorable.py``).

A resume restores from one read of the run; these tests check that every restore is still the
one a transaction would decide: the right values, and a step changed after the snapshot was read
(by this store, by another handle of this process, by a process outside resumable) executes.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import resumable
from resumable._owner import current_owner
from resumable._store import restorable
from resumable._store.duckdb import DuckDBStore

BIG = 300_000  # over the inline limit: a payload file


def _value(i: int) -> object:
    if i == 5:
        return b"x" * BIG
    if i == 6:
        return None
    return {"step": i, "data": list(range(i))}


def _snapshot_in_use(pipe: resumable.Pipeline, run_id: str) -> bool:
    """Whether the store decides the run's restores from a snapshot now (what these tests must exercise)."""
    return run_id in pipe.store._snapshots  # type: ignore[attr-defined]


def _restore_until_snapshot(pipe: resumable.Pipeline, run: resumable.Run, calls: list[str]) -> int:
    """Restore s0, s1, ... until the snapshot is in use; returns the next step's number."""
    i = 0
    while not _snapshot_in_use(pipe, "r"):
        assert i < 8, "eight restores in a row never read the snapshot"
        run.step(f"s{i}", lambda i=i: calls.append(f"s{i}"))
        i += 1
    return i


def _build(pipe: resumable.Pipeline, run_id: str, n: int, calls: list[str]) -> None:
    with pipe.run(run_id=run_id) as run:
        for i in range(n):
            run.step(f"s{i}", lambda i=i: calls.append(f"s{i}") or _value(i))


def test_resume_restores_every_step_with_its_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rerunning 40 completed steps (small, None and file-sized outputs) restores each value, running no body.

    Inline bytes are read ahead three rows at a time here, so the resume crosses many windows.
    """
    monkeypatch.setattr(restorable, "READ_AHEAD_ROWS", 3)
    pipe = resumable.Pipeline("snap", store=str(tmp_path / "s.duckdb"))
    calls: list[str] = []
    _build(pipe, "r", 40, calls)
    assert len(calls) == 40
    calls.clear()
    with pipe.run(run_id="r") as run:
        got = [run.step(f"s{i}", lambda i=i: calls.append(f"s{i}")) for i in range(40)]
    assert calls == []
    assert got == [_value(i) for i in range(40)]
    with pipe.fork("r", "s30", run_id="f") as run:  # a fork's steps point at the origin's checkpoints
        forked = [run.step(f"s{i}", lambda i=i: calls.append(f"s{i}") or "new") for i in range(40)]
    assert calls == [f"s{i}" for i in range(30, 40)]
    assert forked == [_value(i) for i in range(30)] + ["new"] * 10


def test_step_invalidated_by_this_store_mid_resume_executes(tmp_path: Path) -> None:
    """A step invalidated after the resume read its snapshot runs again; the ones before it restore."""
    pipe = resumable.Pipeline("snap", store=str(tmp_path / "s.duckdb"))
    calls: list[str] = []
    _build(pipe, "r", 12, calls)
    calls.clear()
    with pipe.run(run_id="r") as run:
        first = _restore_until_snapshot(pipe, run, calls)
        assert pipe.store.invalidate("r", "s10", current_owner()) == ["s10"]
        for i in range(first, 12):
            run.step(f"s{i}", lambda i=i: calls.append(f"s{i}") or "again")
    assert calls == ["s10"]


def test_step_invalidated_by_another_handle_of_this_process_executes(tmp_path: Path) -> None:
    """A second store object on the same file, in the same process, invalidates a step: it runs again."""
    path = tmp_path / "s.duckdb"
    pipe = resumable.Pipeline("snap", store=str(path))
    calls: list[str] = []
    _build(pipe, "r", 12, calls)
    calls.clear()
    other = DuckDBStore(path)
    try:
        with pipe.run(run_id="r") as run:
            first = _restore_until_snapshot(pipe, run, calls)
            assert other.invalidate("r", "s10", current_owner()) == ["s10"]
            for i in range(first, 12):
                run.step(f"s{i}", lambda i=i: calls.append(f"s{i}") or "again")
    finally:
        other.close()
    assert calls == ["s10"]


def test_step_changed_by_a_process_outside_resumable_executes(tmp_path: Path) -> None:
    """Another process (a DuckDB client) sends a step back to pending mid-resume: it runs again, nothing else does."""
    path = tmp_path / "s.duckdb"
    pipe = resumable.Pipeline("snap", store=str(path))
    calls: list[str] = []
    _build(pipe, "r", 12, calls)
    calls.clear()
    outsider = textwrap.dedent(
        f"""
        import time, duckdb
        deadline = time.monotonic() + 20
        while True:
            try:
                con = duckdb.connect({str(path)!r})
                break
            except duckdb.Error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        con.execute("UPDATE steps SET state = 'pending' WHERE run_id = 'r' AND step = 's10'")
        con.close()
        """
    )
    with pipe.run(run_id="r") as run:
        first = _restore_until_snapshot(pipe, run, calls)
        subprocess.run([sys.executable, "-c", outsider], check=True, timeout=60)
        for i in range(first, 12):
            run.step(f"s{i}", lambda i=i: calls.append(f"s{i}") or "again")
    assert calls == ["s10"]


def test_changed_inputs_are_decided_as_a_transaction_would_while_the_snapshot_is_in_use(tmp_path: Path) -> None:
    """With the snapshot answering: a step called with the inputs it completed with restores, one called with
    other inputs executes on them, and an effect step whose input changed is held (never called again)."""
    pipe = resumable.Pipeline("snap", store=str(tmp_path / "s.duckdb"))
    calls: list[str] = []

    @pipe.step
    def scale(x: int) -> int:
        calls.append(f"scale {x}")
        return x * 10

    @pipe.step(effect=True)
    def charge(amount: int) -> str:
        calls.append(f"charge {amount}")
        return f"charged {amount}"

    with pipe.run(run_id="r") as run:
        for i in range(8):
            run.step(f"s{i}", lambda i=i: i)
        assert charge(scale(1)) == "charged 10"
    calls.clear()
    with pytest.warns(resumable.EffectHeldWarning) as held, pipe.run(run_id="r") as run:
        _restore_until_snapshot(pipe, run, calls)
        assert scale(1) == 10  # the inputs it completed with: restored
        assert calls == []
        assert scale(2) == 20  # other inputs: executed on them, not the stored 10
        assert calls == ["scale 2"]
        assert charge(20) == "charged 10"  # the charge made with 10 is not made again with 20
    assert calls == ["scale 2"]
    assert [str(w.message) for w in held] == [
        "step 'charge' has side effects and its inputs changed ('amount'); it was not run again. "
        "To do it again: run.rerun('charge') before calling it"
    ]
