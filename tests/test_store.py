"""The store seam as front ends use it: open_store, its errors (whole messages), re-execution and gc."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import store_sql
from old_schema import UNDO_MIGRATION_8, two_executions_of_a_flaky_step

import resumable
from resumable import StepState
from resumable._owner import current_owner
from resumable._records import Owner
from resumable._store import Completion, EncodeError, StepRequest, forget_all, open_store
from resumable._store.schema import SCHEMA_VERSION


def _dead_owner() -> Owner:
    """The owner record of a process that has exited (this host, a pid that is gone)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    return Owner(socket.gethostname(), child.pid, time.time())


def test_open_store_gives_one_store_per_location(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit path, RESUMABLE_STORE and a relative path to the same file share one store."""
    monkeypatch.chdir(store_path.parent.parent)
    store = open_store(store_path)
    assert store.location == str(store_path)
    monkeypatch.setenv("RESUMABLE_STORE", str(store_path))
    assert open_store() is store
    assert open_store(Path(".resumable") / "store.duckdb") is store


def test_a_url_of_another_kind_is_refused_rather_than_taken_for_a_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A URL that names no store resumable can keep is not a file path: nothing is created, no password shown."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(resumable.StorePathError) as excinfo:
        resumable.Pipeline("p", store="mysql://me:secret@db.internal/shop").runs()
    assert str(excinfo.value) == (
        "store 'mysql://db.internal/shop' is a mysql:// URL, and resumable keeps stores in files or on a "
        "PostgreSQL server only. Use a file path or a postgresql:// URL."
    )
    assert list(tmp_path.iterdir()) == []


def test_newer_schema_version_is_refused_untouched(store_location: str) -> None:
    """A store written by a newer resumable is not guessed at: a clear error, and the store keeps its version."""
    resumable.Pipeline("p", store=store_location).runs()
    forget_all()
    store_sql.execute(store_location, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(resumable.SchemaVersionError) as excinfo:
        resumable.Pipeline("p", store=store_location).runs()
    assert str(excinfo.value) == (
        f"store '{store_location}' has schema version 99, newer than the {SCHEMA_VERSION} this version of resumable "
        "understands. Nothing in it was read or changed. Upgrade resumable to open it."
    )
    assert (excinfo.value.found, excinfo.value.supported) == (99, SCHEMA_VERSION)
    assert store_sql.execute(store_location, "SELECT value FROM meta WHERE key = 'schema_version'") == [("99",)]


def test_run_of_another_pipeline_is_refused(store_location: str) -> None:
    """A run id already used by another pipeline is not joined: the message names both pipelines."""
    with resumable.Pipeline("checkout", store=store_location).run(run_id="order-42"):
        pass
    refund = resumable.Pipeline("refund", store=store_location)
    with pytest.raises(resumable.PipelineMismatchError) as excinfo, refund.run(run_id="order-42"):
        pass
    assert str(excinfo.value) == (
        "run 'order-42' belongs to pipeline 'checkout', not 'refund'; nothing was changed. Use another run id, or "
        "open it with pipeline 'checkout'."
    )
    assert open_store(store_location).get_run("order-42").pipeline == "checkout"  # type: ignore[union-attr]


def test_new_run_under_a_taken_id_is_refused(store_location: str) -> None:
    """``new=True`` with an id the store has already says so and changes nothing."""
    pipe = resumable.Pipeline("checkout", store=store_location)
    with pipe.run(run_id="order-42") as run:
        run.step("charge", lambda: 1)
    with pytest.raises(resumable.RunExistsError) as excinfo, pipe.run(run_id="order-42", new=True):
        pass
    assert str(excinfo.value) == (
        "run 'order-42' of pipeline 'checkout' already exists, so it cannot start as a new run. "
        "Resume it (leave out new=True), or choose another run id."
    )


def test_load_names_what_is_missing(store_location: str) -> None:
    """resumable.load says which level is missing: the run, the step, or a completed checkpoint."""
    pipe = resumable.Pipeline("p", store=store_location)
    with pipe.run(run_id="r1") as run:
        run.step("good", lambda: 1)
        with pytest.raises(ZeroDivisionError):
            run.step("bad", lambda: 1 / 0)
    with pytest.raises(resumable.CheckpointNotFoundError) as missing_run:
        resumable.load("r9", "good", store=store_location)
    assert str(missing_run.value) == (
        f"run 'r9' does not exist in store '{store_location}'. List the runs with: resumable runs"
    )
    with pytest.raises(resumable.CheckpointNotFoundError) as missing_step:
        resumable.load("r1", "ship", store=store_location)
    assert str(missing_step.value) == (
        f"run 'r1' has no step 'ship' in store '{store_location}'. See its steps with: resumable show r1"
    )
    with pytest.raises(resumable.CheckpointNotFoundError) as failed:
        resumable.load("r1", "bad", store=store_location)
    assert str(failed.value) == (
        "step 'bad' (run 'r1') is failed, not completed, so it has no checkpoint to load. Resume the run to "
        "complete it; see its steps with: resumable show r1"
    )
    with pytest.raises(resumable.CheckpointNotFoundError) as no_output:
        resumable.load("r1", "good", "total", store=store_location)
    assert str(no_output.value) == "step 'good' (run 'r1') has no output 'total'; it has ['return']."
    assert (no_output.value.run_id, no_output.value.step, no_output.value.output) == ("r1", "good", "total")


def test_load_of_a_step_with_several_outputs_asks_for_a_name(store_location: str) -> None:
    """A notebook step stores each variable apart; load without a name lists them with an example."""
    store = open_store(store_location)
    me = current_owner()
    store.open_run("r1", "nb")
    store.begin_step(StepRequest("r1", "split", me))
    blobs = (store.encode("train", [1, 2]), store.encode("test", [3]))
    store.complete_step(Completion("r1", "split", me, blobs, 0.1))
    with pytest.raises(resumable.CheckpointNotFoundError) as excinfo:
        resumable.load("r1", "split", store=store_location)
    assert str(excinfo.value) == (
        "step 'split' (run 'r1') has outputs ['test', 'train']; name one, e.g. load('r1', 'split', 'test')."
    )
    assert resumable.load("r1", "split", "train", store=store_location) == [1, 2]


def test_running_step_cannot_be_invalidated(store_location: str) -> None:
    """Invalidating a step this process is running is refused and changes nothing."""
    store = open_store(store_location)
    me = current_owner()
    store.open_run("r1", "p")
    store.begin_step(StepRequest("r1", "done", me))
    store.complete_step(Completion("r1", "done", me, (store.encode("return", 1),), 0.1))
    store.begin_step(StepRequest("r1", "busy", me))
    with pytest.raises(resumable.StepRunningError) as excinfo:
        store.invalidate("r1", "done", me, downstream=True)
    assert str(excinfo.value) == (
        "step 'busy' (run 'r1') is running in this process, so it cannot be invalidated; nothing was changed. "
        "Invalidate it once it ends."
    )
    assert [s.state.value for s in store.list_steps("r1")] == ["completed", "running"]


def test_completion_after_another_process_took_the_step_over_is_refused(store_location: str) -> None:
    """A process taken for dead cannot record a completion over the new state: nothing is stored."""
    store = open_store(store_location)
    gone = _dead_owner()
    store.open_run("r1", "p")
    store.begin_step(StepRequest("r1", "charge", gone))
    store.claim_run("r1", current_owner())  # what the next start does: the dead owner's step becomes interrupted
    store.release_run("r1", current_owner())
    with pytest.raises(resumable.StepChangedError) as excinfo:
        store.complete_step(Completion("r1", "charge", gone, (store.encode("return", 1),), 0.1))
    assert str(excinfo.value) == (
        "step 'charge' (run 'r1') is no longer 'running' in this process: another process changed it. Nothing from "
        "this attempt was stored and the step's earlier checkpoints are intact. See what happened with: "
        "resumable show r1 --events"
    )
    assert store.get_step("r1", "charge").state.value == "interrupted"  # type: ignore[union-attr]
    assert store.checkpoint_refs("r1", "charge") == ()


def test_encode_error_is_the_seams_own(store_location: str) -> None:
    """Store.encode reports an unpicklable value with the seam's EncodeError, naming the output and its type."""
    import threading

    with pytest.raises(EncodeError) as excinfo:
        open_store(store_location).encode("lock", threading.Lock())
    assert (excinfo.value.name, excinfo.value.type_name) == ("lock", "_thread.lock")
    assert isinstance(excinfo.value.__cause__, TypeError)


def test_a_re_executed_step_replaces_its_checkpoints(store_location: str) -> None:
    """After an invalidation, the next completion replaces the checkpoint: a restore returns the new value."""
    store = open_store(store_location)
    me = current_owner()
    store.open_run("r1", "nb")
    for value in (1, 2):
        store.begin_step(StepRequest("r1", "make", me))
        store.complete_step(Completion("r1", "make", me, (store.encode("return", value),), 0.1))
        store.invalidate("r1", "make", me)
    started = store.begin_step(StepRequest("r1", "make", me))
    assert (started.execution, started.attempt) == (3, 1)  # its third execution's first attempt replaces rows too
    store.complete_step(Completion("r1", "make", me, (store.encode("return", 3),), 0.1))
    (ref,) = store.checkpoint_refs("r1", "make")
    assert store.load_value(ref) == 3
    pipe = resumable.Pipeline("p", store=store_location)  # a claimed run: its first completion is deferred
    with pipe.run(run_id="r2") as run:
        run.step("make", lambda: 1)
    store.invalidate("r2", "make", me)
    with pipe.run(run_id="r2") as run:
        assert run.step("make", lambda: 2) == 2
    assert [r.name for r in store.checkpoint_refs("r2", "make")] == ["return"]
    assert resumable.load("r2", "make", store=store_location) == 2


def test_gc_keeps_young_unreferenced_payloads_and_removes_old_ones(store_location: str) -> None:
    """A large output encoded but not yet recorded survives gc; an old orphan and superseded rows go."""
    pipe = resumable.Pipeline("p", store=store_location)
    big = np.arange(100_000, dtype=np.float64)  # 800 kB: a payload file, not inline bytes
    with pipe.run(run_id="r1") as run:
        run.step("old", lambda: big + 1)
    store = open_store(store_location)
    payloads = store.payload_dir  # type: ignore[attr-defined]  # both stores name their payload folder
    (old_file,) = [payloads / r.file for r in store.checkpoint_refs("r1", "old") if r.file]
    store.invalidate("r1", "old", current_owner())
    in_flight = store.encode("new", big + 2)  # another step's output, its row not committed yet
    assert in_flight.file is not None
    hour_ago = time.time() - 2 * 3600
    os.utime(old_file, (hour_ago, hour_ago))
    report = store.gc()
    assert (report.checkpoints_removed, report.files_removed) == (1, 1)
    assert report.bytes_freed > 800_000
    assert not old_file.exists()
    assert (payloads / in_flight.file).exists()


def _etl(pipe: resumable.Pipeline, run: resumable.Run, ran: list[str], scale: float) -> float:
    """load (a payload file), clean (scaled, inline), total: the steps a fork shares and re-executes."""
    with run:
        values = run.step("load", lambda: ran.append("load") or np.arange(100_000, dtype=np.float64))
        cleaned = run.step("clean", lambda v, s: ran.append("clean") or v[:10] * s, values, scale)
        return float(run.step("total", lambda c: ran.append("total") or float(c.sum()), cleaned))


def test_a_fork_restores_what_it_forked_from_whatever_the_origin_does_later(store_location: str) -> None:
    """The fork shares the origin's rows before its step (none copied) and keeps them when the origin re-executes."""
    pipe = resumable.Pipeline("etl", store=store_location)
    ran: list[str] = []
    assert _etl(pipe, pipe.run(run_id="origin"), ran, 1.0) == 45.0
    fork = pipe.fork("origin", "total", run_id="fork", params={"lr": 0.5})
    info = pipe.store.get_run("fork")
    assert info is not None and (info.forked_from, info.forked_at, info.params) == ("origin", "total", {"lr": 0.5})
    assert [(r.run_id, r.step) for r in pipe.store.checkpoint_refs("fork", "clean")] == [("origin", "clean")]
    ran.clear()
    assert _etl(pipe, pipe.run(run_id="origin"), ran, 2.0) == 90.0  # the origin's clean: a new generation
    assert ran == ["clean", "total"]
    assert pipe.store.gc().checkpoints_removed == 0  # the fork still shares the old clean
    ran.clear()
    assert _etl(pipe, fork, ran, 1.0) == 45.0
    assert ran == ["total"]
    assert resumable.load("fork", "clean", store=store_location).tolist()[:3] == [0.0, 1.0, 2.0]
    assert resumable.load("origin", "clean", store=store_location).tolist()[:3] == [0.0, 2.0, 4.0]
    with pytest.raises(resumable.ForkError) as excinfo:
        pipe.fork("origin", "total", run_id="fork")
    assert str(excinfo.value).startswith(
        "cannot fork run 'origin' into run 'fork': run 'fork' (pipeline 'etl') already exists; nothing was written"
    )


def test_rm_deletes_a_run_and_keeps_what_its_fork_shares(store_location: str) -> None:
    """Removing the origin keeps the fork restorable (the shared payload file stays); removing the fork frees it."""
    pipe = resumable.Pipeline("etl", store=store_location)
    ran: list[str] = []
    _etl(pipe, pipe.run(run_id="origin"), ran, 1.0)
    _etl(pipe, pipe.fork("origin", "total", run_id="fork"), ran, 1.0)
    store = open_store(store_location)
    payloads = store.payload_dir  # type: ignore[attr-defined]
    (load_file,) = [payloads / r.file for r in store.checkpoint_refs("origin", "load") if r.file]
    preview = resumable.remove_runs("origin", "missing", store=store_location, dry_run=True)
    assert ([r.run_id for r in preview.removed], preview.dry_run) == (["origin"], True)
    assert [r.run_id for r in store.list_runs()] == ["fork", "origin"]
    done = resumable.remove_runs("origin", "missing", store=store_location)
    assert [r.run_id for r in done.removed] == ["origin"]
    assert [(r.run_id, r.missing) for r in done.refused] == [("missing", True)]
    assert (done.checkpoints_removed, done.files_removed) == (1, 0)  # its own 'total'; load and clean are shared
    assert [r.run_id for r in store.list_runs()] == ["fork"]
    assert store.list_steps("origin") == [] and store.list_events("origin") == []
    assert load_file.exists()
    ran.clear()
    assert _etl(pipe, pipe.run(run_id="fork"), ran, 1.0) == 45.0
    assert ran == []
    done = resumable.remove_runs("fork", store=store_location, compact=False)
    assert (done.checkpoints_removed, done.files_removed) == (3, 1)
    assert not load_file.exists()
    assert store.list_runs() == []


def test_a_store_from_before_executions_is_recounted_by_migration_7(store_location: str) -> None:
    """Events with lifetime attempt counts and no ``executions`` column (schema 6): the migration recounts the
    step from its log, and the log reads numbered by execution."""
    pipe = two_executions_of_a_flaky_step(store_location)
    for statement in (  # as schema 6 left it
        """UPDATE events SET attempt = n.lifetime FROM (
               SELECT seq, sum(CASE WHEN target = 'running' THEN 1 ELSE 0 END)
                           OVER (PARTITION BY run_id, step ORDER BY seq) AS lifetime FROM events) n
           WHERE events.seq = n.seq""",
        "UPDATE steps SET attempts = 3",
        "ALTER TABLE steps DROP COLUMN executions",
        *UNDO_MIGRATION_8,
        "UPDATE meta SET value = '6' WHERE key = 'schema_version'",
    ):
        store_sql.execute(store_location, statement)
    assert [r[0] for r in store_sql.execute(store_location, "SELECT attempt FROM events ORDER BY seq")] == [
        1, 1, 2, 2, 2, 3, 3,
    ]  # fmt: skip
    store = open_store(store_location)  # a writer migrates
    status = store.get_step("old", "a")
    assert status is not None and (status.state, status.executions, status.attempts) == (StepState.COMPLETED, 2, 1)
    assert [(e.execution, e.attempt, e.target) for e in store.list_events("old", "a")] == [
        (1, 1, "running"), (1, 1, "failed"), (1, 2, "running"), (1, 2, "completed"), (1, 2, "pending"),
        (2, 1, "running"), (2, 1, "completed"),
    ]  # fmt: skip
    forget_all()

    def broken() -> int:
        raise ValueError("edited and broken")

    with pytest.raises(ValueError, match="edited and broken"), pipe.run(run_id="old") as run:
        run.step("a", broken, rerun=True)  # execution 3 fails; the step keeps execution 2's checkpoint
    (status,) = open_store(store_location).list_steps("old")
    assert (status.state, status.executions, status.kept_execution, status.kept_attempt) == (
        StepState.FAILED, 3, 2, 1,
    )  # fmt: skip
    with pytest.warns(resumable.LastGoodCheckpointWarning) as warned:
        assert resumable.load("old", "a", store=store_location) == 3
    assert str(warned[0].message) == (
        "step 'a' (run 'old') is failed (execution 3, attempt 1); output 'return' was loaded from its last good "
        "checkpoint, written by execution 2. It is kept until an attempt completes."
    )
