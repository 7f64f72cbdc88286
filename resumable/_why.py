"""The one-line reasons a completed step executes again, or is held: said the same way everywhere.

:class:`Why` is what the store found different; :class:`Held` why an effect step was kept. The
store records the reasons in the event log (``resumable show``, and ``why`` later); the magics print
them; the Python API logs them or warns. Pure: no store, no IPython.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from enum import Enum

from resumable._inputs import InputChange, describe
from resumable._records import Event
from resumable.errors import EffectHeldWarning


@dataclass(frozen=True, slots=True)
class Why:
    """Why a completed step executes again (or, for an effect step, what changed while it was held)."""

    source_changed: bool = False
    inputs: tuple[InputChange, ...] = ()
    forced: bool = False  # --force
    rerun: bool = False  # --rerun, ``run.rerun()``

    def __bool__(self) -> bool:
        return self.source_changed or bool(self.inputs) or self.forced or self.rerun


class Held(str, Enum):
    """Why a completed effect step was restored although it could have executed."""

    CHANGED = "changed"  # its source or inputs changed, or --force was given: effects are never repeated implicitly
    RERUN_DONE = "rerun done"  # a rerun was asked again for a request already rerun


def reason(why: Why) -> str:
    """``'threshold' changed (0.5 → 0.7)``, ``its source changed``, ``forced``, ``rerun asked``."""
    parts = []
    if why.rerun:
        parts.append("rerun asked")
    elif why.forced:
        parts.append("forced")
    if why.source_changed:
        parts.append("its source changed")
    if why.inputs:
        parts.append(describe(list(why.inputs)))
    return "; ".join(parts) or "asked"


def runs_again(step: str, why: Why) -> str:
    """What the user reads when a completed step executes again."""
    return f"↻ step '{step}' runs again: {reason(why)}"


def what_changed(why: Why) -> str:
    """``its inputs changed ('qty')`` for the held-effect message (names only: it is one line)."""
    names = ", ".join(f"'{c.name}'" for c in why.inputs[:3]) + (" ..." if len(why.inputs) > 3 else "")
    if why.source_changed and why.inputs:
        return f"its source and inputs changed ({names})"
    if why.source_changed:
        return "its source changed"
    if why.inputs:
        return f"its inputs changed ({names})"
    if why.forced:
        return "--force never repeats side effects"
    return "nothing it depends on changed"


def held_warning(
    step: str, why: Why, held: Held, rerun_how: str, invalidate_how: str, key_generation: int
) -> EffectHeldWarning:
    """What a held effect step tells the user (printed by the magics, warned by the Python API)."""
    if held is Held.RERUN_DONE:
        return EffectHeldWarning(step, what_changed(why), invalidate_how, key_generation)
    return EffectHeldWarning(step, what_changed(why), rerun_how)


# ---------------------------------------------------------------- reading the reasons back


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a step last executed (or was held), as read back from its event log by ``resumable why``."""

    step: str
    kind: str  # first_run, source_changed, inputs_changed, forced, rerun, stale, retried, owner_died, invalidated,
    # forked (copied from the run it was forked from, never executed in this run)
    line: str  # what the user reads: ``its source changed``, ``retried after error: ValueError: boom``
    attempt: int  # within its execution
    held: str | None = None  # set when the step was last restored, not repeated, because it has side effects
    diff: str = ""  # the edit, as a unified diff, when its source changed
    execution: int = 1  # the execution the attempt belongs to

    def text(self) -> str:
        """The lines ``resumable why`` and ``%durable_why`` print."""
        # A step copied by a fork never executed in this run: it has no execution or attempt to name.
        counted = "" if self.kind == "forked" else f", execution {self.execution}, attempt {self.attempt}"
        head = f"step '{self.step}'{counted}: {self.line}"
        if self.held is not None:
            head += f"\nstep '{self.step}' was then held because it has side effects: {self.held}"
            head += " (restored, not repeated)"
        return head + ("\n" + self.diff.rstrip("\n") if self.diff else "")


def _kind(detail: str) -> str:
    if detail.startswith("rerun asked"):
        return "rerun"
    if detail.startswith("forced"):
        return "forced"
    if detail.startswith("its source changed"):
        return "source_changed"
    return "inputs_changed" if " changed (" in detail or "changed" in detail else "invalidated"


def _forked_line(event: Event) -> str:
    """``restored from the fork of run 'o' (not executed in this run)`` from a ``forked`` event's detail."""
    detail = event.detail or ""
    origin = detail.split("'")[1] if detail.startswith("forked from run '") else "another run"
    return f"restored from the fork of run '{origin}': it shares that run's checkpoint (not executed in this run)"


def _start_reason(start: Event, before: Event | None, ended: Event | None = None) -> tuple[str, str]:
    """The kind and line of one start, from its own event, the one before it and the one before that.

    ``ended``: what ended the attempt before, when the step went from failed or interrupted back
    to pending to start a new execution (an edit, a changed input, --force).
    """
    detail = start.detail or ""
    if detail == "new" or before is None:
        return "first_run", "first run"
    if before.target == "failed":
        kind, line = "retried", f"retried after error: {before.detail or 'unknown error'}"
    elif before.target == "interrupted":
        gone = before.detail or "its owner is gone"
        dead = gone.startswith("owner ") and gone.endswith(" is gone")
        kind = "owner_died"
        line = f"started again after {'a dead owner interrupted it' if dead else 'it was interrupted'} ({gone})"
    else:  # back to pending first: an edit, an input, --force, a rerun, an upstream re-run, or the user
        reason = before.detail or detail
        if reason.startswith("stale: "):
            kind, line = "stale", reason.replace("re-executed", "re-ran")
        elif before.source in ("completed", "failed", "interrupted") and reason == detail:  # the engine's decision
            kind, line = _kind(reason), reason
            if before.source == "failed" and ended is not None and ended.target == "failed":
                line += f", after error: {ended.detail or 'unknown error'}"
            elif before.source == "interrupted" and ended is not None:
                line += f", after it was interrupted ({ended.detail or 'its owner is gone'})"
        else:
            kind, line = "invalidated", f"invalidated ({reason})"
    prefix = f"{before.target}; "
    if detail.startswith(prefix):  # inputs that differ from the attempt before (``steps.begin``)
        line += "; " + detail[len(prefix) :]
    return kind, line


def explain(step: str, events: list[Event], source: str | None, previous_source: str | None) -> Explanation | None:
    """What made ``step`` start its last attempt, from its events (oldest first); None if it never started.

    Each decision leaves its reason in the log: ``new`` on a first start; the reason of a completed
    step that executes again on its ``completed → pending`` event; ``stale: ...`` when an upstream
    step re-ran; the error of a failed attempt and the dead owner of an interrupted one on the event
    that ended it; inputs that differ on a restart's own event; ``held`` events for effect steps
    restored rather than repeated. ``previous_source`` (kept by an edit) gives the diff.
    """
    starts = [i for i, e in enumerate(events) if e.target == "running"]
    if not starts:
        forked = next((e for e in reversed(events) if e.transition == "forked"), None)
        if forked is None:
            return None
        held = next((e.detail for e in reversed(events) if e.transition == "held"), None)
        return Explanation(step, "forked", _forked_line(forked), forked.attempt, held)
    i = starts[-1]
    kind, line = _start_reason(events[i], events[i - 1] if i > 0 else None, events[i - 2] if i > 1 else None)
    diff = ""
    if previous_source is not None and source is not None:
        if kind != "source_changed" and "its source changed" not in line:
            line += "; its source changed"
        diff = "".join(
            difflib.unified_diff(
                previous_source.splitlines(keepends=True), source.splitlines(keepends=True),
                f"{step} (before)", f"{step} (now)",
            )
        )  # fmt: skip
    held = next((e.detail for e in reversed(events[i + 1 :]) if e.transition == "held"), None)
    return Explanation(step, kind, line, events[i].attempt, held, diff, events[i].execution)


def explain_all(events: list[Event]) -> dict[str, Explanation]:
    """Each step's explanation from a run's whole log (the panel's why lines; no diff, sources not read)."""
    by_step: dict[str, list[Event]] = {}
    for event in events:
        by_step.setdefault(event.step, []).append(event)
    found = {step: explain(step, log, None, None) for step, log in by_step.items()}
    return {step: e for step, e in found.items() if e is not None}


def short_line(found: Explanation) -> str:
    """One line for a panel row: ``why: its source changed``, or the hold first when held."""
    if found.held is not None:
        return f"why: held because it has side effects ({found.held}); it last ran for: {found.line}"
    return f"why: {found.line}"
