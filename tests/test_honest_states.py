"""Honest states (DESIGN invariant 4): a dead process's step reads as interrupted, and reading never writes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from history_store import fingerprint, kill, start_worker

import resumable
from resumable import StepState
from resumable._store import forget_all, open_store


def cli(*args: str | Path, code: int = 0) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "resumable", *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == code, out.stderr
    return out


def test_a_killed_run_reads_as_interrupted_and_reading_changes_no_byte(store_location: str, tmp_path: Path) -> None:
    """SIGKILL mid-step: runs, show and sql say interrupted, and the store's files are byte-identical after."""
    worker = start_worker(store_location, "nightly-1", tmp_path / "started")
    try:
        live = json.loads(cli("runs", "--json", "--store", store_location).stdout)
        assert [(r["run_id"], r["state"]) for r in live] == [("nightly-1", "running")]  # alive: running
    finally:
        kill(worker)
    before = fingerprint(store_location)

    runs = json.loads(cli("runs", "--json", "--store", store_location).stdout)
    assert [(r["run_id"], r["state"], r["steps_by_state"]) for r in runs] == [
        ("nightly-1", "interrupted", {"completed": 1, "interrupted": 1})
    ]
    shown = json.loads(cli("show", "nightly-1", "--json", "--events", "--store", store_location).stdout)
    assert shown["state"] == "interrupted"
    assert [(s["step"], s["state"]) for s in shown["steps"]] == [("fetch", "completed"), ("crunch", "interrupted")]
    assert [e["to"] for e in shown["events"]] == ["running", "completed", "running"]  # no event was written
    table = cli("show", "nightly-1", "--store", store_location).stdout
    assert "run nightly-1 of pipeline nightly: interrupted (parameters: region='us')" in table
    assert "\tcrunch\tinterrupted\t" in table
    assert "\tinterrupted\t" in cli("runs", "--store", store_location).stdout
    assert cli("runs", "--state", "interrupted", "--store", store_location).stdout.startswith("run\t")
    queried = cli("sql", "SELECT step, state FROM steps ORDER BY seq", "--json", "--store", store_location).stdout
    assert json.loads(queried) == [{"step": "fetch", "state": "completed"}, {"step": "crunch", "state": "interrupted"}]
    assert resumable.connect(store_location).sql("SELECT state FROM runs").rows == (("interrupted",),)
    attempts = "SELECT execution, attempt, outcome FROM attempts WHERE step = 'crunch'"
    assert resumable.connect(store_location).sql(attempts).rows == ((1, 1, "interrupted"),)
    assert cli("why", "nightly-1", "crunch", "--store", store_location).stdout == (
        "step 'crunch', execution 1, attempt 1: first run\n"
    )
    forget_all()
    assert fingerprint(store_location) == before

    # The stored row changes only when a process resumes the run, through the transition table.
    pipe = resumable.Pipeline("nightly", store=store_location)
    with pipe.run(run_id="nightly-1", params={"region": "us"}) as run:
        assert run.step("crunch", lambda: 3) == 3
    assert [(e.source, e.target) for e in pipe.store.list_events("nightly-1", "crunch")] == [
        ("pending", "running"), ("running", "interrupted"), ("interrupted", "running"), ("running", "completed"),
    ]  # fmt: skip


def test_the_python_api_and_the_panel_read_the_same_state(store_location: str, tmp_path: Path) -> None:
    """get_step, list_steps and list_runs agree with the CLI; a running step of a live process stays running."""
    worker = start_worker(store_location, "nightly-1", tmp_path / "started")
    try:
        reader = open_store(store_location, read_only=True)
        assert reader.get_step("nightly-1", "crunch").state is StepState.RUNNING  # type: ignore[union-attr]
        forget_all()
    finally:
        kill(worker)
    reader = open_store(store_location, read_only=True)
    assert reader.get_step("nightly-1", "crunch").state is StepState.INTERRUPTED  # type: ignore[union-attr]
    assert [s.state for s in reader.list_steps("nightly-1")] == [StepState.COMPLETED, StepState.INTERRUPTED]
    run = reader.list_runs(state=resumable.RunState.INTERRUPTED)[0]
    assert (run.run_id, run.counts) == ("nightly-1", {"completed": 1, "interrupted": 1})


def _three_runs(store: str | Path) -> str | Path:
    """Runs of two pipelines: a completed one, a failed one, another pipeline's completed one."""
    etl = resumable.Pipeline("etl", store=store)
    with etl.run(run_id="e1") as run:
        run.step("a", lambda: 1)
        run.step("b", lambda: 2)
    with etl.run(run_id="e2") as run, pytest.raises(ZeroDivisionError):
        run.step("a", lambda: 1 / 0)
    with resumable.Pipeline("other", store=store).run(run_id="o1") as run:
        run.step("x", lambda: 1)
    forget_all()
    return store


@pytest.fixture
def three_runs(store_location: str) -> str | Path:
    """The three runs, once in a DuckDB file and once on a PostgreSQL server."""
    return _three_runs(store_location)


@pytest.fixture
def three_runs_in_a_file(store_path: Path) -> str | Path:
    """The three runs in a DuckDB file: for checking options, which the store's kind does not change."""
    return _three_runs(store_path)


def test_runs_filters_by_pipeline_state_and_age_and_reports_durations(three_runs: str | Path) -> None:
    """--pipeline, --state, --since and --limit select runs; each has a duration and its steps by state."""
    ids = lambda *a: [r["run_id"] for r in json.loads(cli("runs", "--json", "--store", three_runs, *a).stdout)]  # noqa: E731
    assert ids() == ["o1", "e2", "e1"]
    assert ids("--pipeline", "etl") == ["e2", "e1"]
    assert ids("--state", "completed") == ["o1", "e1"]
    assert ids("--state", "completed", "--limit", "1") == ["o1"]
    assert ids("--state", "COMPLETED", "--limit", "99999999999999999999") == ["o1", "e1"]  # more than any store: all
    assert ids("--since", "1h") == ["o1", "e2", "e1"]
    assert ids("--since", "2999-01-01") == []
    assert ids("--pipeline", "etl", "--state", "failed") == ["e2"]
    e1 = json.loads(cli("runs", "--json", "--pipeline", "etl", "--limit", "5", "--store", three_runs).stdout)[1]
    assert e1["steps_by_state"] == {"completed": 2} and e1["duration_s"] >= 0 and e1["step_time_s"] >= 0
    header, *rows = cli("runs", "--pipeline", "etl", "--store", three_runs).stdout.splitlines()
    assert header == "run\tpipeline\tstate\tsteps\tduration\tupdated\tparameters"
    assert [r.split("\t")[:4] for r in rows] == [
        ["e2", "etl", "failed", "1 failed"],
        ["e1", "etl", "completed", "2 completed"],
    ]
    none = cli("runs", "--pipeline", "nope", "--store", three_runs)
    assert (none.stdout, none.stderr) == ("", "no runs match\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--limit", "-1"), "Invalid value for '--limit': '-1' is not a number of runs; give a whole number of 1 or "
         "more, e.g. --limit 20"),
        (("--limit", "0"), "Invalid value for '--limit': '0' is not a number of runs; give a whole number of 1 or "
         "more, e.g. --limit 20"),
        (("--limit", "ten"), "Invalid value for '--limit': 'ten' is not a number of runs; give a whole number of 1 "
         "or more, e.g. --limit 20"),
        (("--since", "yesterday"), "Invalid value for '--since': 'yesterday' is neither an age like 30m, 12h, 7d or "
         "2w nor a date like 2026-12-01"),
        (("--state", "done"), "Invalid value for '--state': 'done' is not one of 'empty', 'pending', 'running', "
         "'completed', 'failed', 'interrupted'."),
        (("--since", "99999999d"), "Invalid value for '--since': '99999999d' reaches back before the year 1; give a "
         "shorter age or a date"),
        (("--pipeline", " "), "Invalid value for '--pipeline' / '-P': a pipeline name cannot be empty; leave "
         "--pipeline out to list every pipeline"),
    ],
)  # fmt: skip
def test_runs_options_are_checked_with_a_clear_message(
    three_runs_in_a_file: str | Path, args: tuple[str, ...], message: str
) -> None:
    """A bad option exits 2 with one line naming it, never a traceback."""
    out = cli("runs", *args, "--store", three_runs_in_a_file, code=2)
    assert out.stderr.splitlines()[-1] == f"Error: {message}"
    assert "Traceback" not in out.stderr


def test_the_panel_turns_a_killed_step_interrupted_on_its_next_tick_without_writing(
    store_location: str, tmp_path: Path
) -> None:
    """A panel showing another process's running step: after SIGKILL the poll redraws it interrupted; no event."""
    worker = start_worker(store_location, "nightly-1", tmp_path / "started")
    try:
        shown = resumable.panel("nightly-1", store=store_location, poll_s=None)
        assert shown.rows["crunch"].state is StepState.RUNNING
    finally:
        kill(worker)
    try:
        store = open_store(store_location)
        seq = store.last_event_seq()
        shown.poll_tick(seq)  # what the shared poll thread does each tick: the store's events did not change
        assert shown.rows["crunch"].state is StepState.INTERRUPTED
        assert ">interrupted</span>" in shown.rows["crunch"].badge.value
        assert store.last_event_seq() == seq
        assert shown.rows["crunch"].retry.layout.display != "none"  # Retry is offered
    finally:
        shown.close()


BUSY = """
import pathlib, sys, resumable
store, ready = sys.argv[1], pathlib.Path(sys.argv[2])
pipe = resumable.Pipeline("busy", store=store)
n = 0
with pipe.run(run_id="busy-1") as run:
    while True:
        run.step(f"s{n}", lambda: b"x" * 1000)
        n += 1
        if n == 3000:  # past many 50 ms group-commit windows
            ready.touch()
"""


def test_reading_after_a_kill_mid_write_leaves_the_files_as_they_were(store_path: Path, tmp_path: Path) -> None:
    """SIGKILL while quick steps are being committed (a write-ahead log may be left): the first reader puts
    the steps the writer had logged as returned into the store, and from then on readers change no byte.

    DuckDB only: it is about the file's completion log and write-ahead log, which a server store has neither of.
    """
    ready = tmp_path / "ready"
    writer = subprocess.Popen([sys.executable, "-c", BUSY, str(store_path), str(ready)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert writer.poll() is None and time.monotonic() < deadline, "the writer never got going"
            time.sleep(0.01)
    finally:
        writer.kill()
        writer.communicate(timeout=30)
    listed = json.loads(cli("runs", "--json", "--store", store_path).stdout)
    # Every step that returned is in its completion log (docs/durability.md) and this first read put
    # them into the store: what the writer finished reads completed, what it was running interrupted.
    assert [(r["run_id"], r["state"]) for r in listed] in ([("busy-1", "interrupted")], [("busy-1", "completed")])
    before = fingerprint(store_path)
    assert json.loads(cli("runs", "--json", "--store", store_path).stdout) == listed
    cli("show", "busy-1", "--store", store_path)
    counted = cli("sql", "SELECT count(*) AS n FROM steps", "--json", "--store", store_path).stdout
    assert json.loads(counted)[0]["n"] >= 1
    assert fingerprint(store_path) == before
