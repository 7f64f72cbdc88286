"""The store file deleted or replaced under a live process: our error, and nothing false reported completed.

Before (issue 11 §3) every later step failed with DuckDB's ``Cannot open file`` until the kernel
restarted, and a deletion within about 0.1 s of a step let later steps "succeed" into the deleted
file. Now the file's identity (device, inode) is checked around every transaction and before a step
decided in memory: the step fails with ``StoreRemovedError``, and the next step creates a new store
at the same path, in which the process's runs start afresh.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ipython_shell import fresh_kernel, started_shell, step

import resumable
from resumable._store import forget_all, open_store


def _removed(store_path: Path, how: str) -> str:
    return (
        f"store '{store_path}' was {how} while this process was using it, so what it was writing was not stored "
        f"(steps completed into the old file went with it). The next step creates a new, empty store at "
        f"'{store_path}' and runs from the start; to keep the old steps, put the file back first."
    )


def _delete_store(store_path: Path) -> None:
    for path in store_path.parent.iterdir():
        if path.is_file() and path.name.startswith(store_path.name):
            path.unlink()


def _steps(store_path: Path, run_id: str) -> list[tuple[str, str]]:
    return [(s.step, s.state.value) for s in open_store(store_path).list_steps(run_id)]


def test_a_store_deleted_during_a_run_fails_the_next_step_and_the_run_goes_on_in_a_new_store(store_path: Path) -> None:
    """Python API: the step after the deletion raises our error; the one after it is stored in a new file."""
    pipe = resumable.Pipeline("p", store=store_path)
    with pipe.run(run_id="r1") as run:
        assert run.step("a", lambda: 1) == 1
        _delete_store(store_path)  # at once: the file is still open in this process
        with pytest.raises(resumable.StoreRemovedError) as excinfo:
            run.step("b", lambda: 2)
        assert str(excinfo.value) == _removed(store_path, "deleted")
        assert run.step("c", lambda: 3) == 3
    assert store_path.exists()
    assert _steps(store_path, "r1") == [("c", "completed")]
    forget_all()
    assert resumable.load("r1", "c", store=store_path) == 3


def test_a_step_whose_store_is_deleted_while_it_runs_is_not_reported_completed(store_path: Path) -> None:
    """The deletion lands inside the step's body: the step raises instead of returning a value nobody stored."""
    pipe = resumable.Pipeline("p", store=store_path)
    with pipe.run(run_id="r1") as run:
        run.step("a", lambda: 1)

        def deletes_the_store() -> int:
            _delete_store(store_path)
            return 2

        with pytest.raises(resumable.StoreRemovedError):
            run.step("b", deletes_the_store)
    assert _steps(store_path, "r1") == []


def test_a_store_replaced_by_another_file_is_reported_and_the_other_file_is_kept(
    store_path: Path, tmp_path: Path
) -> None:
    """A file moved over the store (a backup put back): our error once, then the process uses that file."""
    other = tmp_path / "other.duckdb"
    backup = resumable.Pipeline("p", store=other)
    with backup.run(run_id="old") as run:
        run.step("kept", lambda: "from the backup")
    forget_all()
    pipe = resumable.Pipeline("p", store=store_path)
    with pipe.run(run_id="r1") as run:
        run.step("a", lambda: 1)
        os.replace(other, store_path)
        with pytest.raises(resumable.StoreRemovedError) as excinfo:
            run.step("b", lambda: 2)
        assert str(excinfo.value) == _removed(store_path, "replaced by another file")
        run.step("c", lambda: 3)
    assert _steps(store_path, "old") == [("kept", "completed")]
    assert _steps(store_path, "r1") == [("c", "completed")]


@pytest.fixture
def shell(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("RESUMABLE_STORE", str(store_path))
    monkeypatch.setenv("RESUMABLE_RUN_ID", "k1")
    ip = started_shell()
    yield ip
    fresh_kernel(ip)


def test_a_store_deleted_under_a_live_kernel_fails_the_cell_then_a_new_store_is_used(
    shell: Any, store_path: Path
) -> None:
    """IPython: the cell after the deletion fails with our error; the next cell is stored in the new file."""
    assert step(shell, "load", "rows = [1, 2, 3]").success
    _delete_store(store_path)
    failed = step(shell, "total", "total = sum(rows)")
    assert isinstance(failed.error_in_exec, resumable.StoreRemovedError)
    assert str(failed.error_in_exec) == _removed(store_path, "deleted")
    assert step(shell, "total", "total = sum(rows)").success
    assert shell.user_ns["total"] == 6
    assert _steps(store_path, "k1") == [("total", "completed")]


def test_a_cell_that_deletes_the_store_is_not_reported_completed(shell: Any, store_path: Path) -> None:
    """IPython: a deletion while the cell runs fails that cell; nothing claims it completed."""
    assert step(shell, "load", "rows = [1, 2, 3]").success
    script = f"import pathlib\nfor p in pathlib.Path({str(store_path.parent)!r}).iterdir():\n"
    script += f"    p.unlink() if p.is_file() and p.name.startswith({store_path.name!r}) else None\nx = 1"
    failed = step(shell, "wipe", script)
    assert isinstance(failed.error_in_exec, resumable.StoreRemovedError)
    assert _steps(store_path, "k1") == []
