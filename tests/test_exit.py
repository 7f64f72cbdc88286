"""Leaving the interpreter after a panel was shown: exit status 0, every background thread joined first.

A daemon thread still inside DuckDB while Python finalizes aborts the process (``terminate called
after throwing an instance of ''``). The exit handler stops the panel's poll, closes every store
and joins its housekeeper before that (issue 11 §5). Each script and kernel registers, before it
imports resumable, an exit handler of its own that runs last and writes which resumable threads
are still alive then.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager
from kernel_sockets import kernel_config

from resumable._panel.poll import Poller

REPORT_THREADS = """
import atexit, json, threading
def _report(path={report!r}):
    alive = sorted(t.name for t in threading.enumerate() if t.name.startswith("resumable") and t.is_alive())
    with open(path, "w") as f:
        json.dump(alive, f)
atexit.register(_report)  # before resumable is imported: runs after resumable's own exit handler
"""

SCRIPT = """
import sys
store = sys.argv[1]
import resumable
pipe = resumable.Pipeline("p", store=store)
with pipe.run(run_id="r1") as run:
    run.step("a", lambda: 1)
shown = resumable.panel("r1", store=store, poll_s=0.005)
with pipe.run(run_id="r1") as run:
    for i in range(30):
        run.step(f"quick{i}", lambda: list(range(100)))
    run.step("last", lambda: 2)  # still pending in the group commit as the script ends
print("done", flush=True)
"""

CELLS = [
    "%load_ext resumable",
    "%durable_run shop --run-id k1",
    "%%durable_step load\nrows = list(range(1000))",
    "import resumable\nshown = resumable.panel(poll_s=0.005)\nshown",
    "%%durable_step total\ntotal = sum(rows)",
]


def _alive_at_exit(report: Path) -> list[str]:
    return json.loads(report.read_text())


@pytest.mark.timeout(900)
def test_fourteen_scripts_that_show_a_panel_exit_0(tmp_path: Path) -> None:
    """Each script shows a panel, runs quick steps and ends: status 0, no abort, no resumable thread left."""
    for n in range(14):  # was 20: the slow redraw that made exits late is tested on its own (below)
        report = tmp_path / f"threads{n}.json"
        out = subprocess.run(
            [sys.executable, "-c", REPORT_THREADS.format(report=str(report)) + SCRIPT, str(tmp_path / f"s{n}.duckdb")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert (n, out.returncode, out.stderr) == (n, 0, "")
        assert out.stdout == "done\n"
        assert _alive_at_exit(report) == []


@pytest.mark.timeout(900)
def test_five_kernels_that_show_a_panel_shut_down_with_status_0(tmp_path: Path, kernel_sockets: Path) -> None:
    """A real kernel runs steps, displays a panel and is shut down: its process exits 0 with nothing on stderr."""
    for n in range(5):
        report = tmp_path / f"threads{n}.json"
        stderr_path = tmp_path / f"kernel{n}.stderr"
        env = {**os.environ, "RESUMABLE_STORE": str(tmp_path / f"k{n}.duckdb")}
        km = KernelManager(kernel_name="python3", config=kernel_config(kernel_sockets))
        with open(stderr_path, "w") as stderr:
            km.start_kernel(env=env, cwd=str(tmp_path), stderr=stderr)
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=120)
            for code in [REPORT_THREADS.format(report=str(report)), *CELLS]:
                reply = kc.execute_interactive(code, timeout=120, output_hook=lambda msg: None)
                assert reply["content"]["status"] == "ok", (n, code, reply["content"])
        finally:
            kc.stop_channels()
            process = km.provisioner.process if km.provisioner is not None else None  # type: ignore[attr-defined]
            km.shutdown_kernel(now=False)
        assert process is not None
        assert process.wait(timeout=60) == 0, stderr_path.read_text()
        assert "terminate called" not in stderr_path.read_text()
        assert _alive_at_exit(report) == []


class _SlowPanel:
    """A panel whose redraw takes 0.6 s, as a real one can on a loaded machine (the poll thread's ``Watched``)."""

    closed = False
    dirty = True
    poll_s = None
    ticking = False

    def __init__(self) -> None:
        self.drawn = threading.Event()

    def tick(self) -> None:
        pass

    def store_if_known(self) -> None:
        return None

    def redraw_soon(self) -> None:
        self.dirty = False
        self.drawn.set()
        time.sleep(0.6)  # the redraw's own cost, not a synchronisation

    def poll_tick(self, seq: object) -> None:
        pass


def test_the_exit_handler_does_not_wait_out_the_gathering_of_changes_after_a_slow_redraw() -> None:
    """After a slow redraw the poll thread gathers changes five times as long (3 s here): the exit handler's stop
    ends that wait at once, so a script on a loaded machine neither waits for it at exit nor leaves the thread
    running past the handler's join (where it would read the store while Python finalizes)."""
    poller = Poller()
    panel = _SlowPanel()
    poller.add(panel)
    thread = poller.thread
    assert thread is not None and panel.drawn.wait(30)
    panel.dirty = True  # a change during the redraw: the next redraw waits to gather more
    poller.wake()
    deadline = time.monotonic() + 30
    while poller._wake.is_set():  # the thread took the wake-up: it is gathering changes now
        assert time.monotonic() < deadline
        time.sleep(0.001)
    started = time.monotonic()
    poller.stop(timeout_s=30)
    assert not thread.is_alive() and time.monotonic() - started < 1.5
