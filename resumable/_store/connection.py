"""Holding the DuckDB file only briefly, so other processes can open the store too.

DuckDB lets one process at a time hold the database file, and a connect costs about 15 ms. A
:class:`FileConnection` opens the file for a transaction and keeps it open only for a short idle
time (``idle_close_s``) and never longer than ``max_hold_s`` in one stretch; after such a forced
release it leaves a short gap, so a CLI or a panel in another process gets in within about a
second even during a run of many quick steps. A locked file is retried with backoff up to
``lock_timeout_s`` and then reported with the holder's pid.

A helper thread (the housekeeper) closes the file when it is due, and commits the store's pending
writes (group commit, ``journal.py``) when their window closes.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import duckdb

from resumable.errors import StoreError, StoreLockedError, StorePathError

_LOCK_PID = re.compile(r"\(PID (\d+)\)")
# After a forced release, the file is left alone this long so a waiting process can take it.
RELEASE_GAP_S = 0.015
# A process waiting for the file says so with a marker file; the holder then hands the file over
# at its next transaction and waits up to this long for the waiter to take it.
HANDOFF_MAX_S = 0.3
MARKER_FRESH_S = 2.0
MIN_HOLD_S = 0.02

# Waits draw from a generator of their own: the notebook's global ``random`` sequence is the user's.
_JITTER = random.Random()


class PendingWrites(Protocol):
    """Writes a store defers; the connection commits them with the next transaction."""

    window_s: float

    def oldest_pending(self) -> float | None:
        """Monotonic time the oldest pending write was made (overdue after ``window_s``), or None."""

    def write_pending(self, con: duckdb.DuckDBPyConnection) -> object:
        """Take and write every pending write inside the open transaction; returns what was taken."""

    def restore_pending(self, taken: object) -> None:
        """Put back what a failed transaction did not write."""


class FileConnection:
    """One DuckDB file, opened for transactions and released soon after.

    Parameters
    ----------
    path
        The database file; its folder is created private to the user (0700), the file 0600.
    lock_timeout_s
        How long to wait for another process to release the file before raising
        :class:`StoreLockedError`.
    """

    def __init__(self, path: Path, lock_timeout_s: float, idle_close_s: float, max_hold_s: float) -> None:
        self.path = path
        self.lock_timeout_s = lock_timeout_s
        self.idle_close_s = idle_close_s
        self.max_hold_s = max_hold_s
        self.pending: PendingWrites | None = None
        self.lock = threading.Condition(threading.RLock())
        self._con: duckdb.DuckDBPyConnection | None = None
        self._housekeeper: threading.Thread | None = None
        self._opened_at = 0.0
        self._last_used = 0.0
        self._released_at = 0.0
        self._check_path()

    def _check_path(self) -> None:
        where = str(self.path)
        if self.path.is_dir():
            raise StorePathError(where, "is a folder", f"Name a file inside it, e.g. '{self.path / 'store.duckdb'}'.")
        parent = self.path.parent
        try:
            if not parent.exists():
                parent.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            raise StorePathError(where, f"cannot be created ({exc.strerror})", "Choose a writable folder.") from exc
        if not parent.is_dir():
            raise StorePathError(where, f"has a parent '{parent}' that is not a folder", "Choose another path.")
        if not os.access(parent, os.W_OK | os.X_OK) or (self.path.exists() and not os.access(self.path, os.W_OK)):
            raise StorePathError(
                where, "is not writable by this user", "Fix its permissions or point RESUMABLE_STORE elsewhere."
            )
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as f:
                head = f.read(12)
            if head[8:12] != b"DUCK":
                raise StorePathError(
                    where,
                    "exists but is not a DuckDB database",
                    "resumable left it untouched; point RESUMABLE_STORE or store= at another file.",
                )

    @property
    def _marker(self) -> Path:
        return self.path.with_name(self.path.name + ".waiting")

    def _others_waiting(self) -> bool:
        """Whether another process has said, recently, that it waits for the file (one stat)."""
        try:
            return time.time() - self._marker.stat().st_mtime < MARKER_FRESH_S
        except FileNotFoundError:
            return False

    def _hand_over(self) -> None:
        """Release the file to a waiting process and give it a moment to take it."""
        self._close_locked()
        deadline = time.monotonic() + HANDOFF_MAX_S
        while self._others_waiting() and time.monotonic() < deadline:
            time.sleep(0.002)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        """Open the file, waiting with backoff while another process holds it.

        While waiting, a marker file tells the holder (if it is resumable) to hand the file over at
        its next transaction, so a reader does not have to hit the holder's short release gaps.
        """
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.002
        created = not self.path.exists()
        marker: Path | None = None
        try:
            while True:
                try:
                    con = duckdb.connect(str(self.path), config={"threads": 1})
                    break
                except duckdb.IOException as exc:
                    if "lock" in str(exc).lower():
                        marker = self._marker
                        marker.touch()
                    self._retry_or_raise(exc, deadline)
                time.sleep(delay * (0.5 + _JITTER.random()))
                delay = min(delay * 2, 0.01)
        finally:
            if marker is not None:
                marker.unlink(missing_ok=True)
        if created:
            for candidate in (self.path, Path(str(self.path) + ".wal")):
                if candidate.exists():
                    candidate.chmod(0o600)
        return con

    def _retry_or_raise(self, exc: duckdb.IOException, deadline: float) -> None:
        """Return when a failed open is worth another try; raise our own error otherwise."""
        text = str(exc)
        if "lock" not in text.lower():
            if "not a valid DuckDB" in text:
                raise StorePathError(
                    str(self.path), "exists but is not a DuckDB database", "Point the store elsewhere."
                ) from exc
            raise StoreError(f"store '{self.path}' cannot be opened: {text}") from exc
        if time.monotonic() >= deadline:
            match = _LOCK_PID.search(text)
            raise StoreLockedError(str(self.path), int(match.group(1)) if match else None, self.lock_timeout_s) from exc

    def wake(self) -> None:
        """Make sure the housekeeper runs and looks again at what is due."""
        with self.lock:
            if self._housekeeper is None or not self._housekeeper.is_alive():
                self._housekeeper = threading.Thread(target=self._housekeep, name="resumable-store", daemon=True)
                self._housekeeper.start()
            else:
                self.lock.notify_all()

    def _due_pending(self) -> float | None:
        """When the pending writes fall due (monotonic), or None when there are none."""
        if self.pending is None:
            return None
        oldest = self.pending.oldest_pending()
        return None if oldest is None else oldest + self.pending.window_s

    def _housekeep(self) -> None:
        """Commit pending writes when their window closes; close the file once idle or held too long."""
        with self.lock:
            while True:
                now = time.monotonic()
                due = self._due_pending()
                deadlines = [] if due is None else [due]
                if self._con is not None:
                    deadlines.append(min(self._last_used + self.idle_close_s, self._opened_at + self.max_hold_s))
                if not deadlines:
                    self._housekeeper = None
                    return
                if now < min(deadlines):
                    self.lock.wait(min(deadlines) - now)
                    continue
                if due is not None and now >= due:
                    try:
                        with self.transaction():
                            pass  # opening a transaction writes what is pending
                    except Exception:  # kept pending; the next transaction retries
                        self.lock.wait(0.05)
                else:
                    self._close_locked()

    def _close_locked(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            finally:
                self._con = None
                self._released_at = time.monotonic()

    def forget_inherited(self) -> None:
        """In a forked child: drop the parent's handle (never close it here) and start afresh."""
        self.lock = threading.Condition(threading.RLock())
        self._con = None
        self._housekeeper = None

    def close(self) -> None:
        """Write what is pending and release the file now (it is reopened on the next use)."""
        with self.lock:
            if self._due_pending() is not None:
                with self.transaction():
                    pass
            self._close_locked()
            self.lock.notify_all()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction; pending writes are written first, inside it."""
        with self.lock:
            if self._con is not None and time.monotonic() - self._opened_at > MIN_HOLD_S and self._others_waiting():
                self._hand_over()
            if self._con is None:
                gap = self._released_at + RELEASE_GAP_S - time.monotonic()
                if gap > 0:
                    time.sleep(gap)
                self._con = self._connect()
                self._opened_at = time.monotonic()
                self.wake()
            con = self._con
            con.execute("BEGIN TRANSACTION")
            taken: object = None
            try:
                if self.pending is not None:
                    taken = self.pending.write_pending(con)
                yield con
                con.execute("COMMIT")
            except BaseException:
                try:
                    con.execute("ROLLBACK")
                except duckdb.Error:
                    pass
                if self.pending is not None and taken is not None:
                    self.pending.restore_pending(taken)
                raise
            finally:
                self._last_used = time.monotonic()
