"""Honest states: a running step whose owner has died reads as ``interrupted``, computed when read.

The stored row keeps saying ``running`` until a process that means to execute the run moves it
along the transition table (``runs.check_owner``, with its event). Readers (``resumable runs``,
``show``, the panel, ``sql``) never write: they ask here which owners of running steps are gone
and show those steps as interrupted, so what they show is what a resume will find.
"""

from __future__ import annotations

from resumable._states import StepState
from resumable._store.dialect import Connection
from resumable._store.lease import owner_alive
from resumable._store.rows import owner_from

OwnerKey = tuple[str | None, int | None, float | None]


def dead_owners(con: Connection, run_id: str | None = None) -> frozenset[OwnerKey]:
    """The owners (host, pid, start time) of running steps whose process is gone, in one run or all.

    A running step without a recorded owner counts as orphaned too (``(None, None, None)``), as
    ``check_owner`` treats it.
    """
    rows = con.execute(
        """SELECT DISTINCT owner_host, owner_pid, owner_started, owner_kernel FROM steps
           WHERE state = 'running' AND (? IS NULL OR run_id = ?)""",
        [run_id, run_id],
    ).fetchall()
    dead: set[OwnerKey] = set()
    for host, pid, started, kernel in rows:
        owner = owner_from(host, pid, started, kernel)
        if owner is None or not owner_alive(con, owner):  # another host's owner: by its lease
            dead.add((host, pid, started))
    return frozenset(dead)


def shown_state(state: str, owner: OwnerKey, dead: frozenset[OwnerKey]) -> str:
    """The state a reader shows: ``interrupted`` for a running step of a dead owner, else the stored one."""
    if state == StepState.RUNNING.value and owner in dead:
        return StepState.INTERRUPTED.value
    return state
