"""The transition table is the only way a step changes state."""

from __future__ import annotations

import itertools

import pytest

from resumable._states import TRANSITIONS, RunState, StepState, check_transition
from resumable.errors import InvalidTransition


@pytest.mark.parametrize(("source", "target"), list(itertools.product(StepState, StepState)))
def test_every_pair_outside_the_table_raises(source: StepState, target: StepState) -> None:
    """A change the design does not allow is refused with InvalidTransition, never written."""
    if (source, target) in TRANSITIONS:
        assert check_transition("s", source, target) is TRANSITIONS[(source, target)]
    else:
        with pytest.raises(InvalidTransition) as excinfo:
            check_transition("s", source, target)
        assert (
            str(excinfo.value) == f"step 's': no transition from '{source}' to '{target}' (this is a bug in resumable)"
        )


def test_completed_is_reached_only_from_running() -> None:
    """Nothing becomes completed without having run (and so without storing its outputs)."""
    assert [s for (s, t) in TRANSITIONS if t is StepState.COMPLETED] == [StepState.RUNNING]


@pytest.mark.parametrize(
    ("steps", "run"),
    [
        ([], RunState.EMPTY),
        ([StepState.COMPLETED, StepState.COMPLETED], RunState.COMPLETED),
        ([StepState.COMPLETED, StepState.PENDING], RunState.PENDING),
        ([StepState.FAILED, StepState.INTERRUPTED], RunState.FAILED),
        ([StepState.INTERRUPTED, StepState.COMPLETED], RunState.INTERRUPTED),
        ([StepState.FAILED, StepState.RUNNING], RunState.RUNNING),
    ],
)
def test_a_runs_state_is_derived_from_its_steps(steps: list[StepState], run: RunState) -> None:
    """Running wins, then failed, then interrupted; all completed is completed; anything else is pending."""
    assert RunState.of(steps) is run
    assert RunState.of([s.value for s in steps]) is run  # the store hands over the stored names
