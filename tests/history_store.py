"""A store with a history, made by running real pipelines (shared by the SQL and honest-state tests).

Three pipelines: ``etl`` (three runs with parameters, a retried step, a failed run, a checkpoint
large enough for a payload file), ``checkout`` (an effect step rerun under a second key
generation) and ``nightly`` (a process killed with SIGKILL inside a step).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import resumable
from resumable import StepState
from resumable._store import forget_all, open_store

# A pipeline in a process of its own; it writes the marker inside its long step, then sleeps.
WORKER = """
import sys, time, pathlib, resumable
store, run_id, marker, seconds = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), float(sys.argv[4])
pipe = resumable.Pipeline("nightly", store=store)
with pipe.run(run_id=run_id, params={"region": "us"}) as run:
    run.step("fetch", lambda: list(range(10)))
    def crunch():
        marker.write_text("started")
        time.sleep(seconds)
        return 2
    run.step("crunch", crunch)
print("done", flush=True)
"""


def start_worker(store: Path | str, run_id: str, marker: Path, seconds: float = 600) -> subprocess.Popen[str]:
    """Start the worker and return once its long step shows as running in the store.

    Every caller ends the worker by killing it: the step outlasts any test (pytest-timeout ends one
    at 300 s), so a loaded machine can never see it complete while a test expects it running.
    """
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(store), run_id, str(marker), str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            pytest.fail(f"the worker never reached its long step: {worker.communicate()[1]}")
        time.sleep(0.01)
    reader = open_store(store, read_only=True)
    while (status := reader.get_step(run_id, "crunch")) is None or status.state is not StepState.RUNNING:
        assert time.monotonic() < deadline, "the long step never showed as running"
        time.sleep(0.01)
    forget_all()  # let go of the file: what follows is another process's business
    return worker


def kill(worker: subprocess.Popen[str]) -> None:
    """SIGKILL, as an out-of-memory killer or a closed laptop would end it, and reap it."""
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    assert worker.stdout is not None and worker.stderr is not None
    worker.stdout.close()
    worker.stderr.close()


def fingerprint(store: Path | str) -> dict[str, str]:
    """Every file of the store (the database, its log, payloads, marks) by name and content digest.

    The lock file is left out: it holds only the pid of whoever took the lock last, readers included.
    A PostgreSQL store's are its tables instead, each table's rows in order, by digest.
    """
    if str(store).startswith("postgresql://"):
        from store_sql import execute

        server = str(store).split("?", 1)[0]  # without the payload folder, which psycopg does not know
        tables = ("meta", "runs", "steps", "events", "checkpoints", "leases", "completion_logs")
        return {
            t: hashlib.sha256(repr(sorted(map(repr, execute(server, f"SELECT * FROM {t}")))).encode()).hexdigest()
            for t in tables
        }
    store = Path(store)
    found = {}
    for path in sorted(store.parent.rglob("*")):
        if path.is_file() and path.name != store.name + ".lock":
            found[str(path.relative_to(store.parent))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _flaky(calls: list[int]) -> str:
    calls.append(1)
    if len(calls) == 1:
        raise ConnectionError("warehouse reset the connection")
    return "loaded"


def _refuse() -> str:
    raise ConnectionError("warehouse is down")


def _charge(amount: int) -> str:
    return f"charged {amount} with key {resumable.idempotency_key()}"


def build(store: Path | str, tmp: Path) -> None:
    """Run the pipelines into ``store`` (about two seconds)."""
    etl = resumable.Pipeline("etl", store=store)
    for run_id, region, outcome in (("etl-1", "eu", "retried"), ("etl-2", "us", "ok"), ("etl-3", "eu", "failed")):
        with etl.run(run_id=run_id, params={"region": region}) as run:
            rows = run.step("extract", lambda r=region: [{"region": r, "n": i} for i in range(200)])
            run.step("transform", lambda rows: sorted(rows, key=lambda x: -x["n"]), rows)
            if run_id == "etl-2":
                run.step("archive", lambda: b"x" * 400_000)  # past the inline limit: a payload file
            if outcome == "retried":
                calls: list[int] = []
                run.step("load", _flaky, calls, retries=1, backoff=0)
            elif outcome == "failed":
                with pytest.raises(ConnectionError):
                    run.step("load", _refuse)
            else:
                run.step("load", lambda: "loaded")
    checkout = resumable.Pipeline("checkout", store=store)
    with checkout.run(run_id="co-1") as run:
        run.step("charge", _charge, 42)
    with checkout.run(run_id="co-1") as run:
        run.step("charge", _charge, 42, rerun=True)  # a deliberate rerun: key generation 2
    forget_all()
    kill(start_worker(store, "nightly-1", tmp / "nightly-started"))
