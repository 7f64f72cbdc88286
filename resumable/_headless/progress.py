"""What a headless pass shows and records: a progress bar, and which steps each cell executed or restored."""

from __future__ import annotations

import sys
import time
from typing import Any, Literal

from resumable._headless.names import step_of
from resumable._records import Event
from resumable._states import StepState, Transition
from resumable._store import Store
from resumable._units import human_duration


class Progress:
    """A tqdm bar over a pass's code cells, with a line per step saying executed or restored."""

    def __init__(self, enabled: bool, pipeline: str, run_id: str) -> None:
        self.enabled = enabled
        self.pipeline = pipeline
        self.run_id = run_id
        self.bar: Any = None

    def start_pass(self, number: int, total: int, max_restarts: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        desc = f"{self.pipeline} [{self.run_id}]" if number == 1 else f"pass {number}/{max_restarts + 1}"
        self.bar = tqdm(total=total, desc=desc, unit="cell", file=sys.stderr, leave=True, dynamic_ncols=True)

    def cell_done(self, executed: int, restored: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"steps: {executed} executed, {restored} restored", refresh=False)
            self.bar.update(1)

    def say(self, line: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def end_pass(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Tracker:
    """nbclient hooks: which steps each cell executed or restored, read from the store's event log.

    The newest event number is read once when the pass starts; after each code cell, one read of
    the run's newer events says what the cell did, and its newest number is the next cell's
    starting point. A ``start`` or ``retry`` event means the step executed in this pass; a
    ``%%durable_step`` cell that succeeded without any event of its step was restored (the magic
    either restores or starts the step, and starting is always logged). Holding and releasing the
    store's file while the kernel writes is the store's business.
    """

    def __init__(self, store: Store, run_id: str, progress: Progress) -> None:
        self.store = store
        self.run_id = run_id
        self.progress = progress
        self.executed: list[str] = []
        self.restored: list[str] = []
        self.cell_index: int | None = None
        self.step: str | None = None
        self.before = store.last_event_seq()
        self.started = 0.0

    def on_cell_start(self, cell: Any, cell_index: int) -> None:
        if cell.cell_type != "code" or not cell.source.strip():
            return
        self.cell_index = cell_index
        self.step = step_of(cell.source)
        self.started = time.perf_counter()

    def on_cell_executed(self, cell: Any, cell_index: int, execute_reply: Any = None) -> None:
        if cell.cell_type != "code" or not cell.source.strip():
            return
        self.classify(cell, ending="ok")

    def _new_events(self) -> list[Event]:
        events = [e for e in self.store.list_events(self.run_id) if e.seq > self.before]
        if events:
            self.before = max(e.seq for e in events)
        return events

    def classify(self, cell: Any, *, ending: Literal["ok", "failed", "kernel_died"]) -> None:
        """Record what this cell did to its steps, in the progress output and the cell's metadata."""
        events = self._new_events()
        statuses: dict[str, str] = {}
        for event in events:
            if event.transition in (Transition.START, Transition.RETRY):
                statuses[event.step] = "running"
            elif event.step in statuses and event.target == StepState.COMPLETED:
                statuses[event.step] = "executed"
            elif event.step in statuses and event.target == StepState.FAILED:
                statuses[event.step] = "failed"
        if self.step is not None and self.step not in statuses and ending == "ok":
            statuses[self.step] = "restored"
        seconds = time.perf_counter() - self.started
        unfinished = "kernel died" if ending == "kernel_died" else "failed"
        for name in list(statuses):
            if statuses[name] == "running":  # never finished: the kernel died, or the cell stopped first
                statuses[name] = unfinished
            status = statuses[name]
            if status == "executed":
                self.executed.append(name)
            elif status == "restored":
                self.restored.append(name)
            timing = f" in {human_duration(seconds)}" if status == "executed" else ""
            self.progress.say(f"  step '{name}': {status}{timing}")
        if self.step is not None and self.step not in statuses:
            statuses[self.step] = unfinished
        if statuses:
            cell.metadata["resumable"] = {"steps": statuses}
        if ending == "ok":
            self.progress.cell_done(len(self.executed), len(self.restored))
