"""What every store of this process needs from the process: letting go of files before a fork and at exit.

DuckDB is not fork-safe: a child that inherits an open database crashes when it opens the file
again. So before a fork the parent writes what is pending and lets go of every file (a 15 ms
reconnect later), and the child starts with fresh locks and nothing pending of its parent's; a
store lock the parent still holds (another thread mid-transaction) stays the parent's.
Subprocesses started by ``subprocess`` do not run these hooks.
"""

from __future__ import annotations

import atexit
import os
import weakref
from typing import Protocol

from resumable._store import filelock


class ProcessBound(Protocol):
    """A store that holds files or threads of this process."""

    def close(self) -> None:
        """Write what is pending and let go of the file."""

    def after_fork_in_child(self) -> None:
        """Forget, in a forked child, what belongs to the parent (never closing it here)."""


_OPEN: weakref.WeakSet[ProcessBound] = weakref.WeakSet()


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


def _after_fork_in_child() -> None:
    filelock.forget_inherited()
    for store in list(_OPEN):
        store.after_fork_in_child()


atexit.register(close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=close_all, after_in_child=_after_fork_in_child)
