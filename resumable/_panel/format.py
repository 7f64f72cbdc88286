"""HTML for the status panel: pure functions from records to escaped markup, no widgets.

Kept apart from :mod:`resumable._panel.widget` so the widget module holds behaviour only and the markup
can be read (and tested) as plain strings. Colours: text uses JupyterLab's ``--jp-*`` variables,
so it follows the light and dark themes; each state badge carries its own background with white
text at a contrast of at least 4.5:1, which reads the same on either theme.
"""

from __future__ import annotations

import html
from typing import Any

from resumable._records import RunInfo, StepStatus
from resumable._states import RunState, StepState
from resumable._units import UNKNOWN, human_time
from resumable._units import human_duration as duration
from resumable._units import human_size as size

# One background per state; white text on each is above WCAG AA (4.5:1). A run's states are a
# step's plus "empty"; the enums are str-valued, so either kind of state finds its colour.
BADGE_COLOURS: dict[StepState | RunState, str] = {
    StepState.PENDING: "#6e7781",
    StepState.RUNNING: "#0969da",
    StepState.COMPLETED: "#1a7f37",
    StepState.FAILED: "#cf222e",
    StepState.INTERRUPTED: "#9a6700",
    RunState.EMPTY: "#6e7781",
}

CSS = """
<style>
.rsm-panel { color: var(--jp-ui-font-color1); font-family: var(--jp-ui-font-family); }
.rsm-panel .rsm-badge { display: inline-block; min-width: 6.5em; text-align: center; padding: 1px 8px;
  border-radius: 10px; font-weight: 600; color: #ffffff; font-size: var(--jp-ui-font-size1, 13px); }
.rsm-panel .rsm-head { font-size: var(--jp-ui-font-size2, 14px); line-height: 1.6; }
.rsm-panel .rsm-head b { color: var(--jp-ui-font-color0); }
.rsm-panel .rsm-muted { color: var(--jp-ui-font-color2); }
.rsm-panel .rsm-info { display: flex; gap: 12px; align-items: baseline; white-space: nowrap; }
.rsm-panel .rsm-facts { line-height: 1.5; }
.rsm-panel .rsm-name { font-weight: 600; min-width: 9em; color: var(--jp-ui-font-color0); }
.rsm-panel .rsm-num { min-width: 6.5em; color: var(--jp-ui-font-color1); }
.rsm-panel .rsm-error { color: var(--jp-error-color1, #cf222e); white-space: normal; overflow-wrap: anywhere;
  font-family: var(--jp-code-font-family); font-size: 12px; line-height: 1.4; }
.rsm-panel pre.rsm-tb { background: var(--jp-layout-color2); color: var(--jp-content-font-color1);
  border: 1px solid var(--jp-border-color1); padding: 6px 8px; margin: 2px 0 6px 0; max-height: 24em;
  overflow: auto; white-space: pre-wrap; font-family: var(--jp-code-font-family); font-size: 12px; }
.rsm-panel .rsm-why { white-space: normal; overflow-wrap: anywhere; font-size: 12px; line-height: 1.4; }
.rsm-panel .rsm-note { color: var(--jp-ui-font-color1); }
.rsm-panel .rsm-note.rsm-bad { color: var(--jp-error-color1, #cf222e); }
</style>
"""

MAX_ERROR_CHARS = 160
MAX_PARAMS_CHARS = 200


def badge(state: StepState | RunState) -> str:
    """A coloured pill naming the state; the state's name is its text so it never relies on colour."""
    colour = BADGE_COLOURS.get(state, "#6e7781")
    name = html.escape(state.value)
    return f'<span class="rsm-badge rsm-{name}" data-state="{name}" style="background:{colour}">{name}</span>'


def attempts(count: int) -> str:
    """``1 attempt``, ``3 attempts``."""
    return f"{count} attempt" if count == 1 else f"{count} attempts"


def executions(count: int) -> str:
    """``1 execution``, ``3 executions``: how many times the step executed (each edit, stale re-run... begins one)."""
    return f"{count} execution" if count == 1 else f"{count} executions"


def kept_from(status: StepStatus) -> str:
    """Which earlier execution wrote the checkpoint a not-completed step keeps: ``execution 1``."""
    return f"execution {status.kept_execution or 1}"


def step_info(status: StepStatus, why: str = "") -> str:
    """The row's text: name, attempts, executions, duration, stored size, the error's first line, and ``why``.

    ``why`` is the step's line from ``resumable why`` (without the diff): why it last executed.
    """
    stored = size(status.output_bytes) if status.state is StepState.COMPLETED else UNKNOWN
    error = status.error_line or ""
    if len(error) > MAX_ERROR_CHARS:
        error = error[: MAX_ERROR_CHARS - 1] + "\u2026"
    cells = [
        f'<span class="rsm-name">{html.escape(status.step)}</span>',
        f'<span class="rsm-num" title="attempts of its current execution (the retry limit counts these)">'
        f"{attempts(status.attempts)}</span>",
        f'<span class="rsm-num" title="times the step executed (first run, edits, stale re-runs...)">'
        f"{executions(status.executions)}</span>",
        f'<span class="rsm-num" title="last duration">{duration(status.duration_s)}</span>',
        f'<span class="rsm-num" title="stored output size">{stored}</span>',
    ]
    facts = '<div class="rsm-info">' + "".join(cells) + "</div>"
    if error:  # on its own line, so a long message wraps instead of squeezing the numbers
        title = html.escape(status.error_line or "", quote=True)
        facts += f'<div class="rsm-error" title="{title}">{html.escape(error)}</div>'
    if why:
        facts += f'<div class="rsm-why rsm-muted">{html.escape(why)}</div>'
    return f'<div class="rsm-facts">{facts}</div>'


def traceback_block(text: str | None) -> str:
    """The whole stored traceback, preformatted and scrollable."""
    if not text:
        return ""
    return f'<pre class="rsm-tb">{html.escape(text)}</pre>'


def _params(params: dict[str, Any]) -> str:
    if not params:
        return "none"
    text = ", ".join(f"{k}={v!r}" for k, v in sorted(params.items()))  # as `resumable show` prints them
    if len(text) > MAX_PARAMS_CHARS:
        text = text[: MAX_PARAMS_CHARS - 1] + "\u2026"
    return html.escape(text)


def header(run: RunInfo | None, steps: list[StepStatus], hint: str = "") -> str:
    """Pipeline, run id, parameters and overall state; ``hint`` explains an empty panel."""
    if run is None:
        return f'<div class="rsm-head"><span class="rsm-muted">{html.escape(hint)}</span></div>'
    counts: dict[StepState, int] = {}
    for status in steps:
        counts[status.state] = counts.get(status.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no steps yet"
    return (
        '<div class="rsm-head">'
        f"pipeline <b>{html.escape(run.pipeline)}</b> &middot; run <b>{html.escape(run.run_id)}</b> "
        f"&middot; {badge(run.state)}<br>"
        f'<span class="rsm-muted">parameters: {_params(run.params)} &middot; '
        f"{len(steps)} step{'' if len(steps) == 1 else 's'}: {html.escape(summary)}</span>"
        "</div>"
    )


def run_label(run: RunInfo) -> str:
    """A dropdown entry: ``order-42 · failed · 2026-11-25 10:02:11``."""
    return f"{run.run_id} \u00b7 {run.state} \u00b7 {human_time(run.created_at)}".rstrip(" \u00b7")


def note(text: str, *, bad: bool = False) -> str:
    """The status line under the controls: what the last action did, or why it did nothing."""
    if not text:
        return ""
    cls = "rsm-note rsm-bad" if bad else "rsm-note"
    return f'<span class="{cls}">{html.escape(text)}</span>'
