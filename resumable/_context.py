"""Which step is executing right now, for ``idempotency_key()`` and nested calls."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
    key_generation: int = 1
    asks_key: Callable[[], None] | None = None  # records, before a key is handed out, that the step has effects
    # The lease generation the attempt runs under (``resumable.fencing_token()``), asked for when
    # wanted: a kernel's step takes its token only when its start is written (``_store/duckdb.py``).
    fencing_token: Callable[[], int | None] | None = None


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
