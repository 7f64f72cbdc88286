"""Kill this process at its Nth store write point: put this folder on PYTHONPATH of a child process.

A *write point* is, in resumable's own code, a line that runs a DuckDB statement (``.execute(``; DuckDB's
methods are invisible to a profile hook, so a line tracer finds them and kills *before* the line) or
the return of an OS call that changes a file (``write``, ``fsync``, ``replace``, ``rename``, ``unlink``,
``truncate``: killed right *after* it). The hooks count in every thread and SIGKILL the process at the
Nth point, so each trial of the harness (``tests/killpoints.py``) dies at a different point of one run.

Environment:
- ``KILLPOINT_AT``: N, the point to die after (unset: only count).
- ``KILLPOINT_ONCE``: a file created just before the kill; when it exists the hook does nothing, so
  the resumed process (or a restarted kernel) runs to the end.
- ``KILLPOINT_COUNT``: a file that holds the number of points seen so far (the probe run; a kernel
  is not always let to run its exit handlers, so it is rewritten at each point).
- ``KILLPOINT_KERNEL_ONLY``: set to count only in Jupyter kernels (not in the executor that starts them).
"""

from __future__ import annotations

import linecache
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

_STATEMENT = (".execute(", ".executemany(")
_NAMES = frozenset({"execute", "executemany", "write", "fsync", "fdatasync", "replace", "rename", "unlink", "truncate"})
# This folder is tests/killpoint_hook of the project whose package the child imports.
_PACKAGE = str(Path(__file__).resolve().parents[2] / "resumable") + os.sep


def _active() -> bool:
    if "KILLPOINT_AT" not in os.environ and "KILLPOINT_COUNT" not in os.environ:
        return False
    if os.environ.get("KILLPOINT_KERNEL_ONLY") and "ipykernel" not in " ".join(sys.orig_argv):
        return False
    once = os.environ.get("KILLPOINT_ONCE")
    return not (once and Path(once).exists())


def _install() -> None:
    at = int(os.environ.get("KILLPOINT_AT", "0"))
    once = os.environ.get("KILLPOINT_ONCE")
    count_file = os.environ.get("KILLPOINT_COUNT")
    lock = threading.Lock()
    seen = [0]

    statements: dict[tuple[str, int], bool] = {}

    def point() -> None:
        with lock:
            seen[0] += 1
            hit = seen[0] == at
            if count_file:
                Path(count_file).write_text(str(seen[0]))
        if hit:
            if once:
                Path(once).touch()
            os.kill(os.getpid(), signal.SIGKILL)

    def ours(frame: FrameType) -> bool:
        where = frame.f_code.co_filename
        return where.startswith(_PACKAGE)

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_return" and getattr(arg, "__name__", "") in _NAMES and ours(frame):
            point()

    def lines(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            key = (frame.f_code.co_filename, frame.f_lineno)
            is_statement = statements.get(key)
            if is_statement is None:
                text = linecache.getline(*key)
                is_statement = statements[key] = any(s in text for s in _STATEMENT)
            if is_statement:
                point()
        return lines

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        return lines if event == "call" and ours(frame) else None

    threading.setprofile(hook)  # type: ignore[arg-type]
    sys.setprofile(hook)  # type: ignore[arg-type]
    threading.settrace(calls)
    sys.settrace(calls)


if _active():
    _install()
