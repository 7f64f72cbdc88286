"""Processes sharing one store under CPU load: nothing committed is lost, no raw DuckDB error reaches a user.

DuckDB reads a file's header before it takes its own lock, so a process opening the store while
another writes or closes it could read a torn header (issue 11 §0). Every process now holds the
store's lock file from before ``duckdb.connect`` until after ``close``; these tests keep it so.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from duckdb_handover_repro import campaign
from store_campaign import run_trial

import resumable
from resumable._store import filelock, forget_all, open_store

HOLD_LOCK = """
import sys, time
from pathlib import Path
from resumable._store import filelock
filelock.acquire(Path(sys.argv[1]), 5)
print("held", flush=True)
time.sleep(60)
"""

TRY_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("free")
except BlockingIOError:
    print("held")
"""


@pytest.mark.timeout(600)
def test_duckdb_alone_keeps_every_commit_when_opens_are_held_under_our_lock(tmp_path: Path) -> None:
    """The DuckDB-only reproduction (open, INSERT+UPDATE, COMMIT, close; CPU load) through the store's lock.

    Without the lock (``python tests/duckdb_handover_repro.py STORE --no-lock``) this lost
    committed rows in most runs of 4 x 150 transactions on a loaded 2-core machine.
    """
    found = campaign(tmp_path / "t.duckdb", writers=3, per_writer=12, busy=2, use_lock=True)
    assert found["errors"] == []
    assert found["lost"] == []
    assert found["committed"] == 36


@pytest.mark.timeout(1800)
def test_writers_and_readers_on_one_store_under_load_lose_nothing(tmp_path: Path, campaign_runs: int) -> None:
    """4 writer processes, a CLI reader and an API reader, 2 busy loops: every completed step is stored.

    ``--campaign-runs 50`` (or RESUMABLE_CAMPAIGN_RUNS) for the long campaign.
    """
    for n in range(campaign_runs):
        trial = run_trial(tmp_path / f"trial{n}", writers=4, steps=25, busy=2)
        assert (trial.lost, trial.errors, trial.raw, trial.corrupt) == ([], [], [], 0), f"trial {n}"
        assert trial.completed == 100
        assert trial.reader_calls > 0


def _corrupt_store(store_path: Path) -> None:
    with resumable.Pipeline("p", store=store_path).run(run_id="r1") as run:
        run.step("a", lambda: 1)
    forget_all()
    with open(store_path, "r+b") as f:  # both database headers: DuckDB's checksum no longer matches
        for offset in (4096, 8192):
            f.seek(offset)
            f.write(b"\xff" * 64)


def test_a_corrupt_store_is_our_error_naming_it_and_the_cli_exits_6(store_path: Path) -> None:
    """No raw DuckDB error and no traceback: the API raises StoreCorruptError, the CLI exits 6 with one paragraph."""
    _corrupt_store(store_path)
    with pytest.raises(resumable.StoreCorruptError) as excinfo:
        open_store(store_path)
    detail = excinfo.value.detail
    assert detail.startswith("Corrupt database file: computed checksum")
    expected = (
        f"store '{store_path}' cannot be read as a database ({detail}). Nothing in it was changed. Keep a copy of "
        f"the file (and its .wal, if any) before anything else; restore it from a backup, or point "
        f"RESUMABLE_STORE at a new file."
    )
    assert str(excinfo.value) == expected
    assert isinstance(excinfo.value, resumable.StoreDatabaseError)
    out = subprocess.run(
        [sys.executable, "-m", "resumable", "runs", "--store", str(store_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 6
    assert out.stdout == ""
    assert out.stderr == f"error: {expected}\n"


def test_a_store_held_by_another_process_is_reported_with_its_pid(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting for the store's lock is bounded; the error names the process holding it. The lock file is 0600."""
    open_store(store_path).list_runs()
    forget_all()
    monkeypatch.setenv("RESUMABLE_LOCK_TIMEOUT", "0.3")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(store_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(resumable.StoreLockedError) as excinfo:
            open_store(store_path)
        assert excinfo.value.holder_pid == holder.pid
        assert str(excinfo.value) == (
            f"store '{store_path}' stayed locked by process {holder.pid} for 0.3 s. resumable holds the file only "
            "for short transactions, so a long hold means that process keeps it open (a DuckDB shell or notebook "
            "connection?). Close it, or raise RESUMABLE_LOCK_TIMEOUT."
        )
    finally:
        holder.kill()
        holder.wait(timeout=30)
    lock = filelock.lock_path(store_path)
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    assert open_store(store_path).list_runs() == []  # the holder died: its lock went with it


def _try_lock(path: Path) -> str:
    cmd = [sys.executable, "-c", TRY_LOCK, str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    return out.stdout.strip()


def test_a_forked_child_leaves_the_parents_lock_held(store_path: Path) -> None:
    """The child closes its inherited descriptor without unlocking: the parent still excludes other processes."""
    open_store(store_path).list_runs()
    forget_all()
    filelock.acquire(store_path, 5)
    try:
        pid = os.fork()
        if pid == 0:  # the child forgot the parent's hold at the fork, so a release here unlocks nothing
            filelock.release(store_path)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert _try_lock(filelock.lock_path(store_path)) == "held"
    finally:
        filelock.release(store_path)
    assert _try_lock(filelock.lock_path(store_path)) == "free"
