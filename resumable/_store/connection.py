"""Holding the DuckDB file only briefly, so other processes can open the store too.

DuckDB lets one process at a time hold the database file, and a connect costs about 15 ms. A
:class:`FileConnection` opens the file for a transaction and keeps it open only for a short idle
time (``idle_close_s``) and never longer than ``max_hold_s`` in one stretch (while a step of its
own is under way and no other process waits for the file, up to ``QUIET_HOLD_S``); after such a
forced release it leaves a short gap, so a CLI or a panel in another process gets in within about
a second even during a run of many quick steps. The whole stretch from ``duckdb.connect`` to
``close`` is held under this process's lock on the store (``filelock.py``), because DuckDB reads
the file's header before it takes its own lock; waiting for it is bounded by ``lock_timeout_s``
and then reported with the holder's pid.

Every DuckDB error leaves here as one of ours naming the store (``StoreDatabaseError``,
``StoreCorruptError``), and the file's identity (device and inode) is checked around every
transaction: a store deleted or replaced under this process raises ``StoreRemovedError`` instead
of letting writes land in a file nobody will read again.

A helper thread (the housekeeper) closes the file when it is due, commits the store's pending
writes (group commit, ``journal.py``) when their window closes, and retries writes that failed and
were kept (a step's failure on a full disk), so other processes see them without this one doing
anything more.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import duckdb

from resumable._store import compaction, filelock, walmark
from resumable._store.base import Compaction
from resumable.errors import (
    StoreCorruptError,
    StoreDatabaseError,
    StoreLockedError,
    StorePathError,
    StoreRemovedError,
    option_words,
)

# Jitter from a generator of our own: the global one belongs to the user's notebook (a seeded
# ``random`` must give the same draws whether or not a retry happened in between).
_JITTER = random.Random()

_LOCK_PID = re.compile(r"\(PID (\d+)\)")
_LOCKED = re.compile(r"could not set lock|conflicting lock", re.IGNORECASE)  # not "block at location"
# After a forced release, the file is left alone this long so a waiting process can take it.
RELEASE_GAP_S = 0.015
MIN_HOLD_S = 0.02
# While no other process waits for it, the file is kept open up to this long in one stretch.
QUIET_HOLD_S = 2.0
# A write of what is pending that keeps failing (a full disk) is retried at most this far apart:
# each try opens and closes the file, which costs a busy retry loop half a core.
RETRY_MAX_S = 0.5
RETRY_MIN_S = 0.05
# A torn read by a process outside resumable (a DuckDB shell writing the file) is read again this long.
CORRUPT_RETRY_S = 1.0
_CORRUPT = ("corrupt", "checksum", "could not read enough bytes")

# Commits into each store file (by device and inode) by any handle of this process: what another
# handle of this process committed is a change a snapshot of this handle's cannot have seen.
_COMMITS: dict[tuple[int, int], int] = {}
_COMMITS_LOCK = threading.Lock()


def private_wal(path: Path) -> bool:
    """Create the database's write-ahead log private to the user (0600) before DuckDB writes to it.

    DuckDB creates ``<store>.wal`` itself with the default mode (0644 under the usual umask) and
    deletes it at every checkpoint, and a crash can leave it behind holding checkpoint bytes in
    clear. An existing file is opened, not recreated, by DuckDB, so creating it first (one system
    call per transaction) keeps its mode ours. Returns whether it created the log.
    """
    try:
        os.close(os.open(str(path) + ".wal", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:  # it exists; or a read-only folder, where DuckDB will not write a log either
        return False
    return True


class PendingWrites(Protocol):
    """Writes a store defers; the connection commits them with the next transaction."""

    window_s: float

    def oldest_pending(self) -> float | None:
        """Monotonic time the oldest pending write was made (overdue after ``window_s``), or None."""

    def write_pending(self, con: duckdb.DuckDBPyConnection) -> object:
        """Take and write every pending write inside the open transaction; returns what was taken."""

    def restore_pending(self, taken: object) -> None:
        """Put back what a failed transaction did not write."""

    def committed(self, taken: object) -> None:
        """What a transaction wrote has been committed."""

    def sync_pending(self) -> None:
        """Make pending writes survive a power cut before a commit that may wait (a log fsync)."""

    def must_write_before_release(self) -> bool:
        """Whether something pending may not outlive this hold of the file (a kernel's step decided in memory)."""

    def kept_since(self) -> float | None:
        """Monotonic time since which writes that failed (a step's failure, a full disk) wait to be retried, or None."""

    def write_kept(self) -> None:
        """Write them in a transaction of their own; raise when that fails again (they stay kept)."""

    def sync_payloads(self) -> None:
        """Sync the payload files of pending completions written behind, before the commit that records them."""


class FileConnection:
    """One DuckDB file, opened for transactions and released soon after.

    Parameters
    ----------
    path
        The database file; its folder is created private to the user (0700), the file 0600.
    lock_timeout_s
        How long to wait for another process to release the file before raising
        :class:`StoreLockedError`.
    read_only
        Open the file read-only (readers: ``resumable runs``, ``show``, ``sql``): nothing is created,
        migrated or written, and a write-ahead log a crash left behind is read, not applied.
    """

    def __init__(
        self, path: Path, lock_timeout_s: float, idle_close_s: float, max_hold_s: float, *, read_only: bool = False
    ) -> None:
        self.path = path
        self.read_only = read_only  # opened read-only: a store this user may read but not write
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
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file this process opened
        self._removal: StoreRemovedError | None = None  # found, not yet told to the user's code
        self._fresh = False  # the file was created by the last connect
        self._stopped = False  # at exit: no housekeeper any more; the file is closed after each transaction
        self._session = 0  # counts opens of the file: nobody else wrote it while one session lasts
        self._own_commits = 0  # this handle's share of _COMMITS for the file
        self._busy_until = 0.0  # a step started: the file may stay open until then while nobody waits
        # A share of the process's file lock kept while the file is closed with a kernel's step not
        # written yet (a failed commit): no other process may get the file before it is written.
        self._kept = False
        self._retry_s = RETRY_MIN_S  # the housekeeper's wait before it retries a failed write of what is pending
        self.on_create: Callable[[duckdb.DuckDBPyConnection], object] | None = None
        self.on_removed: Callable[[], object] | None = None  # forget what belonged to the removed file
        self._check_path()

    def _check_path(self) -> None:
        where = str(self.path)
        if self.path.is_dir():
            raise StorePathError(where, "is a folder", f"Name a file inside it, e.g. '{self.path / 'store.duckdb'}'.")
        if self.read_only:
            self._check_header(where)
            return
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
        self._check_header(where)

    def _check_header(self, where: str) -> None:
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as f:
                head = f.read(12)
            if head[8:12] != b"DUCK":
                raise StorePathError(
                    where,
                    "exists but is not a DuckDB database",
                    f"resumable left it untouched; point {option_words('store=', '--store')} or RESUMABLE_STORE "
                    "at another file.",
                )

    def _hand_over(self) -> None:
        """Release the file to a waiting process; the next open lets it go first (``filelock``)."""
        self._close_locked()

    def _connect(self, *, read_only: bool | None = None) -> duckdb.DuckDBPyConnection:
        """Take this process's lock on the store, then open the file (read-only when asked or configured).

        The lock is held until close.

        While waiting, a marker file tells the holder to hand the file over at its next
        transaction, so a reader does not have to hit the holder's short release gaps.
        """
        read_only = self.read_only if read_only is None else read_only
        deadline = time.monotonic() + self.lock_timeout_s
        filelock.acquire(self.path, self.lock_timeout_s, read_only=read_only)
        try:
            if self._identity is not None:
                self._check_same_file()
            created = not self.path.exists() and not read_only
            if not read_only:
                compaction.clean_leftovers(self.path)  # a compaction killed before its swap
            walmark.check(self.path)
            con = self._open(deadline, read_only)
            if created:
                for candidate in (self.path, Path(str(self.path) + ".wal")):
                    if candidate.exists():
                        candidate.chmod(0o600)
            self._identity = self._file_identity()
            self._fresh = created
        except BaseException:
            filelock.release(self.path)
            raise
        return con

    def _open(self, deadline: float, read_only: bool) -> duckdb.DuckDBPyConnection:
        """``duckdb.connect`` under our lock: retried while a process outside resumable holds the file."""
        delay = 0.002
        torn_until = time.monotonic() + CORRUPT_RETRY_S
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only, config={"threads": 1})
                # No progress bar: DuckDB draws one on stdout during a long query (deleting many runs).
                con.execute("SET enable_progress_bar = false")
            except duckdb.Error as exc:
                text = str(exc).lower()
                if _LOCKED.search(text):
                    if time.monotonic() >= deadline:
                        match = _LOCK_PID.search(str(exc))
                        holder = int(match.group(1)) if match else None
                        raise StoreLockedError(str(self.path), holder, self.lock_timeout_s) from exc
                elif not (_is_torn(text) and time.monotonic() < torn_until):
                    raise self._wrap(exc) from exc
            else:
                return con
            time.sleep(delay * (0.5 + _JITTER.random()))
            delay = min(delay * 2, 0.01)

    def _wrap(self, exc: duckdb.Error) -> Exception:
        """Our own error for a DuckDB error, naming the store."""
        text = str(exc)
        if "not a valid duckdb" in text.lower():
            return StorePathError(str(self.path), "exists but is not a DuckDB database", "Point the store elsewhere.")
        if _is_torn(text.lower()):
            return StoreCorruptError(str(self.path), text)
        return StoreDatabaseError(str(self.path), text)

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino)

    def _check_same_file(self) -> None:
        """Raise StoreRemovedError when the file this process opened is gone or another file took its place."""
        now = self._file_identity()
        if now == self._identity:
            return
        if now is not None and self._identity is not None and compaction.follows(self.path, self._identity, now):
            self._identity = now  # the same store, compacted by a process that held it alone
            return
        self._removal = StoreRemovedError(str(self.path), "deleted" if now is None else "replaced by another file")
        self._identity = None  # the next open adopts (or creates) whatever file is at the path
        if self.on_removed is not None:
            self.on_removed()
        if self._con is not None:
            try:
                self._close_locked()
            except Exception:  # the old file is gone; nothing of it is worth an error of its own
                pass
        self._raise_removal()

    def check_file(self) -> None:
        """Raise StoreRemovedError when the file is gone or replaced: one stat, for steps decided in memory."""
        if self._removal is None and (self._identity is None or self._file_identity() == self._identity):
            return
        with self.lock:
            self._raise_removal()
            if self._identity is not None:
                self._check_same_file()

    def _raise_removal(self) -> None:
        """Raise a found removal; it counts as told once it reaches code of the user's (not a daemon thread)."""
        removal = self._removal
        if removal is None:
            return
        if not threading.current_thread().daemon:
            self._removal = None
        raise removal

    def wake(self) -> None:
        """Make sure the housekeeper runs and looks again at what is due."""
        with self.lock:
            if self._stopped:
                return
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

    def _nobody_waits(self, now: float) -> bool:
        """Whether the file may stay open past its idle or hold time: a step of ours runs, nobody waits.

        A step of this process is under way (``stay_open``) and no process says it waits for the file.

        Reopening costs a connect and closing a checkpoint (15-80 ms together), which a notebook
        would otherwise pay at every step longer than ``idle_close_s``. A process waiting for the
        file says so at once (``filelock``), and is then let in within ``idle_close_s`` as before;
        one that cannot say so (DuckDB outside resumable) waits at most ``QUIET_HOLD_S``.
        """
        if now >= min(self._busy_until, self._opened_at + QUIET_HOLD_S):
            return False
        return not filelock.others_waiting(self.path)

    def stay_open(self) -> None:
        """A step starts: keep the file open past the idle time (while nobody waits) until it completes.

        Only steps ask: a reader (a panel's poll, the CLI) lets go after ``idle_close_s`` as ever,
        so a process watching a run never makes the process running it wait.
        """
        self._busy_until = time.monotonic() + QUIET_HOLD_S

    def _housekeep(self) -> None:
        """Commit pending writes when their window closes; close the file once idle or held too long."""
        with self.lock:
            while True:
                if self._stopped:
                    self._housekeeper = None
                    return
                self._let_lock_go_if_written()  # another handle of the process may have written them
                now = time.monotonic()
                due = self._due_pending()
                kept = None if self.pending is None else self.pending.kept_since()
                kept = None if kept is None else kept + RETRY_MIN_S
                deadlines = [d for d in (due, kept) if d is not None]
                if self._con is not None:
                    let_go = min(self._last_used + self.idle_close_s, self._opened_at + self.max_hold_s)
                    if now >= let_go and self._nobody_waits(now):  # keep it, and look again soon
                        let_go = min(now + self.idle_close_s, self._opened_at + QUIET_HOLD_S)
                    deadlines.append(let_go)
                if not deadlines:
                    # Another handle may have written the last of them since the check above: give the
                    # kept share back now, or it would stay until that handle's next transaction.
                    self._let_lock_go_if_written()
                    self._housekeeper = None
                    return
                if now < min(deadlines):
                    self.lock.wait(min(deadlines) - now)
                    continue
                if (due is not None and now >= due) or (kept is not None and now >= kept):
                    try:
                        self._write_pending(retry_kept=kept is not None and now >= kept)
                        self._retry_s = RETRY_MIN_S
                    except Exception:  # kept pending; retried, less often while it keeps failing (a full disk)
                        self.lock.wait(self._retry_s)
                        self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
                else:
                    self._close_locked()

    def _write_pending(self, *, retry_kept: bool) -> None:
        """The housekeeper's write: what is pending when its window closed, or the retry of kept failures.

        Only a commit that fell due syncs payloads first without the lock; the retry of kept failures
        has no window to miss, and its transaction syncs what it writes.
        """
        if self.pending is None or (not retry_kept and not self._synced_and_still_due()):
            return
        if self._con is None:  # opening may wait: fsync first
            self.pending.sync_pending()
        if retry_kept:
            self.pending.write_kept()  # so others see the store catch up with no new step here
        else:
            with self.transaction():
                pass  # opening a transaction writes what is pending

    def _synced_and_still_due(self) -> bool:
        """Sync the pending payloads written behind, without the lock; whether the commit is still due then.

        The disk's slow part: a step of this process (a kernel's next cell) does not wait for it,
        and the commit syncs again whatever came since. Meanwhile close() or shutdown() may have
        written them and let go of the file: opening it again would hold it past close(), or be
        inside DuckDB while the interpreter shuts down (shutdown's join gave up).
        """
        if self.pending is None:
            return True
        self.lock.release()
        try:
            self.pending.sync_payloads()
        finally:
            self.lock.acquire()
        due = self._due_pending()
        return not self._stopped and due is not None and time.monotonic() >= due

    def _close_locked(self, *, write_pending: bool = True, why: BaseException | None = None) -> None:
        """Close the file; the process's lock goes with it unless a kernel's step is still not written.

        A kernel's step decided while this handle held the file: the next holder must find it in
        the store, so it is committed first. When that write fails (a full disk), or the close
        follows a failed commit (``why``), the DuckDB handle is closed all the same (DuckDB may
        have invalidated it) but a share of the lock is kept (``_keep_lock``): no other process
        gets the file, so none can run that step again, until a later commit writes it.
        """
        if self._con is not None:
            if write_pending and self.pending is not None and self.pending.must_write_before_release():
                try:
                    self._write_pending_now(self._con)
                except Exception as exc:
                    why = exc
            if self.pending is not None and self.pending.must_write_before_release():
                self._keep_lock(why)
            con, self._con = self._con, None
            self._session += 1  # once let go of, another process may write the file
            try:
                con.close()
            except duckdb.Error as exc:
                raise self._wrap(exc) from exc
            finally:
                self._released_at = time.monotonic()
                try:
                    if not self.read_only:
                        walmark.record(self.path)  # closing checkpoints and removes the log
                finally:
                    filelock.release(self.path)
        self._let_lock_go_if_written()

    def _keep_lock(self, why: BaseException | None) -> None:
        """Keep a share of the lock past the close, and say why beside the pid (for the waiters' error)."""
        if not self._kept:
            filelock.acquire(self.path, self.lock_timeout_s)  # held already: only counts a share
            self._kept = True
        detail = getattr(why, "detail", None) or (str(why).splitlines()[0] if why is not None and str(why) else "")
        filelock.say_why(self.path, "its last commit failed" + (f": {detail}" if detail else ""))

    def _let_lock_go_if_written(self) -> None:
        """Give back the kept share once no kernel step is left unwritten (or the file went away)."""
        if self._kept and not (self.pending is not None and self.pending.must_write_before_release()):
            self._kept = False
            filelock.say_why(self.path, None)
            filelock.release(self.path)

    def _write_pending_now(self, con: duckdb.DuckDBPyConnection) -> None:
        """Commit what is pending in a transaction of its own on the open handle (before it is let go of)."""
        assert self.pending is not None
        taken: object = None
        try:
            con.execute("BEGIN TRANSACTION")
            taken = self.pending.write_pending(con)
            con.execute("COMMIT")
        except BaseException as exc:
            self._roll_back(con, taken)
            if isinstance(exc, duckdb.Error):
                raise self._wrap(exc) from exc
            raise
        self._count_commit()
        if not self.read_only:
            walmark.record(self.path)
        self._committed(taken)
        self._let_lock_go_if_written()

    def forget_inherited(self) -> None:
        """In a forked child: drop the parent's handle (never close it here) and start afresh."""
        self.lock = threading.Condition(threading.RLock())
        self._con = None
        self._kept = False  # the parent's share (``filelock.forget_inherited``)
        self._session += 1
        self._housekeeper = None
        self._stopped = False

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """At exit: write what is pending, release the file, stop the housekeeper and join it.

        DuckDB must not be inside a daemon thread while the interpreter finalizes (it aborts the
        process). A transaction after this still works, on the calling thread, and closes the file
        at its end.
        """
        with self.lock:
            self._stopped = True
            housekeeper = self._housekeeper
            self.lock.notify_all()
            try:
                self.close()
            finally:
                self.lock.notify_all()
        if housekeeper is not None and housekeeper is not threading.current_thread():
            housekeeper.join(timeout_s)

    def close(self) -> None:
        """Write what is pending and release the file now (it is reopened on the next use)."""
        with self.lock:
            if self._due_pending() is not None:
                with self.transaction():
                    pass
            self._close_locked()
            self.lock.notify_all()

    @contextmanager
    def transaction(self, *, with_pending: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction; pending writes are written first, inside it (unless ``with_pending`` is false).

        A read-back after a failed transaction passes ``with_pending=False``: writing what is pending
        then would commit bookkeeping about the very writes that were just rolled back.

        Raises
        ------
        StoreRemovedError
            The file was deleted or replaced since this process opened it (checked before the
            transaction and again after its commit); nothing was written to a new file.
        StoreDatabaseError
            DuckDB refused; the transaction was rolled back and the file let go of.
        """
        with self.lock:
            con = self._ready()
            if not self.read_only and private_wal(self.path):
                walmark.record(self.path)
            taken: object = None
            try:
                con.execute("BEGIN TRANSACTION")
                if self._fresh and self.on_create is not None:
                    self.on_create(con)  # a store created anew after the old one was removed
                self._fresh = False
                if self.pending is not None and with_pending:
                    taken = self.pending.write_pending(con)
                yield con
                con.execute("COMMIT")
                self._count_commit()
                self._check_same_file()  # a commit into a removed file is not a commit
                if not self.read_only:
                    walmark.record(self.path)
            except BaseException as exc:
                self._failed(con, exc, taken)
                if isinstance(exc, duckdb.Error) and not isinstance(exc, duckdb.InterruptException):
                    raise self._wrap(exc) from exc
                raise
            finally:
                self._last_used = time.monotonic()
                if self._stopped:  # no housekeeper to let go of the file later
                    self._close_locked()
            self._committed(taken)
            self._let_lock_go_if_written()

    def _committed(self, taken: object) -> None:
        """Tell the pending writes that what they had taken is committed."""
        if self.pending is not None and taken is not None:
            self.pending.committed(taken)

    def _ready(self) -> duckdb.DuckDBPyConnection:
        """The open file for the next transaction: checked to be the same file, handed over, or opened."""
        self._raise_removal()
        if self._con is not None:
            self._check_same_file()
        held_s = time.monotonic() - self._opened_at
        if self._con is not None and held_s > MIN_HOLD_S and filelock.others_waiting(self.path):
            self._hand_over()
        if self._con is None:
            gap = self._released_at + RELEASE_GAP_S - time.monotonic()
            if gap > 0:
                time.sleep(gap)
            self._con = self._connect()
            self._session += 1
            self._opened_at = time.monotonic()
            self.wake()
        return self._con

    def _count_commit(self) -> None:
        if self._identity is not None:
            with _COMMITS_LOCK:
                _COMMITS[self._identity] = _COMMITS.get(self._identity, 0) + 1
            self._own_commits += 1

    def unchanged_since(self) -> tuple[int, int] | None:
        """A mark that stays equal while nobody but this handle can have written the file, or None.

        The mark changes when the file is let go of (another process may take it and write) and
        when another handle of this process commits into the same file; while this handle holds
        the file and neither happens, what it read is still what the file says. None: the file is
        not held now, so nothing read earlier can be vouched for.
        """
        identity = self._identity
        if self._con is None or identity is None or self._removal is not None:
            return None
        with _COMMITS_LOCK:
            foreign = _COMMITS.get(identity, 0) - self._own_commits
        return (self._session, foreign)

    def _roll_back(self, con: duckdb.DuckDBPyConnection, taken: object) -> None:
        """Roll the open transaction back and put back the pending writes it had taken (None: none to put back)."""
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        if self.pending is not None and taken is not None:
            self.pending.restore_pending(taken)

    def _failed(self, con: duckdb.DuckDBPyConnection, exc: BaseException, taken: object) -> None:
        """Roll back; put back pending writes (unless the store is gone); let go of a file DuckDB failed on."""
        self._roll_back(con, None if isinstance(exc, StoreRemovedError) else taken)
        if isinstance(exc, duckdb.Error):
            try:
                self._close_locked(write_pending=False, why=exc)  # a failed file is opened afresh next time
            except Exception:  # the error being raised says more than a failed close
                pass

    def compact(self, decide: Callable[[duckdb.DuckDBPyConnection, int], str | None]) -> Compaction:
        """Rewrite the file into a fresh one and swap it in (``compaction.py``), holding the file alone.

        Pending writes are committed and this handle let go of first; then the store's lock is
        taken again and kept until the swap is done, so no other process has the file open. When
        another handle of this process shares the lock, nothing is done.
        """
        with self.lock:
            try:
                if self._due_pending() is not None:
                    with self.transaction():
                        pass
                self._close_locked()
            except StoreDatabaseError:
                if filelock.kept_why(self.path) is None:
                    raise  # kept: the write failed (a full disk), and the reason is said below
            filelock.acquire(self.path, self.lock_timeout_s)
            try:
                size = self.path.stat().st_size
                kept = filelock.kept_why(self.path)
                if kept is not None and self.pending is not None and self.pending.must_write_before_release():
                    reason = (
                        f"this process ran steps that it could not write to the store yet ({kept}), and keeps the "
                        "store until they are written, so the file was left as it was; free space on the store's "
                        "disk (they are then written), then try again"
                    )
                    return Compaction(False, size, size, 0.0, reason)
                if filelock.shares(self.path) > 1:
                    return Compaction(False, size, size, 0.0, "another handle of this process has the store open")
                if self._identity is not None:
                    self._check_same_file()
                walmark.check(self.path)
                try:
                    done = compaction.compact(self.path, decide)
                except (duckdb.Error, OSError, compaction.CopyMismatch) as exc:  # a full disk, most likely
                    reason = f"the copy failed ({exc}), so the store was left as it was"
                    return Compaction(False, size, size, 0.0, reason)
                self._identity = self._file_identity()
                return done
            finally:
                self._released_at = time.monotonic()
                filelock.release(self.path)
                self.lock.notify_all()

    @contextmanager
    def reading_session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection of its own, read-only, for one user query (``resumable sql``); closed after it.

        The query changes the connection's settings for good (external access off, configuration
        locked), so it never gets the shared handle: that one is let go of first, after writing
        what is pending so the query sees it, and the new connection takes the file the same way.
        """
        with self.lock:
            if self._due_pending() is not None:
                with self.transaction():
                    pass
            self._close_locked()
            # Opened and closed by the same two methods as every other handle (one place for the
            # file's lock discipline); the lock is held throughout, so no transaction can use it.
            self._con = self._connect(read_only=True)
            try:
                yield self._con
            finally:
                self._close_locked()
                self.lock.notify_all()


def _is_torn(lowered: str) -> bool:
    """Whether a DuckDB message says the file's bytes could not be read as a database."""
    return any(mark in lowered for mark in _CORRUPT)
