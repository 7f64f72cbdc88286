"""How a kernel tells a headless executor what each step did, without the executor opening the store.

``resumable execute`` starts each kernel with :data:`ENV` set to a token of its pass. In such a
kernel, every step state change this process makes (the engine's listener: ``running``,
``executed``, ``failed``) and every ``%%durable_step`` cell that restored is sent to the executor as
a ``display_data`` message of :data:`MIME` on the kernel's IOPub channel, straight through the
kernel's session: not through the display publisher, so a step's recorded output never holds one,
and no capture hook can swallow it. The executor takes these messages out of the cell's outputs
(they never reach the executed notebook) and reads the store only when a report is missing or the
kernel died (then the store is the truth).

The kernel reports after the store has recorded the change (``executed`` once the completion is
committed), and IOPub delivers a cell's messages before the kernel says it is idle, so when the
executor sees a cell finish it has every report of that cell. Outside a headless kernel nothing
here does anything.
"""

from __future__ import annotations

import os
import sys
from typing import Any

ENV = "RESUMABLE_STEP_REPORTS"
MIME = "application/vnd.resumable.step-report+json"
LISTENING = "listening"  # the first report of a kernel: its reports can be relied on from now on
STATUSES = ("running", "executed", "failed", "restored")

_STATE_STATUS = {"running": "running", "completed": "executed", "failed": "failed"}


def token() -> str | None:
    """This kernel's report token, or None when no headless executor listens."""
    return os.environ.get(ENV) or None


def _session() -> tuple[Any, Any, Any] | None:
    """(session, IOPub socket, parent header) of the ipykernel this code runs in; None elsewhere."""
    if "ipykernel" not in sys.modules:
        return None
    from IPython.core.getipython import get_ipython  # IPython is there whenever ipykernel is

    shell = get_ipython()  # type: ignore[no-untyped-call]
    kernel = getattr(shell, "kernel", None)
    session = getattr(kernel, "session", None)
    socket = getattr(kernel, "iopub_socket", None)
    if session is None or socket is None:
        return None
    # The header of the request being executed: nbclient files a message under the cell it names.
    get_parent = getattr(kernel, "get_parent", None)
    parent = get_parent("shell") if get_parent is not None else None
    return session, socket, parent or {}


def send(run_id: str | None, step: str | None, status: str) -> None:
    """Send one report to the executor; never raises (a report is an optimisation, not the truth)."""
    secret = token()
    if secret is None:
        return
    try:
        found = _session()
        if found is None:
            return
        session, socket, parent = found
        content = {"data": {MIME: {"token": secret, "run": run_id, "step": step, "status": status}},
                   "metadata": {}, "transient": {}}  # fmt: skip
        session.send(socket, session.msg("display_data", content, parent=parent), ident=b"display_data")
    except Exception:  # the executor falls back to the store for a cell without reports
        return


def listening() -> None:
    """Say that this kernel reports from now on (the engine's listener is installed)."""
    send(None, None, LISTENING)


def on_step_event(event: Any) -> None:
    """Engine listener: report a step state change this process made."""
    status = _STATE_STATUS.get(str(event.state))
    if status is not None:
        send(event.run_id, event.step, status)


def restored(run_id: str, step: str) -> None:
    """A ``%%durable_step`` cell restored its step (no state changed, so the engine heard nothing)."""
    send(run_id, step, "restored")


def parse(data: dict[str, Any], expected_token: str) -> tuple[str | None, str | None, str] | None:
    """(run id, step, status) of a report carrying ``expected_token``; None for anything else."""
    report = data.get(MIME)
    if not isinstance(report, dict) or report.get("token") != expected_token:
        return None
    status = report.get("status")
    if status == LISTENING:
        return None, None, LISTENING
    run, step = report.get("run"), report.get("step")
    if status not in STATUSES or not isinstance(step, str) or not isinstance(run, str):
        return None
    return run, step, str(status)
