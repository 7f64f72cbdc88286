"""DuckDBStore: the :class:`~resumable._store.base.Store` in one DuckDB file and a payload folder beside it.

This class holds the file (``connection.py``), opens one transaction per public method, and
decides what is deferred: quick steps of a run this process owns are committed in groups
(``journal.py``). What each transaction does lives by job: ``runs.py`` (runs and ownership),
``steps.py`` (restore or execute, staleness, completions), ``checkpoints.py`` (checkpoint rows,
payload files, gc), ``transitions.py`` (the one state change), ``schema.py`` (tables and
migrations), ``rows.py`` (rows to records). Together they are the only place that imports duckdb
or holds SQL.
"""

from __future__ import annotations

import os
import threading
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from resumable import _config
from resumable._records import Blob, Event, Owner, RunInfo, StepStatus
from resumable._states import RunState, StepState
from resumable._store import checkpoints, process, runs, steps, views
from resumable._store.base import Begin, CheckpointRef, Completion, GcReport, QueryResult, StepRequest
from resumable._store.connection import FileConnection
from resumable._store.journal import GROUP_COMMIT_S, MAX_BATCH, RunJournal
from resumable._store.rows import write_quick_steps
from resumable._store.schema import check_version, migrate


class DuckDBStore:
    """A store in one DuckDB file plus a payload folder beside it (``store.duckdb.payloads/``).

    Front ends get one from :func:`resumable._store.open_store`; the contract of every method is
    on :class:`~resumable._store.base.Store`.

    Parameters
    ----------
    path
        The database file; its folder is created private to the user (0700), the file 0600.
    lock_timeout_s
        How long to wait for another process to release the file before raising
        :class:`StoreLockedError`; default ``RESUMABLE_LOCK_TIMEOUT`` or 30 s.
    idle_close_s, max_hold_s
        The file is let go of after this long unused, and at the latest after this long held.
    read_only
        Open the file read-only, for commands that only read (``resumable runs``, ``show``): the
        store must exist and be at this version's schema; nothing is created, migrated or written.

    Raises
    ------
    StorePathError
        The path cannot hold a store (a folder, not writable, not a DuckDB file).
    SchemaVersionError
        The store was written by a newer resumable; it is left untouched.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lock_timeout_s: float | None = None,
        idle_close_s: float = 0.1,
        max_hold_s: float = 0.5,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.location = str(self.path)
        self.payload_dir = self.path.parent / (self.path.name + ".payloads")
        self._payloads = checkpoints.Payloads(self.payload_dir, _config.signing_key())
        self._conn = FileConnection(
            self.path,
            _config.lock_timeout_s() if lock_timeout_s is None else lock_timeout_s,
            idle_close_s,
            max_hold_s,
            read_only=read_only,
        )
        self._conn.pending = self
        self.window_s = GROUP_COMMIT_S
        self._journals: dict[str, RunJournal] = {}
        # Quick steps touch only their journal, under this lock, so they never wait for a commit in
        # progress; whoever needs both takes the connection's lock first.
        self._journal_lock = threading.Lock()
        try:
            with self._transaction() as con:
                if read_only:
                    check_version(con, self.location)
                else:
                    migrate(con, self.location)
        except BaseException:  # a refused store (SchemaVersionError) is let go of at once
            self._conn.close()
            raise
        process.track(self)

    def __repr__(self) -> str:
        return f"DuckDBStore({self.location!r})"

    # ------------------------------------------------------------------ holding the file

    @property
    def lock_timeout_s(self) -> float:
        """How long a locked file is waited for."""
        return self._conn.lock_timeout_s

    def _transaction(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        return self._conn.transaction()

    def close(self) -> None:
        """Write what is pending and release the file now (it is reopened on the next use)."""
        self._conn.close()

    def after_fork_in_child(self) -> None:
        """A forked child starts with fresh locks and nothing pending of its parent's."""
        self._journals.clear()
        self._journal_lock = threading.Lock()
        self._conn.forget_inherited()

    # ------------------------------------------------------------------ group commit (journal.py)

    def oldest_pending(self) -> float | None:
        """When the oldest unwritten step started (a full batch is written at once by ``begin_step``)."""
        with self._journal_lock:
            return min((t for j in self._journals.values() if (t := j.oldest_pending()) is not None), default=None)

    def write_pending(self, con: duckdb.DuckDBPyConnection) -> object:
        """Write every journal's quick steps inside the open transaction; returns what was taken."""
        with self._journal_lock:
            taken = [(journal, journal.take()) for journal in self._journals.values() if journal.pending]
        for _, pending in taken:
            write_quick_steps(con, pending)
        return taken

    def restore_pending(self, taken: object) -> None:
        """Put unwritten steps back after a failed transaction, unless the commit happened after all."""
        assert isinstance(taken, list)
        for journal, pending in taken:
            if not pending:
                continue
            try:
                with self._transaction() as con:
                    first = pending[0]
                    written = con.execute(
                        "SELECT count(*) FROM steps WHERE run_id = ? AND step = ?", [journal.run_id, first.req.step]
                    ).fetchone()
            except Exception:
                written = None
            if written is None or written[0] == 0:
                with self._journal_lock:
                    for step in pending:
                        journal.pending.setdefault(step.req.step, step)

    # ------------------------------------------------------------------ runs

    def open_run(
        self, run_id: str, pipeline: str, params: dict[str, Any] | None = None, *, update_params: bool = False
    ) -> RunInfo:
        with self._transaction() as con:
            return runs.open_run(con, run_id, pipeline, params, update_params)

    def get_run(self, run_id: str) -> RunInfo | None:
        with self._transaction() as con:
            return runs.get_run(con, run_id)

    def latest_run(self, pipeline: str) -> RunInfo | None:
        found = self.list_runs(pipeline, limit=1)
        return found[0] if found else None

    def list_runs(
        self,
        pipeline: str | None = None,
        limit: int = 100,
        *,
        state: RunState | None = None,
        since: datetime | None = None,
    ) -> list[RunInfo]:
        with self._transaction() as con:
            return runs.list_runs(con, pipeline, limit, state, since)

    def claim_run(self, run_id: str, owner: Owner) -> None:
        """While it owns the run, this process decides new steps in memory and commits quick ones in groups."""
        with self._transaction() as con:
            runs.check_owner(con, self.location, run_id, owner)
            known = runs.set_owner(con, run_id, owner)
            journal = self._journals.get(run_id)
            if journal is None:
                self._journals[run_id] = RunJournal(run_id, owner, known, len(known))
            else:
                journal.claims += 1

    def release_run(self, run_id: str, owner: Owner) -> None:
        with self._transaction() as con:  # opening it writes what is pending
            journal = self._journals.get(run_id)
            if journal is not None:
                journal.claims -= 1
                if journal.claims > 0:
                    return
                del self._journals[run_id]
            runs.clear_owner(con, run_id, owner)

    # ------------------------------------------------------------------ steps

    def begin_step(self, req: StepRequest) -> Begin:
        """A new step of a run this process owns starts in memory, written with the next group commit."""
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
            with self._transaction() as con:
                begin = steps.begin(con, self.location, req)
            if journal is not None:
                with self._journal_lock:
                    if req.step not in journal.known_steps:
                        journal.known_steps.add(req.step)
                        journal.step_count += 1
            return begin

    def complete_step(self, done: Completion) -> None:
        """A quick step's completion is deferred with its start; otherwise written and, on error, read back.

        A commit that raises may still have happened (DuckDB reports an interrupt during COMMIT
        after writing), so on failure the state is read back before the error is believed.
        """
        journal = self._journals.get(done.run_id)
        if journal is not None:
            with self._journal_lock:
                if journal.try_complete(done):
                    return
        try:
            with self._transaction() as con:
                steps.complete(con, done)
        except BaseException:
            status = self._read_back(done.run_id, done.step)
            names = {b.name for b in done.outputs}
            if status is not None and status.state is StepState.COMPLETED and set(status.outputs) == names:
                return
            raise

    def _read_back(self, run_id: str, step: str) -> StepStatus | None:
        try:
            return self.get_step(run_id, step)
        except Exception:
            return None

    def mark_effect(self, run_id: str, step: str, owner: Owner) -> None:
        """Opening the transaction writes every deferred step first: the fence before a side effect."""
        with self._transaction() as con:
            steps.mark_effect(con, run_id, step, owner)

    def fail_step(
        self, run_id: str, step: str, owner: Owner, error: str, traceback: str | None, duration_s: float
    ) -> None:
        with self._transaction() as con:
            steps.fail(con, run_id, step, owner, error, traceback, duration_s)

    def retry_step(self, run_id: str, step: str, owner: Owner) -> int:
        with self._transaction() as con:
            return steps.retry(con, self.location, run_id, step, owner)

    def invalidate(
        self, run_id: str, step: str, who: Owner, *, downstream: bool = False, reason: str = "user asked"
    ) -> list[str]:
        with self._transaction() as con:
            return steps.invalidate(con, self.location, run_id, step, who, downstream, reason)

    def get_step(self, run_id: str, step: str) -> StepStatus | None:
        with self._transaction() as con:
            return steps.get_step(con, run_id, step)

    def list_steps(self, run_id: str) -> list[StepStatus]:
        with self._transaction() as con:
            return steps.list_steps(con, run_id)

    def list_events(self, run_id: str, step: str | None = None) -> list[Event]:
        with self._transaction() as con:
            return steps.list_events(con, run_id, step)

    def last_event_seq(self) -> int:
        with self._transaction() as con:
            return steps.last_event_seq(con)

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_refs(self, run_id: str, step: str) -> tuple[CheckpointRef, ...]:
        with self._transaction() as con:
            return checkpoints.refs(con, run_id, step)

    def load_value(self, ref: CheckpointRef) -> Any:
        return self._payloads.load(ref)

    def encode(self, name: str, value: object) -> Blob:
        return self._payloads.encode(name, value)

    def query(self, sql: str) -> QueryResult:
        """On a read-only connection of its own (``views.py``), whether this store was opened read-only or not."""
        with self._conn.reading_session() as con:
            views.prepare(con)
            return views.run_query(con, sql)

    def gc(self) -> GcReport:
        """Rows first, in one transaction, so the files only they pointed to are unreferenced next."""
        with self._transaction() as con:
            rows = checkpoints.drop_superseded(con)
            referenced = checkpoints.referenced_files(con)
        files, freed = self._payloads.remove_unreferenced(referenced)
        return GcReport(rows, files, freed)
