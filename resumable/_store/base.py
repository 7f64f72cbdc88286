"""The store's contract: the records it exchanges and the one seam (``Store``) front ends use.

Every method of a store is one transaction: it happens entirely or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from resumable._records import Blob, Event, Owner, RunInfo, StepStatus


@dataclass(frozen=True, slots=True)
class StepRequest:
    """What a front end knows when a step is about to start."""

    run_id: str
    step: str
    owner: Owner
    source: str | None = None
    source_digest: str | None = None  # when set, a completed step with another digest re-executes
    reads: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    force: bool = False


@dataclass(frozen=True, slots=True)
class CheckpointRef:
    """Where one stored output lives; small payloads carry their bytes."""

    run_id: str
    step: str
    name: str
    kind: str  # 'value' or 'display'
    codec: str
    digest: str
    signature: str | None
    size: int
    data: bytes | None
    file: str | None


@dataclass(frozen=True, slots=True)
class Begin:
    """The store's decision for a starting step."""

    action: Literal["restore", "execute"]
    attempt: int
    checkpoints: tuple[CheckpointRef, ...]
    finished_at: Any  # datetime of the checkpoint being restored
    stale: tuple[str, ...]  # steps sent back to pending because this one re-executes
    fresh: bool = False  # the step had no row before: it has no old checkpoints to replace


@dataclass(frozen=True, slots=True)
class GcReport:
    """What ``gc`` removed."""

    files_removed: int
    bytes_freed: int


class Store(Protocol):
    """The seam between front ends and storage. ``DuckDBStore`` is the implementation."""

    def open_run(self, run_id: str, pipeline: str, params: dict[str, Any] | None = None) -> RunInfo:
        """Create the run or check an existing one's pipeline and parameters."""

    def get_run(self, run_id: str) -> RunInfo | None:
        """The run, or None."""

    def latest_run(self, pipeline: str) -> RunInfo | None:
        """The newest run of a pipeline."""

    def list_runs(self, pipeline: str | None = None, limit: int = 100) -> list[RunInfo]:
        """Runs, newest first."""

    def claim_run(self, run_id: str, owner: Owner) -> None:
        """Own the whole run until released; RunOwnedError when another live process does."""

    def release_run(self, run_id: str, owner: Owner) -> None:
        """Release a claimed run."""

    def begin_step(self, req: StepRequest) -> Begin:
        """Restore or start a step; a started step is ``running`` under ``req.owner``."""

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
        """Store every output and mark the step completed in ONE transaction; on error neither happens.

        ``fresh`` says the step never stored checkpoints before, so there are none to replace.
        """

    def fail_step(
        self, run_id: str, step: str, owner: Owner, error: str, traceback: str | None, duration_s: float
    ) -> None:
        """Record a failed attempt."""

    def retry_step(self, run_id: str, step: str, owner: Owner) -> int:
        """Failed or interrupted back to running; returns the attempt number."""

    def invalidate(
        self, run_id: str, step: str, who: Owner, *, downstream: bool = False, reason: str = "user asked"
    ) -> list[str]:
        """Back to pending; returns the steps changed."""

    def get_step(self, run_id: str, step: str) -> StepStatus | None:
        """One step's status."""

    def list_steps(self, run_id: str) -> list[StepStatus]:
        """A run's steps in order."""

    def list_events(self, run_id: str, step: str | None = None) -> list[Event]:
        """The event log."""

    def checkpoint_refs(self, run_id: str, step: str) -> tuple[CheckpointRef, ...]:
        """A step's stored outputs."""

    def load_value(self, ref: CheckpointRef) -> Any:
        """Digest-checked unpickling of one output."""

    def encode(self, name: str, value: object) -> Blob:
        """Serialize one output (large ones to an fsynced file)."""

    def reap_dead_owners(self, run_id: str, me: Owner) -> RunInfo | None:
        """Running steps of dead owners become interrupted; returns the run (None: no such run)."""

    def last_event_seq(self) -> int:
        """The newest event's number: a cheap way to notice a change made anywhere."""

    def close(self) -> None:
        """Write what is pending and release the file."""
