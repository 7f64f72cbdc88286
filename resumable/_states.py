"""Step states and the one table of legal transitions.

::

    pending ──start──▶ running ──ok──▶ completed
                        │  ▲              │
                  error │  │ retry        │ invalidate (source changed, upstream rerun, user asked)
                        ▼  │              ▼
                      failed           pending
    running ──owner process died (found on next start)──▶ interrupted ──retry──▶ running

Invalidation also applies to failed and interrupted steps (the panel's and CLI's Invalidate, and a
downstream invalidation that reaches a step which never completed): they return to ``pending``.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from resumable.errors import InvalidTransition


class StepState(str, Enum):
    """The state of one step of one run, named as in DESIGN.md."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


class RunState(str, Enum):
    """A run's overall state, derived from its steps' states (never stored, so never out of date)."""

    EMPTY = "empty"  # no step yet
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, steps: Iterable[StepState | str]) -> RunState:
        """Running wins, then failed, then interrupted; all completed is completed; else pending."""
        states = {StepState(s) for s in steps}
        if not states:
            return cls.EMPTY
        for state in (StepState.RUNNING, StepState.FAILED, StepState.INTERRUPTED):
            if state in states:
                return cls(state.value)
        if states == {StepState.COMPLETED}:
            return cls.COMPLETED
        return cls.PENDING


class Transition(str, Enum):
    """Why a step changes state; recorded in the event log."""

    START = "start"
    OK = "ok"
    ERROR = "error"
    RETRY = "retry"
    INVALIDATE = "invalidate"
    OWNER_DIED = "owner_died"
    # Not a change of state: a completed effect step was reached while something it depends on had
    # changed, and restored rather than repeated. Logged so ``resumable why`` can say so.
    HELD = "held"
    # Not a change of state either: a step arrives in a new run already completed, copied from the
    # run it was forked from, sharing that run's checkpoint (``ARRIVALS``).
    FORKED = "forked"


TRANSITIONS: dict[tuple[StepState, StepState], Transition] = {
    (StepState.PENDING, StepState.RUNNING): Transition.START,
    (StepState.RUNNING, StepState.COMPLETED): Transition.OK,
    (StepState.RUNNING, StepState.FAILED): Transition.ERROR,
    (StepState.FAILED, StepState.RUNNING): Transition.RETRY,
    (StepState.INTERRUPTED, StepState.RUNNING): Transition.RETRY,
    (StepState.RUNNING, StepState.INTERRUPTED): Transition.OWNER_DIED,
    (StepState.COMPLETED, StepState.PENDING): Transition.INVALIDATE,
    (StepState.FAILED, StepState.PENDING): Transition.INVALIDATE,
    (StepState.INTERRUPTED, StepState.PENDING): Transition.INVALIDATE,
}


# The states a step may be created in other than by starting (pending to running), and how: a fork
# copies the origin's completed steps before the fork point, each with its checkpoint and an event.
ARRIVALS: dict[Transition, StepState] = {
    Transition.FORKED: StepState.COMPLETED,
}


def check_arrival(step: str, how: Transition, target: StepState) -> Transition:
    """Return ``how`` when a step may be created in ``target`` that way, or raise :class:`InvalidTransition`."""
    if ARRIVALS.get(how) is not target:
        raise InvalidTransition(step, f"(new, {how.value})", target.value)
    return how


def check_transition(step: str, source: StepState, target: StepState) -> Transition:
    """Return the transition from ``source`` to ``target``, or raise :class:`InvalidTransition`."""
    try:
        return TRANSITIONS[(source, target)]
    except KeyError:
        raise InvalidTransition(step, source.value, target.value) from None


def can_transition(source: StepState, target: StepState) -> bool:
    """Whether the table allows the change (front ends use it to offer only legal actions)."""
    return (source, target) in TRANSITIONS
