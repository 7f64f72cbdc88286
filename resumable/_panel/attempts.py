"""A step's attempts as the panel shows them: when each started, how long it took, how it ended.

Read from the run's event log (the records :meth:`Store.list_events` returns), never from SQL: an
attempt starts with an event whose target is ``running`` (``start``, ``retry``) and ends with the
next event of that step leaving ``running``. Every rule about what counts as an attempt, and how a
timeline reads, lives in this module only, so a change to how attempts are counted touches it alone.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime

from resumable._records import Event
from resumable._states import StepState
from resumable._units import human_duration

MAX_SHOWN = 4  # the newest attempts a row lists; older ones are counted, not listed


@dataclass(frozen=True, slots=True)
class Attempt:
    """One execution attempt of a step, from the event log."""

    number: int  # within its execution (the retry limit counts these)
    started_at: datetime
    ended_at: datetime | None  # None while it runs, or when its process died without an end event
    outcome: str  # the state it ended in ("completed", "failed", ...), or "running" while open
    execution: int = 1  # the step's execution it belongs to (each edit, stale re-run... begins one)

    @property
    def duration_s(self) -> float | None:
        if self.ended_at is None:
            return None
        return max(0.0, (self.ended_at - self.started_at).total_seconds())


def timelines(events: list[Event]) -> dict[str, list[Attempt]]:
    """Each step's attempts in the order they started, from a run's whole event log."""
    found: dict[str, list[Attempt]] = {}
    open_: dict[str, Attempt] = {}
    running = StepState.RUNNING.value
    for event in events:
        started = open_.pop(event.step, None)
        if started is not None and event.source == running and event.target != running:
            found.setdefault(event.step, []).append(
                Attempt(started.number, started.started_at, event.at, event.target, started.execution)
            )
        elif started is not None:  # an attempt whose end was never logged (its process died; taken over)
            found.setdefault(event.step, []).append(started)
        if event.target == running:
            open_[event.step] = Attempt(event.attempt, event.at, None, "running", event.execution)
    for step, attempt in open_.items():
        found.setdefault(step, []).append(attempt)
    return found


def _clock(moment: datetime) -> str:
    """``10:03:00`` today, ``2026-11-25 10:03:00`` on another day (local time)."""
    local = moment.astimezone()
    return local.strftime("%H:%M:%S" if local.date() == datetime.now().date() else "%Y-%m-%d %H:%M:%S")


def describe(attempt: Attempt, state_now: StepState | None = None, *, executions: bool = False) -> str:
    """``#2 10:03:00 completed in 1.2 s``; an open attempt of a step no longer running is interrupted.

    With ``executions`` (the step executed more than once) the attempt names its execution too,
    ``execution 2 #1``, since attempts are counted afresh in each.
    """
    head = f"#{attempt.number} {_clock(attempt.started_at)}"
    if executions:
        head = f"execution {attempt.execution} {head}"
    if attempt.ended_at is None and state_now is StepState.RUNNING:
        return f"{head} running"
    if attempt.ended_at is None or attempt.outcome == StepState.INTERRUPTED.value:
        # Its process died at a moment nobody logged: the interruption is recorded later, when found.
        return f"{head} interrupted"
    verb = "in" if attempt.outcome == StepState.COMPLETED.value else "after"
    return f"{head} {attempt.outcome} {verb} {human_duration(attempt.duration_s)}"


def timeline_html(attempts: list[Attempt], state_now: StepState | None = None) -> str:
    """The row's attempts line: the newest :data:`MAX_SHOWN` attempts, oldest first; empty for none."""
    if not attempts:
        return ""
    shown = attempts[-MAX_SHOWN:]
    several = len({a.execution for a in attempts}) > 1
    parts = [html.escape(describe(a, state_now if a is attempts[-1] else None, executions=several)) for a in shown]
    earlier = len(attempts) - len(shown)
    lead = f"{earlier} earlier &middot; " if earlier else ""
    count = len({a.execution for a in attempts})
    executed = f"executed {count} times &middot; " if several else ""
    return f'<div class="rsm-timeline rsm-muted">{executed}attempts: {lead}{" &middot; ".join(parts)}</div>'
