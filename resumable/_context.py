"""Which step is executing right now, for ``idempotency_key()`` and nested calls."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StepContext:
    """The step whose body is executing."""

    pipeline: str
    run_id: str
    step: str
    attempt: int


_current: ContextVar[StepContext | None] = ContextVar("resumable_step", default=None)


def current_step() -> StepContext | None:
    """The executing step, or None outside any step."""
    return _current.get()


@contextmanager
def entered(ctx: StepContext) -> Iterator[StepContext]:
    """Mark ``ctx`` as the executing step for the duration of the block."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


@dataclass(frozen=True, slots=True)
class NotebookRun:
    """The run a kernel's ``%durable_run`` (or its first step) joined; the panel shows it."""

    pipeline: str
    run_id: str
    store_path: str


_notebook_run: NotebookRun | None = None


def set_notebook_run(run: NotebookRun | None) -> None:
    """Record the kernel's current run (the magics call this)."""
    global _notebook_run  # noqa: PLW0603 - one kernel, one current run
    _notebook_run = run


def notebook_run() -> NotebookRun | None:
    """The kernel's current run, or None before any ``%durable_run`` or step."""
    return _notebook_run
