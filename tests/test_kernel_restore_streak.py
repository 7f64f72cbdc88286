"""Cells restored one after another in a kernel, decided from the snapshot (``DuckDBStore._restore_in_streak``).

A kernel never owns its run between cells, yet a rerun of a notebook restores cell after cell
while it holds the store's file: from the second restore on, they are decided from one read of the
run. These tests check that each is still the decision a transaction would make: the values come
back, and a step changed after the snapshot was read (by another process, by another handle of this
process), an edited cell and a cell whose input changed all execute.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from ipython_shell import fresh_kernel, step

from resumable._owner import current_owner
from resumable._store import connection
from resumable._store.duckdb import DuckDBStore

CELLS = 6


def _body(calls: Path, i: int) -> str:
    return f"open({str(calls)!r}, 'a').write('s{i} ')\nx{i} = {i} * 10"


def _calls(calls: Path) -> list[str]:
    return calls.read_text().split() if calls.exists() else []


def _store(shell: Any) -> DuckDBStore:
    """The kernel's store object (the one its magics decide with)."""
    from resumable._magics.magics import DurableMagics

    magics = next(m for m in shell.magics_manager.registry.values() if isinstance(m, DurableMagics))
    store = magics._store
    assert isinstance(store, DuckDBStore)
    return store


def _snapshot_answers(shell: Any) -> bool:
    """Whether the next restore of run r1 is decided from the snapshot (what these tests must exercise)."""
    store = _store(shell)
    snapshot = store._snapshots.get("r1")
    return snapshot is not None and snapshot.mark is not None and snapshot.mark == store._mark()


def _built_then_restored(shell: Any, calls: Path, upto: int) -> None:
    """Run the cells, restart the kernel, restore s0..s{upto-1}: the snapshot answers by then."""
    for i in range(CELLS):
        assert step(shell, f"s{i}", _body(calls, i)).error_in_exec is None
    fresh_kernel(shell)
    calls.unlink()
    for i in range(upto):
        assert step(shell, f"s{i}", _body(calls, i)).error_in_exec is None
    assert _snapshot_answers(shell), "cells restored one after another never read the snapshot"


def test_a_step_changed_by_another_process_mid_rerun_executes(
    shell: Any, store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DuckDB client in another process sends s4 back to pending mid-rerun: s4 runs again, nothing else does.

    Every cell ends with its value, restored or executed. A client outside resumable cannot say it
    waits, so the kernel lets go of the file when its quiet hold ends (shortened here).
    """
    monkeypatch.setattr(connection, "QUIET_HOLD_S", 0.5)
    calls = tmp_path / "calls"
    _built_then_restored(shell, calls, 3)
    outsider = textwrap.dedent(
        f"""
        import time, duckdb
        deadline = time.monotonic() + 20
        while True:
            try:
                con = duckdb.connect({str(store_path)!r})
                break
            except duckdb.Error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        con.execute("UPDATE steps SET state = 'pending' WHERE run_id = 'r1' AND step = 's4'")
        con.close()
        """
    )
    subprocess.run([sys.executable, "-c", outsider], check=True, timeout=60)
    for i in range(3, CELLS):
        assert step(shell, f"s{i}", _body(calls, i)).error_in_exec is None
    assert _calls(calls) == ["s4"]
    assert [shell.user_ns[f"x{i}"] for i in range(CELLS)] == [i * 10 for i in range(CELLS)]


def test_a_step_invalidated_by_another_handle_of_the_kernel_executes(
    shell: Any, store_path: Path, tmp_path: Path
) -> None:
    """A second store object on the file, in the kernel's process, invalidates s4 mid-rerun: it runs again."""
    calls = tmp_path / "calls"
    _built_then_restored(shell, calls, 3)
    other = DuckDBStore(store_path)
    try:
        assert other.invalidate("r1", "s4", current_owner()) == ["s4"]
    finally:
        other.close()
    for i in range(3, CELLS):
        assert step(shell, f"s{i}", _body(calls, i)).error_in_exec is None
    assert _calls(calls) == ["s4"]


def test_an_edited_cell_and_a_changed_input_execute_mid_rerun(shell: Any, tmp_path: Path) -> None:
    """With the snapshot answering, an edited cell executes, and so does a cell whose input changed."""
    calls = tmp_path / "calls"
    shell.run_cell("rate = 2")
    reads = f"open({str(calls)!r}, 'a').write('reads ')\ny = rate * 3"
    assert step(shell, "reads", reads).error_in_exec is None
    _built_then_restored(shell, calls, 3)
    edited = _body(calls, 3).replace("* 10", "* 11")
    assert step(shell, "s3", edited).error_in_exec is None
    assert shell.user_ns["x3"] == 33
    assert _calls(calls) == ["s3"]
    shell.run_cell("rate = 5")
    assert _snapshot_answers(shell)
    assert step(shell, "reads", reads).error_in_exec is None
    assert shell.user_ns["y"] == 15
    assert _calls(calls) == ["s3", "reads"]


def test_an_effect_step_whose_input_changed_is_held_mid_rerun(
    shell: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the snapshot answering, a completed effect step whose input changed is restored and held, not run again."""
    calls = tmp_path / "calls"
    shell.run_cell("amount = 2")
    charge = f"open({str(calls)!r}, 'a').write('charge ')\ncharged = amount"
    assert step(shell, "charge --effect", charge).error_in_exec is None
    _built_then_restored(shell, calls, 3)
    shell.run_cell("amount = 5")
    assert _snapshot_answers(shell)
    capsys.readouterr()
    assert step(shell, "charge --effect", charge).error_in_exec is None
    assert shell.user_ns["charged"] == 2  # restored: the charge was never made again
    assert _calls(calls) == []
    assert capsys.readouterr().err == (
        "step 'charge' has side effects and its inputs changed ('amount'); it was not run again. To do it again: "
        "%%durable_step charge --effect --rerun\n"
    )
