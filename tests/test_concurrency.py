"""Two processes and one store: reading while a run works, and one owner per run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import resumable
from resumable import StepState
from resumable._store import forget_all, open_store
from resumable._units import human_time

# The long step lasts until the test creates ``release`` (or kills the worker): never shorter than the
# test needs it, however slow a loaded machine makes the test (a bound of 300 s only for a stray worker).
WORKER = """
import sys, time, pathlib, resumable
store, run_id, marker, release = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), pathlib.Path(sys.argv[4])
pipe = resumable.Pipeline("p", store=store)
with pipe.run(run_id=run_id) as run:
    run.step("quick", lambda: 1)
    def long_step():
        marker.write_text("started")
        deadline = time.monotonic() + 300
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return 2
    run.step("long", long_step)
print("done", flush=True)
"""

LISTER = """
import json, sys
from resumable import Pipeline
store = Pipeline("p", store=sys.argv[1]).store
runs = store.list_runs()
steps = store.list_steps(sys.argv[2])
print(json.dumps({"runs": [r.run_id for r in runs], "steps": {s.step: s.state.value for s in steps}}))
"""


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def _wait_until_running(store_path: str | Path, run_id: str, step: str, timeout: float = 30.0) -> None:
    """Poll the store (as a user's CLI would) until the step shows as running, then let go of the file."""
    store = resumable.Pipeline("p", store=store_path).store
    deadline = time.monotonic() + timeout
    while (status := store.get_step(run_id, step)) is None or status.state is not StepState.RUNNING:
        assert time.monotonic() < deadline, f"step {step!r} never showed as running"
        time.sleep(0.01)
    store.close()


def _worker(store: str | Path, run_id: str, marker: Path) -> subprocess.Popen[str]:
    """A process inside step ``long`` of ``run_id`` until ``release`` (beside ``marker``) exists."""
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(store), run_id, str(marker), str(marker.with_name("release"))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_second_process_lists_runs_while_a_step_runs(store_location: str, tmp_path: Path) -> None:
    """A CLI-like reader gets runs and steps while another process is inside a step, without waiting for it.

    Bounded on the event, not the wall clock: the step ends only once the test releases it, after
    the reader has answered. A worker holding the store while its step runs would make the reader
    wait out its lock timeout and fail (StoreLockedError), however fast or loaded the machine.
    """
    marker, release = tmp_path / "started", tmp_path / "release"
    worker = _worker(store_location, "r1", marker)
    try:
        _wait_for(marker)
        _wait_until_running(store_location, "r1", "long")
        out = subprocess.run(
            [sys.executable, "-c", LISTER, str(store_location), "r1"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        seen = json.loads(out.stdout)
        assert seen["runs"] == ["r1"]
        assert seen["steps"] == {"quick": "completed", "long": "running"}
        assert worker.poll() is None, "the worker died before the reader answered"
        release.touch()
        assert worker.communicate(timeout=60)[0] == "done\n"
    finally:
        worker.kill()
        worker.wait(timeout=30)


BUSY_WRITER = """
import mmap, pathlib, sys, resumable
from resumable._store.connection import _COMMITS  # this process's commits into the store file
store, progress, stop = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
with open(progress, "r+b") as f:
    shown = mmap.mmap(f.fileno(), 8)
pipe = resumable.Pipeline("p", store=store)
n = 0
with pipe.run(run_id="busy") as run:
    while not stop.exists():
        run.step(f"s{n}", lambda: None)
        n += 1
        shown[:8] = sum(_COMMITS.values()).to_bytes(8, "little")
        if n == 100:
            print("ready", flush=True)
print(n, flush=True)
"""

WAITING_READER = """
import json, pathlib, sys
from resumable import Pipeline
from resumable._store import filelock
progress = pathlib.Path(sys.argv[3])

def writer_commits():
    return int.from_bytes(progress.read_bytes()[:8], "little")

waits = []
take = filelock.acquire

def acquire(*args, **kwargs):  # the real acquire, watched: how many commits the writer made while we waited
    before = writer_commits()
    take(*args, **kwargs)
    waits.append(writer_commits() - before)

filelock.acquire = acquire
store = Pipeline("p", store=sys.argv[1]).store
for _ in range(int(sys.argv[4])):  # as a panel polls: each time the file is opened again
    runs = store.list_runs()
    steps = store.list_steps(sys.argv[2])
    store.close()
print(json.dumps({"waits": waits, "runs": [r.run_id for r in runs], "steps": len(steps)}))
"""

# A holder hands the file over at its next transaction once a reader says it waits: the reader
# gets in after at most a few of the writer's commits (measured 0 to 3 per wait, also at a load
# average of 10 on 2 cores). A holder that ignores the waiter keeps the file up to QUIET_HOLD_S
# (measured 12 to 39 commits during such a wait).
HANDOVER_COMMITS = 6
READS = 6  # each a wait: a holder ignoring waiters may let one in early, not six in a row


def test_reader_gets_in_at_the_writers_next_commits_while_quick_steps_run_back_to_back(
    store_path: Path, tmp_path: Path
) -> None:
    """Thousands of quick steps a second do not lock a CLI out: the writer hands the file over to it.

    Bounded on the event itself, not the wall clock (which a loaded machine stretches for the
    reader's own work too): while each reader waits for the store's lock, the writer makes at
    most a few commits before it lets go. The writer shows its commit count through a shared
    file; each reader watches its own waits.
    """
    progress, stop = tmp_path / "progress", tmp_path / "stop"
    progress.write_bytes(bytes(8))
    writer = subprocess.Popen(
        [sys.executable, "-c", BUSY_WRITER, str(store_path), str(progress), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "ready\n"  # 100 steps done: the writer is in its loop
        out = subprocess.run(
            [sys.executable, "-c", WAITING_READER, str(store_path), "busy", str(progress), str(READS)],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        seen = json.loads(out.stdout)
        assert seen["runs"] == ["busy"] and seen["steps"] >= 100
        assert len(seen["waits"]) >= READS and max(seen["waits"]) <= HANDOVER_COMMITS, seen["waits"]
        assert writer.poll() is None, "the writer stopped before the readers were done"
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=60)
    store = resumable.Pipeline("p", store=store_path).store
    assert len(store.list_steps("busy")) == int(out.split()[-1])  # every quick step was written when the run ended


def test_second_process_cannot_execute_an_owned_run(store_location: str, tmp_path: Path) -> None:
    """While one live process owns a run, another gets RunOwnedError naming the owner's pid."""
    marker = tmp_path / "started"
    worker = _worker(store_location, "r1", marker)
    try:
        _wait_for(marker)
        pipe = resumable.Pipeline("p", store=store_location)
        with pytest.raises(resumable.RunOwnedError) as excinfo, pipe.run(run_id="r1") as run:
            run.step("quick", lambda: 1)
        assert excinfo.value.pid == worker.pid
        started = human_time(round(psutil.Process(worker.pid).create_time(), 2))
        assert str(excinfo.value) == (
            f"run 'r1' of pipeline 'p' is owned by another live process (pid {worker.pid} on host "
            f"'{socket.gethostname()}', started {started}). Stop it or wait; if it dies, its running steps "
            f"become 'interrupted' and resume on the next start."
        )
        # A different run of the same store is not blocked.
        with pipe.run(run_id="r2") as other:
            assert other.step("quick", lambda: 3) == 3
    finally:
        worker.kill()
        worker.wait(timeout=30)


def test_step_of_a_killed_owner_becomes_interrupted_and_resumes(store_location: str, tmp_path: Path) -> None:
    """SIGKILL inside a step: the next start finds it interrupted, then runs it to completion."""
    marker = tmp_path / "started"
    worker = _worker(store_location, "r1", marker)
    _wait_for(marker)
    _wait_until_running(store_location, "r1", "long")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    pipe = resumable.Pipeline("p", store=store_location)
    store = pipe.store
    # Read honestly before anyone resumes: interrupted, though no event has been written yet.
    assert store.get_step("r1", "long").state is StepState.INTERRUPTED  # type: ignore[union-attr]
    assert [e.target for e in store.list_events("r1", "long")] == ["running"]
    with pipe.run(run_id="r1") as run:
        assert run.step("quick", lambda: 99) == 1  # restored, not re-run
        assert run.status("long").state is StepState.INTERRUPTED
        assert run.step("long", lambda: 2) == 2
    events = [(e.source, e.target) for e in store.list_events("r1", "long")]
    assert events == [
        ("pending", "running"),
        ("running", "interrupted"),
        ("interrupted", "running"),
        ("running", "completed"),
    ]


def test_store_locked_by_a_foreign_holder_is_reported_with_its_pid(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that keeps the DuckDB file open makes us wait, then fail naming it."""
    resumable.Pipeline("p", store=store_path).runs()
    forget_all()
    monkeypatch.setenv("RESUMABLE_LOCK_TIMEOUT", "0.3")
    hold = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('open', flush=True); time.sleep(60)"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(store_path)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(resumable.StoreLockedError) as excinfo:
            open_store(store_path)
        assert excinfo.value.holder_pid == holder.pid
        assert str(excinfo.value) == (
            f"store '{store_path}' stayed locked by process {holder.pid} for {excinfo.value.waited_s:.1f} s. "
            "resumable holds the file only for short transactions, so a long hold means that process keeps it "
            "open (a DuckDB shell or notebook connection?). Close it, or raise RESUMABLE_LOCK_TIMEOUT."
        )
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_forked_worker_uses_the_store_without_the_parents_handle(store_location: str) -> None:
    """multiprocessing's fork: a child records its own steps; the parent's pending steps are written once."""
    import multiprocessing

    pipe = resumable.Pipeline("p", store=store_location)
    with pipe.run(run_id="parent") as run:
        run.step("before_fork", lambda: 1)  # quick: still pending in this process at the fork
        ctx = multiprocessing.get_context("fork")
        child = ctx.Process(target=_child_run, args=(str(store_location),))
        child.start()
        child.join(timeout=60)
        assert child.exitcode == 0
    store = pipe.store
    assert [s.step for s in store.list_steps("parent")] == ["before_fork"]
    assert [(s.step, s.state) for s in store.list_steps("child")] == [("in_child", StepState.COMPLETED)]
    events = store.list_events("parent", "before_fork")
    assert [e.target for e in events] == ["running", "completed"]  # written once, by the parent


def _child_run(store: str) -> None:
    pipe = resumable.Pipeline("p", store=store)
    with pipe.run(run_id="child") as run:
        run.step("in_child", lambda: 2)
