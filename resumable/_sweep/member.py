"""One sweep run, executed on a worker: ``execute_notebook`` with a wait for a dead worker's kernel to let go.

A Dask worker that dies mid-run leaves its kernel behind for a moment: the kernel is a child of the
worker and owns the step it is running. ipykernel's parent poller ends such an orphan within about a
second of its parent's death (``JPY_PARENT_PID``, set by jupyter_client), and a kernel on a host
that died stops renewing its lease. When the scheduler hands the run to another worker, that
worker's ``execute_notebook`` may therefore still find the run owned; it waits for the owner to
go (a live one on this host is checked by pid, one on another host by its lease) for up to
``takeover_s`` seconds, then resumes from the checkpoints. The store refuses a second owner of a
running step at every moment, so the wait decides only how soon the run resumes, never whether a
step runs twice; an effect step's completion or idempotency key is what keeps its effect single.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resumable._headless import execute_notebook
from resumable._sweep.records import SweepRun
from resumable.errors import ResumableError, RunOwnedError

OWNER_POLL_S = 0.5  # how often a worker looks again at a run another process still owns


@dataclass(frozen=True, slots=True)
class Member:
    """Everything a worker needs to execute one run; plain values, so it pickles to any worker."""

    notebook: str
    output: str
    run_id: str
    params: dict[str, Any]
    store: str
    max_restarts: int
    timeout: float | None
    kernel: str | None
    takeover_s: float


def run_member(member: Member) -> SweepRun:
    """Execute one run of a sweep headless (resuming it when it exists) and report how it ended."""
    started = time.monotonic()
    deadline = started + member.takeover_s
    while True:
        try:
            result = execute_notebook(
                member.notebook, member.output, run_id=member.run_id, params=member.params,
                max_restarts=member.max_restarts, timeout=member.timeout, kernel=member.kernel,
                store=member.store, progress=False, raise_on_error=False,
            )  # fmt: skip
        except RunOwnedError as exc:
            if time.monotonic() < deadline:
                threading.Event().wait(OWNER_POLL_S)
                continue
            return _record(member, started, "owned", error=str(exc))
        except ResumableError as exc:
            return _record(member, started, "failed", error=str(exc))
        if result.outcome == "owned" and time.monotonic() < deadline:
            threading.Event().wait(OWNER_POLL_S)  # a step of the run was still held inside the kernel's pass
            continue
        return SweepRun(
            run_id=result.run_id,
            params=member.params,
            state=result.outcome,
            steps_executed=result.steps_executed,
            steps_restored=result.steps_restored,
            duration_s=time.monotonic() - started,
            restarts=result.restarts,
            output=result.output,
            error=result.error,
        )


def _record(member: Member, started: float, state: Any, *, error: str) -> SweepRun:
    return SweepRun(
        member.run_id, member.params, state, duration_s=time.monotonic() - started,
        output=Path(member.output), error=error,
    )  # fmt: skip
