"""The one-line reasons a completed step executes again, or is held: said the same way everywhere.

:class:`Why` is what the store found different; :class:`Held` why an effect step was kept. The
store records the reasons in the event log (``resumable show``, and ``why`` later); the magics print
them; the Python API logs them or warns. Pure: no store, no IPython.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from resumable._inputs import InputChange, describe
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
