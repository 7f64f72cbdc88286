"""Ownership leases: how long a process's claim on its runs and running steps holds without news from it.

On its own host an owner is checked directly (is the process with that pid and start time still
running?). On another host it cannot be: before leases such an owner counted as alive forever,
so a run whose owner was recorded under a host name that no longer exists (a container restarted
under a new name, a renamed laptop) could never be resumed. Now a process that owns anything
keeps a row in ``leases`` with an expiry, and a helper thread renews it at a third of the lease
while the process owns a run or runs a step. An owner on another host is alive while its lease
runs, and gone after; an owner recorded before leases existed has none and still counts as alive
(``resumable unlock`` releases it). Expiry times are the owner's clock for a file store (hosts
sharing one need clocks that agree within a small part of the lease) and the server's for a server
store (``Dialect.clock``), which every worker reads alike.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from resumable._owner import is_alive, is_local
from resumable._records import Owner
from resumable._store.dialect import Connection, dialect_of


def renew(con: Connection, owner: Owner, lease_s: float, generation: int | None = None) -> None:
    """Record (or extend) ``owner``'s lease to ``lease_s`` seconds from now, with the newest token it took.

    Renewing gives nothing back that another owner took over: what a process owns is decided by the
    fencing tokens on the runs and steps (``runs.set_owner``), which a renewal never changes.
    """
    sql = dialect_of(con)
    con.execute(
        sql.upsert("leases", ("host", "pid", "started", "expires", "generation"), ("host", "pid", "started")),
        [owner.host, owner.pid, owner.started, sql.clock(con) + lease_s, generation],
    )


def expires(con: Connection, owner: Owner) -> float | None:
    """When ``owner``'s lease runs out (seconds since the epoch, ``Dialect.clock``), or None when it never had one."""
    row = con.execute(
        "SELECT expires FROM leases WHERE host = ? AND pid = ? AND abs(started - ?) < 1.0 ORDER BY expires DESC",
        [owner.host, owner.pid, owner.started],
    ).fetchone()
    return None if row is None else float(row[0])


def owner_alive(con: Connection, owner: Owner) -> bool:
    """Whether ``owner`` still holds what it owns: its process runs (this host) or its lease runs (another)."""
    if is_local(owner):
        return is_alive(owner)
    until = expires(con, owner)
    return until is None or until > dialect_of(con).clock(con)


def owns_anything(con: Connection, owner: Owner) -> bool:
    """Whether ``owner`` holds a run or runs a step (what keeps its lease worth renewing)."""
    row = con.execute(
        """SELECT EXISTS (SELECT 1 FROM runs WHERE owner_host = ? AND owner_pid = ?)
               OR EXISTS (SELECT 1 FROM steps WHERE state = 'running' AND owner_host = ? AND owner_pid = ?)""",
        [owner.host, owner.pid, owner.host, owner.pid],
    ).fetchone()
    return bool(row and row[0])


class LeaseKeeper:
    """Renews this process's lease in one store while the process owns something there.

    Started when the process first becomes an owner; each round is one short transaction. It ends
    by itself once the process owns nothing, and at :meth:`stop` (the store's close, at exit).
    """

    def __init__(
        self,
        transaction: Callable[[], AbstractContextManager[Connection]],
        owner: Owner,
        lease_s: float,
    ) -> None:
        self._transaction = transaction
        self.owner = owner
        self.lease_s = lease_s
        self._renewed_at = 0.0
        self.generation: int | None = None  # the newest fencing token this process took in the store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def claimed(self, con: Connection, generation: int | None = None) -> None:
        """The process just became an owner inside ``con``'s transaction (under the token ``generation``).

        Makes sure its lease runs, and keeps it running. The token is written with the next renewal
        (it is there for people reading the table; no decision reads it), so a step costs no extra write.
        """
        now = time.monotonic()
        if generation is not None and (self.generation is None or generation > self.generation):
            self.generation = generation
        if now - self._renewed_at > self.lease_s / 3:
            renew(con, self.owner, self.lease_s, self.generation)
            self._renewed_at = now
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="resumable-lease", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                with self._transaction() as con:
                    if not owns_anything(con, self.owner):
                        return
                    renew(con, self.owner, self.lease_s, self.generation)
                    self._renewed_at = time.monotonic()
            except Exception:  # noqa: S112 - the file is busy or gone: the next round tries again
                continue

    def stop(self) -> None:
        """End the renewing thread (the lease then runs out unless the process claims again)."""
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
