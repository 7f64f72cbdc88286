"""Ownership leases and ``resumable unlock`` (issue 11 §4b): no run is refused forever."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import store_sql
from old_schema import drop_migration_6, drop_migration_8

import resumable
from resumable import StepState
from resumable._store import forget_all, open_store
from resumable._store.schema import SCHEMA_VERSION

GONE_HOST = "container-before-restart"
GONE_PID = 4242
GONE_STARTED = 1_700_000_000.0


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resumable", *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def _owned_elsewhere(store_path: str | Path, lease_expires_in: float | None) -> resumable.Pipeline:
    """Run 'r1' with step 'train' running under a process on a host name that no longer exists."""
    pipe = resumable.Pipeline("p", store=store_path)
    with pipe.run(run_id="r1") as run:
        run.step("load", lambda: 1)
    forget_all()
    store_sql.execute(
        store_path,
        """INSERT INTO steps (run_id, step, seq, state, attempts, reads, outputs, options, owner_host, owner_pid,
                              owner_started, started_at, output_bytes)
           VALUES ('r1', 'train', 1, 'running', 1, '[]', '[]', '{}', ?, ?, ?, now(), 0)""",
        [GONE_HOST, GONE_PID, GONE_STARTED],
    )
    if lease_expires_in is not None:
        store_sql.execute(
            store_path,
            "INSERT INTO leases (host, pid, started, expires) VALUES (?, ?, ?, ?)",
            [GONE_HOST, GONE_PID, GONE_STARTED, time.time() + lease_expires_in],
        )
    return pipe


def test_an_owner_on_another_host_whose_lease_ran_out_is_gone(store_location: str) -> None:
    """The old host name's lease has expired: its running step becomes interrupted and the run resumes."""
    pipe = _owned_elsewhere(store_location, lease_expires_in=-1)
    with pipe.run(run_id="r1") as run:
        assert run.step("train", lambda: "model") == "model"
    events = [e for e in open_store(store_location).list_events("r1", "train")]
    assert [(e.source, e.target) for e in events][-3:] == [("running", "interrupted"), ("interrupted", "running"),
                                                           ("running", "completed")]  # fmt: skip
    assert events[-3].detail == f"owner pid {GONE_PID} on host '{GONE_HOST}' is gone"


@pytest.mark.parametrize("lease", [3600.0, None], ids=["lease-running", "no-lease-recorded"])
def test_an_owner_on_another_host_with_a_running_or_unknown_lease_is_respected(
    store_location: str, lease: float | None
) -> None:
    """A live lease, or an owner recorded before leases (none to ask), still holds the run."""
    pipe = _owned_elsewhere(store_location, lease_expires_in=lease)
    with pytest.raises(resumable.RunOwnedError) as excinfo, pipe.run(run_id="r1") as run:
        run.step("train", lambda: "model")
    assert f"(pid {GONE_PID} on host '{GONE_HOST}'" in str(excinfo.value)
    assert "(step 'train' is running)" in str(excinfo.value)


def test_unlock_releases_a_run_held_from_another_host(store_location: str) -> None:
    """resumable unlock takes the run from an owner it cannot ask; the event says who was released."""
    pipe = _owned_elsewhere(store_location, lease_expires_in=None)
    done = cli("unlock", "r1", "--store", store_location)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"unlocked run 'r1': released pid {GONE_PID} on host '{GONE_HOST}'; steps now interrupted: train\n"
    )
    status = open_store(store_location).get_step("r1", "train")
    assert status is not None and status.state is StepState.INTERRUPTED
    last = open_store(store_location).list_events("r1", "train")[-1]
    assert last.detail == f"unlocked by the user: owner pid {GONE_PID} on host '{GONE_HOST}' released"
    forget_all()
    with pipe.run(run_id="r1") as run:
        assert run.step("train", lambda: "model") == "model"
    again = cli("unlock", "r1", "--store", store_location)
    assert (again.returncode, again.stdout) == (0, "run 'r1' had no owner; nothing changed\n")
    missing = cli("unlock", "nope", "--store", store_location)
    assert missing.returncode == 6
    assert missing.stderr == (
        f"error: run 'nope' does not exist in store '{store_location}'. List the runs with: resumable runs\n"
    )


HOLDER = """
import sys, time
from resumable._store import open_store
from resumable._store.base import StepRequest
from resumable._owner import current_owner
import resumable
pipe = resumable.Pipeline("p", store=sys.argv[1])
with pipe.run(run_id="r1"):
    pass
store = open_store(sys.argv[1])
store.begin_step(StepRequest("r1", "train", current_owner()))
print("holding", flush=True)
sys.stdin.read()
"""


def _lease_expiry(store_path: str | Path, pid: int) -> float:
    store = open_store(store_path)
    with store._transaction() as con:  # type: ignore[attr-defined]
        row = con.execute("SELECT expires FROM leases WHERE pid = ?", [pid]).fetchone()
    return float(row[0]) if row else 0.0


def test_unlock_refuses_a_live_local_owner_and_the_lease_is_renewed(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running step of a live process here is never unlocked (exit 4); its process keeps renewing its lease."""
    store_path.parent.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("RESUMABLE_LEASE_S", "0.9")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        refused = cli("unlock", "r1", "--store", store_path)
        assert refused.returncode == 4
        assert refused.stderr.startswith(
            f"error: run 'r1' of pipeline 'p' is owned by another live process (pid {holder.pid} on host "
        )
        assert refused.stderr.endswith("(step 'train' is running). Stop it or wait; if it dies, its running steps "
                                       "become 'interrupted' and resume on the next start.\n")  # fmt: skip
        first = _lease_expiry(store_path, holder.pid)
        assert first > 0
        deadline = time.monotonic() + 20
        while _lease_expiry(store_path, holder.pid) <= first:  # renewed every 0.3 s by the holder's keeper
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.05)
    finally:
        holder.kill()
        holder.wait()
    done = cli("unlock", "r1", "--store", store_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"unlocked run 'r1': released pid {holder.pid} on host ")


def test_a_version_2_store_gains_the_lease_table(store_path: Path) -> None:
    """Migrations 3 to 8 add the completion logs, the leases, the previous source and the executions to a store
    written before them; its runs and steps are kept."""
    _owned_elsewhere(store_path, lease_expires_in=None)
    with duckdb.connect(str(store_path)) as con:
        con.execute("DROP TABLE completion_logs")
        con.execute("ALTER TABLE steps DROP COLUMN previous_source")
        drop_migration_6(con)
        con.execute("ALTER TABLE steps DROP COLUMN executions")
        drop_migration_8(con)
        con.execute("DROP TABLE leases")
        con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    store = open_store(store_path)
    assert [s.step for s in store.list_steps("r1")] == ["load", "train"]
    forget_all()
    with duckdb.connect(str(store_path)) as con:
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        assert con.execute("SELECT count(*) FROM leases").fetchone() == (0,)
