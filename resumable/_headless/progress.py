"""What a headless pass shows and records: a progress bar, and which steps each cell executed or restored."""

from __future__ import annotations

import sys
import time
from typing import Any, Literal

from resumable import _step_report
from resumable._headless.names import step_of
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
    """nbclient hooks: which steps each cell executed or restored.

    A kernel of ``resumable execute`` reports each step state change it makes, and each
    ``%%durable_step`` cell that restored, on its IOPub channel (``resumable._step_report``); a
    cell's reports have all arrived when nbclient says the cell finished. So a cell that ended
    normally is classified from its reports, with no store access. The store's event log is read
    instead (its events newer than the last one read, for steps no earlier cell of the pass
    settled) when the reports cannot be relied on: before the kernel said it reports (resumable
    not imported yet, or a kernel whose resumable does not report), when a step cell's own step
    sent nothing, and whenever a cell failed or the kernel died, where the store is the truth. A
    ``start`` or ``retry`` (a ``running`` report) means the step executed in this pass; a
    ``%%durable_step`` cell that succeeded and started nothing was restored (the magic either
    restores or starts the step, and starting is always logged). The store is let go of after
    each read, so the kernel never waits for this process to release the file.
    """

    def __init__(self, store: Store, run_id: str, progress: Progress, token: str) -> None:
        self.store = store
        self.run_id = run_id
        self.progress = progress
        self.token = token
        self.executed: list[str] = []
        self.restored: list[str] = []
        self.cell_index: int | None = None
        self.step: str | None = None
        self.before = 0  # the store's last event before this pass: ``begin`` reads it
        self.started = 0.0
        self.listening = False  # the kernel said it reports: a cell without reports started nothing
        self.reports: list[tuple[str, str]] = []  # (step, status) the running cell's kernel sent
        self.settled: set[str] = set()  # steps an earlier cell of this pass classified

    def begin(self) -> None:
        """Note the store's last event before this pass's kernel runs a cell; only newer ones are the pass's.

        Called while the pass's kernel is starting (it runs nothing until the first cell is sent),
        so the read costs the run no time; the file is let go of at once.
        """
        try:
            self.before = self.store.last_event_seq()
        finally:
            self.store.close()

    def on_report(self, data: dict[str, Any]) -> None:
        """A step report from the kernel (a ``display_data`` of ``_step_report.MIME``)."""
        found = _step_report.parse(data, self.token)
        if found is None:
            return
        run, step, status = found
        self.listening = True  # any report of this pass's token: the kernel's engine reports
        if status != _step_report.LISTENING and run == self.run_id and step is not None:
            self.reports.append((step, status))

    def on_cell_start(self, cell: Any, cell_index: int) -> None:
        if cell.cell_type != "code" or not cell.source.strip():
            return
        self.cell_index = cell_index
        self.step = step_of(cell.source)
        self.started = time.perf_counter()
        self.reports = []

    def on_cell_executed(self, cell: Any, cell_index: int, execute_reply: Any = None) -> None:
        if cell.cell_type != "code" or not cell.source.strip():
            return
        self.classify(cell, ending="ok")

    def _reported(self, ending: str) -> bool:
        """Whether the cell's reports say all it did: it ended normally in a kernel that reports."""
        if ending != "ok" or not self.listening:
            return False
        return self.step is None or any(step == self.step for step, _ in self.reports)

    def _new_events(self) -> list[tuple[str, str]]:
        """The store's word: (step, status) for each new event of a step no earlier cell settled."""
        try:
            found = [e for e in self.store.list_events(self.run_id) if e.seq > self.before]
        finally:
            self.store.close()  # the kernel's next transaction must not wait for this process
        if found:
            self.before = max(e.seq for e in found)
        out: list[tuple[str, str]] = []
        for event in found:
            if event.step in self.settled:
                continue
            if event.transition in (Transition.START, Transition.RETRY):
                out.append((event.step, "running"))
            elif event.target == StepState.COMPLETED:
                out.append((event.step, "executed"))
            elif event.target == StepState.FAILED:
                out.append((event.step, "failed"))
        return out

    def classify(self, cell: Any, *, ending: Literal["ok", "failed", "kernel_died"]) -> None:
        """Record what this cell did to its steps, in the progress output and the cell's metadata."""
        reported = self._reported(ending)
        statuses: dict[str, str] = {}
        for step, status in self.reports if reported else self._new_events():
            if status == "running":
                statuses[step] = "running"
            elif status in ("executed", "failed") and (reported or step in statuses):
                # A kernel reports only what it did itself; in the log, an event of a step started
                # before this cell (an earlier pass's, another process's) is not this cell's doing.
                statuses[step] = status
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
        self.settled.update(statuses)
        self.reports = []
        if statuses:
            cell.metadata["resumable"] = {"steps": statuses}
        if ending == "ok":
            self.progress.cell_done(len(self.executed), len(self.restored))
