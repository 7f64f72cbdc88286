"""Attempts are counted per execution (issue 12 §8): edits and stale re-runs begin executions, retries are attempts.

An execution begins each time a step starts from pending (its first run, an edit, a changed input, an
upstream re-run, an invalidation, --force); a retry after a failure is another attempt of the same
execution, and ``retries=N`` counts within it, so an edited step gets its whole retry budget again.
Real IPython shell, real DuckDB store, the CLI as a subprocess.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from ipython_shell import step
from old_schema import drop_migration_8, two_executions_of_a_flaky_step

import resumable
from resumable import StepFailed, StepState
from resumable._store import forget_all, open_store


@pytest.fixture
def shell_store(store_location: str) -> str:
    """The shell's store: each test here runs once on a DuckDB file and once on a PostgreSQL server."""
    return store_location


def cli(*args: str | Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "resumable", *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def counts(store_location: str | Path, run_id: str, name: str) -> tuple[StepState, int, int]:
    status = open_store(store_location).get_step(run_id, name)
    assert status is not None
    return status.state, status.executions, status.attempts


def test_an_edited_cell_gets_its_whole_retry_budget_again(
    shell: Any, store_location: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--retries 1: two attempts fail; run unchanged, one more attempt of the same execution; edited, a new
    execution whose first attempt fails and whose retry completes. show, why, sql and the panel agree."""
    tries = tmp_path / "tries"
    body = f"open({str(tries)!r}, 'a').write('x')\nn = len(open({str(tries)!r}).read())\n"
    body += "if n <= 4:\n    raise ConnectionError(f'try {n}')"
    line = "flaky --retries 1 --backoff 0"

    capsys.readouterr()
    assert isinstance(step(shell, line, body).error_in_exec, StepFailed)
    assert "↻ step 'flaky': attempt 2 of 2 (attempt 1 failed: ConnectionError: try 1)\n" in capsys.readouterr().err
    assert counts(store_location, "r1", "flaky") == (StepState.FAILED, 1, 2)

    # Unchanged: a resume retries the failed execution once more (its budget is used up), no new execution.
    again = step(shell, line, body).error_in_exec
    assert (type(again), str(again)) == (ConnectionError, "try 3")
    assert "↻" not in capsys.readouterr().err
    assert counts(store_location, "r1", "flaky") == (StepState.FAILED, 1, 3)

    # Edited: a new execution, with its retry: attempt 1 fails (try 4), attempt 2 completes (try 5).
    assert step(shell, line, body + "\nresult = n").error_in_exec is None
    said = capsys.readouterr()
    assert "↻ step 'flaky' runs again: its source changed\n" in said.out
    assert "↻ step 'flaky': attempt 2 of 2 (attempt 1 failed: ConnectionError: try 4)\n" in said.err
    assert counts(store_location, "r1", "flaky") == (StepState.COMPLETED, 2, 2)
    assert shell.user_ns["result"] == 5

    shown = json.loads(cli("show", "r1", "--json", "--events", "--store", store_location))
    assert [(s["step"], s["attempts"], s["executions"]) for s in shown["steps"]] == [("flaky", 2, 2)]
    assert [(e["execution"], e["attempt"], e["from"], e["to"]) for e in shown["events"]] == [
        (1, 1, "pending", "running"), (1, 1, "running", "failed"),
        (1, 2, "failed", "running"), (1, 2, "running", "failed"),
        (1, 3, "failed", "running"), (1, 3, "running", "failed"),
        (1, 3, "failed", "pending"),  # the edit: back to pending, a new execution starts
        (2, 1, "pending", "running"), (2, 1, "running", "failed"),
        (2, 2, "failed", "running"), (2, 2, "running", "completed"),
    ]  # fmt: skip
    assert cli("show", "r1", "--store", store_location).splitlines()[2].startswith("1\tflaky\tcompleted\t2\t2\t")
    assert cli("why", "r1", "flaky", "--store", store_location).splitlines()[0] == (
        "step 'flaky', execution 2, attempt 2: retried after error: ConnectionError: try 4; its source changed"
    )
    db = resumable.connect(store_location)
    assert db.sql("SELECT execution, attempt, outcome, error FROM attempts ORDER BY started_at").rows == (
        (1, 1, "failed", "ConnectionError: try 1"), (1, 2, "failed", "ConnectionError: try 2"),
        (1, 3, "failed", "ConnectionError: try 3"), (2, 1, "failed", "ConnectionError: try 4"),
        (2, 2, "completed", None),
    )  # fmt: skip
    assert db.sql("SELECT attempts, executions FROM steps").rows == ((2, 2),)
    panel = resumable.panel("r1", store=store_location, poll_s=None)
    try:
        info = panel.rows["flaky"].info.value
        assert ">2 attempts</span>" in info
        assert "executed 2 times · attempts: 1 earlier · execution 1 #2 " in html.unescape(info)
    finally:
        panel.close()


def test_a_stale_rerun_and_an_invalidation_are_executions_not_attempts(shell: Any, store_location: str) -> None:
    """An upstream edit makes its reader execute again, and so does `resumable invalidate`: one attempt each."""
    step(shell, "load", "n = 1")
    step(shell, "report", "text = str(n)")
    step(shell, "load", "n = 2")
    step(shell, "report", "text = str(n)")
    assert counts(store_location, "r1", "load") == (StepState.COMPLETED, 2, 1)
    assert counts(store_location, "r1", "report") == (StepState.COMPLETED, 2, 1)
    cli("invalidate", "r1", "report", "--store", store_location)
    step(shell, "report", "text = str(n)")
    assert counts(store_location, "r1", "report") == (StepState.COMPLETED, 3, 1)
    assert cli("why", "r1", "report", "--store", store_location) == (
        "step 'report', execution 3, attempt 1: invalidated (user asked)\n"
    )


def test_python_api_retries_count_within_an_execution(store_location: str) -> None:
    """retries=1: StepFailed after 2 attempts; resumed unchanged, one attempt; called with a new argument, a new
    execution with 2 attempts again."""
    pipe = resumable.Pipeline("p", store=store_location)

    def refuse(amount: int) -> int:
        raise ConnectionError(f"refused {amount}")

    for amount, error, attempts, executions in (
        (1, "step 'pay' (run 'r1') failed after 2 attempts; last error: ConnectionError: refused 1", 2, 1),
        (1, "refused 1", 3, 1),  # the same call resumed: the next attempt of the same execution, and the last
        (2, "step 'pay' (run 'r1') failed after 2 attempts; last error: ConnectionError: refused 2", 2, 2),
    ):
        with pytest.raises((StepFailed, ConnectionError)) as caught, pipe.run(run_id="r1") as run:
            run.step("pay", refuse, amount, retries=1, backoff=0)
        assert str(caught.value) == error
        assert counts(store_location, "r1", "pay") == (StepState.FAILED, executions, attempts)
    with pipe.run(run_id="r2") as run:  # a claimed run's quick step, written by a group commit
        run.step("quick", lambda: 1)
    assert counts(store_location, "r2", "quick") == (StepState.COMPLETED, 1, 1)


def test_a_store_from_before_executions_reads_with_the_same_numbers(store_path: Path) -> None:
    """A store whose events carry lifetime attempt counts (as older versions wrote them): the migration
    recounts its steps, and its events read numbered by execution, in the API, the CLI and SQL.

    DuckDB only: a store older than version 7 exists only as a file (server stores began at 7)."""
    two_executions_of_a_flaky_step(store_path)
    with duckdb.connect(str(store_path)) as con:  # as an older version left it
        con.execute(
            """UPDATE events SET attempt = n.lifetime FROM (
                   SELECT seq, sum(CASE WHEN target = 'running' THEN 1 ELSE 0 END)
                               OVER (PARTITION BY run_id, step ORDER BY seq) AS lifetime FROM events) n
               WHERE events.seq = n.seq"""
        )
        con.execute("UPDATE steps SET attempts = 3")
        con.execute("ALTER TABLE steps DROP COLUMN executions")
        drop_migration_8(con)
        con.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
        assert con.execute("SELECT attempt FROM events ORDER BY seq").fetchall() == [
            (1,),
            (1,),
            (2,),
            (2,),
            (2,),
            (3,),
            (3,),
        ]
    store = open_store(store_path)  # a writer migrates
    assert counts(store_path, "old", "a") == (StepState.COMPLETED, 2, 1)
    numbered = [(e.execution, e.attempt, e.target) for e in store.list_events("old", "a")]
    assert numbered == [
        (1, 1, "running"), (1, 1, "failed"), (1, 2, "running"), (1, 2, "completed"), (1, 2, "pending"),
        (2, 1, "running"), (2, 1, "completed"),
    ]  # fmt: skip
    forget_all()
    assert (
        cli("why", "old", "a", "--store", store_path) == "step 'a', execution 2, attempt 1: invalidated (user asked)\n"
    )
    rows = resumable.connect(store_path).sql("SELECT execution, attempt, outcome FROM attempts ORDER BY started_at")
    assert rows.rows == ((1, 1, "failed"), (1, 2, "completed"), (2, 1, "completed"))


def test_an_edit_that_adds_a_side_effect_keeps_its_key_through_retries(shell: Any, store_location: str) -> None:
    """A step completed without side effects, then edited to charge with an idempotency key and fail after the
    charge: run again, it must charge with the same key (a new key would repeat the charge)."""
    shell.run_cell("keys = []")
    assert step(shell, "pay", "paid = 0").error_in_exec is None
    body = "import resumable\nkeys.append(resumable.idempotency_key())\nraise ConnectionError('after the charge')"
    for _ in range(2):
        assert isinstance(step(shell, "pay", body).error_in_exec, ConnectionError)
    keys = shell.user_ns["keys"]
    assert len(keys) == 2 and keys[0] == keys[1]
    status = open_store(store_location).get_step("r1", "pay")
    assert status is not None and (status.effect, status.key_generation) == (True, 1)
