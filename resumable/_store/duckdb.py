"""DuckDBStore: the :class:`~resumable._store.base.Store` in one DuckDB file and a payload folder beside it.

This class holds the file (``connection.py``), opens one transaction per public method, and
decides what is deferred: quick steps of a run this process owns are committed in groups
(``journal.py``), each first appended to this process's completion log (``completion_log.py``) so
that it survives the death of the process as it returns; every transaction first replays the logs
of dead processes (``replay.py``). What each transaction does lives by job: ``runs.py`` (runs and
ownership), ``steps.py`` (restore or execute, staleness, completions), ``checkpoints.py``
(checkpoint rows, payload files, gc), ``transitions.py`` (the one state change), ``schema.py``
(tables and migrations), ``rows.py`` (rows to records). Together they are the only place that
imports duckdb or holds SQL.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from resumable import _config
from resumable._config import Durability
from resumable._owner import current_owner
from resumable._records import Blob, Owner, RunInfo
from resumable._states import StepState
from resumable._store import (
    cells,
    checkpoints,
    compaction,
    faults,
    filelock,
    lease,
    places,
    process,
    replay,
    restorable,
    retention,
    runs,
    steps,
    views,
)
from resumable._store.base import (
    Begin,
    Compaction,
    Completion,
    GcReport,
    QueryResult,
    StepRequest,
    WriteFault,
)
from resumable._store.completion_log import CompletionLog, LogFile, folder_for
from resumable._store.connection import FileConnection
from resumable._store.journal import GROUP_COMMIT_S, MAX_BATCH, PendingStep, RunJournal, utc_now
from resumable._store.rows import encode_quick_rows, quick_rows, write_quick_steps
from resumable._store.schema import check_version, migrate
from resumable._store.sql_store import SqlStore
from resumable.errors import (
    CheckpointNotFoundError,
    InvalidTransition,
    LeaseLostError,
    RunOwnedError,
    StepChangedError,
    StepNotStoredError,
    StepWriteBackError,
    StoreCorruptError,
    StoreDatabaseError,
    write_error_class,
)

_logger = logging.getLogger("resumable")
# A kernel's in-memory step found not to be this process's to write (``steps.found_cell``).
_REFUSALS = (RunOwnedError, StepChangedError)

# A run with more steps than this reads its snapshot again only for a streak of restores (a resume),
# not for a lone one (a notebook cell): reading it would then cost more than the restore's transaction.
SNAPSHOT_STEPS = 1000

# Steps this process is executing now, by (store, run, step), with the fencing token each attempt
# runs under. A step of this process found 'running' in the store but not here was left behind by
# an attempt whose end could not be recorded; it is recovered as interrupted instead of blocking its run.
_IN_FLIGHT: dict[tuple[str, str, str], int | None] = {}
_IN_FLIGHT_LOCK = threading.Lock()

# Payload files written behind whose sync failed, by (path, inode, mtime), with the error. Linux
# reports a write-back error to one fsync only: a later fsync of the same file returns 0 while its
# bytes never reached the disk (the page cache still holds them, so reading them back proves
# nothing either). So once a sync failed, no ``completed`` row ever points at that file: its step
# is recorded failed with the error (``DuckDBStore._fail_written``).
_SYNC_FAILED: dict[tuple[str, int, int], OSError] = {}
# Held across a file's fsync and the recording of its outcome: the housekeeper (without the
# connection's lock) and a fence may sync the same file at once, and the one whose fsync used up the
# error must have recorded it before the other's fsync (which returns 0) is believed.
_SYNC_LOCK = threading.Lock()


def _raise_as_interrupt(exc: BaseException) -> None:
    """Re-raise a Ctrl-C as Python's KeyboardInterrupt (DuckDB reports it as an Exception); others as they are."""
    if isinstance(exc, Exception) and faults.interrupted(exc):
        raise KeyboardInterrupt from exc
    raise exc


@dataclass(frozen=True, slots=True)
class PendingFailure:
    """A failed attempt that could not be written when it happened (a full disk, a Ctrl-C in COMMIT)."""

    run_id: str
    step: str
    owner: Owner
    error: str
    traceback: str | None
    duration_s: float
    generation: int | None = None  # the attempt's fencing token


@dataclass(frozen=True, slots=True)
class _Taken:
    """What one transaction took to write: deferred steps, the log records they cover, dead logs replayed."""

    steps: list[tuple[RunJournal, list[PendingStep]]]
    records: int
    replayed: list[LogFile]
    kernel_cells: list[cells.Cell] = dataclasses.field(default_factory=list)  # a kernel's steps decided in memory
    # Steps recorded failed because their payloads did not reach the disk: raised once committed.
    lost: list[StepWriteBackError] = dataclasses.field(default_factory=list)


class DuckDBStore(SqlStore):
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
        ``holds_unreplayed_log`` then says whether a dead process logged steps the file lacks
        (``open_store`` opens such a store for writing instead, to put them in).

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
        # Payload files are written behind (renamed before the disk has them) and synced before the
        # transaction that records them: a completion logged first returns without waiting for the disk.
        self._payloads = checkpoints.Payloads(
            places.FolderPlace(self.payload_dir, write_behind=True), _config.signing_key()
        )
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
        self._opened: dict[str, tuple[str, dict[str, Any] | None]] = {}  # runs this process opened
        # Deferred completions are appended here before their step returns (durability 'durable').
        self._log_folder = folder_for(self.path)
        self._log = CompletionLog(self._log_folder, current_owner())
        self._log_applied = 0  # the count this process last recorded in the store
        self._migrated = False  # dead logs are replayed only into a store at this schema version
        # Quick steps touch only their journal, under this lock, so they never wait for a commit in
        # progress; whoever needs both takes the connection's lock first.
        self._journal_lock = threading.Lock()
        self._failures: list[PendingFailure] = []  # written before the next transaction (_flush_failures)
        self._failures_at = 0.0  # when the oldest of them was kept (monotonic): the housekeeper retries after
        # Payloads written behind and synced since the last commit (name, inode, mtime).
        self._synced: set[tuple[str, int, int]] = set()
        # A kernel's new steps decided in memory while this handle holds the file (``cells.py``):
        # pending ones are kept per file there; what each run's window knows is kept here.
        self._file_key = str(filelock.lock_path(self.path))
        self._windows: dict[str, cells.Window] = {}
        self._keeper: lease.LeaseKeeper | None = None
        # Completed steps of owned runs, read once (``restorable.py``); ``_changes`` counts this
        # store's changes that may touch any step, so a snapshot read before one is not used.
        self._snapshots: dict[str, restorable.Snapshot] = {}
        self._changes = 0
        # The mark at each owned run's last restore decided by a transaction: a second restore under
        # the same mark is a streak (a resume), worth reading the snapshot for.
        self._streaks: dict[str, object] = {}
        # Read-only: a dead process's log holds steps that returned and are not in the file yet.
        self.holds_unreplayed_log = False
        try:
            replayed: list[LogFile] = []
            with self._transaction() as con:
                if read_only:  # shown as it is; see ``holds_unreplayed_log``
                    check_version(con, self.location)
                    self.holds_unreplayed_log = replay.unreplayed(con, self._log_folder, self._log.key)
                else:
                    migrate(con, self.location)
                    self._migrated = True
                    replayed = replay.replay_dead(con, self._log_folder, self._log.key, self.location, self.payload_dir)
                    replay.prune(con, self._log_folder)
            self.committed(_Taken([], 0, replayed))
        except BaseException:  # a refused store (SchemaVersionError) is let go of at once
            self._conn.close()
            raise
        self._conn.on_create = self._recreate
        self._conn.on_removed = self._forget_removed
        process.track(self)

    def __repr__(self) -> str:
        return f"DuckDBStore({self.location!r})"

    # ------------------------------------------------------------------ holding the file

    @property
    def lock_timeout_s(self) -> float:
        """How long a locked file is waited for."""
        return self._conn.lock_timeout_s

    def _rolled_back_transaction(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """A dry run's transaction: it does not write what this process deferred, since it is rolled back."""
        return self._conn.transaction(with_pending=False)

    def _transaction(self, *, step_only: bool = False) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """A transaction of this store's; ``step_only``: it changes one step, whose snapshot entry the caller drops.

        Any other transaction may change any step, so the snapshots of completed steps read before
        it are no longer used (``restorable.py``).
        """
        if not step_only:
            self._changes += 1
        if self._failures:
            self._flush_failures(strict=False)
        return self._conn.transaction()

    def _mark(self) -> object:
        """Equal while nothing changed this store's rows except steps dropped from the snapshots; None: unknown."""
        held = self._conn.unchanged_since()
        return None if held is None else (held, self._changes)

    def _drop_snapshot(self, run_id: str, *steps_changed: str) -> None:
        snapshot = self._snapshots.get(run_id)
        if snapshot is not None:
            snapshot.drop(*steps_changed)

    def _new_snapshot(self, run_id: str, entries: dict[str, restorable.Entry]) -> restorable.Snapshot:
        """Keep a snapshot just read (call holding the connection's lock); inline bytes read ahead carry over."""
        old = self._snapshots.get(run_id)
        snapshot = restorable.Snapshot(self._mark(), entries, old.inline if old is not None else {})
        self._snapshots[run_id] = snapshot
        return snapshot

    def _restore_from_snapshot(self, req: StepRequest) -> Begin | None:
        """A completed step of an owned run restored from the snapshot, or None when a transaction must decide.

        The snapshot is read (or read again) here when missing or out of date; it answers only
        while ``_mark`` stays what it was when it was read, checked again after reading inline
        bytes (that transaction may have had to open the file anew).
        """
        snapshot = self._snapshots.get(req.run_id)
        mark = self._mark()
        if snapshot is None or snapshot.mark is None or snapshot.mark != mark:
            known = len(journal.known_steps) if (journal := self._journals.get(req.run_id)) else 0
            if known > SNAPSHOT_STEPS and (mark is None or self._streaks.get(req.run_id) != mark):
                return None  # a lone restore in a long run: one transaction is cheaper than its snapshot
            with self._conn.lock:
                with self._conn.transaction() as con:
                    claim = journal.generation if journal is not None else None
                    entries = restorable.read(con, self.location, req.run_id, req.owner, claim)
                snapshot = self._new_snapshot(req.run_id, entries)
            if snapshot.mark is None:
                return None
        entry = snapshot.entries.get(req.step)
        if entry is None:
            return None
        begin = steps.plain_restore(entry.view, req)
        if begin is None:
            return None
        if snapshot.missing(entry):
            with self._conn.lock:
                with self._conn.transaction() as con:
                    snapshot.inline.update(restorable.read_inline(con, snapshot.window(entry)))
                if snapshot.mark != self._mark() or snapshot.missing(entry):
                    return None
        refs = snapshot.take(entry)
        return None if refs is None else dataclasses.replace(begin, checkpoints=refs)

    def _flush_failures(self, *, strict: bool) -> None:
        """Write kept failures in a transaction of their own; keep them again when that fails.

        Reads go on when the disk still refuses (``strict=False``): a full disk must not also hide
        the store. The start of a step (``strict=True``) does not: no step starts on top of an
        unrecorded failure. Taken under the connection's lock, so a start never finds them gone while
        the housekeeper's retry has them (``write_kept``) and starts on top of them.
        """
        with self._conn.lock:
            with self._journal_lock:
                failures, self._failures = self._failures, []
            if not failures:
                return
            try:
                with self._conn.transaction() as con:
                    for f in failures:
                        steps.fail_if_running(
                            con, f.run_id, f.step, f.owner, f.error, f.traceback, f.duration_s, f.generation
                        )
            except BaseException as exc:
                # Written only while the step still runs under its owner: keeping them again is always safe.
                with self._journal_lock:
                    self._failures[:0] = failures
                if strict or not isinstance(exc, Exception):
                    raise

    def close(self) -> None:
        """Write what is pending and release the file now (it is reopened on the next use).

        Once everything deferred is in the store, this process's completion logs are removed. The
        lease keeper stops too (before a fork, at exit): no thread of ours is inside DuckDB while the
        interpreter shuts down. It starts again when this process next takes a run or a step.
        """
        if self._keeper is not None:
            self._keeper.stop()
        if self._failures:
            self._flush_failures(strict=False)
        with self._conn.lock:
            self._conn.close()
            self._drop_log_if_applied()

    def _drop_log_if_applied(self) -> None:
        """Remove this process's completion logs once every record is in the store (call with the connection lock).

        Holding the connection's lock means no transaction is half done, so nothing pending means
        every record appended so far has been committed.
        """
        if cells.has_pending(self._file_key):
            return
        with self._journal_lock:
            if not any(j.pending for j in self._journals.values()):
                self._log.close()

    def shutdown(self) -> None:
        """At exit: stop the lease keeper, write what is pending, release the file and join the housekeeper."""
        if self._keeper is not None:
            self._keeper.stop()
        self._conn.shutdown()
        with self._conn.lock:
            self._drop_log_if_applied()

    def _forget_removed(self) -> None:
        """The store file was removed: what was pending belonged to it and went with it (its log too)."""
        cells.forget(self._file_key)
        self._windows.clear()
        self._changes += 1
        self._snapshots.clear()
        with self._journal_lock:
            self._log.close()
            for journal in self._journals.values():
                journal.pending.clear()
                journal.known_steps.clear()
                journal.step_count = 0

    def _recreate(self, con: duckdb.DuckDBPyConnection) -> None:
        """A new store file after the old one was removed: its tables, and the runs this process has open."""
        migrate(con, self.location)
        for run_id, (pipeline, params) in self._opened.items():
            runs.open_run(con, run_id, pipeline, params, False)
        for journal in self._journals.values():
            journal.generation = runs.set_owner(con, journal.run_id, journal.owner)[1]

    def _lease(self) -> lease.LeaseKeeper:
        """This process's lease keeper for the store (a forked child gets its own)."""
        if self._keeper is None or self._keeper.owner.pid != os.getpid():
            self._keeper = lease.LeaseKeeper(self._transaction, current_owner(), _config.lease_s())
        return self._keeper

    def after_fork_in_child(self) -> None:
        """A forked child starts with fresh locks, its own completion log, and nothing pending of its parent's."""
        self._keeper = None
        self._journals.clear()
        self._snapshots.clear()
        self._streaks.clear()
        self._failures = []
        self._windows.clear()
        cells.forget_all()
        self._journal_lock = threading.Lock()
        self._log.forget_inherited()
        self._log = CompletionLog(self._log_folder, current_owner())
        self._log_applied = 0
        self._conn.forget_inherited()

    # ------------------------------------------------------------------ group commit (journal.py)

    def oldest_pending(self) -> float | None:
        """When the oldest unwritten step started (a full batch is written at once by ``begin_step``)."""
        with self._journal_lock:
            oldest = min((t for j in self._journals.values() if (t := j.oldest_pending()) is not None), default=None)
        return min((t for t in (oldest, cells.oldest(self._file_key)) if t is not None), default=None)

    def kept_since(self) -> float | None:
        """Failures kept after a failed write are retried by the housekeeper too, not only by the next transaction."""
        with self._journal_lock:
            return self._failures_at if self._failures else None

    def write_kept(self) -> None:
        self._flush_failures(strict=True)

    def must_write_before_release(self) -> bool:
        """A kernel's step decided in memory is pending: the file is not let go of before it is written."""
        return cells.has_pending(self._file_key)

    def write_pending(self, con: duckdb.DuckDBPyConnection) -> object:
        """Replay dead processes' completion logs, then write every journal's quick steps, in the open transaction.

        Replaying first means no transaction decides anything about a run before the completions
        a dead process had logged for it are in the store. The steps taken and the count of log
        records they cover are taken together, so the count written with them is exact.
        """
        replayed = []
        if self._migrated:
            replayed = replay.replay_dead(con, self._log_folder, self._log.key, self.location, self.payload_dir)
            if replayed:
                self._changes += 1  # a dead process's steps: no snapshot read before vouches for them
        with self._journal_lock:
            taken = [(journal, journal.take()) for journal in self._journals.values() if journal.pending]
            records = self._log.records
            self._log.rotate_if_large()
        with cells.LOCK:
            kernel_cells = cells.take(self._file_key)
        lost: list[StepWriteBackError] = []
        try:  # taken cells are put back by any failure before they are handed over with the rest
            # Payloads written behind reach the disk before any row pointing at them is committed;
            # a step whose payload did not is written failed with the disk's error instead.
            completions = [c.pending.completion for c in kernel_cells] + [p.completion for _, ps in taken for p in ps]
            unsynced = self._sync_all(completions)
            lost += self._write_cells(con, kernel_cells, unsynced)
            for journal, pending in taken:
                if not self._still_held(con, journal):
                    continue
                failing = [p for p in pending if (p.req.run_id, p.req.step) in unsynced and p.completion is not None]
                write_quick_steps(con, [_start_only(p) if any(p is f for f in failing) else p for p in pending])
                for p in failing:
                    assert p.completion is not None
                    lost += self._fail_written(con, p.completion, unsynced[(p.req.run_id, p.req.step)], p.generation)
            if records > self._log_applied:
                replay.record_applied(con, self._log.key, records)
        except BaseException:  # nothing was committed: every step taken goes back as it was
            self._cells_not_written(kernel_cells)
            with self._journal_lock:
                for journal, pending in taken:
                    for step in pending:
                        journal.pending.setdefault(step.req.step, step)
            raise
        return _Taken(taken, records, replayed, kernel_cells, lost)

    def _sync_all(self, completions: list[Completion | None]) -> dict[tuple[str, str], OSError]:
        """Sync the payloads written behind of the completions a transaction takes; the steps whose sync failed."""
        unsynced: dict[tuple[str, str], OSError] = {}
        for done in completions:
            if done is not None:
                try:
                    self._sync_payloads(done)
                except OSError as exc:
                    unsynced[(done.run_id, done.step)] = exc
        return unsynced

    def _write_cells(
        self, con: duckdb.DuckDBPyConnection, kernel_cells: list[cells.Cell], unsynced: dict[tuple[str, str], OSError]
    ) -> list[StepWriteBackError]:
        """Write a kernel's cells taken by a transaction; one whose payload did not reach the disk is written failed."""
        lost: list[StepWriteBackError] = []
        for cell in kernel_cells:
            error = unsynced.get(cell.key)
            if error is None:
                self._write_cell(con, cell)
                continue
            done, token = cell.pending.completion, cell.pending.generation
            assert done is not None
            if not cell.started:  # its start first (checked as any late write of it), then its failure
                self._write_cell(con, cells.Cell(_start_only(cell.pending), cell.location, cell.held))
                token = None
            lost += self._fail_written(con, done, error, token)
        return lost

    def _fail_written(
        self, con: duckdb.DuckDBPyConnection, done: Completion, exc: OSError, token: int | None
    ) -> list[StepWriteBackError]:
        """Write a returned step failed because a payload written behind did not reach the disk; what to raise.

        The failure is the error the step would have raised had its payload been synced before it
        returned (``StoreFullError`` on a full disk); the run's next step, fence or key raises the
        returned list's error once this transaction is committed (``committed``).
        """
        fault = faults.classify(exc, self.payload_dir)
        path, reason = (fault.path, fault.reason) if fault is not None else (str(self.payload_dir), str(exc))
        kind = write_error_class(fault.kind if fault is not None else "")
        error = kind(done.step, done.run_id, path, reason, None, fault.free if fault is not None else None)
        line = f"{type(error).__name__}: {error}"
        if not steps.fail_if_running(con, done.run_id, done.step, done.owner, line, None, done.duration_s, token):
            return []  # not this attempt's any more (refused when written: that says so)
        return [StepWriteBackError(done.run_id, done.step, path, reason)]

    def _write_cell(self, con: duckdb.DuckDBPyConnection, cell: cells.Cell) -> None:
        """Write a kernel's in-memory step: its start (the attempt then runs under the token it took) or all of it.

        Checked against the store first when the file may have been let go of since it was decided
        (a failed write, another handle's commit); a step that is not this process's to write any
        more is refused there, recorded for its end to raise, and never fails the transaction.
        """
        req = cell.pending.req
        flight = (cell.location, req.run_id, req.step)
        if cell.started:
            self._write_started_cell(con, cell)
            return
        if cell.held is None or cell.held != self._mark():
            try:
                found, token = steps.found_cell(con, self.location, req)
            except _REFUSALS as refusal:
                if cell.pending.completion is None:  # still running: its end raises it
                    with _IN_FLIGHT_LOCK:
                        running = flight in _IN_FLIGHT
                    if running:
                        with cells.LOCK:
                            cells.REFUSED[flight] = refusal
                else:  # it returned already: the run's next step, fence or key raises it
                    lost = StepNotStoredError(req.run_id, req.step, str(refusal))
                    with cells.LOCK:
                        cells.LOST.setdefault((cell.location, req.run_id), lost)
                    _logger.warning("store %s: %s", self.location, lost)
                return
            if found == "completed":
                return
            if found == "running":
                if cell.pending.completion is not None:
                    steps.complete(con, cell.pending.completion, token)
                else:
                    self._set_token(flight, token)
                return
        if cell.pending.completion is not None:
            steps.insert_completed(con, cell.pending)
            return
        token = steps.insert_started(con, req)
        self._lease().claimed(con, token)
        self._set_token(flight, token)

    def _write_started_cell(self, con: duckdb.DuckDBPyConnection, cell: cells.Cell) -> None:
        """Complete a kernel's step whose start a transaction wrote (``_complete_started_cell``).

        Written only while the step still runs under the attempt that returned (its owner and
        token); its own earlier commit found is done. Otherwise the run's next step, fence or key
        raises StepNotStoredError, as for a refused cell.
        """
        done, token = cell.pending.completion, cell.pending.generation
        assert done is not None
        if steps.running_under(con, done.run_id, done.step, done.owner, token):
            steps.complete(con, done, token)
            return
        if steps.completed_by(con, done, token):
            return
        lost = StepNotStoredError(
            done.run_id,
            done.step,
            "the step no longer runs under this kernel's attempt "
            "(it was changed while its completion waited for the group commit)",
        )
        with cells.LOCK:
            cells.LOST.setdefault((cell.location, done.run_id), lost)
        _logger.warning("store %s: %s", self.location, lost)

    @staticmethod
    def _set_token(flight: tuple[str, str, str], token: int | None) -> None:
        """The attempt now runs under the token its written start took (if it still runs)."""
        with _IN_FLIGHT_LOCK:
            if flight in _IN_FLIGHT:
                _IN_FLIGHT[flight] = token

    def _cells_not_written(self, taken: list[cells.Cell]) -> None:
        """A transaction that took a kernel's cells failed: they go back, to be checked before their next write."""
        for cell in taken:
            if cell.pending.completion is None:
                self._set_token((cell.location, cell.pending.req.run_id, cell.pending.req.step), None)
        cells.put_back(self._file_key, taken)

    def _still_held(self, con: duckdb.DuckDBPyConnection, journal: RunJournal) -> bool:
        """Whether the journal's claim is still the run's: its quick steps are written only then (the fence).

        Another owner took the run over (this process's lease ran out on another host): its steps
        are not written over the new owner's, and the run's next start here raises LeaseLostError.
        """
        if journal.generation is None:
            return True
        try:
            _, holder, current = runs.pipeline_and_holder(con, self.location, journal.run_id)
        except CheckpointNotFoundError:  # a store removed or replaced under this process: its own handling
            return True
        if current == journal.generation:
            return True
        try:
            runs.fence_claim(journal.run_id, journal.generation, holder, current)
        except LeaseLostError as lost:
            journal.lost = lost
        return False

    def sync_payloads(self) -> None:
        """Sync the payloads of every pending completion written behind (the housekeeper, before its commit).

        Called without the connection's lock, so a kernel's next cell is not held up by the disk;
        the commit that follows syncs them again (already clean: quick) with any added since.
        """
        with cells.LOCK:
            done = [c.pending.completion for c in cells.pending(self._file_key).values()]
        with self._journal_lock:
            done += [p.completion for j in self._journals.values() for p in j.pending.values()]
        self._sync_all(done)  # a failure is remembered (``_SYNC_FAILED``): the commit records the step failed

    def sync_pending(self) -> None:
        """Put the completion log on disk before a group commit that may have to wait for the file.

        A failed fsync is not fatal: the commit that follows puts the same steps on disk.
        """
        try:
            self._log.sync()
        except OSError:
            pass

    def committed(self, taken: object) -> None:
        """After the commit: the log files it covered and the dead logs it replayed are no longer needed."""
        assert isinstance(taken, _Taken)
        self._log_applied = max(self._log_applied, taken.records)
        self._synced.clear()  # what it recorded is on disk; anything synced for a later commit is synced again
        for lost in taken.lost:
            with cells.LOCK:
                cells.LOST.setdefault((self.location, lost.run_id), lost)
            _logger.warning("store %s: %s", self.location, lost)
        try:
            with self._journal_lock:
                self._log.applied_all()
            for log in taken.replayed:
                log.path.unlink(missing_ok=True)
        except OSError:  # a file left behind is replayed as already applied, then removed again
            pass

    def restore_pending(self, taken: object) -> None:
        """Put unwritten steps back after a failed transaction, unless the commit happened after all."""
        assert isinstance(taken, _Taken)
        # A kernel's cells go back unread (reading could let go of the file): their next write
        # checks first whether this commit happened after all (``steps.found_cell``).
        self._cells_not_written(taken.kernel_cells)
        for journal, pending in taken.steps:
            if not pending:
                continue
            try:
                written = self._read_back_written(journal.run_id, pending[0].req.step)
            except Exception:
                written = None
            if written is None or written[0] == 0:
                with self._journal_lock:
                    for step in pending:
                        journal.pending.setdefault(step.req.step, step)

    def _read_back_written(self, run_id: str, step: str) -> tuple[Any, ...] | None:
        """Whether a failed transaction's step is in the store, read WITHOUT writing anything pending.

        A read-back through ``_transaction`` would run ``write_pending`` again, and record as applied
        the log records of the very steps whose rows were just rolled back: a crash before the next
        group commit would then make the replay skip them, losing steps that had returned.
        """
        with self._conn.transaction(with_pending=False) as con:
            return con.execute("SELECT count(*) FROM steps WHERE run_id = ? AND step = ?", [run_id, step]).fetchone()

    # ------------------------------------------------------------------ runs

    def open_run(
        self, run_id: str, pipeline: str, params: dict[str, Any] | None = None, *, update_params: bool = False
    ) -> RunInfo:
        with self._transaction() as con:
            opened = runs.open_run(con, run_id, pipeline, params, update_params)
        self._opened[run_id] = (opened.pipeline, opened.params)
        return opened

    def claim_run(self, run_id: str, owner: Owner, durability: Durability = Durability.DURABLE) -> None:
        """While it owns the run, this process decides new steps in memory and commits quick ones in groups."""
        with self._conn.lock:  # the snapshot is marked before the file can be let go of
            with self._transaction() as con:
                journal = self._journals.get(run_id)
                runs.check_owner(con, self.location, run_id, owner, claim=journal.generation if journal else None)
                known, token = runs.set_owner(con, run_id, owner)
                self._lease().claimed(con, token)
                # A run with steps is most likely resumed: its snapshot read now, in the claim's transaction,
                # saves the first restores a transaction of their own (``_restore_from_snapshot``).
                entries = restorable.read(con, self.location, run_id, owner) if known else None
                if journal is None:
                    self._journals[run_id] = RunJournal(run_id, owner, known, len(known), durability, generation=token)
                else:
                    journal.claims += 1
            if entries is not None:
                self._new_snapshot(run_id, entries)

    def release_run(self, run_id: str, owner: Owner) -> None:
        with self._transaction() as con:  # opening it writes what is pending
            journal = self._journals.get(run_id)
            token = None
            if journal is not None:
                journal.claims -= 1
                if journal.claims > 0:
                    return
                del self._journals[run_id]
                self._snapshots.pop(run_id, None)
                self._streaks.pop(run_id, None)
                token = journal.generation
            runs.clear_owner(con, run_id, owner, token)
        with self._conn.lock:
            self._drop_log_if_applied()
        if journal is not None and journal.lost is not None:
            # Steps that returned here were deferred and not written (another owner took the run over):
            # the run must not end as if they were stored.
            raise journal.lost

    # ------------------------------------------------------------------ steps

    def begin_step(self, req: StepRequest) -> Begin:
        """A new step of a run this process owns starts in memory, written with the next group commit.

        A start the disk refuses (full or read-only; the write of a failure kept from before or of a
        kernel's pending cells included) is a :class:`WriteFault`, so the user is told what to free.
        """
        with self._refusals_as_faults():
            return self._begin_step(req)

    @contextmanager
    def _refusals_as_faults(self) -> Iterator[None]:
        """A write the disk refuses (full, read-only) raises its :class:`WriteFault`; any other error as it is."""
        try:
            yield
        except StoreDatabaseError as exc:
            fault = self._refused_write(exc)
            if fault is None:
                raise
            raise fault from exc

    def _refused_write(self, exc: StoreDatabaseError) -> WriteFault | None:
        """The :class:`WriteFault` of a write a full or read-only disk refused (and what is kept), or None."""
        fault = None if isinstance(exc, StoreCorruptError) else faults.classify(exc, self.path.parent)
        if fault is None:
            return None
        with self._conn.lock, self._journal_lock:  # not while the housekeeper's retry has them
            fault.kept = bool(self._failures) or any(j.pending for j in self._journals.values())
        fault.kept = fault.kept or cells.has_pending(self._file_key)
        return fault

    def _begin_step(self, req: StepRequest) -> Begin:
        self._conn.stay_open()  # its completion follows: keep the file while nobody waits for it
        journal = self._journals.get(req.run_id)
        key = (self.location, req.run_id, req.step)
        with _IN_FLIGHT_LOCK:
            abandoned = key not in _IN_FLIGHT
        if journal is not None and journal.lost is not None:
            raise journal.lost
        if req.effect and cells.has_pending(self._file_key):  # the fence: earlier cells written (or refused) first
            self._write_pending_cells()
        self._raise_lost(req.run_id)
        if self._failures:  # no step starts on top of a failure not yet written
            self._flush_failures(strict=True)
        if journal is not None:
            decided = self._begin_in_memory(journal, req, key)
            if decided is not None:
                return decided
        elif (cell := self._begin_cell(req, key)) is not None:
            return cell
        elif (restored := self._restore_in_streak(req)) is not None:
            return restored
        with self._conn.lock:
            window = journal is None and cells.deferrable(req)
            begin = self._begin_in_transaction(req, journal, abandoned=abandoned, window=window)
            if begin.action == "execute":
                self._started(key, begin.generation)
                if window and not begin.effect:
                    with cells.LOCK:
                        cells.STARTED[key] = req
            else:
                self._streaks[req.run_id] = self._mark()
            if journal is not None:
                with self._journal_lock:
                    if req.step not in journal.known_steps:
                        journal.known_steps.add(req.step)
                        journal.step_count += 1
            return begin

    def _begin_in_memory(self, journal: RunJournal, req: StepRequest, key: tuple[str, str, str]) -> Begin | None:
        """A step of an owned run decided without a transaction: a new quick step, or a restore from the snapshot."""
        self._conn.check_file()  # decided in memory: still the file this process opened?
        with self._journal_lock:
            first_of_window = not journal.pending
            quick = journal.try_begin(req)
            batch_full = len(journal.pending) >= MAX_BATCH
        if quick is not None:
            if batch_full:
                # Back-pressure: a process that starts steps faster than they can be written
                # writes a full batch itself, so a group commit never grows past one batch.
                with self._transaction(step_only=True):  # writes only steps no snapshot holds
                    pass
            elif first_of_window:
                self._conn.wake()
            self._started(key, quick.generation)
            return quick
        if req.step in journal.known_steps:
            return self._restore_from_snapshot(req)
        return None

    def _begin_cell(self, req: StepRequest, key: tuple[str, str, str]) -> Begin | None:
        """A kernel's new plain step started in memory while this handle holds the file; None: a transaction decides.

        Decided as ``steps.begin`` decides a new step, from what the window's first transaction
        read under the same mark (the run's owner check passed, these step names exist): while
        the mark holds, no other process can have opened the file and no other handle of this
        process has committed. Only the sole handle of the process on the file decides so; the
        start is appended to the completion log first, so a kill from here on leaves a trace.
        """
        window = self._windows.get(req.run_id)
        if window is None or req.step in window.names or window.owner != req.owner or not cells.deferrable(req):
            return None
        return None if self._failures else self._begin_cell_held(req, key, window)

    def _begin_cell_held(self, req: StepRequest, key: tuple[str, str, str], window: cells.Window) -> Begin | None:
        """``_begin_cell`` once the window may apply: checked and registered under the connection's lock."""
        self._conn.check_file()
        with self._conn.lock:  # the file cannot be let go of between the check and the registration
            if window.mark is None or window.mark != self._mark():
                self._windows.pop(req.run_id, None)
                return None
            with cells.LOCK:
                if filelock.shares(self.path) != 1:
                    return None
                pending = cells.pending(self._file_key)
                if (req.run_id, req.step) in pending:
                    return None
                step = cells.new_pending(req, window.count, utc_now(), time.monotonic())
                try:
                    with self._journal_lock:
                        self._log_step(step)
                except OSError:  # the log cannot be written (a full disk): the step starts in a transaction
                    return None
                first = not pending
                self._started(key, None)
                pending[(req.run_id, req.step)] = cells.Cell(step, self.location, window.mark)
                cells.STARTED[key] = req  # its start may be written before it returns (``_complete_started_cell``)
                window.names.add(req.step)
                window.count += 1
            self._drop_snapshot(req.run_id, req.step)
        if first:
            self._conn.wake()
        return Begin("execute", 1, (), None, (), effect=False, generation=None)

    def _restore_in_streak(self, req: StepRequest) -> Begin | None:
        """A restore of a run this process does not own (a kernel's), from the snapshot while restores follow on.

        A kernel owns its run only while a step runs, so its restores are not decided in memory as
        an owned run's are; but the snapshot rests on the file alone, not on owning the run: while
        this handle holds the file no other process can write it, and ``_mark`` changes when the
        file is let go of, another handle of this process commits, or this store makes any change
        but a step's own. So a restore that follows a restore decided by a transaction under the
        same mark (cells restored one after another, as a rerun of a notebook does) reads the
        snapshot, with the same owner check, and decides the next ones from it by the same rule;
        a lone restore keeps its one transaction. None: a transaction decides.
        """
        self._conn.check_file()  # decided without a transaction: still the file this process opened?
        mark = self._mark()
        if mark is None:
            return None
        snapshot = self._snapshots.get(req.run_id)
        if (snapshot is None or snapshot.mark != mark) and self._streaks.get(req.run_id) != mark:
            return None
        return self._restore_from_snapshot(req)

    def _begin_in_transaction(
        self, req: StepRequest, journal: RunJournal | None, *, abandoned: bool, window: bool = False
    ) -> Begin:
        """The decision in a transaction (``steps.begin``); the step and those it made stale leave the snapshot.

        ``window``: a kernel's step (call holding the connection's lock); when it executes, the
        run's step names are read in the same transaction, so the next new cells of this hold of
        the file are decided in memory (``_begin_cell``).
        """
        self._drop_snapshot(req.run_id, req.step)
        self._windows.pop(req.run_id, None)
        claim = journal.generation if journal is not None else None
        names: set[str] | None = None
        try:
            with self._transaction(step_only=True) as con:
                begin = steps.begin(con, self.location, req, abandoned=abandoned, claim=claim)
                if begin.action == "execute":
                    self._lease().claimed(con, begin.generation)
                    if window:
                        names = steps.run_step_names(con, req.run_id)
        except BaseException as exc:
            self._changes += 1  # whatever it did or did not write, no snapshot vouches for it
            self._note_lost(req.run_id, exc)
            raise
        self._drop_snapshot(req.run_id, *begin.stale)
        if names is not None:
            with cells.LOCK:
                names.update(step for (run, step) in cells.pending(self._file_key) if run == req.run_id)
            self._windows[req.run_id] = cells.Window(self._mark(), req.owner, names, len(names))
        return begin

    def _note_lost(self, run_id: str, exc: BaseException) -> None:
        """A write of the run's claim was refused (LeaseLostError): no later step of the claim is decided in memory.

        Otherwise the next quick step would start and return in memory on top of the refused one,
        and be dropped unwritten at the group commit (``_still_held``).
        """
        journal = self._journals.get(run_id)
        if isinstance(exc, LeaseLostError) and journal is not None and journal.lost is None:
            try:  # the run's own claim, looked at as a group commit does: the run's error, not the step's
                with self._conn.transaction(with_pending=False) as con:
                    self._still_held(con, journal)
            except Exception:  # not known whether the claim holds: nothing more of it is decided in memory
                journal.lost = exc

    @staticmethod
    def _started(key: tuple[str, str, str], token: int | None) -> None:
        with _IN_FLIGHT_LOCK:
            _IN_FLIGHT[key] = token

    def _ended(self, run_id: str, step: str) -> None:
        with _IN_FLIGHT_LOCK:
            _IN_FLIGHT.pop((self.location, run_id, step), None)
        with cells.LOCK:
            cells.REFUSED.pop((self.location, run_id, step), None)
            cells.STARTED.pop((self.location, run_id, step), None)

    def fencing_token(self, run_id: str, step: str) -> int | None:
        """The token of the running attempt; a kernel's step decided in memory is written first (it takes its token).

        A full or read-only disk that refuses that write is a :class:`WriteFault`: no token is handed out.
        """
        if self._cell_pending(run_id, step):
            with self._refusals_as_faults():
                self._write_pending_cells()
        self._fenced(run_id, step)
        return self._token(run_id, step)

    def _write_pending_cells(self) -> None:
        """Commit a kernel's steps decided in memory now (opening a transaction writes them first): a fence.

        A Ctrl-C during it is the user's KeyboardInterrupt (DuckDB reports it as an Exception); the
        cells it took go back and are written by a later transaction.
        """
        try:
            with self._transaction(step_only=True):
                pass
        except BaseException as exc:
            _raise_as_interrupt(exc)

    def _fenced(self, run_id: str, step: str) -> None:
        """The fence of a step that asked for its key or token: an effect rests on what the store holds from here.

        So its own completion is committed (its payloads synced) before it returns, never written
        behind: it leaves ``cells.STARTED``, which is what lets ``_complete_started_cell`` log it
        instead. And an earlier step of the run that was refused when written raises here: no key
        or token after it.
        """
        with cells.LOCK:
            cells.STARTED.pop((self.location, run_id, step), None)
        self._raise_lost(run_id)

    def _raise_lost(self, run_id: str) -> None:
        """A kernel's step of the run returned but was refused when written: raise it here, before anything runs on."""
        with cells.LOCK:
            lost = cells.LOST.pop((self.location, run_id), None)
        if lost is not None:
            raise lost

    def _cell_pending(self, run_id: str, step: str) -> bool:
        with cells.LOCK:
            return (run_id, step) in cells.pending(self._file_key)

    def _token(self, run_id: str, step: str) -> int | None:
        """The fencing token the attempt this process runs of ``step`` started under."""
        with _IN_FLIGHT_LOCK:
            return _IN_FLIGHT.get((self.location, run_id, step))

    def complete_step(self, done: Completion) -> None:
        """A quick step's completion is deferred with its start; otherwise written and, on error, read back.

        A commit that raises may still have happened (DuckDB reports an interrupt during COMMIT
        after writing), so on failure the state is read back before the error is believed. When
        it did happen, an ``Exception`` is dropped (the step is completed) but a KeyboardInterrupt
        still propagates: the user asked the program to stop. When it did not, a full or read-only
        disk is raised as a :class:`WriteFault`, anything else as it came.
        """
        done = self._payloads.bind(done)
        journal = self._journals.get(done.run_id)
        if journal is not None and journal.lost is not None:
            self._ended(done.run_id, done.step)
            raise journal.lost  # the claim was taken over: nothing more of it is deferred or written
        if journal is not None:
            self._conn.check_file()
            if self._defer_completion(journal, done):
                self._ended(done.run_id, done.step)
                return
        else:
            self._raise_refused(done.run_id, done.step)
            if self._cell_pending(done.run_id, done.step):
                self._conn.check_file()  # a completion kept in memory: still the file this process opened?
            if self._complete_cell(done) or self._complete_started_cell(done):
                self._ended(done.run_id, done.step)
                return
        self._drop_snapshot(done.run_id, done.step)
        try:
            self._sync_payloads(done)  # committed now: its payloads reach the disk first
            with self._transaction(step_only=True) as con:
                # Read inside the transaction: writing a kernel's pending start gives the attempt its token.
                steps.complete(con, done, self._token(done.run_id, done.step))
        except StepChangedError as exc:
            self._ended(done.run_id, done.step)
            self._note_lost(done.run_id, exc)
            raise
        except BaseException as exc:
            stop = faults.interrupted(exc)
            status = self._read_back(done.run_id, done.step)
            if done.found_in(status):
                self._ended(done.run_id, done.step)
                if stop or not isinstance(exc, Exception):
                    _raise_as_interrupt(exc)
                return
            if stop:
                _raise_as_interrupt(exc)
            fault = faults.classify(exc, self.path.parent) if isinstance(exc, Exception) else None
            if fault is not None:
                raise fault from exc
            raise
        self._ended(done.run_id, done.step)

    def _sync_payloads(self, done: Completion) -> None:
        """Sync the payload files of ``done`` written behind (and their folders), before its row is committed.

        Each file once: one the housekeeper synced before its commit (``sync_payloads``) is not
        synced again by the transaction (a file never changes once renamed into place). A file
        whose sync failed once raises that error again, whatever a later fsync says
        (``_SYNC_FAILED``).
        """
        blobs = [b for b in (*done.outputs, *((done.display,) if done.display is not None else ())) if not b.synced]
        for blob in blobs:
            if blob.file is None:
                continue
            try:  # the file itself, not only its name: one removed and written again is synced again
                stat = (self.payload_dir / blob.file).stat()
                identity = (str(self.payload_dir / blob.file), stat.st_ino, stat.st_mtime_ns)
            except OSError:
                identity = None
            with _SYNC_LOCK:
                failed = None if identity is None else _SYNC_FAILED.get(identity)
                if failed is not None:
                    raise OSError(failed.errno, failed.strerror)
                if identity is not None and identity in self._synced:
                    continue
                try:
                    self._payloads.sync([blob])  # a missing file raises here, before any row points at it
                except BaseException as exc:
                    # A Ctrl-C can land after the fsync failed (in its descriptor's close, or before the
                    # error is recorded): the error it used up is then only the interrupt's context.
                    error = _os_error_in(exc)
                    if identity is not None and error is not None:
                        _SYNC_FAILED[identity] = error
                    raise
                if identity is not None:
                    self._synced.add(identity)

    def _raise_refused(self, run_id: str, step: str) -> None:
        """A kernel's in-memory step whose write the store refused: its end says so (nothing of it was stored)."""
        with cells.LOCK:
            refused = cells.REFUSED.pop((self.location, run_id, step), None)
        if refused is not None:
            self._ended(run_id, step)
            raise refused

    def _complete_cell(self, done: Completion) -> bool:
        """A kernel's step still pending in memory: its completion appended to the log, committed with the group.

        One ``write`` before the cell returns makes the completion survive the death of the process;
        the rows follow when the window closes (``cells.py``). False: its start was written already,
        a write of it failed (it is no longer held: whether it is still this process's step is
        checked in a transaction, never assumed), or the log cannot be written (a full disk): the
        caller commits the completion before returning
        (a pending start is written by that transaction first); when that fails, the start stays
        pending and is written with the failure the caller records next.
        """
        with cells.LOCK:
            cell = cells.pending(self._file_key).get((done.run_id, done.step))
            if cell is None or cell.pending.completion is not None or cell.held is None:
                # held None: a write of it failed, so whether it is still this process's is checked by the
                # transaction the caller opens (which raises a refusal in the cell), never assumed here.
                return False
            cells.complete(cell, done, utc_now())
            try:
                with self._journal_lock:
                    self._log_step(cell.pending)
            except BaseException as exc:
                cell.pending.undo_completion()
                if isinstance(exc, OSError):
                    return False
                raise
        return True

    def _complete_started_cell(self, done: Completion) -> bool:
        """A kernel's new plain step whose start a transaction wrote: its completion logged, committed with the group.

        As for a cell decided in memory (``_complete_cell``), one ``write`` to the completion log
        makes it survive the death of the process, and the cell returns without waiting for its
        payloads to reach the disk: the group commit syncs them, then completes the ``running``
        row (checked first to be still this attempt's, ``steps.running_under``). The file is held from
        here until that commit (taken again first when it was let go of while the cell ran), so no
        other process reads the store in between. Only a completion with payloads written behind
        goes this way: it is what makes the user wait (the disk), a commit alone is a few
        milliseconds. False: the caller commits the completion now.
        """
        flight = (self.location, done.run_id, done.step)
        with cells.LOCK:
            req = cells.STARTED.get(flight)
        blobs = (*done.outputs, *((done.display,) if done.display is not None else ()))
        if req is None or GROUP_COMMIT_S <= 0 or all(b.synced for b in blobs):
            return False  # nothing to wait for but a commit of a few milliseconds: committed now
        with self._conn.lock:
            if self._mark() is None:  # let go of while the cell ran: hold it again (its pending writes go first)
                try:
                    with self._transaction(step_only=True):
                        pass
                except Exception:  # the synchronous path meets the same trouble and says so
                    return False
            if self._mark() is None:
                return False
            with cells.LOCK:
                pending = cells.pending(self._file_key)
                if filelock.shares(self.path) != 1 or (done.run_id, done.step) in pending:
                    return False
                step = cells.new_pending(req, 0, utc_now(), time.monotonic())
                step.generation = self._token(done.run_id, done.step)
                step.completion, step.finished_at = done, utc_now()
                try:
                    with self._journal_lock:
                        self._log_step(step)
                except OSError:  # the log cannot be written (a full disk): committed now instead
                    return False
                first = not pending
                pending[(done.run_id, done.step)] = cells.Cell(step, self.location, None, started=True)
        if first:
            self._conn.wake()
        return True

    def _defer_completion(self, journal: RunJournal, done: Completion) -> bool:
        """Defer a quick step's completion; unless durability is 'deferred', log it before returning.

        One ``write`` of the step's rows to the completion log makes the completion survive the
        death of this process; a log that cannot be written (a full disk) means the completion is
        committed the slow way instead, before the step returns.
        """
        with self._journal_lock:
            pending = journal.try_complete(done)
            if pending is None:
                return False
            if journal.durability is Durability.DEFERRED:
                return True
            try:
                self._log_step(pending)
            except OSError:
                pending.undo_completion()
                return False
            except BaseException:
                pending.undo_completion()
                raise
            return True

    def _log_step(self, step: PendingStep) -> None:
        """Append a step's rows as they stand (its start, or all of it) to this process's completion log.

        Call holding the journal lock: the record's number is the log's next one.
        """
        self._log.append(encode_quick_rows(self._log.next_number, quick_rows([step])))

    def fail_step(
        self, run_id: str, step: str, owner: Owner, error: str, traceback: str | None, duration_s: float
    ) -> None:
        """Record a failed attempt; when that cannot be written now, keep it for the next transaction.

        A failure that is not written would leave the step 'running' under this live process:
        its run blocked for every other process and the step unable to start again here. So a
        write that fails (a full disk, a Ctrl-C during COMMIT) is read back, and a failure not
        found there is kept in memory and written before the next transaction of this store (a
        read, the panel's poll, closing), and at the latest before the run's next step starts. A
        KeyboardInterrupt still propagates; other write errors do not hide the step's own error.
        """
        self._raise_refused(run_id, step)
        token = self._token(run_id, step)
        self._drop_snapshot(run_id, step)
        try:
            with self._transaction(step_only=True) as con:
                # Read inside the transaction: writing a kernel's pending start gives the attempt its token.
                token = self._token(run_id, step)
                steps.fail(con, run_id, step, owner, error, traceback, duration_s, token)
        except (StepChangedError, InvalidTransition) as exc:  # not this process's step to fail (any more)
            self._ended(run_id, step)
            self._note_lost(run_id, exc)
            raise
        except BaseException as exc:
            again: BaseException | None = None
            try:
                status = self._read_back(run_id, step)
            except BaseException as second:  # a second Ctrl-C: keep the failure all the same
                status, again = None, second
            # A kernel's start still unwritten stays pending: the kept failure's own transaction writes it first.
            if status is None or status.state is StepState.RUNNING:
                with self._journal_lock:
                    if not self._failures:
                        self._failures_at = time.monotonic()
                    self._failures.append(PendingFailure(run_id, step, owner, error, traceback, duration_s, token))
                self._conn.wake()  # retried on a timer as well: the store catches up while this process idles
            self._ended(run_id, step)
            if again is not None:
                raise again from exc
            if faults.interrupted(exc) or not isinstance(exc, Exception):
                _raise_as_interrupt(exc)
            return
        self._ended(run_id, step)

    def retry_step(self, run_id: str, step: str, owner: Owner) -> int:
        journal = self._journals.get(run_id)
        self._drop_snapshot(run_id, step)
        with self._transaction(step_only=True) as con:
            attempt, token = steps.retry(
                con, self.location, run_id, step, owner, journal.generation if journal is not None else None
            )
        self._started((self.location, run_id, step), token)
        return attempt

    def mark_effect(self, run_id: str, step: str, owner: Owner) -> None:
        """The fence before a side effect: opening the transaction writes whatever the store deferred first.

        When that write finds the run taken over (``_still_held``), the step's start was not written
        either: LeaseLostError, as for any late write of the claim. A full or read-only disk that
        refuses the write is a :class:`WriteFault`: nothing of it was written, and no key is handed out.
        """
        lost: Exception | None = None
        try:
            with self._transaction() as con:
                # An earlier step of the run refused when written (found by this very transaction's write of
                # what was pending): no key after it, so none is recorded as used either.
                with cells.LOCK:
                    lost = cells.LOST.pop((self.location, run_id), None)
                if lost is None:
                    steps.mark_effect(con, run_id, step, owner, self._token(run_id, step))
        except BaseException as exc:
            if lost is not None:  # not told yet: the run's next step, fence or key raises it
                with cells.LOCK:
                    cells.LOST.setdefault((self.location, run_id), lost)
            journal = self._journals.get(run_id)
            if isinstance(exc, StepChangedError) and journal is not None and journal.lost is not None:
                raise journal.lost from None
            fault = self._refused_write(exc) if isinstance(exc, StoreDatabaseError) else None
            if fault is not None and not faults.interrupted(exc):
                raise fault from exc
            _raise_as_interrupt(exc)  # a Ctrl-C during the fence's write is the user's KeyboardInterrupt
        if lost is not None:
            raise lost
        self._fenced(run_id, step)

    # ------------------------------------------------------------------ checkpoints

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

    def compact(self, *, force: bool = False, freed_hint: int = 0) -> Compaction:
        """See ``compaction.py``: decided and done while this process holds the file alone."""

        def decide(con: duckdb.DuckDBPyConnection, free: int) -> str | None:
            busy = retention.busy_owner(con)
            if busy is not None:
                owner, run_id = busy
                return (
                    f"process {owner.describe()} is executing run '{run_id}' in this store, and compacting would "
                    f"hold the store away from it; run 'resumable gc --compact' once it is done"
                )
            size = self.path.stat().st_size
            if not force and not compaction.worth_it(size, max(free, freed_hint)):
                return "less than a fifth of the file is free space"
            return None

        if self.read_only:
            size = self.path.stat().st_size
            return Compaction(False, size, size, 0.0, "the store is open read-only")
        if self._failures:  # a kept failure would show its step as still running here
            self._flush_failures(strict=False)
        return self._conn.compact(decide)


def _os_error_in(exc: BaseException) -> OSError | None:
    """The OSError ``exc`` is, or the first one it was raised while handling (``__context__``)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__context__
    return None


def _start_only(step: PendingStep) -> PendingStep:
    """A returned step's pending rows without its completion: its start, for its failure to follow."""
    return dataclasses.replace(step, completion=None, finished_at=None)
