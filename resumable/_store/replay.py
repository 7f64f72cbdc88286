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

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import duckdb

from resumable import _codec
from resumable._records import Blob
from resumable._store import steps as step_rows
from resumable._store.base import Completion
from resumable._store.completion_log import LogFile, dead_logs, read_records
from resumable._store.rows import (
    CHECKPOINT_INSERT,
    STEP_INSERT,
    QuickRows,
    decode_quick_rows,
    insert_quick_rows,
    owner_from,
)

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


def _not_yet_stored(con: duckdb.DuckDBPyConnection, rows: QuickRows) -> tuple[QuickRows, list[Refused], QuickRows]:
    """Only the rows of steps the store does not hold yet, of runs it does hold under the claim they ran under.

    Third: the completions of steps the store holds ``running`` under the very attempt that logged
    them (a kernel's cell whose start a transaction wrote, ``DuckDBStore._complete_started_cell``):
    replayed as that attempt's completion (``_finish``).

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
        return rows, [], QuickRows([], [], [])
    runs = sorted({r[0] for r in rows.steps})
    claims = {
        r: None if g is None else int(g)
        for r, g in con.execute(
            "SELECT run_id, owner_generation FROM runs WHERE list_contains(?, run_id)", [runs]
        ).fetchall()
    }
    held = {
        (r[0], r[1]): r[2:]
        for r in con.execute(
            """SELECT run_id, step, state, owner_host, owner_pid, owner_started, owner_generation FROM steps
               WHERE list_contains(?, run_id)""",
            [runs],
        ).fetchall()
    }
    at = _STEP_AT
    kept: set[tuple[str, str]] = set()
    finishing: set[tuple[str, str]] = set()
    refused: dict[tuple[str, int], list[str]] = {}
    for row in rows.steps:
        run_id, step, generation = row[0], row[1], row[_GENERATION]
        if run_id not in claims:
            continue
        if (run_id, step) in held:
            state, host, pid, started, token = held[(run_id, step)]
            if (
                row[at["state"]] == "completed"
                and state == "running"
                and (host, pid, token) == (row[at["owner_host"]], row[at["owner_pid"]], row[_GENERATION])
                and started is not None
                and abs(float(started) - float(row[at["owner_started"]])) < 0.01
            ):
                finishing.add((run_id, step))
            continue
        if generation is not None and claims[run_id] != int(generation):
            refused.setdefault((run_id, int(generation)), []).append(step)
            continue
        kept.add((run_id, step))

    def only(chosen: set[tuple[str, str]]) -> QuickRows:
        def of(row: list[object]) -> bool:
            return (row[0], row[1]) in chosen

        return QuickRows(
            [r for r in rows.steps if of(r)],
            [r for r in rows.events if of(r)],
            [r for r in rows.checkpoints if of(r)],
            [r for r in rows.unsynced if (r[0], r[1]) in chosen],
        )

    refusals = [Refused(r, tuple(names), g, claims[r]) for (r, g), names in refused.items()]
    return only(kept), refusals, only(finishing)


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
        merged.unsynced[:] = [r for r in merged.unsynced if (r[0], r[1]) not in later]
    merged.steps.extend(rows.steps)
    merged.events.extend(rows.events)
    merged.checkpoints.extend(rows.checkpoints)
    merged.unsynced.extend(rows.unsynced)


# Where each column sits in a logged step row and checkpoint row.
_STEP_AT = {name: i for i, (name, _) in enumerate(STEP_INSERT)}
_CHECKPOINT_AT = {name: i for i, (name, _) in enumerate(CHECKPOINT_INSERT)}
# A completed step's row taken back to the attempt its dead process was running (``rows.quick_rows``).
_RUNNING = {"state": "running", "finished_at": None, "duration_s": None, "outputs": "[]", "output_bytes": 0,
            "key_used": False}  # fmt: skip


def unsynced_text(location: str, process: str, run_id: str, step: str, reason: str) -> str:
    """What the log says about a logged completion whose payload did not survive (a power cut took it)."""
    return (
        f"store {location}: completed step '{step}' of run '{run_id}' in the completion log of dead process "
        f"{process} is not replayed as completed: {reason}. Its payload had not reached the disk when the process "
        "stopped (a power cut or a crash of the machine loses such bytes, and so does a disk that fails to write "
        "them), so the step reads interrupted and runs again when the run resumes (a notebook: when its cell "
        "runs again)."
    )


def _check_unsynced(rows: QuickRows, payload_dir: Path, location: str, process: str) -> QuickRows:
    """Sync and check each payload written behind; a step with one missing, short or wrong is not completed.

    A logged completion pointing at bytes that are gone would restore nothing or fail its digest
    check only when loaded: instead the step is replayed as the attempt the dead process was
    running (it reads ``interrupted``), and runs again.
    """
    if not rows.unsynced:
        return rows
    file_at, digest_at, size_at, codec_at = (_CHECKPOINT_AT[c] for c in ("file", "digest", "size", "codec"))
    digests = {
        (r[0], r[1], r[file_at]): (r[digest_at], int(r[size_at]), r[codec_at]) for r in rows.checkpoints
    }  # each payload is checked by its own row's codec (an older process's log may name the legacy one)
    bad: dict[tuple[str, str], str] = {}
    for run_id, step, file in rows.unsynced:
        if (run_id, step) in bad:
            continue
        digest, size, codec = digests.get((run_id, step, file), ("", -1, _codec.CODEC))
        try:
            reason = _codec.check_payload(payload_dir / file, digest, size, codec)
        except OSError as exc:
            reason = f"its payload file {Path(file).name} cannot be read ({exc.strerror or exc})"
        if reason is not None:
            bad[(run_id, step)] = reason
            _log.warning("%s", unsynced_text(location, process, run_id, step, reason))
    if not bad:
        return rows
    steps = []
    for row in rows.steps:
        taken_back = list(row)
        if (row[0], row[1]) in bad:
            for name, value in _RUNNING.items():
                taken_back[_STEP_AT[name]] = value
        steps.append(taken_back)
    return QuickRows(
        steps,
        [r for r in rows.events if (r[0], r[1]) not in bad or r[5] != "completed"],
        [r for r in rows.checkpoints if (r[0], r[1]) not in bad],
    )


def _finish(con: duckdb.DuckDBPyConnection, rows: QuickRows) -> None:
    """Complete the ``running`` rows of steps whose completion a dead kernel logged (``_not_yet_stored``'s third).

    Written as the kernel's own group commit would have written it (``steps.complete``, guarded by
    the attempt's owner and fencing token). A row taken back to running by ``_check_unsynced``
    stays as it is: it reads ``interrupted``.
    """
    at, c_at = _STEP_AT, _CHECKPOINT_AT
    for row in rows.steps:
        if row[at["state"]] != "completed":
            continue
        run_id, step = row[0], row[1]
        blobs: dict[str, list[Blob]] = {"value": [], "display": []}
        for c in rows.checkpoints:
            if (c[0], c[1]) == (run_id, step):
                blobs[c[c_at["kind"]]].append(
                    Blob(c[c_at["name"]], c[c_at["codec"]], c[c_at["digest"]], int(c[c_at["size"]]),
                         c[c_at["data"]], c[c_at["file"]], c[c_at["signature"]])
                )  # fmt: skip
        owner = owner_from(row[at["owner_host"]], row[at["owner_pid"]], row[at["owner_started"]],
                           row[at["owner_kernel"]])  # fmt: skip
        assert owner is not None  # a completed step's row always names its owner (``steps.complete`` guards by it)
        done = Completion(
            run_id, step, owner, tuple(blobs["value"]), float(row[at["duration_s"]] or 0.0),
            blobs["display"][0] if blobs["display"] else None, tuple(json.loads(row[at["reads"]])),
        )  # fmt: skip
        token = row[_GENERATION]
        step_rows.complete(con, done, None if token is None else int(token))


def replay_dead(
    con: duckdb.DuckDBPyConnection, folder: Path, me: str, location: str, payload_dir: Path
) -> list[LogFile]:
    """Apply the unapplied records of every dead process's log; returns the files to remove after commit.

    Payloads a record says were written behind are synced and checked first (``_check_unsynced``).
    """
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
        fresh, refused, finishing = _not_yet_stored(con, merged)
        for stale in refused:
            _log.warning("%s", refused_text(location, process, stale))
        fresh = _check_unsynced(fresh, payload_dir, location, process)
        finishing = _check_unsynced(finishing, payload_dir, location, process)
        _finish(con, finishing)
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
                fresh, _, finishing = _not_yet_stored(con, rows)
                if number > applied and (fresh.steps or finishing.steps):
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
