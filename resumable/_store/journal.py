"""Group commit for quick steps of a run this process owns.

A DuckDB commit costs about a millisecond and each statement a few tenths more, which would make
a durable no-op step several times dearer than the work it guards. While a process owns a run
(``with pipe.run()``), nobody else may change it, so the process can decide a brand-new step in
memory and write its start and its completion later, together with other quick steps, in one
transaction. The window is short (``GROUP_COMMIT_S``), and only steps that finish inside it are
deferred: a step running longer has its ``running`` row written when the window closes, and its
completion is committed before the step returns.

By default (durability ``durable``) a deferred completion is also appended to the process's
completion log (``completion_log.py``) before the step returns, so a crash inside the window loses
nothing that returned. With durability ``deferred`` (an explicit choice) it is not: a crash inside
the window loses the quick steps of that window, and they execute again on resume, with the same
idempotency keys. In both modes an effect step and ``idempotency_key()`` commit every deferred step
first (the fence).

This module holds no SQL: it only records what the store module will write.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from resumable._config import Durability
from resumable._records import Owner
from resumable._store.base import Begin, Completion, StepRequest

GROUP_COMMIT_S = float(os.environ.get("RESUMABLE_GROUP_COMMIT_MS", "50")) / 1000
# Quick steps written together at most; a process that reaches it writes the batch itself
# (back-pressure), so one group commit stays a few milliseconds.
MAX_BATCH = 500


def utc_now() -> datetime:
    """The wall clock as stored in the event log."""
    return datetime.now(timezone.utc)


@dataclass(slots=True)
class PendingStep:
    """A step started in memory and not yet written."""

    req: StepRequest
    seq: int
    started_at: datetime
    started_mono: float
    completion: Completion | None = None
    finished_at: datetime | None = None  # when the completion was deferred
    generation: int | None = None  # the fencing token it runs under (its run's claim's)

    def undo_completion(self) -> None:
        """The completion could not be logged: it is written the slow way, before the step returns."""
        self.completion = None
        self.finished_at = None


@dataclass(slots=True)
class RunJournal:
    """What the owning process knows about its run, and the writes it has not made yet."""

    run_id: str
    owner: Owner
    known_steps: set[str]
    step_count: int
    durability: Durability = Durability.DURABLE
    claims: int = 1
    pending: dict[str, PendingStep] = field(default_factory=dict)
    generation: int | None = None  # the claim's fencing token: every step started in memory runs under it
    lost: Exception | None = None  # the claim was found taken over (LeaseLostError): raised by the next start

    def oldest_pending(self) -> float | None:
        """When the oldest unwritten step started (monotonic clock), or None."""
        return min((p.started_mono for p in self.pending.values()), default=None)

    def try_begin(self, req: StepRequest) -> Begin | None:
        """Start a brand-new step in memory; None when the store must decide (the step exists)."""
        if GROUP_COMMIT_S <= 0 or req.step in self.known_steps or req.owner.pid != self.owner.pid:
            return None
        if req.effect or req.rerun:  # an effect starts only on top of durable completions (the fence)
            return None
        self.known_steps.add(req.step)
        self.pending[req.step] = PendingStep(
            req, self.step_count, utc_now(), time.monotonic(), generation=self.generation
        )
        self.step_count += 1
        return Begin("execute", 1, (), None, (), generation=self.generation)

    def try_complete(self, done: Completion) -> PendingStep | None:
        """Defer a completion when the step's start is still unwritten and the window is open."""
        pending = self.pending.get(done.step)
        if pending is None or pending.completion is not None:
            return None
        if time.monotonic() - pending.started_mono >= GROUP_COMMIT_S:
            return None
        pending.completion = done
        pending.finished_at = utc_now()
        return pending

    def take(self) -> list[PendingStep]:
        """Hand every unwritten step to the writer, oldest first."""
        taken = sorted(self.pending.values(), key=lambda p: p.seq)
        self.pending.clear()
        return taken
