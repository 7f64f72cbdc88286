"""The transition table is the only way a step changes state."""

from __future__ import annotations

import itertools

import pytest

from resumable._states import TRANSITIONS, StepState, check_transition
from resumable.errors import InvalidTransition


@pytest.mark.parametrize(("source", "target"), list(itertools.product(StepState, StepState)))
def test_every_pair_outside_the_table_raises(source: StepState, target: StepState) -> None:
    """A change the design does not allow is refused with InvalidTransition, never written."""
    if (source, target) in TRANSITIONS:
        assert check_transition("s", source, target) is TRANSITIONS[(source, target)]
    else:
        with pytest.raises(InvalidTransition, match=f"from '{source.value}' to '{target.value}'"):
            check_transition("s", source, target)


def test_completed_is_reached_only_from_running() -> None:
    """Nothing becomes completed without having run (and so without storing its outputs)."""
    assert [s for (s, t) in TRANSITIONS if t is StepState.COMPLETED] == [StepState.RUNNING]
