"""Records that cross module boundaries: frozen, slotted dataclasses with no behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from resumable._states import RunState, StepState


@dataclass(frozen=True, slots=True)
class Owner:
    """The process (and kernel, when known) that runs a step."""

    host: str
    pid: int
    started: float  # the process's start time, seconds since the epoch: tells a reused pid apart
    kernel_id: str | None = None

    def describe(self) -> str:
        """A short phrase for messages: ``pid 4121 on host 'lab-7'``."""
        return f"pid {self.pid} on host '{self.host}'"


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run of a pipeline, as the store holds it."""

    run_id: str
    pipeline: str
    created_at: datetime
    updated_at: datetime
    params: dict[str, Any]
    state: RunState  # derived from its steps
    step_count: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # steps by state (as a reader sees them)
    step_time_s: float = 0.0  # the steps' durations added up (the last attempt of each)
    forked_from: str | None = None  # the run this one was forked from (``resumable fork``)
    forked_at: str | None = None  # the step it was forked at: steps before it share the origin's checkpoints

    @property
    def duration_s(self) -> float:
        """From the run's creation to its last change: how long it has been going, or went."""
        return max(0.0, (self.updated_at - self.created_at).total_seconds())


@dataclass(frozen=True, slots=True)
class StepStatus:
    """One step of one run, as the store holds it."""

    run_id: str
    step: str
    state: StepState
    attempts: int  # attempts of its current (latest) execution; the retry limit counts these
    seq: int
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    output_bytes: int
    outputs: tuple[str, ...]
    reads: tuple[str, ...]
    error: str | None
    traceback: str | None
    source: str | None
    owner: Owner | None
    options: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)  # name -> its fingerprints when the step last started
    effect: bool = False  # asked for an idempotency key, or declared an effect: never re-executed implicitly
    key_generation: int = 1  # bumped by each deliberate rerun of a completed effect step
    # A step that completed before and whose later attempt has not completed (failed, running,
    # interrupted) keeps that checkpoint until an attempt completes: the execution that wrote it,
    # and its attempt within that execution.
    kept_attempt: int | None = None
    # How many times the step has executed: each start from pending (a first run, an edit, a changed
    # input, an upstream re-run, an invalidation, --force, --rerun) begins an execution; a retry
    # after a failure or an interruption is another attempt of the same one.
    executions: int = 1
    kept_execution: int | None = None

    @property
    def error_line(self) -> str | None:
        """The first line of the last error, for one-line views."""
        return self.error.splitlines()[0] if self.error else None


@dataclass(frozen=True, slots=True)
class Event:
    """One line of the append-only event log."""

    seq: int
    run_id: str
    step: str
    at: datetime
    transition: str
    source: str | None
    target: str
    attempt: int  # within its execution
    host: str
    pid: int
    detail: str | None
    execution: int = 1  # the step's execution the event belongs to (numbered from the log when read)


@dataclass(frozen=True, slots=True)
class Blob:
    """One serialized output, ready to be recorded; a large one already sits in a file (synced, or ``synced`` False)."""

    name: str
    codec: str
    digest: str
    size: int
    inline: bytes | None
    file: str | None  # relative to the store's payload folder
    signature: str | None
    synced: bool = True  # False: a file written behind, synced before a row points at it (``_codec.sync_payload``)


@dataclass(frozen=True, slots=True)
class StepPolicy:
    """Retry and timeout options, checked when the step is defined."""

    retries: int = 0
    backoff: float = 1.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    timeout: float | None = None
