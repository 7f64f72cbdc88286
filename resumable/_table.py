"""The step table of a run: ``%durable_status`` and ``resumable show`` print this one table.

Eight columns with headers, drawn by rich. The CLI prints it to its console; the magics print its
plain-text rendering (:func:`as_text`), which reads the same in a terminal, a notebook and a log.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich.console import Console, RenderableType
from rich.table import Table

from resumable._records import StepStatus
from resumable._units import human_duration, human_size

COLUMNS = ("#", "step", "state", "attempts", "executions", "duration", "size", "last error")
TEXT_WIDTH = 120  # a notebook's output area; rich would assume 80 columns off a terminal


def step_table(steps: Sequence[StepStatus]) -> Table:
    """One row per step, in the order the steps first ran."""
    table = Table(*COLUMNS)
    table.columns[1].no_wrap = True  # step names are copied into the next command: never wrapped
    for row in step_rows(steps):
        table.add_row(*row)
    return table


def step_rows(steps: Sequence[StepStatus]) -> list[tuple[str, ...]]:
    """The cells of :func:`step_table` as text (``resumable show`` prints them tab-separated into a pipe)."""
    return [
        (str(i), s.step, state_text(s), str(s.attempts), str(s.executions), human_duration(s.duration_s),
         human_size(s.output_bytes), s.error_line or "")
        for i, s in enumerate(steps, 1)
    ]  # fmt: skip


def state_text(step: StepStatus) -> str:
    """``completed``; an effect step says so, with its key generation once a rerun made a new one.

    A step whose latest attempt did not complete names the earlier execution whose checkpoint it keeps.
    """
    text = step.state.value
    if step.effect:
        text += " (effect" + (f", key {step.key_generation})" if step.key_generation > 1 else ")")
    if step.kept_execution is not None:
        text += f" (last good checkpoint from execution {step.kept_execution} kept)"
    return text


def as_text(renderable: RenderableType, width: int = TEXT_WIDTH) -> str:
    """Plain text, without colour or terminal codes, whatever the output is attached to."""
    console = Console(
        file=io.StringIO(), width=width, color_system=None, force_terminal=False, force_jupyter=False, highlight=False
    )
    console.print(renderable)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return "\n".join(line.rstrip() for line in out.rstrip("\n").splitlines())
