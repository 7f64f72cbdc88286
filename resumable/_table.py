"""The step table of a run, as ``%durable_status`` prints it."""

from __future__ import annotations

from pathlib import Path

from resumable._kernel_run import NotebookRun
from resumable._records import StepStatus
from resumable._units import human_duration, human_size


def _shown_path(path: str) -> str:
    """A store path as the user gave it: relative to the working folder when inside it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def status_table(run: NotebookRun, steps: list[StepStatus]) -> str:
    """``%durable_status`` as text: one row per step, in the order the steps first ran."""
    head = f"run '{run.run_id}' of pipeline '{run.pipeline}' ({len(steps)} steps) in {_shown_path(run.store_path)}"
    if not steps:
        return head + "\nno steps yet"
    rows = [("#", "step", "state", "attempts", "duration", "outputs", "last error")]
    for i, s in enumerate(steps, 1):
        duration = human_duration(s.duration_s) if s.duration_s is not None else ""
        error = (s.error_line or "")[:60] if s.state.value != "completed" else ""
        rows.append((str(i), s.step, s.state.value, str(s.attempts), duration, human_size(s.output_bytes), error))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows]
    return "\n".join([head, *(line.rstrip() for line in lines)])
