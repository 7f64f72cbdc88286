"""Which actions the status panel offers for a step, and why one cannot run here.

Pure functions of the step's stored status, the transition table and the kernel's current run,
kept out of the widget module so the rules read (and can be checked) on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from resumable._kernel_run import NotebookRun
from resumable._records import StepStatus
from resumable._states import StepState, can_transition

NO_SOURCE_TIP = (
    "This step was defined in Python (@pipe.step or run.step), so there is no cell to run from here. "
    "Run the Python code again to retry it."
)


@dataclass(frozen=True, slots=True)
class Offer:
    """The buttons a step's state allows."""

    retry: bool  # Retry for failed and interrupted steps, Run for pending ones
    rerun: bool
    invalidate: bool


def offered(state: StepState) -> Offer:
    """What the transition table allows: Retry or Run goes to running, Rerun and Invalidate to pending."""
    return Offer(
        retry=state is not StepState.COMPLETED and can_transition(state, StepState.RUNNING),
        rerun=state is StepState.COMPLETED and can_transition(state, StepState.PENDING),
        invalidate=can_transition(state, StepState.PENDING),
    )


def no_source(status: StepStatus) -> str | None:
    """Why the step has no cell to run (a Python-API step), or None when it has one."""
    line = status.options.get("magic_line")
    if not isinstance(line, str) or not isinstance(status.source, str):
        return NO_SOURCE_TIP
    return None


def why_not_runnable(shell: Any, current: NotebookRun | None, run_id: str | None, pipeline: str | None) -> str | None:
    """Why Retry and Rerun cannot execute a cell of run ``run_id`` in ``shell``, or None when they can."""
    if shell is None:
        return "Retry and Rerun run the step's cell, which needs an IPython kernel."
    if shell.find_cell_magic("durable_step") is None:
        return "Load the extension first: %load_ext resumable"
    if current is None or current.run_id != run_id:
        where = f"run '{current.run_id}'" if current else "no run yet"
        return (
            f"This kernel executes steps of its current run ({where}). "
            f"Join this one first: %durable_run {pipeline or 'NAME'} --run-id {run_id}"
        )
    return None


def restorable(status: StepStatus) -> bool:
    """Whether Restore applies: the step is not completed but keeps an earlier attempt's checkpoint."""
    return status.state is not StepState.COMPLETED and status.kept_attempt is not None


def why_not_forkable(current: NotebookRun | None, run_id: str | None, pipeline: str | None) -> str | None:
    """Why Fork from here cannot fork the shown run: it forks the kernel's current run only."""
    if current is None or current.run_id != run_id:
        where = f"run '{current.run_id}'" if current else "no run yet"
        return (
            f"Fork from here forks this kernel's current run ({where}). "
            f"Join this one first: %durable_run {pipeline or 'NAME'} --run-id {run_id}"
        )
    return None


def forkable(state: StepState | None) -> bool:
    """Fork from here is offered on every step the run has reached, except one running now."""
    return state is not None and state is not StepState.RUNNING
