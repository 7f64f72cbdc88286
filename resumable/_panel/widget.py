"""The status panel: an ipywidgets view of one run, with Retry, Rerun and Invalidate.

``resumable.panel()`` (or ``%durable_panel``) shows the kernel's current run: one row per step
with its state, attempts, last duration, stored output size and last error. It stays honest in
three ways:

- every row is drawn from what the store holds, re-read after each action and each change, never
  from what an action was expected to do;
- a step changing in this kernel marks the panel out of date (an engine listener) and the panel
  thread (:mod:`resumable._panel.poll`) redraws it from the store, with nothing pressed and
  without making the step wait;
- changes made by another process (a headless run, the CLI) show up through that thread's poll of
  ``last_event_seq()`` every couple of seconds, or the Refresh button. The poll opens the store
  only for that one cheap query, so the panel never keeps the file from other processes.

Retry and Rerun execute the step's stored cell source with the ``%%durable_step`` magic, exactly
as running the cell would; steps defined in Python (``@pipe.step``) have no cell to run, so those
buttons are disabled with a tooltip saying why.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import ipywidgets as widgets
from IPython.core.getipython import get_ipython

from resumable import _engine, _why
from resumable._kernel_run import notebook_run
from resumable._owner import current_owner, is_alive
from resumable._panel import attempts as _attempts
from resumable._panel import format as fmt
from resumable._panel import known as _known
from resumable._panel import poll as _panel_poll
from resumable._panel import rules
from resumable._records import Owner, RunInfo, StepStatus
from resumable._states import RunState, StepState
from resumable._store import Store, open_store
from resumable._units import is_seconds
from resumable.errors import CheckpointNotFoundError, OptionError, ResumableError
from resumable.pipeline import check_name

POLL_S = _panel_poll.POLL_S
NO_SOURCE_TIP = rules.NO_SOURCE_TIP
_POLLER = _panel_poll.POLLER
MAX_REPR_STEPS = 20  # the plain-text form lists this many steps, then a count
Fork = Callable[[str], str]  # the step name -> the new run's id (the magics layer forks the kernel's run)


class StepRow:
    """The widgets of one step: badge, facts, action buttons and the traceback toggle."""

    def __init__(self, panel: StepPanel, step: str) -> None:
        self.step = step
        self.state: StepState | None = None  # the state drawn, always a value read from the store
        self.reached = True  # False for a step known from the notebook or an earlier run, not run here yet
        self._drawn: tuple[Any, ...] | None = None
        self._status: StepStatus | None = None
        self._texts = ("", "")  # the why line and the attempts timeline last drawn
        self.badge = widgets.HTML(layout=widgets.Layout(width="8em"))
        self.info = widgets.HTML(layout=widgets.Layout(flex="1 1 24em", min_width="0"))
        self.retry = widgets.Button(description="Retry", icon="repeat", button_style="warning")
        self.rerun = widgets.Button(description="Rerun", icon="refresh")
        self.invalidate = widgets.Button(description="Invalidate", icon="undo")
        self.restore = widgets.Button(description="Restore", icon="download")
        self.fork = widgets.Button(description="Fork from here", icon="code-fork")
        self.show_traceback = widgets.ToggleButton(description="traceback", icon="chevron-down")
        self.traceback = widgets.HTML(layout=widgets.Layout(display="none"))
        for button in (self.retry, self.rerun, self.invalidate, self.restore, self.fork, self.show_traceback):
            button.layout = widgets.Layout(width="auto", min_width="6.5em", flex="0 0 auto")
        self.fork.layout.display = "none"
        self.retry.add_class("rsm-retry")
        self.rerun.add_class("rsm-rerun")
        self.invalidate.add_class("rsm-invalidate")
        self.restore.add_class("rsm-restore")
        self.fork.add_class("rsm-fork")
        self.retry.on_click(lambda _b: panel.retry(step))
        self.rerun.on_click(lambda _b: panel.rerun(step))
        self.invalidate.on_click(lambda _b: panel.invalidate(step))
        self.restore.on_click(lambda _b: panel.restore(step))
        self.fork.on_click(lambda _b: panel.fork_from(step))
        self.show_traceback.observe(self._toggle, names="value")
        # Wrapping boxes: at 1200 px a row is one line under the column headers; in a narrow panel
        # the buttons go under the facts instead of being clipped.
        self.actions = widgets.HBox(
            [self.retry, self.rerun, self.invalidate, self.restore, self.fork, self.show_traceback],
            layout=widgets.Layout(flex_flow="row wrap", flex="0 1 auto", max_width="100%"),
        )
        self.actions.add_class("rsm-actions")  # its width comes from the CSS: a column when wide, a line when narrow
        line = widgets.HBox(
            [self.badge, self.info, self.actions],
            layout=widgets.Layout(align_items="center", width="100%", flex_flow="row wrap"),
        )
        self.box = widgets.VBox([line, self.traceback], layout=widgets.Layout(width="100%"))
        self.box.add_class("rsm-row")
        self._line = line

    def _toggle(self, change: dict[str, Any]) -> None:
        self.traceback.layout.display = "" if change["new"] else "none"
        self.show_traceback.icon = "chevron-up" if change["new"] else "chevron-down"

    def draw(
        self,
        status: StepStatus,
        why_not_runnable: str | None,
        why: str = "",
        timeline: str = "",
        fork: tuple[bool, str | None] = (False, None),
        now: datetime | None = None,
    ) -> None:
        """Show ``status``; offer each button only where the transition table allows its action.

        ``fork`` is whether Fork from here is offered and why it cannot run here (None: it can).
        """
        if self._drawn == (status, why_not_runnable, why, timeline, fork):
            return  # unchanged: setting the same traits again would still cost time on every redraw
        self._drawn = (status, why_not_runnable, why, timeline, fork)
        self.reached = True
        self._status, self._texts = status, (why, timeline)
        # Buttons first, badge last: the browser applies changes in order, so whenever the badge
        # names a state, the buttons beside it already match that state.
        state = status.state
        offer = rules.offered(state)
        self.retry.description = "Run" if state is StepState.PENDING else "Retry"
        _offer(self.retry, offer.retry, why_not_runnable, f"Run step '{status.step}' again in this kernel")
        _offer(self.rerun, offer.rerun, why_not_runnable, f"Invalidate '{status.step}', then run it again")
        _offer(
            self.invalidate,
            offer.invalidate,
            None,
            f"Send '{status.step}' back to pending; it runs again when its cell runs",
        )
        _offer(
            self.restore,
            rules.restorable(status),
            why_not_runnable,
            f"Load the outputs of the last good checkpoint ({fmt.kept_from(status)}) into this kernel; "
            f"'{status.step}' stays {state.value}",
        )
        _offer(
            self.fork,
            fork[0] and rules.forkable(state),
            fork[1],
            f"Start a new run that shares the checkpoints before '{status.step}' and runs from it on",
        )
        has_tb = bool(status.traceback)
        self.show_traceback.layout.display = "" if has_tb else "none"
        if not has_tb and self.show_traceback.value:
            self.show_traceback.value = False
        self.traceback.value = fmt.traceback_block(status.traceback)
        self.info.value = fmt.step_info(status, why, timeline, now)
        wanted = f"rsm-state-{state.value}"
        if wanted not in self.box._dom_classes:  # each class change is a message to the browser
            for cls in [c for c in self.box._dom_classes if c.startswith("rsm-state-")]:
                self.box.remove_class(cls)
            self.box.add_class(wanted)
        self.badge.value = fmt.badge(state)
        self.state = state

    def draw_not_reached(self, known_from: str) -> None:
        """Show a step the run has not reached: its name, where it is known from, and no actions."""
        if self._drawn == ("not reached", known_from):
            return
        self._drawn = ("not reached", known_from)
        self.reached, self.state, self._status = False, None, None
        for button in (self.retry, self.rerun, self.invalidate, self.restore, self.fork, self.show_traceback):
            button.layout.display = "none"
        self.show_traceback.value = False
        self.traceback.value = ""
        self.info.value = fmt.not_reached_info(self.step, known_from)
        for cls in [c for c in self.box._dom_classes if c.startswith("rsm-state-")]:
            self.box.remove_class(cls)
        self.box.add_class("rsm-state-not-reached")
        self.badge.value = fmt.not_reached_badge()

    def tick(self, now: datetime) -> None:
        """Update a running step's elapsed time (no store read; only its text changes)."""
        if self._status is not None and self._status.state is StepState.RUNNING:
            self.info.value = fmt.step_info(self._status, *self._texts, now)

    def close(self) -> None:
        """Close every widget of the row."""
        for widget in (
            self.badge, self.info, self.retry, self.rerun, self.invalidate, self.restore, self.fork,
            self.show_traceback, self.traceback,
            self.actions, self._line, self.box,
        ):  # fmt: skip
            widget.close()


def _offer(button: widgets.Button, legal: bool, why_not: str | None, tip: str) -> None:
    """Hide a button whose action is illegal; disable (with the reason as tooltip) one that cannot run."""
    button.layout.display = "" if legal else "none"
    button.disabled = legal and why_not is not None
    button.tooltip = why_not if (legal and why_not) else tip


class StepPanel(widgets.VBox):  # type: ignore[misc]
    """The status panel widget; build it with :func:`panel`.

    Attributes
    ----------
    rows
        One :class:`StepRow` per step of the shown run, by step name.
    run_id
        The run shown, or None while the kernel has not joined one.
    """

    def __init__(
        self,
        run_id: str | None = None,
        *,
        store: str | os.PathLike[str] | None = None,
        poll_s: float | None = POLL_S,
        shell: Any = None,
        fork: Fork | None = None,
    ) -> None:
        self._store_arg = store
        self._fork = fork
        self._forked_to: str | None = None  # a run a fork just made: shown even before it has a step
        self._notebook_cache: tuple[Any, list[str]] = (None, [])
        self._earlier: tuple[str | None, list[list[str]]] = (None, [])
        self._follow = run_id is None  # follow the kernel's current run until the user picks one
        self.run_id: str | None = run_id
        self.poll_s = poll_s
        self.closed = False
        self.rows: dict[str, StepRow] = {}
        self._shell = shell
        self._owner = current_owner()
        self._lock = threading.RLock()
        self.dirty = False  # a redraw is due (set by listeners, done by the poll thread)
        self._seen_seq = -1
        self._running_elsewhere: set[Owner] = set()
        self._poll_failed = False
        self._was_viewed = False
        self._setting_runs = False
        self._run: RunInfo | None = None
        self._state = RunState.EMPTY  # the shown run's state, its unreached steps counted as pending

        self._header = widgets.HTML()
        self._columns = widgets.HTML(fmt.columns())
        # Shown by the CSS only once the front end marks the panel disconnected (its kernel stopped).
        self._gone = widgets.HTML(fmt.gone_notice())
        self._gone.add_class("rsm-gone-box")
        self._runs = widgets.Dropdown(
            description="run",
            style={"description_width": "initial"},
            layout=widgets.Layout(width="30em", max_width="100%", flex="0 1 auto"),
        )
        self._runs.add_class("rsm-runs")
        self._refresh_button = widgets.Button(
            description="Refresh",
            icon="refresh",
            tooltip="Re-read the store",
            layout=widgets.Layout(width="auto", flex="0 0 auto"),
        )
        self._refresh_button.add_class("rsm-refresh")
        self.downstream = widgets.Checkbox(
            value=False, description="also invalidate later steps", indent=False, layout=widgets.Layout(width="auto")
        )
        self._note = widgets.HTML()
        self.output = widgets.Output(layout=widgets.Layout(max_height="20em", overflow="auto"))
        self._rows_box = widgets.VBox()
        self._style = widgets.HTML(fmt.CSS, layout=widgets.Layout(display="none"))
        self._controls = widgets.HBox(
            [self._runs, self._refresh_button, self.downstream],
            layout=widgets.Layout(align_items="center", flex_flow="row wrap", max_width="100%"),
        )
        self._fixed = [
            self._style, self._gone, self._header, self._controls, self._note, self._columns, self._rows_box,
            self.output,
        ]  # fmt: skip
        super().__init__(self._fixed, layout=widgets.Layout(width="100%"))
        self.add_class("rsm-panel")
        # Ask front ends to count this widget's views: a panel whose output was cleared (its cell
        # ran again) stops redrawing until it is shown again, so stale panels cost the kernel nothing.
        self._view_count = 0
        self.observe(self._on_views, names="_view_count")

        self._refresh_button.on_click(lambda _b: self._act(self._refresh_all))
        self._runs.observe(self._on_pick, names="value")
        _engine.add_listener(self._on_event)
        try:
            self._refresh_all()
        except BaseException:
            self.close()
            raise
        _POLLER.add(self)

    def __repr__(self) -> str:
        # The plain-text form (a terminal, a notebook viewer without widgets) says what the rows say.
        if self._run is None:
            return "<resumable panel: no run yet>"
        shown = [f"{name} {row.state.value if row.state else fmt.NOT_REACHED}" for name, row in self.rows.items()][
            :MAX_REPR_STEPS
        ]
        steps = ", ".join(shown) + (f", ... {len(self.rows) - len(shown)} more" if len(self.rows) > len(shown) else "")
        return (
            f"<resumable panel: run '{self._run.run_id}' of pipeline '{self._run.pipeline}' ({self._state})"
            f"{': ' + steps if steps else ''}>"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        # JupyterLab draws the widget; the plain text is what a viewer without a live kernel or widget
        # support shows instead (a saved notebook elsewhere, an untrusted one): the run's states and how
        # to get a live panel, rather than ipywidgets' default of the widget's repr cut at 110 characters.
        data: dict[str, Any] = super()._repr_mimebundle_(**kwargs)
        data["text/plain"] = f"{self!r}\n{fmt.PLAIN_FALLBACK}"
        return data

    # ------------------------------------------------------------------ reading the store

    def store_if_known(self) -> Store | None:
        """The store of the shown run; None while there is nothing to show (no file is created)."""
        if self._store_arg is not None:
            return open_store(self._store_arg)
        current = notebook_run()
        if current is not None:
            return open_store(current.store_path)
        if self.run_id is not None:
            return open_store(None)
        return None

    def refresh(self) -> None:
        """Re-read the run and its steps from the store and redraw every row."""
        with self._lock:
            self.dirty = False
            self._redraw()

    def _refresh_all(self) -> None:
        """Refresh, including the list of runs (a dead owner's steps read as interrupted; nothing is written)."""
        with self._lock:
            self.dirty = False
            self._redraw(runs=True)

    def _redraw(self, *, runs: bool = False) -> None:
        if self._follow:
            current = notebook_run()
            if current is not None and current.run_id != self.run_id:
                self.run_id = current.run_id
                runs = True
        store = self.store_if_known()
        if store is None or self.run_id is None:
            self._run = None
            self._header.value = fmt.header(None, [], "No run yet: run '%durable_run NAME' or a durable step.")
            self._set_rows([])
            return
        seq = store.last_event_seq()
        run = store.get_run(self.run_id)
        if run is None and (self._follow or self.run_id == self._forked_to):
            self._run = None
            self._header.value = fmt.header(None, [], f"Run '{self.run_id}' has no steps yet.")
            self._set_rows([])
            return
        if run is None:
            raise CheckpointNotFoundError(store.location, self.run_id)
        steps = store.list_steps(self.run_id)
        self._seen_seq = seq
        self._run = run
        order, known_from = self._known_steps(store, run, steps, again=runs)
        reached = {s.step for s in steps}
        missing = sum(1 for name in order if name not in reached)
        state = _known.whole_run_state((s.state for s in steps), missing)
        self._state = state
        self._header.value = fmt.header(run, steps, not_reached=missing, state=state)
        if runs or run.run_id not in {v for _, v in self._runs.options}:
            self._set_runs(store.list_runs(run.pipeline, limit=50), run.run_id)
        else:  # keep the shown run's entry (its state) current without listing every run again
            self._set_runs([], run.run_id)
        # Steps running in another process: the poll redraws when that process dies, because a
        # dead owner's step reads as interrupted without any event being written.
        self._running_elsewhere = {
            s.owner for s in steps
            if s.state is StepState.RUNNING and s.owner is not None and s.owner.pid != self._owner.pid
        }  # fmt: skip
        events = store.list_events(self.run_id)
        whys = {name: _why.short_line(found) for name, found in _why.explain_all(events).items()}
        self._set_rows(steps, whys, _attempts.timelines(events), order, known_from)

    def _known_steps(
        self, store: Store, run: RunInfo, steps: list[StepStatus], *, again: bool
    ) -> tuple[list[str], str]:
        """Every step to list, in order (the run's and the known unreached ones), and where those are known from.

        The notebook file's step cells when the shown run is this kernel's and its notebook can be read;
        else the pipeline's latest earlier runs (read again on Refresh or when the run changes).
        """
        reached = [s.step for s in steps]
        current = notebook_run()
        if current is not None and current.run_id == run.run_id:
            path = _known.notebook_file(self._notebook_candidates())
            if path is not None:
                try:
                    stamp: Any = (path, path.stat().st_mtime_ns)
                except OSError:
                    stamp = None
                if stamp != self._notebook_cache[0]:
                    self._notebook_cache = (stamp, _known.notebook_steps(path))
                if self._notebook_cache[1]:
                    return _known.merged(reached, self._notebook_cache[1]), "the notebook"
        if again or self._earlier[0] != run.run_id:
            self._earlier = (run.run_id, _known.earlier_orders(store, run))
        return _known.merged(reached, *self._earlier[1]), "an earlier run"

    def _notebook_candidates(self) -> list[object]:
        shell = self._shell_or_none()
        namespace = getattr(shell, "user_ns", None) or {}
        return [namespace.get("__vsc_ipynb_file__"), namespace.get("__session__"), os.environ.get("JPY_SESSION_NAME")]

    def _set_runs(self, runs: list[RunInfo], chosen: str) -> None:
        """Fill the run selector (``runs`` empty: relabel the shown run only), selecting ``chosen``."""
        options = [(fmt.run_label(r), r.run_id) for r in runs] if runs else list(self._runs.options)
        if self._run is not None:
            label = (fmt.run_label(self._run, self._state), chosen)
            options = [label if value == chosen else (text, value) for text, value in options]
            if label not in options:
                options.insert(0, label)
        if tuple(options) == tuple(self._runs.options) and self._runs.value == chosen:
            return
        self._setting_runs = True
        try:
            self._runs.options = options
            self._runs.value = chosen
        finally:
            self._setting_runs = False

    def _set_rows(
        self,
        steps: list[StepStatus],
        whys: dict[str, str] | None = None,
        timelines: dict[str, list[_attempts.Attempt]] | None = None,
        order: list[str] | None = None,
        known_from: str = "",
    ) -> None:
        why_not = self._why_not_runnable()
        fork = (self._fork is not None, self._why_not_forkable())
        now = datetime.now(timezone.utc)
        by_name = {s.step: s for s in steps}
        names = order if order is not None else list(by_name)
        for name in names:
            row = self.rows.get(name)
            if row is None:
                row = self.rows[name] = StepRow(self, name)
            status = by_name.get(name)
            if status is None:
                row.draw_not_reached(known_from)
                continue
            timeline = _attempts.timeline_html((timelines or {}).get(name, []), status.state)
            row.draw(status, rules.no_source(status) or why_not, (whys or {}).get(name, ""), timeline, fork, now)
        for gone in [n for n in self.rows if n not in names]:
            self.rows.pop(gone).close()
        boxes = tuple(self.rows[n].box for n in names)
        self._columns.layout.display = "" if names else "none"
        if self._rows_box.children != boxes:
            self._rows_box.children = boxes

    def _why_not_runnable(self) -> str | None:
        """Why Retry and Rerun cannot execute a cell of the shown run here, or None when they can."""
        pipeline = self._run.pipeline if self._run else None
        return rules.why_not_runnable(self._shell_or_none(), notebook_run(), self.run_id, pipeline)

    def _why_not_forkable(self) -> str | None:
        pipeline = self._run.pipeline if self._run else None
        return rules.why_not_forkable(notebook_run(), self.run_id, pipeline)

    def _shell_or_none(self) -> Any:
        return self._shell if self._shell is not None else get_ipython()

    # ------------------------------------------------------------------ live updates

    @property
    def watched(self) -> bool:
        """False once every view of the panel is gone (a notebook front end reports them)."""
        return not self._was_viewed or bool(self._view_count)

    def _on_views(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self._was_viewed = True
            if not change["old"]:
                self.dirty = True  # shown again: catch up with what happened meanwhile
                _POLLER.wake()

    def _on_event(self, event: _engine.StepEvent) -> None:
        """Engine listener: a step changed in this process; the poll thread redraws from the store at once."""
        if self.closed or not self.watched:
            return
        if event.run_id != self.run_id and not self._follow:
            return
        self.dirty = True
        _POLLER.wake()

    def redraw_soon(self) -> None:
        """Redraw from the store (the poll thread calls this); never raises.

        When an action holds the panel, it redraws when it ends, and the panel stays dirty so the
        next tick looks again.
        """
        self.dirty = True
        if self.closed or not self._lock.acquire(blocking=False):
            return
        try:
            self.dirty = False
            self._guarded(self._redraw)
        finally:
            self._lock.release()

    @property
    def ticking(self) -> bool:
        """Whether a shown step is running, so its elapsed time needs a tick (the poll thread asks)."""
        return not self.closed and self.watched and any(r.state is StepState.RUNNING for r in self.rows.values())

    def tick(self) -> None:
        """Advance the elapsed time of running steps; no store read, never raises, skipped while busy."""
        if self.closed or not self._lock.acquire(blocking=False):
            return
        try:
            now = datetime.now(timezone.utc)
            for row in list(self.rows.values()):
                row.tick(now)
        except Exception:  # a row closed meanwhile: the next redraw draws it again
            return
        finally:
            self._lock.release()

    def poll_tick(self, seq: int | BaseException) -> None:
        """Called by the shared poll thread: redraw when the store changed; never raises."""
        if self.closed:
            return
        if isinstance(seq, BaseException):
            self._poll_failed = True
            self._note.value = fmt.note(f"The store could not be read ({seq}); retrying.", bad=True)
            return
        if self._poll_failed:
            self._poll_failed = False
            self._note.value = ""
        if not self.watched:
            return
        try:
            owner_died = any(not is_alive(owner) for owner in self._running_elsewhere)
        except Exception:  # the next tick tries again; the panel must not raise here
            owner_died = False
        if seq != self._seen_seq or owner_died:
            self.redraw_soon()

    def _guarded(self, action: Any) -> bool:
        """Run ``action``; show our errors in the panel instead of raising them into the kernel."""
        try:
            action()
        except ResumableError as exc:
            self._note.value = fmt.note(str(exc), bad=True)
            return False
        except Exception as exc:
            self._note.value = fmt.note(f"The panel could not read the store: {type(exc).__name__}: {exc}", bad=True)
            return False
        return True

    def _act(self, action: Any) -> None:
        """A button's handler: clear the last note, act, and always redraw from the store afterwards."""
        self._note.value = ""
        with self._lock:
            self._guarded(action)
            self._guarded(self._redraw)

    def _on_pick(self, change: dict[str, Any]) -> None:
        if self._setting_runs or change["new"] is None or change["new"] == self.run_id:
            return
        self._follow = False
        self.run_id = change["new"]
        self._act(self._refresh_all)

    # ------------------------------------------------------------------ actions

    def retry(self, step: str) -> None:
        """Run a failed, interrupted or pending step again in this kernel (its ``%%durable_step`` cell)."""
        self._act(lambda: self._execute(step, (StepState.FAILED, StepState.INTERRUPTED, StepState.PENDING)))

    def rerun(self, step: str) -> None:
        """Invalidate a completed step (and later steps when the checkbox is ticked), then run it again."""

        def action() -> None:
            status = self._legal(step, (StepState.COMPLETED,), "rerun")
            if status is None or not self._runnable(status):
                return
            self._require_store().invalidate(
                self._require_run(), step, self._owner, downstream=self.downstream.value, reason="panel: rerun"
            )
            self._execute(step, (StepState.PENDING,))

        self._act(action)

    def invalidate(self, step: str) -> None:
        """Send a step (and later steps when the checkbox is ticked) back to pending."""

        def action() -> None:
            if self._legal(step, (StepState.COMPLETED, StepState.FAILED, StepState.INTERRUPTED), "invalidate") is None:
                return
            changed = self._require_store().invalidate(
                self._require_run(), step, self._owner, downstream=self.downstream.value, reason="panel: invalidate"
            )
            names = ", ".join(f"'{n}'" for n in changed) or "nothing"
            self._note.value = fmt.note(f"Invalidated {names}: pending, to run again when reached.")

        self._act(action)

    def restore(self, step: str) -> None:
        """Load the last good checkpoint of a step whose later attempt failed into the kernel's namespace.

        The step's state does not change: it stays failed (or interrupted) until an attempt completes.
        """

        def action() -> None:
            states = (StepState.FAILED, StepState.INTERRUPTED, StepState.PENDING)
            status = self._legal(step, states, "restore")
            if status is None or status.kept_attempt is None or self._why_not_runnable() is not None:
                self._note.value = fmt.note(f"Step '{step}' keeps no earlier checkpoint to restore here.", bad=True)
                return
            store = self._require_store()
            refs = [r for r in store.checkpoint_refs(self._require_run(), step) if r.kind == "value"]
            self._shell_or_none().push({r.name: store.load_value(r) for r in refs}, interactive=True)
            names = ", ".join(f"'{r.name}'" for r in refs) or "no outputs"
            self._note.value = fmt.note(
                f"Restored {names} of step '{step}' from its last good checkpoint ({fmt.kept_from(status)}); "
                f"the step is still {status.state.value}."
            )

        self._act(action)

    def fork_from(self, step: str) -> None:
        """Fork the kernel's current run at ``step`` (the callable the panel was given), then show the new run."""

        def action() -> None:
            if self._fork is None:
                return
            status = self._legal(step, tuple(s for s in StepState if rules.forkable(s)), "fork from")
            if status is None:
                return
            why_not = self._why_not_forkable()
            if why_not is not None:
                self._note.value = fmt.note(f"Step '{step}' cannot be forked from here. {why_not}", bad=True)
                return
            old = self._require_run()
            try:
                new = self._fork(step)
            except ResumableError:
                raise  # its message says what was wrong and what to do; the note shows it
            except Exception as exc:
                self._note.value = fmt.note(f"Forking at step '{step}' failed: {type(exc).__name__}: {exc}", bad=True)
                return
            current = notebook_run()
            self._follow = current is not None and current.run_id == new
            self.run_id, self._forked_to = new, new
            self._note.value = fmt.note(fmt.forked(old, step, new))

        self._act(action)

    def _require_store(self) -> Store:
        store = self.store_if_known()
        assert store is not None, "only called once _legal found the step"
        return store

    def _require_run(self) -> str:
        assert self.run_id is not None, "only called once _legal found the step"
        return self.run_id

    def _legal(self, step: str, states: tuple[StepState, ...], verb: str) -> StepStatus | None:
        """The step as the store holds it now, or None (with a note) when ``verb`` no longer applies."""
        store = self.store_if_known()
        if store is None or self.run_id is None:
            self._note.value = fmt.note("The panel shows no run yet; run '%durable_run NAME' first.", bad=True)
            return None
        status = store.get_step(self.run_id, step)
        if status is None:
            raise CheckpointNotFoundError(store.location, self.run_id, step)
        if status.state not in states:
            text = f"Step '{step}' is {status.state.value} now, so there is nothing to {verb}; the panel shows it."
            self._note.value = fmt.note(text, bad=True)
            return None
        return status

    def _runnable(self, status: StepStatus) -> bool:
        """Whether the step's cell can run here; otherwise say why in the note."""
        why_not = rules.no_source(status) or self._why_not_runnable()
        if why_not is not None:
            self._note.value = fmt.note(f"Step '{status.step}' cannot be run from the panel. {why_not}", bad=True)
        return why_not is None

    def _execute(self, step: str, states: tuple[StepState, ...]) -> None:
        """Run the step's stored cell through ``%%durable_step``, exactly as running the cell would."""
        status = self._legal(step, states, "run")
        if status is None or not self._runnable(status):
            return
        shell = self._shell_or_none()
        self.output.clear_output()
        with self.output:
            try:
                shell.run_cell_magic("durable_step", status.options["magic_line"], status.source)
            except KeyboardInterrupt:
                self._note.value = fmt.note(f"Step '{step}' was interrupted.", bad=True)
                return
            except Exception as exc:
                shell.showtraceback()
                self._note.value = fmt.note(f"Step '{step}' failed again: {type(exc).__name__}: {exc}", bad=True)
                return
        after = self._require_store().get_step(self._require_run(), step)
        state = after.state if after else "gone"
        self._note.value = fmt.note(f"Ran step '{step}': {state}.", bad=state is not StepState.COMPLETED)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the panel: stop listening and polling, then close every widget it made."""
        if self.closed:
            return
        self.closed = True
        _engine.remove_listener(self._on_event)
        _POLLER.remove(self)
        with self._lock:
            for row in self.rows.values():
                row.close()
            self.rows.clear()
            for child in (*self._fixed, *self._controls.children):
                child.close()
        super().close()


def panel(
    run_id: str | None = None,
    *,
    store: str | os.PathLike[str] | None = None,
    poll_s: float | None = POLL_S,
    shell: Any = None,
    fork: Fork | None = None,
) -> StepPanel:
    """The status panel of a run, as an ipywidgets widget.

    Parameters
    ----------
    run_id
        The run to show; default the kernel's current run (the one ``%durable_run`` joined),
        followed as it changes.
    store
        The store file; default the kernel's current run's store, else ``RESUMABLE_STORE`` or
        ``.resumable/store.duckdb``.
    poll_s
        Seconds between checks for changes made by other processes; None turns the poll off
        (the Refresh button still works).
    shell
        The IPython shell that Retry and Rerun run cells in; default the running one.
    fork
        Called with a step's name by each row's *Fork from here* button; it forks the kernel's
        current run from that step and returns the new run's id, which the panel then shows.
        Without it the button is not shown (``%durable_panel`` passes the magics' fork).

    Returns
    -------
    StepPanel
        Display it (it is the value of the cell) to see it.

    Raises
    ------
    CheckpointNotFoundError
        When ``run_id`` is not in the store.
    StepDefinitionError
        When ``run_id`` is not a valid run name.
    OptionError
        When ``poll_s`` is not a finite number of seconds above 0, or None.

    Examples
    --------
    >>> resumable.panel()              # the kernel's run
    >>> resumable.panel("order-42")    # an earlier run
    """
    if run_id is not None:
        check_name("run", run_id)
    if poll_s is not None and not is_seconds(poll_s, zero_ok=False):
        raise OptionError("poll_s", poll_s, "give a finite number of seconds above 0, or None for no polling")
    return StepPanel(run_id, store=store, poll_s=poll_s, shell=shell, fork=fork)
