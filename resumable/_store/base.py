"""The store's contract: the records it exchanges and the one seam (``Store``) front ends use.

A front end (the engine, the Python API, the magics, the panel, the headless executor, the CLI)
gets a store from :func:`resumable._store.open_store` and talks to it only through the methods of
:class:`Store`. It never opens, holds or closes a connection: when the store holds a file or a
connection and when it lets go of it is the store's business. An implementation (DuckDB today,
PostgreSQL later) keeps every promise written here; the docs of ``DuckDBStore`` only say how.

Words: a *run* (``run_id``) belongs to one *pipeline* and holds *steps*, unique by name within the
run; a step's state is one of :class:`~resumable._states.StepState` and changes only along
``resumable._states.TRANSITIONS``, each change appended to the run's event log in the same
transaction. A *checkpoint* is what a completed step left behind: one serialized value per output
plus, optionally, its display output. An :class:`~resumable._records.Owner` is a process (and
kernel); a running step has one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from resumable._config import Durability
from resumable._inputs import Input
from resumable._keys import is_pseudo_output
from resumable._records import Blob, Event, Owner, RunInfo, StepStatus
from resumable._states import RunState, StepState
from resumable._why import Held, Why


@dataclass(frozen=True, slots=True)
class StepRequest:
    """What a front end knows when a step is about to start (the argument of :meth:`Store.begin_step`)."""

    run_id: str
    step: str
    owner: Owner
    source: str | None = None  # what the step runs (a cell's code), shown by the panel
    source_digest: str | None = None  # when set, a completed step with another digest re-executes
    reads: tuple[str, ...] = ()  # names the step reads: a step that produced one re-executing makes it stale
    options: dict[str, Any] = field(default_factory=dict)  # retries, backoff, timeout...: stored as JSON
    force: bool = False  # execute even when the step could restore (never an effect step: see ``rerun``)
    inputs: Mapping[str, Input] = field(default_factory=dict)  # what the step reads now, fingerprinted
    effect: bool = False  # declared a side-effecting step (asking for a key makes it one too)
    rerun: bool = False  # a deliberate rerun: executes even an effect step, under a new key generation


@dataclass(frozen=True, slots=True)
class CheckpointRef:
    """Where one stored output lives, as :meth:`Store.load_value` needs it.

    Front ends read ``name`` and ``kind`` and hand the whole record back to the store; the other
    fields are the store's business (a store may keep small payloads' bytes in ``data``).
    """

    run_id: str
    step: str
    name: str
    kind: str  # 'value' (an output) or 'display' (what the step showed)
    codec: str
    digest: str
    signature: str | None
    size: int
    data: bytes | None
    file: str | None


@dataclass(frozen=True, slots=True)
class Begin:
    """The store's decision for a starting step (what :meth:`Store.begin_step` returns)."""

    action: Literal["restore", "execute"]
    attempt: int  # the attempt (within its execution) now running, or the one that completed (restore)
    checkpoints: tuple[CheckpointRef, ...]  # restore: every output, for load_value; execute: empty
    finished_at: datetime | None  # restore: when the checkpoint was made
    stale: tuple[str, ...]  # execute: completed steps sent back to pending because they read this one's outputs
    key_generation: int = 1  # what ``idempotency_key()`` derives its token from, with the run and step
    why: Why | None = None  # execute: why a completed step runs again; restore with ``held``: what changed
    held: Held | None = None  # restore: a completed effect step kept although ``why`` says it could run
    effect: bool = False  # the step is known to have side effects
    execution: int = 1  # execute: the execution the attempt belongs to (each start from pending begins one)
    # execute: the fencing token (lease generation) the attempt runs under; every later write of it
    # carries the token and is refused once another owner took the step over (docs/scale.md)
    generation: int | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """A step's successful attempt, everything :meth:`Store.complete_step` records in one transaction."""

    run_id: str
    step: str
    owner: Owner  # the process that ran the attempt; the step must still be running under it
    outputs: tuple[Blob, ...]  # one per output, from :meth:`Store.encode`; each blob's name is the output's
    duration_s: float
    display: Blob | None = None  # what the step showed, when it showed anything
    reads: tuple[str, ...] | None = None  # the names it read, when known only now (None: keep what begin_step got)

    def found_in(self, status: StepStatus | None) -> bool:
        """Whether ``status``, read back after a commit that raised, shows this completion stored.

        Compared by the outputs a user sees: pseudo-outputs (``<state>``, ``<shared>``) are stored
        too but never listed in a status, so counting them would call every such commit lost.
        """
        names = {b.name for b in self.outputs if not is_pseudo_output(b.name)}
        return status is not None and status.state is StepState.COMPLETED and set(status.outputs) == names


@dataclass(frozen=True, slots=True)
class PayloadsAt:
    """Where a store keeps its large checkpoints, so that messages name them rightly.

    Files in a folder (beside a DuckDB file, or a server store's shared folder), or objects under
    an object store's URL: "4 payload files" would be wrong about objects in a bucket.
    """

    where: str  # the folder's path, or the object store's URL (``s3://bucket/prefix``)
    objects: bool  # objects in an object store, not files in a folder


@dataclass(frozen=True, slots=True)
class GcReport:
    """What :meth:`Store.gc` removed."""

    checkpoints_removed: int  # checkpoint rows of steps that are no longer completed
    files_removed: int  # payloads (files, or objects: ``Store.payloads_at``) nothing points to
    bytes_freed: int


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs ``resumable gc`` deletes (:meth:`Store.remove_runs`); every field given narrows the choice.

    ``keep_last`` keeps the newest N runs of each pipeline among those ``pipeline`` and ``state``
    select; ``older_than`` takes only runs whose last change came before that moment.
    """

    pipeline: str | None = None
    state: RunState | None = None
    older_than: datetime | None = None
    keep_last: int | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """A run :meth:`Store.remove_runs` left in place, and why (a whole sentence naming the holder)."""

    run_id: str
    reason: str
    missing: bool = False  # there is no such run (otherwise: a live process holds it)


@dataclass(frozen=True, slots=True)
class Compaction:
    """What rewriting the store into a fresh file did (:meth:`Store.compact`), or why it did not happen."""

    done: bool
    size_before: int  # the database file's bytes
    size_after: int
    seconds: float
    skipped: str | None = None  # why not (another process at work, not worth it), when not done


@dataclass(frozen=True, slots=True)
class Removal:
    """What :meth:`Store.remove_runs` deleted (or, with ``dry_run``, would delete)."""

    removed: tuple[RunInfo, ...]
    refused: tuple[Refused, ...]
    checkpoints_removed: int  # checkpoint rows nothing needs any more
    inline_bytes: int  # of them, bytes kept inside the database file
    files_removed: int  # payloads (files, or objects: ``Store.payloads_at``) nothing points to any more
    file_bytes: int
    dry_run: bool = False

    @property
    def bytes_freed(self) -> int:
        """Checkpoint bytes given back: inline ones once the file is compacted, payload files at once."""
        return self.inline_bytes + self.file_bytes


@dataclass(frozen=True, slots=True)
class Unlocked:
    """What :meth:`Store.unlock_run` released."""

    owners: tuple[Owner, ...]  # the owners the run was taken from (none: it was not owned)
    steps: tuple[str, ...]  # their running steps, now ``interrupted``


@dataclass(frozen=True, slots=True)
class QueryResult:
    """What a read-only query returned (:meth:`Store.query`): column names, DuckDB types and rows."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def to_dicts(self) -> list[dict[str, Any]]:
        """One dict per row, by column name."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def df(self) -> Any:
        """The rows as a pandas DataFrame (pandas must be installed)."""
        import pandas as pd

        return pd.DataFrame(list(self.rows), columns=list(self.columns))


class EncodeError(Exception):
    """:meth:`Store.encode` could not serialize a value; nothing was stored.

    Part of the seam's contract, not a user-facing error: the engine turns it into
    :class:`~resumable.errors.UnserializableOutputError`, adding the step, the run and how to
    leave the output out. ``__cause__`` is the serializer's own exception.
    """

    def __init__(self, name: str, type_name: str, reason: str) -> None:
        self.name = name
        self.type_name = type_name
        self.reason = reason
        super().__init__(name, type_name, reason)


class WriteFault(Exception):
    """The store could not write a step's outputs or its completion: the disk's fault, not the value's.

    Part of the seam's contract like :class:`EncodeError`: the engine turns it into
    :class:`~resumable.errors.StoreFullError`, :class:`~resumable.errors.StoreReadOnlyError` or
    :class:`~resumable.errors.StoreWriteError`, adding the step and the run. ``kind`` is ``full``,
    ``read_only`` or ``write``; ``needed`` the bytes the output needed at least and
    ``free`` the bytes free where it failed, when known. ``__cause__`` is the original error.
    ``kept``: raised by a step's start, while this process still holds steps the store could not
    record yet (written once it takes writes again).
    """

    def __init__(self, kind: str, path: str, reason: str, needed: int | None = None, free: int | None = None) -> None:
        self.kind = kind
        self.path = path
        self.reason = reason
        self.needed = needed
        self.free = free
        self.kept = False
        super().__init__(kind, path, reason, needed, free)


class Store(Protocol):
    """The seam between front ends and storage; ``DuckDBStore`` is today's implementation.

    Every method is one transaction: it happens entirely or not at all, and a reader never sees
    half of it. Several processes may use one store at once; the store serializes them. Besides
    what each method lists under Raises, any method may raise a :class:`~resumable.errors.StoreError`
    saying the store cannot be reached (:class:`~resumable.errors.StoreLockedError`: another
    process held it too long; :class:`~resumable.errors.StorePathError`: the location cannot hold
    a store); such an error says nothing about what the store holds, and a write that raised it
    did not happen. :class:`~resumable.errors.InvalidTransition` from any method is a bug in
    resumable, never a user error.
    """

    @property
    def location(self) -> str:
        """Where the store lives, as messages show it and as ``open_store`` accepts it again.

        A DuckDB store's is its file's absolute path; a server's would be its URL without secrets.
        """

    @property
    def payloads_at(self) -> PayloadsAt:
        """Where large checkpoints live: a folder's files or an object store's objects (for messages)."""

    # ------------------------------------------------------------------ runs

    def open_run(
        self, run_id: str, pipeline: str, params: dict[str, Any] | None = None, *, update_params: bool = False
    ) -> RunInfo:
        """Create the run, or check that the existing one belongs to ``pipeline`` and ``params``.

        ``params`` are recorded as JSON (values JSON cannot hold as their ``repr``) and compared in
        that form; an existing run opened with no (or empty) ``params`` is not compared. With
        ``update_params`` other values are recorded instead of refused: a notebook's steps
        fingerprint the parameters they read, so the ones that read a changed value execute again.

        Raises
        ------
        PipelineMismatchError
            The run exists under another pipeline.
        ParameterMismatchError
            The run exists with other parameters (every difference is listed) and not ``update_params``.
        """

    def get_run(self, run_id: str) -> RunInfo | None:
        """The run with its state derived from its steps, or None when there is no such run.

        Read honestly and without writing: a running step whose owner process is gone counts as
        ``interrupted`` (so does the run); the stored row changes only when a process resumes the run.
        The same holds for :meth:`list_runs`, :meth:`get_step`, :meth:`list_steps` and :meth:`query`; a
        process that claims the run or starts a step makes the change (``owner_died``, in the event log).
        """

    def latest_run(self, pipeline: str) -> RunInfo | None:
        """The most recently created run of ``pipeline``, or None."""

    def list_runs(
        self,
        pipeline: str | None = None,
        limit: int = 100,
        *,
        state: RunState | None = None,
        since: datetime | None = None,
    ) -> list[RunInfo]:
        """Up to ``limit`` runs (of ``pipeline``, or of every pipeline), newest first.

        With ``state`` only runs in that state, with ``since`` only runs created at or after it.
        States are as a reader sees them (see :meth:`get_run`).
        """

    def claim_run(self, run_id: str, owner: Owner, durability: Durability = Durability.DURABLE) -> None:
        """Make ``owner`` the run's only executor until :meth:`release_run` (``with pipe.run()``).

        Claims by one process nest: the run is released when the last claim is. Running steps of
        dead owners become ``interrupted`` on the way. While the run is claimed, the store may
        defer committing quick steps (a few tens of milliseconds; see ``journal.py``). With
        ``durability`` 'durable' (the default) a step that has returned survives the death of the
        process all the same; with 'deferred' the quick steps of the last window may run again
        after a crash. In both, ``mark_effect`` and the start of an effect step commit them first.

        Raises
        ------
        CheckpointNotFoundError
            There is no such run (:meth:`open_run` creates it).
        RunOwnedError
            Another live process owns the run or runs one of its steps.
        """

    def fork_run(
        self,
        origin: str,
        step: str,
        run_id: str,
        who: Owner,
        params: dict[str, Any] | None = None,
        *,
        pipeline: str | None = None,
    ) -> RunInfo:
        """Create run ``run_id`` from ``origin``: its completed steps before ``step``, sharing their checkpoints.

        One transaction. The new run belongs to the origin's pipeline, records ``forked_from`` and
        ``forked_at``, and takes the origin's parameters overridden by ``params``. Each completed
        step before ``step`` becomes a completed step of the new run (source, reads, outputs,
        inputs, effect flags and key generation as in the origin), pointing at the very checkpoint
        rows the origin's step points at now; no byte is copied, and a later re-execution or
        invalidation in either run never changes what the other restores. Each copy is logged as a
        ``forked`` event. ``step`` and the steps after it are not copied: they execute in the new
        run (under its own idempotency keys). The origin is only read, so a run another live
        process owns may be forked.

        Raises
        ------
        CheckpointNotFoundError
            There is no run ``origin``.
        PipelineMismatchError
            ``pipeline`` is given and is not the origin's.
        ForkError
            ``origin`` has no step ``step``, or run ``run_id`` exists; nothing was written.
        ParameterValueError
            A parameter cannot be recorded faithfully; nothing was written.
        """

    def release_run(self, run_id: str, owner: Owner) -> None:
        """Write everything deferred for the run, then end ``owner``'s claim (nothing when it holds none)."""

    def unlock_run(self, run_id: str, who: Owner) -> Unlocked:
        """Take the run from owners that cannot be asked (another host, an expired or missing lease).

        Its running steps become ``interrupted`` (each change logged as an event naming the owner
        released) and the run's owner is cleared, in one transaction.

        Raises
        ------
        CheckpointNotFoundError
            There is no such run.
        RunOwnedError
            An owner on this host is still running: nothing was changed.
        """

    # ------------------------------------------------------------------ steps

    def begin_step(self, req: StepRequest) -> Begin:
        """Decide whether a step restores or executes; when it executes, it is ``running`` under ``req.owner``.

        A completed step restores unless ``req.force``, its ``req.source_digest`` differs from the
        recorded one, or one of ``req.inputs`` differs from the recorded fingerprints
        (:func:`resumable._inputs.changes`; a step recorded before inputs were tracked compares its
        source only); ``Begin.why`` says which. A completed effect step (declared, or one that asked
        for a key) restores even then, with ``Begin.held`` set: it executes only for ``req.rerun``,
        once per source and inputs, under the next key generation. When a step that produced
        outputs before executes again, the completed steps after it that read one of those outputs
        go back to ``pending`` in the same transaction (``Begin.stale`` lists them; effect steps
        stay completed). A failed, interrupted or pending step executes; a step that
        does not exist yet is created.

        Raises
        ------
        CheckpointNotFoundError
            There is no such run.
        RunOwnedError
            Another live process owns the run or runs one of its steps.
        RerunError
            ``req.rerun`` for a step that never completed; nothing was written.
        WriteFault
            The disk is full or read-only, so the start (or a failure kept from before, written
            first) could not be stored; the step did not start. ``kept`` says whether this process
            still holds steps the store could not record yet.
        """

    def complete_step(self, done: Completion) -> None:
        """Store every output and mark the step ``completed`` in ONE transaction; on error neither happens.

        The outputs replace whatever checkpoints the step had. Once this returns, the completion
        survives the death of the process (unless the run was claimed with durability 'deferred':
        then a quick step may be lost within the group-commit window). A failed commit is not taken
        as proof that nothing was written: the store reads the state back and returns normally when
        the completion is there, except after a Ctrl-C, which is raised as KeyboardInterrupt either
        way (the caller reads the state back to learn which).

        Raises
        ------
        StepChangedError
            The step is no longer running under ``done.owner`` (another process took it over or
            changed it); nothing was written.
        WriteFault
            The disk is full or read-only; nothing was written.
        KeyboardInterrupt
            A Ctrl-C during the write (DuckDB's "Query interrupted" included), written or not.
        """

    def mark_effect(self, run_id: str, step: str, owner: Owner) -> None:
        """Record that a running step has side effects, after making every earlier completion durable.

        Called when the step asks for an idempotency key, before the key is handed out: no side
        effect may rest on a completion a crash could take back. From then on the step, once
        completed, is never executed again unless a rerun is asked for (:attr:`StepRequest.rerun`).

        Raises
        ------
        StepChangedError
            The step is no longer running under ``owner``; nothing was written.
        WriteFault
            The disk is full or read-only; nothing was written, so no key may be handed out.
        """

    def fail_step(
        self, run_id: str, step: str, owner: Owner, error: str, traceback: str | None, duration_s: float
    ) -> None:
        """Record a failed attempt (``running`` to ``failed``) with its error line and traceback.

        A failure that cannot be written now (a full disk, a Ctrl-C during COMMIT) is kept in
        memory and written by the store's next transaction, before the run's next step starts;
        a step is never left ``running`` under a live process that no longer runs it.

        Raises
        ------
        StepChangedError
            The step is no longer running under ``owner``; nothing was written.
        KeyboardInterrupt
            A Ctrl-C during the write; the failure is written or kept as above.
        """

    def retry_step(self, run_id: str, step: str, owner: Owner) -> int:
        """Move a failed or interrupted step back to ``running`` under ``owner``; returns the new attempt number.

        A retry is the next attempt of the step's current execution (it does not begin a new one).

        Raises
        ------
        CheckpointNotFoundError
            There is no such run or step.
        RunOwnedError
            Another live process owns the run or runs one of its steps.
        LeaseLostError
            This process's claim of the run was taken over by another owner; nothing was written.
        """

    def fencing_token(self, run_id: str, step: str) -> int | None:
        """The fencing token (lease generation) of the attempt of ``step`` this process runs now, or None.

        Every write the attempt makes carries it, and the store refuses it (LeaseLostError) once
        another owner took the step over; a downstream system can do the same with it
        (``resumable.fencing_token()``).

        Raises
        ------
        WriteFault
            The step's start, which the token rests on, had yet to be written and the disk is full or
            read-only; no token may be handed out.
        """

    def invalidate(
        self, run_id: str, step: str, who: Owner, *, downstream: bool = False, reason: str = "user asked"
    ) -> list[str]:
        """Send a step (and with ``downstream`` every step after it) back to ``pending``; returns the steps changed.

        Pending steps are skipped. Checkpoints stay until :meth:`gc` or the step's next completion,
        so an invalidation made by mistake loses nothing until then. All or nothing: when one step
        cannot be invalidated, none is.

        Raises
        ------
        CheckpointNotFoundError
            There is no such run or step.
        RunOwnedError
            Another live process owns the run or runs one of its steps.
        StepRunningError
            One of the steps is running in this process.
        """

    def get_step(self, run_id: str, step: str) -> StepStatus | None:
        """One step's status, or None when the run has no such step (or there is no such run)."""

    def list_steps(self, run_id: str) -> list[StepStatus]:
        """Every step of a run, in the order they first started (empty for an unknown run)."""

    def list_events(self, run_id: str, step: str | None = None) -> list[Event]:
        """The event log of a run (or one of its steps), oldest first; events are never rewritten."""

    def previous_source(self, run_id: str, step: str) -> str | None:
        """The step's source before the edit that made it last start again (None when no edit did)."""

    def last_event_seq(self) -> int:
        """The newest event's number in the whole store (0 when empty): a cheap way to notice any change."""

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_refs(self, run_id: str, step: str) -> tuple[CheckpointRef, ...]:
        """Where a step's stored outputs are (display first, then values by name); empty when none."""

    def load_value(self, ref: CheckpointRef) -> Any:
        """Check a checkpoint's digest (and signature, when a signing key is configured), then unpickle it.

        Loading is unpickling: only load stores you trust.

        Raises
        ------
        CheckpointIntegrityError
            The bytes do not match their digest, the payload is missing, or the signature is
            missing or wrong; nothing was unpickled.
        """

    def encode(self, name: str, value: object) -> Blob:
        """Serialize one output for :meth:`complete_step`; a large one is already durable when this returns.

        Raises
        ------
        EncodeError
            The value cannot be serialized; nothing was stored.
        WriteFault
            The payload folder cannot take it (a full disk, a read-only file system); the partial
            file was removed.
        """

    def gc(self) -> GcReport:
        """Delete checkpoints of steps sent back to pending, then payloads nothing points to.

        Completed steps' checkpoints are never touched, nor the last good checkpoint of a step that
        is running, failed or interrupted, nor a checkpoint another run (a fork) shares while one of
        its steps that is not pending points at it, nor payloads a write in progress (in any
        process) may be about to record.
        """

    def remove_runs(self, which: RunFilter | tuple[str, ...], who: Owner, *, dry_run: bool = False) -> Removal:
        """Delete whole runs (their steps, events and the checkpoints nothing else needs), then their payload files.

        ``which`` names the runs, or selects them by a :class:`RunFilter` (decided in the same
        transaction as the deletion). A run that a live process owns or executes a step of is
        refused and left whole (``Removal.refused`` names the holder); the others go, all in one
        transaction. Checkpoint rows go by the one rule of :meth:`gc` (so checkpoints of steps sent
        back to pending in other runs go too), and payload files once nothing points to them. With
        ``dry_run`` nothing changes and the report says what would go. The database file keeps
        its size until :meth:`compact`.
        """

    def compact(self, *, force: bool = False, freed_hint: int = 0) -> Compaction:
        """Rewrite the database into a fresh file and swap it in, giving back the space deleted rows left.

        Without ``force`` only when at least a fifth of the file is free space (DuckDB's free
        blocks, or ``freed_hint`` bytes just deleted). Never while another live process owns a run
        or runs a step in the store (``Compaction.skipped`` says who). Crash-safe: until the swap
        the old file is the store; after it, the new one holds every row, sequence and index.
        """

    def query(self, sql: str) -> QueryResult:
        """Run one read-only SQL query against the documented views (docs/sql.md); never writes.

        The query sees ``runs``, ``steps``, ``attempts``, ``events``, ``checkpoints`` (without the
        bytes), ``inputs`` and ``parameters``, and nothing outside the store: it cannot read or
        write files, attach databases, or install or load extensions.

        Raises
        ------
        QueryError
            The query failed or was refused; the message says which and why.
        """

    def close(self) -> None:
        """Write what is deferred and let go of the file or connection now.

        The store stays usable: the next call opens it again. Front ends never need to call this;
        the store lets go of the file by itself soon after each use (and before a fork, and at exit).
        """
