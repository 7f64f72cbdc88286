"""One advisory lock per store file, held by a process from before DuckDB opens the file until after it closes.

DuckDB reads a database file's header before it takes its own file lock. A process opening the
file while another process writes it (a commit, or the checkpoint DuckDB runs on close) can read
a torn header: it then fails with ``Could not read enough bytes`` or a checksum error, and the
other process's commit was seen lost. So every resumable process takes an exclusive ``flock`` on a
sibling file (``store.duckdb.lock``, created 0600) before ``duckdb.connect`` and releases it only
after ``close``: no two resumable processes ever have the file open at once. A process that has
kernel steps not written to the store yet (a full disk) keeps the lock, with the file closed, until
they are written (``connection.py``), and writes why beside its pid, for the waiters' error.

A process waiting for the lock says so by touching a marker file (``store.duckdb.waiting``): the
holder hands the file over at its next transaction, and a process about to take the lock again
right after releasing it first lets a waiting process go (``flock`` itself is not fair: a process
that releases and re-takes in a loop could starve the others past their timeout).

The lock belongs to the process, not to one connection: several connections of one process to
the same file share it through a count (DuckDB shares one database instance between them too),
and it is released when the last one closes. The holder's pid is written into the lock file, so a
process that waited too long can say who holds it. A forked child closes its inherited descriptor
without unlocking it (the parent's lock lives on the same open file description).
"""

from __future__ import annotations

import fcntl
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from resumable.errors import StoreLockedError, StorePathError


@dataclass(slots=True)
class _Held:
    """This process's hold on one lock file: its descriptor while held, and how many connections share it."""

    mutex: threading.Lock = field(default_factory=threading.Lock)
    fd: int | None = None
    count: int = 0
    why: str | None = None  # why a share is kept past a close (``say_why``), while it is


# A waiter's marker counts as fresh this long; a process about to re-take the lock lets a fresh
# waiter go first, for at most HANDOFF_MAX_S.
MARKER_FRESH_S = 2.0
HANDOFF_MAX_S = 0.3

_HELD: dict[str, _Held] = {}
_HELD_LOCK = threading.Lock()
# Waits draw from a generator of their own: the notebook's global ``random`` sequence is the user's.
_JITTER = random.Random()


def lock_path(store: Path) -> Path:
    """The lock file beside a store file."""
    return store.with_name(store.name + ".lock")


def waiting_path(store: Path) -> Path:
    """The marker a process waiting for the lock touches."""
    return store.with_name(store.name + ".waiting")


def others_waiting(store: Path) -> bool:
    """Whether a process has said, recently, that it waits for the lock (one stat)."""
    try:
        return time.time() - waiting_path(store).stat().st_mtime < MARKER_FRESH_S
    except OSError:
        return False


def _say_waiting(store: Path) -> None:
    try:
        waiting_path(store).touch(mode=0o600)
    except OSError:  # only a hint; the wait is bounded anyway
        pass


def _entry(key: str) -> _Held:
    with _HELD_LOCK:
        held = _HELD.get(key)
        if held is None:
            held = _HELD[key] = _Held()
        return held


def holder_pid(store: Path) -> int | None:
    """The pid that last took the lock (the holder while the lock is held), or None when unknown."""
    first = _holder_lines(store)[0].strip()
    return int(first) if first.isdigit() else None


def holder_reason(store: Path) -> str | None:
    """Why the holder keeps the lock, when it said so (``say_why``), or None."""
    lines = _holder_lines(store)
    return lines[1].strip() or None if len(lines) > 1 else None


def _holder_lines(store: Path) -> list[str]:
    try:
        return lock_path(store).read_text(errors="replace").split("\n", 1)
    except OSError:
        return [""]


def say_why(store: Path, reason: str | None) -> None:
    """Write (or clear) why this process keeps the lock beside its pid, for a waiter's error message.

    Written in place over the pid (a page the file already has) and only then cut to length, so a
    full disk rarely refuses it; it is only for messages, so a refusal is ignored.
    """
    held = _entry(str(lock_path(store)))
    with held.mutex:
        if held.fd is None:
            return
        held.why = reason
        text = str(os.getpid()) + ("" if reason is None else "\n" + " ".join(reason.split())[:400])
        data = text.encode(errors="replace")
        try:
            os.pwrite(held.fd, data, 0)
            os.ftruncate(held.fd, len(data))
        except OSError:
            pass


def acquire(store: Path, timeout_s: float, *, read_only: bool = False) -> None:
    """Take this process's hold on ``store``'s lock, waiting up to ``timeout_s`` for other processes.

    ``read_only``: a reader of a store in a folder it cannot write. It locks the lock file when it
    can open one (a writer made it); when there is none and none can be made, no process has ever
    written through resumable's lock there, so it reads without one.

    Raises
    ------
    StoreLockedError
        Another process held the lock for longer than ``timeout_s``; names its pid.
    StorePathError
        The lock file cannot be created beside the store.
    """
    path = lock_path(store)
    held = _entry(str(path))
    with held.mutex:
        if held.count > 0:
            held.count += 1
            return
        deadline = time.monotonic() + timeout_s
        while True:
            fd = _open(store, path, read_only)
            if fd is None:
                held.count = 1  # nothing to lock: see above
                return
            try:
                _wait_for_lock(fd, store, deadline, timeout_s)
                if _same_file(fd, path):
                    break
            except BaseException:
                os.close(fd)  # closing the only descriptor releases a lock taken just now too
                raise
            os.close(fd)  # the lock file was deleted or replaced while we waited: lock the one there now
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except OSError:  # the pid is only for messages
            pass
        held.fd = fd
        held.count = 1


def _open(store: Path, path: Path, read_only: bool) -> int | None:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if read_only:
            try:
                return os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # flock works on a read-only descriptor
            except OSError:
                return None
        problem = f"cannot have its lock file '{path.name}' beside it ({exc.strerror})"
        raise StorePathError(str(store), problem, "Choose a writable folder.") from exc


def _same_file(fd: int, path: Path) -> bool:
    """Whether the locked descriptor is still the file at ``path`` (not one deleted meanwhile)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (st.st_dev, st.st_ino)


def _wait_for_lock(fd: int, store: Path, deadline: float, timeout_s: float) -> None:
    start = time.monotonic()
    delay = 0.001
    waited = False
    try:
        while True:
            polite = not waited and time.monotonic() - start < HANDOFF_MAX_S and others_waiting(store)
            if not polite:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass
                else:
                    return
                if time.monotonic() >= deadline:
                    raise StoreLockedError(str(store), holder_pid(store), timeout_s, holder_reason(store))
                waited = True
                _say_waiting(store)
            time.sleep(delay * (0.5 + _JITTER.random()))
            delay = min(delay * 2, 0.01)
    finally:
        if waited:
            waiting_path(store).unlink(missing_ok=True)


def kept_why(store: Path) -> str | None:
    """Why this process keeps its lock on ``store`` past a close (``say_why``), or None."""
    held = _entry(str(lock_path(store)))
    with held.mutex:
        return held.why if held.fd is not None else None


def shares(store: Path) -> int:
    """How many connections of this process share the lock on ``store`` now (0: not held)."""
    return _entry(str(lock_path(store))).count


def release(store: Path) -> None:
    """Give back one connection's share; the lock is released when the last share goes."""
    held = _entry(str(lock_path(store)))
    with held.mutex:
        if held.count == 0:
            return
        held.count -= 1
        if held.count == 0 and held.fd is not None:
            fd, held.fd, held.why = held.fd, None, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


def forget_inherited() -> None:
    """In a forked child: close the parent's descriptors without unlocking (the lock stays the parent's)."""
    global _HELD_LOCK  # noqa: PLW0603 - the parent's mutexes may have been held by a thread that is gone
    for held in _HELD.values():
        if held.fd is not None:
            try:
                os.close(held.fd)
            except OSError:
                pass
    _HELD.clear()
    _HELD_LOCK = threading.Lock()
