"""Completion logs in the store: how far each is applied, and replaying the logs of dead processes.

A group commit records, in its own transaction, how many records of its process's completion log
it has applied (``record_applied``). Any transaction on the store first replays the logs of
processes that died (``replay_dead``): their records past the applied count become rows, in the
caller's transaction, before the caller decides anything about a run; the files are removed only
after that transaction committed. A step that is already in the store is never inserted twice,
whatever the count says, so a replay interrupted after its commit and before the removal is
harmless when it runs again. A step is replayed only while its run is still under the claim
(fencing token) the step ran under: a dead owner's log never writes over a run another owner took.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import duckdb

from resumable._store.completion_log import LogFile, dead_logs, read_records
from resumable._store.rows import STEP_INSERT, QuickRows, decode_quick_rows, insert_quick_rows

_log = logging.getLogger("resumable")


def record_applied(con: duckdb.DuckDBPyConnection, process: str, applied: int) -> None:
    """Records 1..``applied`` of ``process``'s log are in the store (inside the group commit's transaction)."""
    con.execute("INSERT OR REPLACE INTO completion_logs VALUES (?, ?, now())", [process, applied])


def _applied(con: duckdb.DuckDBPyConnection, process: str) -> int:
    row = con.execute("SELECT applied FROM completion_logs WHERE process = ?", [process]).fetchone()
    return int(row[0]) if row else 0


# Where a step row of a completion log holds the fencing token its step ran under (``rows.STEP_INSERT``).
_GENERATION = [name for name, _ in STEP_INSERT].index("owner_generation")


@dataclass(frozen=True, slots=True)
class Refused:
    """Logged steps of one run not replayed: the run is no longer under the claim (token) they ran under."""

    run_id: str
    steps: tuple[str, ...]
    generation: int
    current: int | None  # the run's claim now (None: nobody's)


def _not_yet_stored(con: duckdb.DuckDBPyConnection, rows: QuickRows) -> tuple[QuickRows, list[Refused]]:
    """Only the rows of steps the store does not hold yet, of runs it does hold under the claim they ran under.

    A replay applies a step at most once. A run is always written before any of its steps, so a
    run the store does not know means the log was written for a store that has since been removed
    or replaced at this path: its rows do not belong here. A step logged under a fencing token
    that is no longer the run's (another owner took the run over after the dead process's lease ran
    out, or released it from the dead owner) is a stale owner's late write: refused, as the
    group commit of a live stale owner refuses it (``DuckDBStore._still_held``). Every transaction
    replays before it decides anything, so a process that dies on this host while it owns a run
    is replayed before anyone can take the run, with one narrow exception: an owner that dies
    between a transaction's replay and that transaction's check of the owner (which then takes
    the run over) has its logged steps refused later, and they run again. Never restored wrong,
    and never an effect: an effect waits until every deferred step is committed. Otherwise only
    an owner judged by its lease (another host's) can lose its run with steps still in its log.
    """
    if not rows.steps:
        return rows, []
    runs = sorted({r[0] for r in rows.steps})
    claims = {
        r: None if g is None else int(g)
        for r, g in con.execute(
            "SELECT run_id, owner_generation FROM runs WHERE list_contains(?, run_id)", [runs]
        ).fetchall()
    }
    held = {
        (run_id, step)
        for run_id, step in con.execute(
            "SELECT run_id, step FROM steps WHERE list_contains(?, run_id)", [runs]
        ).fetchall()
    }
    kept: set[tuple[str, str]] = set()
    refused: dict[tuple[str, int], list[str]] = {}
    for row in rows.steps:
        run_id, step, generation = row[0], row[1], row[_GENERATION]
        if run_id not in claims or (run_id, step) in held:
            continue
        if generation is not None and claims[run_id] != int(generation):
            refused.setdefault((run_id, int(generation)), []).append(step)
            continue
        kept.add((run_id, step))

    def keep(row: list[object]) -> bool:
        return (row[0], row[1]) in kept

    fresh = QuickRows(
        [r for r in rows.steps if keep(r)],
        [r for r in rows.events if keep(r)],
        [r for r in rows.checkpoints if keep(r)],
    )
    return fresh, [Refused(r, tuple(names), g, claims[r]) for (r, g), names in refused.items()]


def refused_text(location: str, process: str, refused: Refused) -> str:
    """What the log says about steps of a dead stale owner that were not replayed."""
    names = ", ".join(f"'{n}'" for n in refused.steps)
    since = (
        f"taken over by another owner under lease generation {refused.current}"
        if refused.current is not None
        else "released from that process"
    )
    return (
        f"store {location}: completed step(s) {names} of run '{refused.run_id}' in the completion log of dead "
        f"process {process} were not replayed: they ran under lease generation {refused.generation}, and the run "
        f"has since been {since} (its lease ran out, or the run was unlocked), so these late writes are refused "
        "and the other owner's work is kept. They execute again when the run resumes."
    )


def _merge(merged: QuickRows, rows: QuickRows) -> None:
    """Add a record's rows; a later record of a step (a kernel's completion after its start) replaces the earlier.

    A kernel's step decided in memory is logged twice: its start (a row ``running``, one event)
    before its body runs, and its whole final state (the row, both events, its checkpoints) before
    it returns. A dead kernel's log is replayed as the last record of each step says.
    """
    later = {(r[0], r[1]) for r in rows.steps}
    if later & {(r[0], r[1]) for r in merged.steps}:
        merged.steps[:] = [r for r in merged.steps if (r[0], r[1]) not in later]
        merged.events[:] = [r for r in merged.events if (r[0], r[1]) not in later]
        merged.checkpoints[:] = [r for r in merged.checkpoints if (r[0], r[1]) not in later]
    merged.steps.extend(rows.steps)
    merged.events.extend(rows.events)
    merged.checkpoints.extend(rows.checkpoints)


def replay_dead(con: duckdb.DuckDBPyConnection, folder: Path, me: str, location: str) -> list[LogFile]:
    """Apply the unapplied records of every dead process's log; returns the files to remove after commit."""
    found = dead_logs(folder, me)
    done: list[LogFile] = []
    for process, files in found.items():
        applied = _applied(con, process)
        last = applied
        merged = QuickRows([], [], [])
        for log in files:
            try:
                records, torn = read_records(log.path)
            except OSError as exc:  # unreadable here: left in place for a process that can read it
                _log.warning("completion log %s cannot be read (%s); left in place", log.path, exc)
                continue
            if torn:
                _log.info("completion log %s ends in a torn record (a crash mid-write); it is dropped", log.path)
            readable = True
            for payload in records:
                try:
                    number, rows = decode_quick_rows(payload)
                except (ValueError, TypeError) as exc:  # intact bytes this version cannot read: keep the file
                    _log.warning("completion log %s holds a record that cannot be read (%s); kept", log.path, exc)
                    readable = False
                    continue
                if number <= applied:
                    continue
                last = max(last, number)
                _merge(merged, rows)
            if readable:
                done.append(log)
        fresh, refused = _not_yet_stored(con, merged)
        for stale in refused:
            _log.warning("%s", refused_text(location, process, stale))
        insert_quick_rows(con, fresh)
        if last > applied:
            record_applied(con, process, last)
        if fresh.steps:
            _log.info("store %s: %d completed step(s) of dead process %s replayed", location, len(fresh.steps), process)
    return done


def unreplayed(con: duckdb.DuckDBPyConnection, folder: Path, me: str) -> bool:
    """Whether a dead process's log holds a completed step the store does not have yet (reads only)."""
    for process, files in dead_logs(folder, me).items():
        applied = _applied(con, process)
        for log in files:
            try:
                records, _ = read_records(log.path)
            except OSError:
                continue
            for payload in records:
                try:
                    number, rows = decode_quick_rows(payload)
                except (ValueError, TypeError):
                    continue
                if number > applied and _not_yet_stored(con, rows)[0].steps:
                    return True
    return False


def prune(con: duckdb.DuckDBPyConnection, folder: Path) -> None:
    """Forget the applied counts of processes whose logs are all gone (checked when a store is opened)."""
    rows = con.execute("SELECT process FROM completion_logs").fetchall()
    if not rows:
        return
    try:
        present = {p.name.rsplit("_", 1)[0] for p in folder.iterdir()}
    except FileNotFoundError:
        present = set()
    gone = [process for (process,) in rows if process not in present]
    if gone:
        con.execute("DELETE FROM completion_logs WHERE list_contains(?, process)", [gone])
