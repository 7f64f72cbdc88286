"""`resumable why` and `%durable_why`: why a step last executed or was held, read back from the event log.

Each reason is produced the way a user produces it (an edited cell, a changed plain-cell input, an
upstream edit, --force, a retry after an error, an owner killed with SIGKILL, a held effect), on a
real IPython shell and a real store; the CLI runs as a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from history_store import kill, start_worker
from ipython_shell import step
from old_schema import drop_migration_6, drop_migration_8

import resumable
from resumable._owner import current_owner
from resumable._store import forget_all
from resumable._store.schema import SCHEMA_VERSION


@pytest.fixture
def shell_store(store_location: str) -> str:
    """The shell's store: each test here runs once on a DuckDB file and once on a PostgreSQL server."""
    return store_location


def why(store: Path | str, run_id: str, name: str, *more: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "resumable", "why", run_id, name, "--store", str(store), *more],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == code, out.stderr
    return out


def magic(shell: Any, capsys: pytest.CaptureFixture[str], name: str) -> str:
    capsys.readouterr()
    shell.run_line_magic("durable_why", name)
    return capsys.readouterr().out


def test_first_run_and_an_edited_cell_with_its_diff(
    shell: Any, store_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new step says 'first run'; after an edit, 'its source changed' and the edit as a unified diff."""
    step(shell, "load", "n = 1\nm = 2")
    assert magic(shell, capsys, "load") == "step 'load', execution 1, attempt 1: first run\n"
    step(shell, "load", "n = 10\nm = 2")
    assert magic(shell, capsys, "load") == (
        "step 'load', execution 2, attempt 1: its source changed\n"
        "--- load (before)\n+++ load (now)\n@@ -1,2 +1,2 @@\n-n = 1\n+n = 10\n m = 2\n"
    )
    doc = json.loads(why(store_location, "r1", "load", "--json").stdout)
    assert (doc["state"], doc["execution"], doc["attempt"], doc["kind"], doc["why"], doc["held"]) == (
        "completed", 2, 1, "source_changed", "its source changed", None,
    )  # fmt: skip
    assert doc["diff"].splitlines()[3:] == ["-n = 1", "+n = 10", " m = 2"]


def test_a_changed_input_an_upstream_rerun_and_force(
    shell: Any, store_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plain cell's new value, an upstream edit (stale) and --force each name themselves."""
    shell.run_cell("threshold = 0.5")
    step(shell, "pick", "chosen = threshold * 2")
    step(shell, "report", "text = str(chosen)")
    shell.run_cell("threshold = 0.7")
    step(shell, "pick", "chosen = threshold * 2")
    assert magic(shell, capsys, "pick") == "step 'pick', execution 2, attempt 1: 'threshold' changed (0.5 → 0.7)\n"
    step(shell, "report", "text = str(chosen)")
    assert why(store_location, "r1", "report").stdout == (
        "step 'report', execution 2, attempt 1: stale: upstream step 'pick' re-ran; 'chosen' changed (1.0 → 1.4)\n"
    )
    step(shell, "report --force", "text = str(chosen)")
    assert why(store_location, "r1", "report").stdout == "step 'report', execution 3, attempt 1: forced\n"
    assert json.loads(why(store_location, "r1", "report", "--json").stdout)["kind"] == "forced"


def test_a_retry_after_an_error_names_the_error(shell: Any, store_location: str, tmp_path: Path) -> None:
    """A failed cell run again says which error the previous attempt ended with (and the fix, if edited)."""
    flag = tmp_path / "rows"
    body = f"rows = int(open({str(flag)!r}).read())"
    step(shell, "fetch", body)
    flag.write_text("3")
    step(shell, "fetch", body)
    assert why(store_location, "r1", "fetch").stdout == (
        "step 'fetch', execution 1, attempt 2: retried after error: FileNotFoundError: [Errno 2] No such file or "
        f"directory: '{flag}'\n"
    )
    shell.run_cell("limit = -1")
    step(shell, "check", "assert limit > 0, 'limit must be positive'")
    shell.run_cell("limit = 5")
    step(shell, "check", "assert limit > 0, 'limit must be positive'")
    assert why(store_location, "r1", "check").stdout == (
        "step 'check', execution 2, attempt 1: 'limit' changed (-1 → 5), after error: AssertionError: limit must be "
        "positive\n"
    )
    step(shell, "parse", "raise ValueError('bad row')")
    step(shell, "parse", "parsed = 3")
    assert why(store_location, "r1", "parse").stdout == (
        "step 'parse', execution 2, attempt 1: its source changed, after error: ValueError: bad row\n"
        "--- parse (before)\n+++ parse (now)\n@@ -1 +1 @@\n-raise ValueError('bad row')\n+parsed = 3\n"
    )


def test_an_effect_step_held_after_an_edit(shell: Any, store_location: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An edited effect step is restored, not repeated: why says it was held, and why it last ran."""
    step(shell, "mail --effect", "sent = 1")
    step(shell, "mail --effect", "sent = 2")
    assert magic(shell, capsys, "mail") == (
        "step 'mail', execution 1, attempt 1: first run\n"
        "step 'mail' was then held because it has side effects: its source changed (restored, not repeated)\n"
    )
    doc = json.loads(why(store_location, "r1", "mail", "--json").stdout)
    assert (doc["kind"], doc["held"]) == ("first_run", "its source changed")


def test_a_step_whose_owner_was_killed_says_so_when_it_runs_again(store_location: str, tmp_path: Path) -> None:
    """SIGKILL mid-step; the next process that runs the step finds the dead owner and says so."""
    worker = start_worker(store_location, "nightly-1", tmp_path / "started")
    pid = worker.pid
    kill(worker)
    pipe = resumable.Pipeline("nightly", store=store_location)
    with pipe.run(run_id="nightly-1", params={"region": "us"}) as run:
        run.step("crunch", lambda: 3)
    host = current_owner().host
    assert why(store_location, "nightly-1", "crunch").stdout == (
        f"step 'crunch', execution 1, attempt 2: started again after a dead owner interrupted it "
        f"(owner pid {pid} on host '{host}' is gone)\n"
    )


def test_an_invalidated_step_and_the_panel_rows(
    shell: Any, store_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`resumable invalidate` is a reason too; the panel shows each step's why line under its numbers."""
    step(shell, "load", "n = 1")
    step(shell, "mail --effect", "sent = n")
    step(shell, "mail --effect", "sent = n + 1")  # edited: held
    subprocess.run(
        [sys.executable, "-m", "resumable", "invalidate", "r1", "load", "--store", str(store_location)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    step(shell, "load", "n = 1")
    assert magic(shell, capsys, "load") == "step 'load', execution 2, attempt 1: invalidated (user asked)\n"
    shown = resumable.panel("r1", store=store_location, poll_s=None)
    try:
        assert '<div class="rsm-why rsm-muted">why: invalidated (user asked)</div>' in shown.rows["load"].info.value
        assert (
            '<div class="rsm-why rsm-muted">why: held because it has side effects (its source changed); '
            "it last ran for: first run</div>"
        ) in shown.rows["mail"].info.value
    finally:
        shown.close()


def test_unknown_run_or_step_is_our_error(store_location: str, shell: Any) -> None:
    step(shell, "load", "n = 1")
    """A step or run that is not there: exit 6 and the store's own not-found message."""
    missing = why(store_location, "r1", "nope", code=6)
    assert (missing.stdout, missing.stderr) == (
        "",
        f"error: run 'r1' has no step 'nope' in store '{store_location}'. See its steps with: resumable show r1\n",
    )
    assert why(store_location, "r2", "load", code=6).stderr == (
        f"error: run 'r2' does not exist in store '{store_location}'. List the runs with: resumable runs\n"
    )


def test_a_version_4_store_gains_the_previous_source_and_keeps_its_steps(store_path: Path) -> None:
    """Migration 5 adds the column the diff needs; steps recorded before it are kept and explained.

    DuckDB only: a store older than version 7 exists only as a file (server stores began at 7).
    """
    pipe = resumable.Pipeline("p", store=store_path)
    with pipe.run(run_id="old") as run:
        run.step("load", lambda: 1)
    forget_all()
    with duckdb.connect(str(store_path)) as con:
        con.execute("ALTER TABLE steps DROP COLUMN previous_source")
        drop_migration_6(con)  # a version-4 store had none of migration 6's either
        con.execute("ALTER TABLE steps DROP COLUMN executions")
        drop_migration_8(con)
        con.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    with resumable.Pipeline("p", store=store_path).run(run_id="old") as run:
        assert run.step("load", lambda: 1) == 1  # restored: the step is kept
    forget_all()
    assert why(store_path, "old", "load").stdout == "step 'load', execution 1, attempt 1: first run\n"
    with duckdb.connect(str(store_path)) as con:
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
