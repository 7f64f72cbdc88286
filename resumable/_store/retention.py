"""Deleting whole runs: which runs a retention rule selects, who still holds them, and the rows that go.

Plain functions over a transaction the store opened. A run goes with its steps and its events;
its checkpoint rows are never deleted here by run: ``checkpoints.drop_superseded`` is the one rule
for which checkpoint rows are still needed (another run may share them), and it runs after the
runs are gone. What the deleted rows pointed to in the payload place is found by comparing the
payloads referenced before and after, so a payload another run still points to stays.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from resumable._records import Owner, RunInfo
from resumable._store import checkpoints
from resumable._store.base import Refused, RunFilter
from resumable._store.dialect import Connection, dialect_of
from resumable._store.lease import owner_alive
from resumable._store.places import PayloadPlace, Unreferenced
from resumable._store.rows import clock, owner_from
from resumable._store.runs import find_runs, get_run
from resumable.errors import CheckpointNotFoundError, RunOwnedError


@dataclass(frozen=True, slots=True)
class Deleted:
    """What one deleting transaction removed from the database, and the payload files it left unreferenced."""

    removed: tuple[RunInfo, ...]
    refused: tuple[Refused, ...]
    checkpoints_removed: int
    inline_bytes: int
    files: tuple[Unreferenced, ...]  # (relative name, identity, size) of payloads nothing points to now


def select(con: Connection, rule: RunFilter) -> list[RunInfo]:
    """The runs ``rule`` chooses for deletion, newest first (states as a reader sees them)."""
    where = "(? IS NULL OR r.pipeline = ?)"
    candidates = find_runs(con, where, [rule.pipeline, rule.pipeline], sys.maxsize, rule.state)
    kept: dict[str, int] = {}
    chosen = []
    for run in candidates:  # newest first: the first keep_last of each pipeline stay
        if rule.keep_last is not None and kept.get(run.pipeline, 0) < rule.keep_last:
            kept[run.pipeline] = kept.get(run.pipeline, 0) + 1
            continue
        if rule.older_than is not None and run.updated_at >= rule.older_than:
            continue
        chosen.append(run)
    return chosen


def live_holder(con: Connection, run_id: str) -> tuple[Owner, str | None] | None:
    """The live process that owns the run or runs one of its steps (with that step), or None.

    Alive as everywhere else (``lease.owner_alive``): a process on this host while it runs, one on
    another host while its lease runs. This very process counts too: a run it executes is not deleted.
    """
    for step, *cols in con.execute(
        """SELECT step, owner_host, owner_pid, owner_started, owner_kernel FROM steps
           WHERE run_id = ? AND state = 'running' ORDER BY seq""",
        [run_id],
    ).fetchall():
        owner = owner_from(*cols)
        if owner is not None and owner_alive(con, owner):
            return owner, step  # the step it runs says most
    row = con.execute(
        "SELECT owner_host, owner_pid, owner_started, owner_kernel FROM runs WHERE run_id = ?", [run_id]
    ).fetchone()
    holder = owner_from(*row) if row else None
    if holder is not None and owner_alive(con, holder):
        return holder, None
    return None


def busy_owner(con: Connection) -> tuple[Owner, str] | None:
    """A live process that owns some run or runs some step in the store (and that run), or None."""
    rows = con.execute(
        """SELECT run_id, owner_host, owner_pid, owner_started, owner_kernel FROM runs WHERE owner_pid IS NOT NULL
           UNION ALL
           SELECT run_id, owner_host, owner_pid, owner_started, owner_kernel FROM steps WHERE state = 'running'"""
    ).fetchall()
    for run_id, *cols in rows:
        owner = owner_from(*cols)
        if owner is not None and owner_alive(con, owner):
            return owner, run_id
    return None


def _refusal(location: str, run: RunInfo, holder: Owner, step: str | None) -> Refused:
    owned = RunOwnedError(run.run_id, run.pipeline, holder.host, holder.pid, clock(holder.started), step)
    return Refused(run.run_id, f"not removed: {owned}")


def _checkpoint_totals(con: Connection) -> tuple[int, int]:
    """(rows, inline bytes) of the checkpoints table, from the recorded sizes (the bytes are not read)."""
    row = con.execute("SELECT count(*), coalesce(sum(size) FILTER (WHERE file IS NULL), 0) FROM checkpoints").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def delete(con: Connection, location: str, payloads: PayloadPlace, which: RunFilter | Sequence[str]) -> Deleted:
    """Delete the chosen runs a live process does not hold, then the checkpoint rows nothing needs any more."""
    removed: list[RunInfo] = []
    refused: list[Refused] = []
    if isinstance(which, RunFilter):
        chosen = select(con, which)
    else:
        chosen = []
        for run_id in dict.fromkeys(which):
            run = get_run(con, run_id)
            if run is None:
                refused.append(Refused(run_id, str(CheckpointNotFoundError(location, run_id)), missing=True))
            else:
                chosen.append(run)
    rows_before, inline_before = _checkpoint_totals(con)
    files_before = checkpoints.referenced_files(con)
    # When each file's newest row was written: a file renamed into place after that is another
    # process's identical output, whose row is not committed yet (below).
    written = dict(
        con.execute("SELECT file, max(created_at) FROM checkpoints WHERE file IS NOT NULL GROUP BY file").fetchall()
    )
    payloads.recover(files_before)
    lock = dialect_of(con).for_update
    for run in chosen:
        if lock:  # a server store: a claim of the run waits for this transaction, or is seen below
            con.execute(f"SELECT 1 FROM runs WHERE run_id = ?{lock}", [run.run_id])
        held = live_holder(con, run.run_id)
        if held is not None:
            refused.append(_refusal(location, run, *held))
            continue
        for table in ("events", "steps", "runs"):
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run.run_id])
        removed.append(run)
    checkpoints.drop_superseded(con)
    rows_after, inline_after = _checkpoint_totals(con)
    gone = sorted(files_before - checkpoints.referenced_files(con))
    files = payloads.unreferenced(gone, written)
    return Deleted(tuple(removed), tuple(refused), rows_before - rows_after, inline_before - inline_after, tuple(files))
