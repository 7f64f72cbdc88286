"""HTML for the status panel: pure functions from records to escaped markup, no widgets.

Kept apart from :mod:`resumable._panel.widget` so the widget module holds behaviour only and the markup
can be read (and tested) as plain strings. Colours: text uses JupyterLab's ``--jp-*`` variables,
so it follows the light and dark themes; each state badge carries its own background with white
text at a contrast of at least 4.5:1, which reads the same on either theme.
"""

from __future__ import annotations

import html
from datetime import datetime
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
.rsm-panel { color: var(--jp-ui-font-color1); font-family: var(--jp-ui-font-family); container-type: inline-size; }
.rsm-panel .rsm-badge { display: inline-block; min-width: 6.5em; text-align: center; padding: 1px 8px;
  border-radius: 10px; font-weight: 600; color: #ffffff; font-size: var(--jp-ui-font-size1, 13px); }
.rsm-panel .rsm-badge.rsm-not-reached { background: transparent; color: var(--jp-ui-font-color1);
  border: 1px dashed var(--jp-ui-font-color2); padding: 0 7px; }
.rsm-panel .rsm-head { font-size: var(--jp-ui-font-size2, 14px); line-height: 1.6; overflow-wrap: anywhere; }
.rsm-panel .rsm-head b { color: var(--jp-ui-font-color0); }
.rsm-panel .rsm-muted { color: var(--jp-ui-font-color2); }
.rsm-panel .rsm-info { display: flex; flex-wrap: wrap; column-gap: 8px; align-items: baseline; min-width: 0; }
.rsm-panel .rsm-facts { line-height: 1.5; min-width: 0; font-size: var(--jp-ui-font-size1, 13px); }
.rsm-panel .rsm-name { font-weight: 600; width: 8em; overflow-wrap: anywhere; color: var(--jp-ui-font-color0); }
.rsm-panel .rsm-num { width: 4.8em; color: var(--jp-ui-font-color1); white-space: nowrap; }
.rsm-panel .rsm-num.rsm-attempts { width: 5.6em; }
.rsm-panel .rsm-num.rsm-time { width: auto; min-width: 5.6em; }
.rsm-panel .rsm-outs { flex: 1 1 4em; min-width: 4em; color: var(--jp-ui-font-color1); overflow-wrap: anywhere; }
.rsm-panel .rsm-cols { display: flex; column-gap: 4px; font-size: var(--jp-ui-font-size1, 13px); font-weight: 600;
  color: var(--jp-ui-font-color2); border-bottom: 1px solid var(--jp-border-color2); padding: 2px 2px;
  overflow: hidden; }
.rsm-panel .rsm-cols .rsm-col-state { flex: 0 0 8em; }
.rsm-panel .rsm-cols .rsm-info { flex: 1 1 auto; overflow: hidden; flex-wrap: nowrap; }
.rsm-panel .rsm-cols .rsm-col-actions { flex: 0 0 auto; width: 16em; }
.rsm-panel .rsm-actions { width: 16em; justify-content: flex-start; }
.rsm-panel .rsm-error { color: var(--jp-error-color1, #cf222e); white-space: normal; overflow-wrap: anywhere;
  font-family: var(--jp-code-font-family); font-size: 12px; line-height: 1.4; }
.rsm-panel pre.rsm-tb { background: var(--jp-layout-color2); color: var(--jp-content-font-color1);
  border: 1px solid var(--jp-border-color1); padding: 6px 8px; margin: 2px 0 6px 0; max-height: 24em;
  overflow: auto; white-space: pre-wrap; font-family: var(--jp-code-font-family); font-size: 12px; }
.rsm-panel .rsm-why, .rsm-panel .rsm-timeline { white-space: normal; overflow-wrap: anywhere; font-size: 12px;
  line-height: 1.4; }
.rsm-panel .rsm-note { color: var(--jp-ui-font-color1); overflow-wrap: anywhere; }
.rsm-panel .rsm-note.rsm-bad { color: var(--jp-error-color1, #cf222e); }
.rsm-panel .rsm-row { border-bottom: 1px solid var(--jp-border-color3, transparent); }
/* Narrow (a side panel, a 600 px window): no column headers; each number says what it is. */
@container (max-width: 760px) {
  .rsm-panel .rsm-cols { display: none; }
  .rsm-panel .rsm-num, .rsm-panel .rsm-num.rsm-time, .rsm-panel .rsm-outs { width: auto; flex: 0 1 auto;
    min-width: 0; }
  .rsm-panel .rsm-name { width: 100%; }
  .rsm-panel .rsm-actions { width: auto; }
  .rsm-panel .rsm-info [data-label]::before { content: attr(data-label) " "; color: var(--jp-ui-font-color2); }
}
/* The kernel that served this panel stopped (a restart): say so instead of showing dead controls. */
.rsm-panel .rsm-gone { display: none; }
.rsm-panel.jupyter-widgets-disconnected > * { display: none !important; }
.rsm-panel.jupyter-widgets-disconnected > .rsm-gone-box { display: block !important; }
.rsm-panel.jupyter-widgets-disconnected .rsm-gone { display: block; padding: 6px 8px;
  border: 1px solid var(--jp-border-color1); background: var(--jp-layout-color2); color: var(--jp-ui-font-color1); }
.rsm-panel.jupyter-widgets-disconnected::before, .rsm-panel .jupyter-widgets-disconnected::before {
  content: none !important; display: none !important; }
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


def kept_from(status: StepStatus) -> str:
    """Which earlier execution wrote the checkpoint a not-completed step keeps: ``execution 1``."""
    return f"execution {status.kept_execution or 1}"


NOT_REACHED = "not reached"
MAX_OUTPUT_NAMES = 6
COLUMNS = ("step", "attempts", "time", "stored", "outputs")
GONE = "This panel belonged to a kernel that has stopped. Run %durable_panel to show a live one."
PLAIN_FALLBACK = (
    "(This text stands in for the live panel, which needs its kernel running and a front end that shows "
    "widgets. If its kernel has stopped, run %durable_panel to show a live one.)"
)


def forked(old: str, step: str, new: str) -> str:
    """The note after Fork from here."""
    return (
        f"Forked run '{old}' at step '{step}' as '{new}': it shares the checkpoints before '{step}'. "
        f"Run the cells from '{step}' on to continue it; the panel now shows '{new}'."
    )


def not_reached_badge() -> str:
    """The badge of a step known from the notebook or an earlier run that this run has not reached."""
    return f'<span class="rsm-badge rsm-not-reached" data-state="not-reached">{NOT_REACHED}</span>'


def columns() -> str:
    """The column headers above the rows (hidden when the panel is narrow; each number says what it is)."""
    kinds = {
        "step": "rsm-name",
        "attempts": "rsm-num rsm-attempts",
        "time": "rsm-num rsm-time",
        "outputs": "rsm-outs",
    }
    cells = "".join(f'<span class="{kinds.get(c, "rsm-num")}">{c}</span>' for c in COLUMNS)
    return (
        '<div class="rsm-cols"><span class="rsm-col-state">state</span>'
        f'<span class="rsm-info">{cells}</span>'
        '<span class="rsm-col-actions">actions</span></div>'
    )


def elapsed(status: StepStatus, now: datetime | None) -> str:
    """``running 12 s`` for a running step (whole seconds, so it changes once a second), else its last duration."""
    if status.state is StepState.RUNNING and status.started_at is not None and now is not None:
        seconds = max(0, int((now - status.started_at).total_seconds()))
        minutes, secs = divmod(seconds, 60)
        text = f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
        return f"running {text}"
    return duration(status.duration_s)


def outputs(names: tuple[str, ...]) -> str:
    """``total, label`` (the first few, then a count); an em dash for none."""
    if not names:
        return UNKNOWN
    shown = ", ".join(names[:MAX_OUTPUT_NAMES])
    return shown + (f" +{len(names) - MAX_OUTPUT_NAMES} more" if len(names) > MAX_OUTPUT_NAMES else "")


def step_info(status: StepStatus, why: str = "", timeline: str = "", now: datetime | None = None) -> str:
    """The row's text: name, attempts, time, stored size, outputs; then the error, ``why``, the timeline.

    ``why`` is the step's line from ``resumable why`` (without the diff): why it last executed.
    ``timeline`` is the attempts line (:func:`resumable._panel.attempts.timeline_html`). ``now``
    makes a running step show its elapsed time.
    """
    stored = size(status.output_bytes) if status.state is StepState.COMPLETED else UNKNOWN
    error = status.error_line or ""
    if len(error) > MAX_ERROR_CHARS:
        error = error[: MAX_ERROR_CHARS - 1] + "\u2026"
    cells = [
        f'<span class="rsm-name">{html.escape(status.step)}</span>',
        f'<span class="rsm-num rsm-attempts" title="attempts of its current execution (the retry limit counts these)">'
        f"{attempts(status.attempts)}</span>",
        f'<span class="rsm-num rsm-time" title="elapsed, or the last attempt\'s duration" data-label="time">'
        f"{html.escape(elapsed(status, now))}</span>",
        f'<span class="rsm-num" title="stored output size" data-label="stored">{stored}</span>',
        f'<span class="rsm-outs" title="outputs" data-label="outputs:">{html.escape(outputs(status.outputs))}</span>',
    ]
    facts = '<div class="rsm-info">' + "".join(cells) + "</div>"
    if error:  # on its own line, so a long message wraps instead of squeezing the numbers
        title = html.escape(status.error_line or "", quote=True)
        facts += f'<div class="rsm-error" title="{title}">{html.escape(error)}</div>'
    if why:
        facts += f'<div class="rsm-why rsm-muted">{html.escape(why)}</div>'
    facts += timeline
    return f'<div class="rsm-facts">{facts}</div>'


def not_reached_info(step: str, source: str) -> str:
    """The row of a step this run has not reached: its name and where it is known from."""
    cells = (
        f'<span class="rsm-name">{html.escape(step)}</span>'
        f'<span class="rsm-outs rsm-muted">not run in this run yet (known from {html.escape(source)})</span>'
    )
    return f'<div class="rsm-facts"><div class="rsm-info">{cells}</div></div>'


def gone_notice() -> str:
    """Shown in place of the panel once the kernel that served it has stopped (CSS shows it then)."""
    return f'<div class="rsm-gone">{html.escape(GONE)}</div>'


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


def header(
    run: RunInfo | None,
    steps: list[StepStatus],
    hint: str = "",
    *,
    not_reached: int = 0,
    state: RunState | None = None,
) -> str:
    """Pipeline, run id, parameters and overall state; ``hint`` explains an empty panel.

    ``not_reached`` steps are known from the notebook or earlier runs but have not run in this one;
    they are counted, and ``state`` (the run's state with them as pending) is the badge.
    """
    if run is None:
        return f'<div class="rsm-head"><span class="rsm-muted">{html.escape(hint)}</span></div>'
    counts: dict[str, int] = {}
    for status in steps:
        counts[status.state.value] = counts.get(status.state.value, 0) + 1
    if not_reached:
        counts[NOT_REACHED] = not_reached
    summary = ", ".join(f"{n} {name}" for name, n in counts.items()) or "no steps yet"
    total = len(steps) + not_reached
    return (
        '<div class="rsm-head">'
        f"pipeline <b>{html.escape(run.pipeline)}</b> &middot; run <b>{html.escape(run.run_id)}</b> "
        f"&middot; {badge(state or run.state)}<br>"
        f'<span class="rsm-muted">parameters: {_params(run.params)} &middot; '
        f"{total} step{'' if total == 1 else 's'}: {html.escape(summary)}</span>"
        "</div>"
    )


def run_label(run: RunInfo, state: RunState | None = None) -> str:
    """A dropdown entry: ``order-42 · failed · 2026-11-25 10:02:11`` (``state``: the panel's whole-run state)."""
    return f"{run.run_id} \u00b7 {state or run.state} \u00b7 {human_time(run.created_at)}".rstrip(" \u00b7")


def note(text: str, *, bad: bool = False) -> str:
    """The status line under the controls: what the last action did, or why it did nothing."""
    if not text:
        return ""
    cls = "rsm-note rsm-bad" if bad else "rsm-note"
    return f'<span class="{cls}">{html.escape(text)}</span>'
