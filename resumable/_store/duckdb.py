"""DuckDBStore: the only module that imports duckdb or holds SQL.

DuckDB lets one process at a time hold the database file, and a connect costs about 15 ms. The
store therefore opens the file for a transaction and keeps it open only for a short idle time
(``idle_close_s``) and never longer than ``max_hold_s`` in one stretch, so a CLI or a panel in
another process gets in within about a second even during a run of many quick steps. A locked
file is retried with backoff up to ``lock_timeout_s`` and then reported with the holder's pid.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from resumable import _codec, _config
from resumable._owner import is_alive
from resumable._records import Blob, Event, Owner, RunInfo, StepStatus
from resumable._states import StepState, Transition, check_transition
from resumable._store.base import Begin, CheckpointRef, GcReport, StepRequest
from resumable._store.journal import GROUP_COMMIT_S, PendingStep, RunJournal, utc_now
from resumable._store.schema import MIGRATIONS, SCHEMA_VERSION
from resumable.errors import (
    CheckpointIntegrityError,
    CheckpointNotFoundError,
    ParameterMismatchError,
    RunOwnedError,
    SchemaVersionError,
    StoreError,
    StoreLockedError,
    StorePathError,
)

# A run's last change is its newest event: derived, so the per-step path writes one row less.
_UPDATED_AT = "coalesce((SELECT max(e.happened_at) FROM events e WHERE e.run_id = r.run_id), r.created_at)"
_LOCK_PID = re.compile(r"\(PID (\d+)\)")
_STEP_COLUMNS = (
    "run_id, step, state, attempts, seq, started_at, finished_at, duration_s, output_bytes, outputs, reads, "
    "error, traceback, source, owner_host, owner_pid, owner_started, owner_kernel, options, source_digest"
)


def _owner_from(host: str | None, pid: int | None, started: float | None, kernel: str | None) -> Owner | None:
    if host is None or pid is None:
        return None
    return Owner(host, int(pid), float(started or 0.0), kernel)


def _status_from(row: Sequence[Any]) -> StepStatus:
    return StepStatus(
        run_id=row[0],
        step=row[1],
        state=StepState(row[2]),
        attempts=row[3],
        seq=row[4],
        started_at=row[5],
        finished_at=row[6],
        duration_s=row[7],
        output_bytes=row[8],
        outputs=tuple(json.loads(row[9])),
        reads=tuple(json.loads(row[10])),
        error=row[11],
        traceback=row[12],
        source=row[13],
        owner=_owner_from(row[14], row[15], row[16], row[17]),
        options=json.loads(row[18]),
    )


@dataclass(frozen=True, slots=True)
class _RunView:
    """What one query tells about a run and one of its steps (None fields: the step does not exist)."""

    pipeline: str
    state: str | None
    attempts: int | None
    source_digest: str | None
    outputs: str | None
    finished_at: datetime | None


def _run_state(states: list[str]) -> str:
    """A run's overall state, derived from its steps (never stored, so never out of date)."""
    if not states:
        return "empty"
    for state in ("running", "failed", "interrupted"):
        if state in states:
            return state
    if all(s == "completed" for s in states):
        return "completed"
    return "pending"


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
        self.lock_timeout_s = _config.lock_timeout_s() if lock_timeout_s is None else lock_timeout_s
        self.idle_close_s = idle_close_s
        self.max_hold_s = max_hold_s
        self._signing_key = _config.signing_key()
        self._cond = threading.Condition(threading.RLock())
        self._con: duckdb.DuckDBPyConnection | None = None
        self._journals: dict[str, RunJournal] = {}
        # Quick steps touch only their journal, under this lock, so they never wait for a commit in
        # progress; whoever needs both takes ``_cond`` first.
        self._journal_lock = threading.Lock()
        self._housekeeper: threading.Thread | None = None
        self._opened_at = 0.0
        self._last_used = 0.0
        self._released_at = 0.0
        self._check_path()
        with self._transaction() as con:
            self._migrate(con)
        _OPEN_STORES.add(self)

    # ------------------------------------------------------------------ connection handling

    def _check_path(self) -> None:
        where = str(self.path)
        if self.path.is_dir():
            raise StorePathError(where, "is a folder", f"Name a file inside it, e.g. '{self.path / 'store.duckdb'}'.")
        parent = self.path.parent
        try:
            if not parent.exists():
                parent.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            raise StorePathError(where, f"cannot be created ({exc.strerror})", "Choose a writable folder.") from exc
        if not parent.is_dir():
            raise StorePathError(where, f"has a parent '{parent}' that is not a folder", "Choose another path.")
        if not os.access(parent, os.W_OK | os.X_OK) or (self.path.exists() and not os.access(self.path, os.W_OK)):
            raise StorePathError(
                where, "is not writable by this user", "Fix its permissions or point RESUMABLE_STORE elsewhere."
            )
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as f:
                head = f.read(12)
            if head[8:12] != b"DUCK":
                raise StorePathError(
                    where,
                    "exists but is not a DuckDB database",
                    "resumable left it untouched; point RESUMABLE_STORE or store= at another file.",
                )

    def _connect(self) -> duckdb.DuckDBPyConnection:
        """Open the file, waiting with backoff while another process holds it."""
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.002
        created = not self.path.exists()
        while True:
            try:
                con = duckdb.connect(str(self.path), config={"threads": 1})
                break
            except duckdb.IOException as exc:
                text = str(exc)
                if "lock" not in text.lower():
                    if "not a valid DuckDB" in text:
                        raise StorePathError(
                            str(self.path), "exists but is not a DuckDB database", "Point the store elsewhere."
                        ) from exc
                    raise StoreError(f"store '{self.path}' cannot be opened: {text}") from exc
                if time.monotonic() >= deadline:
                    match = _LOCK_PID.search(text)
                    raise StoreLockedError(
                        str(self.path), int(match.group(1)) if match else None, self.lock_timeout_s
                    ) from exc
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.02)
        if created:
            for candidate in (self.path, Path(str(self.path) + ".wal")):
                if candidate.exists():
                    candidate.chmod(0o600)
        return con

    def _wake_housekeeper(self) -> None:
        """Make sure the thread that commits quick steps and releases the file is running."""
        if self._housekeeper is None or not self._housekeeper.is_alive():
            self._housekeeper = threading.Thread(target=self._housekeep, name="resumable-store", daemon=True)
            self._housekeeper.start()
        else:
            self._cond.notify_all()

    def _oldest_pending(self) -> float | None:
        """When the oldest unwritten step started; a full batch counts as overdue."""
        with self._journal_lock:
            if sum(len(j.pending) for j in self._journals.values()) >= MAX_BATCH:
                return time.monotonic() - GROUP_COMMIT_S
            return min((t for j in self._journals.values() if (t := j.oldest_pending()) is not None), default=None)

    def _housekeep(self) -> None:
        """Commit quick steps when their window closes; close the file once idle or held too long."""
        with self._cond:
            while True:
                now = time.monotonic()
                oldest = self._oldest_pending()
                deadlines = []
                if oldest is not None:
                    deadlines.append(oldest + GROUP_COMMIT_S)
                if self._con is not None:
                    deadlines.append(min(self._last_used + self.idle_close_s, self._opened_at + self.max_hold_s))
                if not deadlines:
                    self._housekeeper = None
                    return
                if now < min(deadlines):
                    self._cond.wait(min(deadlines) - now)
                    continue
                if oldest is not None and now >= oldest + GROUP_COMMIT_S:
                    try:
                        with self._transaction():
                            pass  # opening a transaction writes what is pending
                    except Exception:  # kept pending; the next transaction of the step path retries
                        self._cond.wait(0.05)
                else:
                    self._close_locked()

    def _close_locked(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            finally:
                self._con = None
                self._released_at = time.monotonic()

    def close(self) -> None:
        """Write what is pending and release the file now (it is reopened on the next use)."""
        with self._cond:
            if self._oldest_pending() is not None:
                with self._transaction():
                    pass
            self._close_locked()
            self._cond.notify_all()

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._cond:
            if self._con is None:
                # After a forced release, leave a short gap so a waiting process can take the file.
                gap = self._released_at + 0.015 - time.monotonic()
                if gap > 0:
                    time.sleep(gap)
                self._con = self._connect()
                self._opened_at = time.monotonic()
                self._wake_housekeeper()
            con = self._con
            con.execute("BEGIN TRANSACTION")
            with self._journal_lock:
                taken = [(journal, journal.take()) for journal in self._journals.values() if journal.pending]
            try:
                for journal, steps in taken:
                    self._write_pending(con, journal, steps)
                yield con
                con.execute("COMMIT")
            except BaseException:
                try:
                    con.execute("ROLLBACK")
                except duckdb.Error:
                    pass
                self._restore_pending(taken)
                raise
            finally:
                self._last_used = time.monotonic()

    def _restore_pending(self, taken: list[tuple[RunJournal, list[PendingStep]]]) -> None:
        """Put unwritten steps back after a failed transaction, unless the commit happened after all."""
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

    def _write_pending(self, con: duckdb.DuckDBPyConnection, journal: RunJournal, steps: list[PendingStep]) -> None:
        """Write quick steps in one go: rows in their final state, every event, every checkpoint."""
        step_rows: list[list[Any]] = []
        events: list[_EventRow] = []
        checkpoints: list[list[Any]] = []
        for p in steps:
            req, done = p.req, p.completion
            start = check_transition(req.step, StepState.PENDING, StepState.RUNNING)
            events.append(
                (req.run_id, req.step, start, StepState.PENDING, StepState.RUNNING, 1, req.owner, "new", p.started_at)
            )
            state = StepState.RUNNING
            if done is not None:
                ok = check_transition(req.step, StepState.RUNNING, StepState.COMPLETED)
                events.append(
                    (
                        req.run_id,
                        req.step,
                        ok,
                        StepState.RUNNING,
                        StepState.COMPLETED,
                        1,
                        req.owner,
                        None,
                        done.finished_at,
                    )
                )
                state = StepState.COMPLETED
                kinds = [(b, "value") for b in done.blobs] + ([(done.display, "display")] if done.display else [])
                checkpoints += [
                    [
                        req.run_id,
                        req.step,
                        b.name,
                        kind,
                        b.codec,
                        b.digest,
                        b.signature,
                        b.size,
                        b.inline,
                        b.file,
                        done.finished_at,
                    ]
                    for b, kind in kinds
                ]
            reads = done.reads if done is not None and done.reads is not None else req.reads
            step_rows.append(
                [
                    req.run_id,
                    req.step,
                    p.seq,
                    state.value,
                    1,
                    req.source,
                    req.source_digest,
                    json.dumps(list(reads)),
                    json.dumps(req.options),
                    req.owner.host,
                    req.owner.pid,
                    req.owner.started,
                    req.owner.kernel_id,
                    p.started_at,
                    done.finished_at if done else None,
                    done.duration_s if done else None,
                    json.dumps(list(done.outputs)) if done else "[]",
                    sum(b.size for b in done.blobs) if done else 0,
                ]
            )
        _insert_rows(con, "steps", _STEP_INSERT, step_rows)
        self._log(con, events)
        _insert_rows(con, "checkpoints", _CHECKPOINT_INSERT, checkpoints)  # fmt: skip

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
        row = con.execute(
            f"SELECT run_id, pipeline, created_at, {_UPDATED_AT}, params FROM runs r WHERE run_id = ?", [run_id]
        ).fetchone()
        if row is None:
            return None
        states = [r[0] for r in con.execute("SELECT state FROM steps WHERE run_id = ?", [run_id]).fetchall()]
        return RunInfo(row[0], row[1], row[2], row[3], json.loads(row[4]), _run_state(states), len(states))

    def list_runs(self, pipeline: str | None = None, limit: int = 100) -> list[RunInfo]:
        """Runs, newest first, optionally of one pipeline."""
        with self._transaction() as con:
            rows = con.execute(
                f"""SELECT r.run_id, r.pipeline, r.created_at, {_UPDATED_AT}, r.params, list(s.state)
                   FROM runs r LEFT JOIN steps s USING (run_id)
                   WHERE ? IS NULL OR r.pipeline = ?
                   GROUP BY ALL ORDER BY r.created_at DESC, r.run_id DESC LIMIT ?""",
                [pipeline, pipeline, limit],
            ).fetchall()
        out = []
        for row in rows:
            states = [s for s in row[5] if s is not None]
            out.append(RunInfo(row[0], row[1], row[2], row[3], json.loads(row[4]), _run_state(states), len(states)))
        return out

    def latest_run(self, pipeline: str) -> RunInfo | None:
        """The most recently created run of a pipeline."""
        runs = self.list_runs(pipeline, limit=1)
        return runs[0] if runs else None

    def open_run(self, run_id: str, pipeline: str, params: dict[str, Any] | None = None) -> RunInfo:
        """Create the run, or check that an existing one belongs to ``pipeline`` and ``params``."""
        params = params or {}
        with self._transaction() as con:
            existing = self._get_run(con, run_id)
            if existing is None:
                con.execute(
                    """INSERT INTO runs (run_id, pipeline, created_at, updated_at, params)
                       VALUES (?, ?, now(), now(), ?)""",
                    [run_id, pipeline, json.dumps(params, sort_keys=True, default=repr)],
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
        differences = _param_differences(existing.params, json.loads(json.dumps(params, default=repr)))
        if params and differences:
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

    def _check_owner(self, con: duckdb.DuckDBPyConnection, run_id: str, me: Owner, step: str = "") -> _RunView:
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
        holder = _owner_from(row[1], row[2], row[3], row[4])
        if holder is not None and not _same_process(holder, me):
            if is_alive(holder):
                raise RunOwnedError(run_id, pipeline, holder.host, holder.pid, _clock(holder.started), None)
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
            owner = _owner_from(*owner_cols)
            if owner is not None and _same_process(owner, me):
                continue
            if owner is not None and is_alive(owner):
                raise RunOwnedError(run_id, pipeline, owner.host, owner.pid, _clock(owner.started), name)
            self._transition(
                con, run_id, name, StepState.RUNNING, StepState.INTERRUPTED, me,
                f"owner {owner.describe() if owner else 'unknown'} is gone",
            )  # fmt: skip
            if name == step:
                state = StepState.INTERRUPTED.value
        if mine is None:
            return _RunView(pipeline, None, None, None, None, None)
        return _RunView(pipeline, state, mine[2], mine[7], mine[8], mine[9])

    def reap_dead_owners(self, run_id: str, me: Owner) -> None:
        """Mark steps whose owner died ``interrupted`` (what a CLI or panel does before showing a run)."""
        with self._transaction() as con:
            try:
                self._check_owner(con, run_id, me)
            except RunOwnedError:
                pass

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
        self._log(con, [(run_id, step, transition, source, target, int(changed[0]), who, detail, None)])
        return int(changed[0])

    @staticmethod
    def _log(con: duckdb.DuckDBPyConnection, rows: Sequence[_EventRow]) -> None:
        """Append to the event log (one statement for several rows); a None time means now."""
        values = [
            [run_id, step, at or utc_now(), transition.value, source.value if source else None, target.value, attempt,
             who.host, who.pid, detail]
            for run_id, step, transition, source, target, attempt, who, detail, at in rows
        ]  # fmt: skip
        _insert_rows(con, "events", _EVENT_INSERT, values)

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
                batch_full = len(journal.pending) == MAX_BATCH
            if quick is not None:
                if first_of_window or batch_full:
                    with self._cond:
                        self._wake_housekeeper()
                return quick
        with self._cond:
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
                self._log(con, [event])
                return Begin("execute", 1, (), None, ())
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
                f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id = ? AND step = ?", [run_id, step]
            ).fetchone()
        return _status_from(row) if row else None

    def list_steps(self, run_id: str) -> list[StepStatus]:
        """Every step of a run, in the order they first started."""
        with self._transaction() as con:
            rows = con.execute(f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id = ? ORDER BY seq", [run_id]).fetchall()
        return [_status_from(r) for r in rows]

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


_EventRow = tuple[str, str, Transition, StepState | None, StepState, int, Owner, str | None, datetime | None]
_STEP_INSERT = (
    ("run_id", "VARCHAR"), ("step", "VARCHAR"), ("seq", "INTEGER"), ("state", "VARCHAR"), ("attempts", "INTEGER"),
    ("source", "VARCHAR"), ("source_digest", "VARCHAR"), ("reads", "VARCHAR"), ("options", "VARCHAR"),
    ("owner_host", "VARCHAR"), ("owner_pid", "INTEGER"), ("owner_started", "DOUBLE"), ("owner_kernel", "VARCHAR"),
    ("started_at", "TIMESTAMPTZ"), ("finished_at", "TIMESTAMPTZ"), ("duration_s", "DOUBLE"), ("outputs", "VARCHAR"),
    ("output_bytes", "BIGINT"),
)  # fmt: skip
_EVENT_INSERT = (
    ("run_id", "VARCHAR"), ("step", "VARCHAR"), ("happened_at", "TIMESTAMPTZ"), ("transition", "VARCHAR"),
    ("source", "VARCHAR"), ("target", "VARCHAR"), ("attempt", "INTEGER"), ("host", "VARCHAR"), ("pid", "INTEGER"),
    ("detail", "VARCHAR"),
)  # fmt: skip
_CHECKPOINT_INSERT = (
    ("run_id", "VARCHAR"), ("step", "VARCHAR"), ("name", "VARCHAR"), ("kind", "VARCHAR"), ("codec", "VARCHAR"),
    ("digest", "VARCHAR"), ("signature", "VARCHAR"), ("size", "BIGINT"), ("data", "BLOB"), ("file", "VARCHAR"),
    ("created_at", "TIMESTAMPTZ"),
)  # fmt: skip
# Above this many rows, one list parameter per column beats a VALUES list, whose planning grows
# faster than linearly (measured: 500 rows, 100 ms as VALUES, 12 ms as lists).
_VALUES_LIMIT = 16
MAX_BATCH = 500  # quick steps written together at most: a group commit stays a few milliseconds


def _insert_rows(
    con: duckdb.DuckDBPyConnection, table: str, columns: tuple[tuple[str, str], ...], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert rows into a table with one statement, whatever their number."""
    if not rows:
        return
    names = ", ".join(name for name, _ in columns)
    if len(rows) <= _VALUES_LIMIT:
        one = "(" + ", ".join("?" * len(columns)) + ")"
        con.execute(
            f"INSERT INTO {table} ({names}) VALUES " + ", ".join([one] * len(rows)), [v for r in rows for v in r]
        )
        return
    lists = ", ".join(f"unnest(?::{kind}[])" for _, kind in columns)
    con.execute(f"INSERT INTO {table} ({names}) SELECT {lists}", [list(col) for col in zip(*rows, strict=True)])


def _same_process(a: Owner, b: Owner) -> bool:
    return a.host == b.host and a.pid == b.pid


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _param_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            out.append(f"{key}: started with {old[key]!r}, now missing")
        elif key not in old:
            out.append(f"{key}: not set at the start, now {new[key]!r}")
        elif old[key] != new[key]:
            out.append(f"{key}: started with {old[key]!r}, now {new[key]!r}")
    return out


_OPEN_STORES: weakref.WeakSet[DuckDBStore] = weakref.WeakSet()


def close_all() -> None:
    """Write what is pending and release every store's file (before a fork, or at exit)."""
    for store in list(_OPEN_STORES):
        try:
            store.close()
        except Exception:  # at exit, one broken store must not keep the others from closing
            pass


atexit.register(close_all)


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
