"""DuckDBStore: runs, steps, events and checkpoints in one DuckDB file.

Together with ``connection.py`` (holding the file briefly), ``rows.py`` (rows to records) and
``schema.py``, this package is the only place that imports duckdb or holds SQL. Every public
method is one transaction; quick steps of a run this process owns are committed in groups
(``journal.py``).
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
import weakref
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import duckdb

from resumable import _codec, _config
from resumable._owner import is_alive
from resumable._records import Blob, Event, Owner, RunInfo, StepStatus
from resumable._states import StepState, check_transition
from resumable._store.base import Begin, CheckpointRef, GcReport, StepRequest
from resumable._store.connection import FileConnection
from resumable._store.journal import GROUP_COMMIT_S, MAX_BATCH, RunJournal
from resumable._store.rows import (
    STEP_COLUMNS,
    RunView,
    clock,
    log_events,
    owner_from,
    param_differences,
    run_state,
    same_process,
    status_from,
    write_quick_steps,
)
from resumable._store.schema import MIGRATIONS, SCHEMA_VERSION
from resumable.errors import (
    CheckpointIntegrityError,
    CheckpointNotFoundError,
    ParameterMismatchError,
    RunOwnedError,
    SchemaVersionError,
    StoreError,
)

# A run's last change is its newest event: derived, so the per-step path writes one row less.
_UPDATED_AT = "coalesce((SELECT max(e.happened_at) FROM events e WHERE e.run_id = r.run_id), r.created_at)"


class DuckDBStore:
    """A store in one DuckDB file plus a payload folder beside it.

    Parameters
    ----------
    path
        The database file; its folder is created private to the user (0700), the file 0600.
    lock_timeout_s
        How long to wait for another process to release the file before raising
        :class:`StoreLockedError`; default ``RESUMABLE_LOCK_TIMEOUT`` or 30 s.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lock_timeout_s: float | None = None,
        idle_close_s: float = 0.1,
        max_hold_s: float = 0.5,
    ) -> None:
        self.path = Path(path)
        self.payload_dir = self.path.parent / (self.path.name + ".payloads")
        self._signing_key = _config.signing_key()
        self._conn = FileConnection(
            self.path, _config.lock_timeout_s() if lock_timeout_s is None else lock_timeout_s, idle_close_s, max_hold_s
        )
        self._conn.pending = self
        self.window_s = GROUP_COMMIT_S
        self._journals: dict[str, RunJournal] = {}
        # Quick steps touch only their journal, under this lock, so they never wait for a commit in
        # progress; whoever needs both takes the connection's lock first.
        self._journal_lock = threading.Lock()
        with self._transaction() as con:
            self._migrate(con)
        _OPEN_STORES.add(self)

    # ------------------------------------------------------------------ connection handling

    @property
    def lock_timeout_s(self) -> float:
        """How long a locked file is waited for."""
        return self._conn.lock_timeout_s

    def _transaction(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        return self._conn.transaction()

    def close(self) -> None:
        """Write what is pending and release the file now (it is reopened on the next use)."""
        self._conn.close()

    # ------------------------------------------------------------------ group commit (journal.py)

    def oldest_pending(self) -> float | None:
        """When the oldest unwritten step started (a full batch is written at once by ``begin_step``)."""
        with self._journal_lock:
            return min((t for j in self._journals.values() if (t := j.oldest_pending()) is not None), default=None)

    def write_pending(self, con: duckdb.DuckDBPyConnection) -> object:
        """Write every journal's quick steps inside the open transaction; returns what was taken."""
        with self._journal_lock:
            taken = [(journal, journal.take()) for journal in self._journals.values() if journal.pending]
        for _, steps in taken:
            write_quick_steps(con, steps)
        return taken

    def restore_pending(self, taken: object) -> None:
        """Put unwritten steps back after a failed transaction, unless the commit happened after all."""
        assert isinstance(taken, list)
        for journal, steps in taken:
            if not steps:
                continue
            try:
                with self._transaction() as con:
                    first = steps[0]
                    written = con.execute(
                        "SELECT count(*) FROM steps WHERE run_id = ? AND step = ?", [journal.run_id, first.req.step]
                    ).fetchone()
            except Exception:
                written = None
            if written is None or written[0] == 0:
                with self._journal_lock:
                    for step in steps:
                        journal.pending.setdefault(step.req.step, step)

    def _migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            msg = (
                f"store '{self.path}' has schema version {version}, newer than this resumable "
                f"understands ({SCHEMA_VERSION}). Upgrade resumable to open it."
            )
            raise SchemaVersionError(msg)
        for number in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[number]:
                con.execute(statement)
        if version != SCHEMA_VERSION:
            con.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                [str(SCHEMA_VERSION)],
            )

    # ------------------------------------------------------------------ runs

    def get_run(self, run_id: str) -> RunInfo | None:
        """The run with this id, or None."""
        with self._transaction() as con:
            return self._get_run(con, run_id)

    def _get_run(self, con: duckdb.DuckDBPyConnection, run_id: str) -> RunInfo | None:
        found = self._runs(con, "r.run_id = ?", [run_id], 1)
        return found[0] if found else None

    @staticmethod
    def _runs(con: duckdb.DuckDBPyConnection, where: str, params: list[Any], limit: int) -> list[RunInfo]:
        """Runs matching ``where``, newest first, each with the state derived from its steps."""
        rows = con.execute(
            f"""SELECT r.run_id, r.pipeline, r.created_at, {_UPDATED_AT}, r.params, list(s.state)
               FROM runs r LEFT JOIN steps s USING (run_id)
               WHERE {where}
               GROUP BY ALL ORDER BY r.created_at DESC, r.run_id DESC LIMIT ?""",
            [*params, limit],
        ).fetchall()
        out = []
        for row in rows:
            states = [s for s in row[5] if s is not None]
            out.append(RunInfo(row[0], row[1], row[2], row[3], json.loads(row[4]), run_state(states), len(states)))
        return out

    def list_runs(self, pipeline: str | None = None, limit: int = 100) -> list[RunInfo]:
        """Runs, newest first, optionally of one pipeline."""
        with self._transaction() as con:
            return self._runs(con, "? IS NULL OR r.pipeline = ?", [pipeline, pipeline], limit)

    def latest_run(self, pipeline: str) -> RunInfo | None:
        """The most recently created run of a pipeline."""
        runs = self.list_runs(pipeline, limit=1)
        return runs[0] if runs else None

    def open_run(self, run_id: str, pipeline: str, params: dict[str, Any] | None = None) -> RunInfo:
        """Create the run, or check that an existing one belongs to ``pipeline`` and ``params``."""
        # Parameters as the store records them (JSON), so a resumed run compares like with like.
        recorded = json.loads(json.dumps(params or {}, sort_keys=True, default=repr))
        with self._transaction() as con:
            existing = self._get_run(con, run_id)
            if existing is None:
                con.execute(
                    "INSERT INTO runs (run_id, pipeline, created_at, params) VALUES (?, ?, now(), ?)",
                    [run_id, pipeline, json.dumps(recorded, sort_keys=True)],
                )
                created = self._get_run(con, run_id)
                assert created is not None
                return created
        if existing.pipeline != pipeline:
            msg = (
                f"run '{run_id}' belongs to pipeline '{existing.pipeline}', not '{pipeline}'. "
                f"Use another run id, or open it with pipeline '{existing.pipeline}'."
            )
            raise StoreError(msg)
        differences = param_differences(existing.params, recorded)
        if recorded and differences:
            raise ParameterMismatchError(run_id, differences)
        return existing

    def claim_run(self, run_id: str, owner: Owner) -> None:
        """Make ``owner`` the run's only executor until :meth:`release_run`.

        While it owns the run, this process decides new steps in memory and commits quick ones in
        groups (see ``journal.py``).
        """
        with self._transaction() as con:
            self._check_owner(con, run_id, owner)
            con.execute(
                "UPDATE runs SET owner_host = ?, owner_pid = ?, owner_started = ?, owner_kernel = ? WHERE run_id = ?",
                [owner.host, owner.pid, owner.started, owner.kernel_id, run_id],
            )
            known = {r[0] for r in con.execute("SELECT step FROM steps WHERE run_id = ?", [run_id]).fetchall()}
            journal = self._journals.get(run_id)
            if journal is None:
                self._journals[run_id] = RunJournal(run_id, owner, known, len(known))
            else:
                journal.claims += 1

    def release_run(self, run_id: str, owner: Owner) -> None:
        """Write what is pending and give up ownership taken with :meth:`claim_run`."""
        with self._transaction() as con:
            journal = self._journals.get(run_id)
            if journal is not None:
                journal.claims -= 1
                if journal.claims > 0:
                    return
                del self._journals[run_id]
            con.execute(
                """UPDATE runs SET owner_host = NULL, owner_pid = NULL, owner_started = NULL, owner_kernel = NULL
                   WHERE run_id = ? AND owner_host = ? AND owner_pid = ?""",
                [run_id, owner.host, owner.pid],
            )

    def _check_owner(self, con: duckdb.DuckDBPyConnection, run_id: str, me: Owner, step: str = "") -> RunView:
        """Raise RunOwnedError when another live process holds the run or runs one of its steps.

        Running steps of dead owners become ``interrupted`` on the way. Returns what the one query
        behind this learned about the run and ``step``, so callers need no second round trip.
        """
        # Two plain point queries: DuckDB plans correlated subqueries far more slowly (8 ms vs 1 ms).
        row = con.execute(
            "SELECT pipeline, owner_host, owner_pid, owner_started, owner_kernel FROM runs WHERE run_id = ?", [run_id]
        ).fetchone()
        if row is None:
            raise CheckpointNotFoundError(f"run '{run_id}' does not exist in store '{self.path}'.")
        pipeline = row[0]
        holder = owner_from(row[1], row[2], row[3], row[4])
        if holder is not None and not same_process(holder, me):
            if is_alive(holder):
                raise RunOwnedError(run_id, pipeline, holder.host, holder.pid, clock(holder.started), None)
            con.execute("UPDATE runs SET owner_host = NULL, owner_pid = NULL WHERE run_id = ?", [run_id])
        rows = con.execute(
            """SELECT step, state, attempts, owner_host, owner_pid, owner_started, owner_kernel, source_digest,
                      outputs, finished_at
               FROM steps WHERE run_id = ? AND (step = ? OR state = 'running')""",
            [run_id, step],
        ).fetchall()
        mine = next((r for r in rows if r[0] == step), None)
        state = mine[1] if mine else None
        for name, running_state, _, *owner_cols in (r[:7] for r in rows):
            if running_state != StepState.RUNNING.value:
                continue
            owner = owner_from(*owner_cols)
            if owner is not None and same_process(owner, me):
                continue
            if owner is not None and is_alive(owner):
                raise RunOwnedError(run_id, pipeline, owner.host, owner.pid, clock(owner.started), name)
            self._transition(
                con, run_id, name, StepState.RUNNING, StepState.INTERRUPTED, me,
                f"owner {owner.describe() if owner else 'unknown'} is gone",
            )  # fmt: skip
            if name == step:
                state = StepState.INTERRUPTED.value
        if mine is None:
            return RunView(pipeline, None, None, None, None, None)
        return RunView(pipeline, state, mine[2], mine[7], mine[8], mine[9])

    def reap_dead_owners(self, run_id: str, me: Owner) -> RunInfo | None:
        """Mark steps whose owner died ``interrupted``; return the run as it then stands (None: no such run).

        What a CLI or panel does before showing a run, so it never shows a dead process as running.
        """
        with self._transaction() as con:
            try:
                self._check_owner(con, run_id, me)
            except RunOwnedError:
                pass  # a live owner: nothing to reap
            except CheckpointNotFoundError:
                return None
            return self._get_run(con, run_id)

    # ------------------------------------------------------------------ steps

    def _transition(
        self,
        con: duckdb.DuckDBPyConnection,
        run_id: str,
        step: str,
        source: StepState,
        target: StepState,
        who: Owner,
        detail: str | None = None,
        set_sql: str = "",
        set_params: Sequence[Any] = (),
        *,
        owned_by: Owner | None = None,
    ) -> int:
        """The one place a step changes state: checked against the table, logged in the same transaction.

        ``owned_by`` makes the change conditional on the step still being owned by that process.
        Returns the step's attempt count after the change.
        """
        transition = check_transition(step, source, target)
        guard, guard_params = "", []
        if owned_by is not None:
            guard, guard_params = " AND owner_host = ? AND owner_pid = ?", [owned_by.host, owned_by.pid]
        changed = con.execute(
            f"UPDATE steps SET state = ?{set_sql} "
            f"WHERE run_id = ? AND step = ? AND state = ?{guard} RETURNING attempts",
            [target.value, *set_params, run_id, step, source.value, *guard_params],
        ).fetchone()
        if changed is None:
            msg = (
                f"step '{step}' (run '{run_id}') is no longer '{source.value}' in this process "
                "(another process changed it); nothing was stored."
            )
            raise StoreError(msg)
        log_events(con, [(run_id, step, transition, source, target, int(changed[0]), who, detail, None)])
        return int(changed[0])

    def begin_step(self, req: StepRequest) -> Begin:
        """Decide, in one transaction, whether a step restores or executes.

        When it executes, it is ``running`` and owned by ``req.owner`` when this returns (for a
        new step of a run this process owns, in memory until the next group commit).
        """
        journal = self._journals.get(req.run_id)
        if journal is not None:
            with self._journal_lock:
                first_of_window = not journal.pending
                quick = journal.try_begin(req)
                batch_full = len(journal.pending) >= MAX_BATCH
            if quick is not None:
                if batch_full:
                    # Back-pressure: a process that starts steps faster than they can be written
                    # writes a full batch itself, so a group commit never grows past one batch.
                    with self._transaction():
                        pass
                elif first_of_window:
                    self._conn.wake()
                return quick
        with self._conn.lock:
            begin = self._begin_step(req)
            if journal is not None:
                with self._journal_lock:
                    if req.step not in journal.known_steps:
                        journal.known_steps.add(req.step)
                        journal.step_count += 1
            return begin

    def _begin_step(self, req: StepRequest) -> Begin:
        with self._transaction() as con:
            view = self._check_owner(con, req.run_id, req.owner, req.step)
            stale: list[str] = []
            owner_params = [req.owner.host, req.owner.pid, req.owner.started, req.owner.kernel_id]
            common = [req.source, req.source_digest, json.dumps(list(req.reads)), json.dumps(req.options)]
            if view.state is None:
                transition = check_transition(req.step, StepState.PENDING, StepState.RUNNING)
                con.execute(
                    """INSERT INTO steps (run_id, step, seq, state, attempts, source, source_digest, reads, options,
                                          owner_host, owner_pid, owner_started, owner_kernel, started_at, outputs,
                                          output_bytes)
                       SELECT ?, ?, count(*), 'running', 1, ?, ?, ?, ?, ?, ?, ?, ?, now(), '[]', 0
                       FROM steps WHERE run_id = ?""",
                    [req.run_id, req.step, *common, *owner_params, req.run_id],
                )
                event = (
                    req.run_id,
                    req.step,
                    transition,
                    StepState.PENDING,
                    StepState.RUNNING,
                    1,
                    req.owner,
                    "new",
                    None,
                )
                log_events(con, [event])
                return Begin("execute", 1, (), None, (), fresh=True)
            state = StepState(view.state)
            reason = state.value
            if state is StepState.COMPLETED:
                changed = req.source_digest is not None and view.source_digest != req.source_digest
                if not changed and not req.force:
                    refs = self._refs(con, req.run_id, req.step)
                    return Begin("restore", view.attempts or 0, refs, view.finished_at, ())
                reason = "forced" if req.force else "source changed"
                self._transition(con, req.run_id, req.step, state, StepState.PENDING, req.owner, reason)
                state = StepState.PENDING
            # A step that produced outputs before and runs again (edited, forced, invalidated, or
            # itself stale) makes the completed steps that read those outputs stale: chains follow.
            stale = self._invalidate_readers(con, req.run_id, req.step, json.loads(view.outputs or "[]"), req.owner)
            attempts = self._transition(
                con, req.run_id, req.step, state, StepState.RUNNING, req.owner, reason,
                """, attempts = attempts + 1, source = ?, source_digest = ?, reads = ?, options = ?, owner_host = ?,
                   owner_pid = ?, owner_started = ?, owner_kernel = ?, started_at = now(), finished_at = NULL,
                   duration_s = NULL""",
                [*common, *owner_params],
            )  # fmt: skip
            return Begin("execute", attempts, (), None, tuple(stale))

    def _invalidate_readers(
        self, con: duckdb.DuckDBPyConnection, run_id: str, step: str, names: list[str], who: Owner
    ) -> list[str]:
        """Send completed steps after ``step`` that read any of ``names`` back to pending (stale)."""
        if not names:
            return []
        rows = con.execute(
            """SELECT s.step, s.attempts, s.reads FROM steps s, steps me
               WHERE s.run_id = ? AND me.run_id = s.run_id AND me.step = ? AND s.seq > me.seq
                 AND s.state = 'completed' ORDER BY s.seq""",
            [run_id, step],
        ).fetchall()
        stale = []
        for other, _, reads in rows:
            if set(json.loads(reads)) & set(names):
                detail = f"stale: upstream step '{step}' re-executed"
                self._transition(con, run_id, other, StepState.COMPLETED, StepState.PENDING, who, detail)
                stale.append(other)
        return stale

    def complete_step(
        self,
        run_id: str,
        step: str,
        owner: Owner,
        blobs: Sequence[Blob],
        outputs: Sequence[str],
        duration_s: float,
        display: Blob | None = None,
        reads: Sequence[str] | None = None,
        fresh: bool = False,
    ) -> None:
        """Store every output and mark the step ``completed`` in ONE transaction; on error neither happens.

        A commit that raises may still have happened (DuckDB reports an interrupt during COMMIT
        after writing), so on failure the state is read back before the error is believed.
        """
        journal = self._journals.get(run_id)
        if journal is not None:
            with self._journal_lock:
                if journal.try_complete(step, blobs, display, outputs, reads, duration_s):
                    return
        try:
            with self._transaction() as con:
                extra = ", outputs = ?, output_bytes = ?, finished_at = now(), duration_s = ?"
                extra += ", error = NULL, traceback = NULL"
                params: list[Any] = [json.dumps(list(outputs)), sum(b.size for b in blobs), duration_s]
                if reads is not None:
                    extra += ", reads = ?"
                    params.append(json.dumps(list(reads)))
                self._transition(
                    con, run_id, step, StepState.RUNNING, StepState.COMPLETED, owner, None, extra, params,
                    owned_by=owner,
                )  # fmt: skip
                if not fresh:
                    con.execute("DELETE FROM checkpoints WHERE run_id = ? AND step = ?", [run_id, step])
                rows = [(b, "value") for b in blobs] + ([(display, "display")] if display is not None else [])
                if rows:
                    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())"] * len(rows))
                    flat: list[Any] = []
                    for blob, kind in rows:
                        flat += [run_id, step, blob.name, kind, blob.codec, blob.digest, blob.signature, blob.size]
                        flat += [blob.inline, blob.file]
                    con.execute(
                        "INSERT INTO checkpoints (run_id, step, name, kind, codec, digest, signature, size, data, "
                        f"file, created_at) VALUES {values}",
                        flat,
                    )
        except BaseException:
            status = self._read_back(run_id, step)
            if status is not None and status.state is StepState.COMPLETED and set(status.outputs) == set(outputs):
                return
            raise

    def _read_back(self, run_id: str, step: str) -> StepStatus | None:
        try:
            return self.get_step(run_id, step)
        except Exception:
            return None

    def fail_step(
        self, run_id: str, step: str, owner: Owner, error: str, traceback: str | None, duration_s: float
    ) -> None:
        """Record a failed attempt with its error and traceback."""
        with self._transaction() as con:
            self._transition(
                con, run_id, step, StepState.RUNNING, StepState.FAILED, owner, error.splitlines()[0] if error else None,
                ", error = ?, traceback = ?, finished_at = now(), duration_s = ?", [error, traceback, duration_s],
                owned_by=owner,
            )  # fmt: skip

    def retry_step(self, run_id: str, step: str, owner: Owner) -> int:
        """Move a failed or interrupted step back to running for another attempt; returns the attempt number."""
        with self._transaction() as con:
            view = self._check_owner(con, run_id, owner, step)
            if view.state is None:
                raise CheckpointNotFoundError(f"run '{run_id}' has no step '{step}'.")
            return self._transition(
                con, run_id, step, StepState(view.state), StepState.RUNNING, owner, "retry",
                ", attempts = attempts + 1, owner_host = ?, owner_pid = ?, owner_started = ?, owner_kernel = ?,"
                " started_at = now(), finished_at = NULL, duration_s = NULL",
                [owner.host, owner.pid, owner.started, owner.kernel_id],
            )  # fmt: skip

    def invalidate(
        self, run_id: str, step: str, who: Owner, *, downstream: bool = False, reason: str = "user asked"
    ) -> list[str]:
        """Send a step (and, on request, every step after it) back to pending; returns the steps changed.

        Checkpoint rows stay until :meth:`gc` or the step's next completion: nothing is lost by an
        invalidation that turns out to be a mistake until then.
        """
        with self._transaction() as con:
            self._check_owner(con, run_id, who)
            row = con.execute("SELECT seq FROM steps WHERE run_id = ? AND step = ?", [run_id, step]).fetchone()
            if row is None:
                raise CheckpointNotFoundError(f"run '{run_id}' has no step '{step}'. See: resumable show {run_id}")
            query = "SELECT step, state, attempts FROM steps WHERE run_id = ? AND " + (
                "seq >= ? ORDER BY seq" if downstream else "seq = ?"
            )
            changed = []
            for name, state, _ in con.execute(query, [run_id, row[0]]).fetchall():
                if state == StepState.PENDING.value:
                    continue
                if state == StepState.RUNNING.value:
                    msg = f"step '{name}' (run '{run_id}') is running in this process; invalidate it once it ends."
                    raise StoreError(msg)
                self._transition(con, run_id, name, StepState(state), StepState.PENDING, who, reason)
                changed.append(name)
            return changed

    def get_step(self, run_id: str, step: str) -> StepStatus | None:
        """One step's status, or None."""
        with self._transaction() as con:
            row = con.execute(
                f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ? AND step = ?", [run_id, step]
            ).fetchone()
        return status_from(row) if row else None

    def list_steps(self, run_id: str) -> list[StepStatus]:
        """Every step of a run, in the order they first started."""
        with self._transaction() as con:
            rows = con.execute(f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ? ORDER BY seq", [run_id]).fetchall()
        return [status_from(r) for r in rows]

    def list_events(self, run_id: str, step: str | None = None) -> list[Event]:
        """The event log of a run (or one step), oldest first."""
        with self._transaction() as con:
            rows = con.execute(
                """SELECT seq, run_id, step, happened_at, transition, source, target, attempt, host, pid, detail
                   FROM events WHERE run_id = ? AND (? IS NULL OR step = ?) ORDER BY seq""",
                [run_id, step, step],
            ).fetchall()
        return [Event(*r) for r in rows]

    def last_event_seq(self) -> int:
        """The newest event's number: a cheap way to notice that anything changed."""
        with self._transaction() as con:
            row = con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ checkpoints

    def _refs(self, con: duckdb.DuckDBPyConnection, run_id: str, step: str) -> tuple[CheckpointRef, ...]:
        rows = con.execute(
            """SELECT name, kind, codec, digest, signature, size, data, file FROM checkpoints
               WHERE run_id = ? AND step = ? ORDER BY kind DESC, name""",
            [run_id, step],
        ).fetchall()
        return tuple(CheckpointRef(run_id, step, *r) for r in rows)

    def checkpoint_refs(self, run_id: str, step: str) -> tuple[CheckpointRef, ...]:
        """Where a step's outputs are stored (small ones with their bytes)."""
        with self._transaction() as con:
            return self._refs(con, run_id, step)

    def load_value(self, ref: CheckpointRef) -> Any:
        """Check a checkpoint's digest (and signature, when a key is configured), then unpickle it."""
        if self._signing_key is not None and ref.signature != _codec.sign(ref.digest, self._signing_key):
            reason = "was not signed with the configured key" if ref.signature is None else "has a bad signature"
            raise CheckpointIntegrityError(ref.run_id, ref.step, ref.name, reason)
        file = self.payload_dir / ref.file if ref.file else None
        try:
            return _codec.decode(ref.data, file, ref.digest)
        except _codec.DigestMismatch as exc:
            raise CheckpointIntegrityError(ref.run_id, ref.step, ref.name, f"failed its digest check ({exc})") from None

    def encode(self, name: str, value: object) -> Blob:
        """Serialize an output for :meth:`complete_step` (may raise ``_codec.EncodeFailure``)."""
        return _codec.encode(name, value, self.payload_dir, self._signing_key)

    def gc(self) -> GcReport:
        """Delete payload files no checkpoint row points to, and leftovers of interrupted writes."""
        with self._transaction() as con:
            referenced = {r[0] for r in con.execute("SELECT file FROM checkpoints WHERE file IS NOT NULL").fetchall()}
        removed = 0
        freed = 0
        if self.payload_dir.exists():
            for file in self.payload_dir.rglob("*"):
                if not file.is_file():
                    continue
                rel = file.relative_to(self.payload_dir).as_posix()
                if rel in referenced:
                    continue
                # A .part file younger than a minute may be a write in progress in another process.
                if rel.startswith("tmp/") and time.time() - file.stat().st_mtime < 60:
                    continue
                freed += file.stat().st_size
                file.unlink()
                removed += 1
        return GcReport(removed, freed)

    def drop_superseded_checkpoints(self) -> int:
        """Delete checkpoint rows of steps that are not completed (called by ``resumable gc``)."""
        with self._transaction() as con:
            rows = con.execute(
                """DELETE FROM checkpoints c WHERE NOT EXISTS (
                       SELECT 1 FROM steps s WHERE s.run_id = c.run_id AND s.step = c.step AND s.state = 'completed')
                   RETURNING 1"""
            ).fetchall()
        return len(rows)


_OPEN_STORES: weakref.WeakSet[DuckDBStore] = weakref.WeakSet()


def close_all() -> None:
    """Write what is pending and release every store's file (before a fork, or at exit)."""
    for store in list(_OPEN_STORES):
        try:
            store.close()
        except Exception:  # at exit, one broken store must not keep the others from closing
            pass


atexit.register(close_all)


def _after_fork_in_child() -> None:
    """A forked child starts with fresh locks and nothing pending of its parent's."""
    for store in list(_OPEN_STORES):
        store._journals.clear()
        store._journal_lock = threading.Lock()
        store._conn.forget_inherited()


if hasattr(os, "register_at_fork"):
    # DuckDB is not fork-safe: a child that inherits an open database crashes when it opens the
    # file again. So the parent writes what is pending and lets go of the file before a fork (a
    # 15 ms reconnect later); subprocesses started by ``subprocess`` do not run these hooks.
    os.register_at_fork(before=close_all, after_in_child=_after_fork_in_child)


_BY_PATH: dict[Path, DuckDBStore] = {}
_BY_PATH_LOCK = threading.Lock()


def open_store(path: str | os.PathLike[str] | None = None) -> DuckDBStore:
    """The process-wide store for a path (argument > RESUMABLE_STORE > default), opened once."""
    resolved = _config.store_path(path)
    with _BY_PATH_LOCK:
        store = _BY_PATH.get(resolved)
        if store is None:
            store = _BY_PATH[resolved] = DuckDBStore(resolved)
        return store
