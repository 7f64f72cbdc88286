"""What every store of this process needs from the process: letting go of files before a fork and at exit.

DuckDB is not fork-safe: a child that inherits an open database crashes when it opens the file
again. So before a fork the parent writes what is pending and lets go of every file (a 15 ms
reconnect later), and the child starts with fresh locks and nothing pending of its parent's; a
store lock the parent still holds (another thread mid-transaction) stays the parent's.
Subprocesses started by ``subprocess`` do not run these hooks.

At exit, every background thread that may call into DuckDB is stopped and joined *before* Python
finalizes: a daemon thread still inside DuckDB while the interpreter tears down aborts the process
(``terminate called after throwing an instance of ''``). Threads above the store (the panel's
poll) register their stop with :func:`stop_at_exit`; they are stopped first, then every store
writes what is pending, releases its file and joins its housekeeper, then the checkpoint hashers.
"""

from __future__ import annotations

import atexit
import os
import weakref
from collections.abc import Callable
from typing import Protocol

from resumable import _codec
from resumable._store import filelock


class ProcessBound(Protocol):
    """A store that holds files or threads of this process."""

    def close(self) -> None:
        """Write what is pending and let go of the file."""

    def after_fork_in_child(self) -> None:
        """Forget, in a forked child, what belongs to the parent (never closing it here)."""

    def shutdown(self) -> None:
        """At exit: write what is pending, let go of the file and join the store's threads."""


_OPEN: weakref.WeakSet[ProcessBound] = weakref.WeakSet()
_STOPS: list[Callable[[], None]] = []


def track(store: ProcessBound) -> None:
    """Close ``store`` before every fork and at exit (for as long as it exists)."""
    _OPEN.add(store)


def close_all() -> None:
    """Write what is pending and release every store's file (before a fork, at exit, or for a test)."""
    for store in list(_OPEN):
        try:
            store.close()
        except Exception:  # at exit, one broken store must not keep the others from closing
            pass


def stop_at_exit(stop: Callable[[], None]) -> None:
    """Call ``stop`` at exit (or kernel shutdown) before any store closes: it must stop and join its thread."""
    _STOPS.append(stop)


def shutdown() -> None:
    """Stop every background thread, then close every store and join its housekeeper (at exit)."""
    for stop in reversed(_STOPS):
        try:
            stop()
        except Exception:  # at exit, one failing stop must not keep the others from running
            pass
    for store in list(_OPEN):
        try:
            store.shutdown()
        except Exception:
            pass
    _codec.shutdown()


def _after_fork_in_child() -> None:
    filelock.forget_inherited()
    for store in list(_OPEN):
        store.after_fork_in_child()


atexit.register(shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=close_all, after_in_child=_after_fork_in_child)
