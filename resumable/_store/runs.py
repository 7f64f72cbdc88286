"""Runs and who owns them: creating and finding runs, claiming them, and finding dead owners.

Plain functions over an open transaction; ``DuckDBStore`` opens the transactions and decides what
is deferred (``journal.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from resumable import _params
from resumable._owner import is_alive, is_local
from resumable._records import Owner, RunInfo
from resumable._states import RunState, StepState
from resumable._store.base import Unlocked
from resumable._store.dialect import Connection, dialect_of
from resumable._store.lease import owner_alive
from resumable._store.liveness import dead_owners, shown_state
from resumable._store.rows import RunView, clock, owner_from, run_state, same_process
from resumable._store.transitions import transition
from resumable.errors import (
    CheckpointNotFoundError,
    ForkError,
    LeaseLostError,
    ParameterMismatchError,
    PipelineMismatchError,
    RunOwnedError,
)

# A run's last change is its newest event: derived, so the per-step path writes one row less.
_UPDATED_AT = "coalesce((SELECT max(e.happened_at) FROM events e WHERE e.run_id = r.run_id), r.created_at)"


_STATE_COUNTS = ", ".join(f"count(s.step) FILTER (WHERE s.state = '{state.value}')" for state in StepState)


def find_runs(
    con: Connection, where: str, params: list[Any], limit: int, state: RunState | None = None
) -> list[RunInfo]:
    """Runs matching ``where`` (and ``state``), newest first, each with its state derived from its steps.

    States are as a reader sees them: a running step whose owner died counts as interrupted
    (``liveness.py``); nothing is written. Steps are counted by state in SQL; only running steps'
    owners come back, to be checked. The state is known only after the query, so with ``state``
    the limit is applied here rather than in SQL.
    """
    sql = dialect_of(con)
    rows = con.execute(
        f"""SELECT r.run_id, r.pipeline, r.created_at, {_UPDATED_AT}, r.params, {sql.running_owners},
                  coalesce(sum(s.duration_s), 0), r.forked_from, r.forked_at, {_STATE_COUNTS}
           FROM runs r LEFT JOIN steps s USING (run_id)
           WHERE {where}
           {sql.group_by_run} ORDER BY r.created_at DESC, r.run_id DESC {"" if state else "LIMIT ?"}""",
        [*params] if state else [*params, limit],
    ).fetchall()
    dead = dead_owners(con) if any(row[5] for row in rows) else frozenset()
    out = []
    for row in rows:
        counts = {s.value: int(n) for s, n in zip(StepState, row[9:], strict=True)}
        for owner in row[5] or []:
            if shown_state(StepState.RUNNING.value, (owner["h"], owner["p"], owner["t"]), dead) != "running":
                counts[StepState.RUNNING.value] -= 1
                counts[StepState.INTERRUPTED.value] += 1
        present = {k: n for k, n in sorted(counts.items()) if n}
        run = RunInfo(
            row[0], row[1], row[2], row[3], _params.decode(row[4]), run_state(list(present)), sum(present.values()),
            present, float(row[6]), row[7], row[8],
        )  # fmt: skip
        if state is None or run.state is state:
            out.append(run)
            if len(out) >= limit:
                break
    return out


def get_run(con: Connection, run_id: str) -> RunInfo | None:
    found = find_runs(con, "r.run_id = ?", [run_id], 1)
    return found[0] if found else None


def list_runs(
    con: Connection,
    pipeline: str | None,
    limit: int,
    state: RunState | None = None,
    since: datetime | None = None,
) -> list[RunInfo]:
    return find_runs(
        con,
        "(? IS NULL OR r.pipeline = ?) AND (?::TIMESTAMPTZ IS NULL OR r.created_at >= ?::TIMESTAMPTZ)",
        [pipeline, pipeline, since, since],
        limit,
        state,
    )


def open_run(
    con: Connection, run_id: str, pipeline: str, params: dict[str, Any] | None, update_params: bool
) -> RunInfo:
    """Create the run, or check that the existing one belongs to ``pipeline`` and ``params`` (or record new ones).

    Parameters are recorded as Python literals (``_params``); a value that cannot come back as it
    was raises ParameterValueError before anything is written.
    """
    encoded = _params.encode(params or {})
    dialect_of(con).lock_name(con, f"run:{run_id}")  # two processes creating one run: one inserts it
    existing = get_run(con, run_id)
    if existing is None:
        check_new_id(con, run_id)
        con.execute(
            "INSERT INTO runs (run_id, pipeline, created_at, params) VALUES (?, ?, now(), ?)",
            [run_id, pipeline, encoded],
        )
        created = get_run(con, run_id)
        assert created is not None
        return created
    if existing.pipeline != pipeline:
        raise PipelineMismatchError(run_id, existing.pipeline, pipeline)
    row = con.execute("SELECT params FROM runs WHERE run_id = ?", [run_id]).fetchone()
    assert row is not None
    differences = _params.differences(row[0], params or {})
    if params and differences:
        if not update_params:
            raise ParameterMismatchError(run_id, differences)
        con.execute("UPDATE runs SET params = ? WHERE run_id = ?", [encoded, run_id])
        updated = get_run(con, run_id)
        assert updated is not None
        return updated
    return existing


def check_new_id(con: Connection, run_id: str) -> None:
    """Refuse a new run under an id whose checkpoint rows forks of a deleted run still share or point at.

    A new run's first completions write generation 0, which would sit beside (and be restored
    with) the old rows a fork still points at.
    """
    # Pending steps count too: a fork's step sent back to pending still points at the deleted run's
    # place, and would take a new run's rows there for its last good checkpoint.
    row = con.execute(
        """SELECT 1 WHERE EXISTS (SELECT 1 FROM checkpoints WHERE run_id = ?)
                       OR EXISTS (SELECT 1 FROM steps WHERE checkpoint_run = ?)""",
        [run_id, run_id],
    ).fetchone()
    if row is not None:
        raise ForkError(
            f"run id '{run_id}' still names checkpoints of a deleted run that other runs (forks of it) share, "
            f"so a new run cannot start under it; nothing was written",
            "Choose another run id.",
        )


def set_owner(con: Connection, run_id: str, owner: Owner) -> tuple[set[str], int]:
    """Record ``owner`` as the run's executor; returns the names of the run's steps and the claim's fencing token.

    The token is the next number of the ``lease_generation`` sequence, unless ``owner`` holds the
    run already (a nested claim of the same process keeps its token, so its own steps stay current).
    """
    row = con.execute(
        """UPDATE runs SET owner_generation = CASE
               WHEN owner_host = ? AND owner_pid = ? AND owner_generation IS NOT NULL THEN owner_generation
               ELSE nextval('lease_generation') END,
             owner_host = ?, owner_pid = ?, owner_started = ?, owner_kernel = ?
           WHERE run_id = ? RETURNING owner_generation""",
        [owner.host, owner.pid, owner.host, owner.pid, owner.started, owner.kernel_id, run_id],
    ).fetchone()
    assert row is not None
    names = {r[0] for r in con.execute("SELECT step FROM steps WHERE run_id = ?", [run_id]).fetchall()}
    return names, int(row[0])


def clear_owner(con: Connection, run_id: str, owner: Owner, generation: int | None = None) -> None:
    """Forget the run's executor, when it is still ``owner`` under the claim's token ``generation``."""
    con.execute(
        """UPDATE runs SET owner_host = NULL, owner_pid = NULL, owner_started = NULL, owner_kernel = NULL
           WHERE run_id = ? AND owner_host = ? AND owner_pid = ? AND (? IS NULL OR owner_generation = ?)""",
        [run_id, owner.host, owner.pid, generation, generation],
    )


def next_token(con: Connection) -> int:
    """A new fencing token: the next number of the one sequence every store's owners take them from."""
    row = con.execute("SELECT nextval('lease_generation')").fetchone()
    assert row is not None
    return int(row[0])


def pipeline_and_holder(con: Connection, location: str, run_id: str) -> tuple[str, Owner | None, int | None]:
    """The run's pipeline, the process that owns it now (None: nobody) and that claim's fencing token.

    CheckpointNotFoundError without the run.
    """
    # Locked until the transaction ends (a server store): whoever decides about the run next waits, then
    # sees this transaction's owner; exactly one of two racing processes takes the run.
    row = con.execute(
        "SELECT pipeline, owner_host, owner_pid, owner_started, owner_kernel, owner_generation FROM runs"
        " WHERE run_id = ?" + dialect_of(con).for_update,
        [run_id],
    ).fetchone()
    if row is None:
        raise CheckpointNotFoundError(location, run_id)
    return row[0], owner_from(row[1], row[2], row[3], row[4]), None if row[5] is None else int(row[5])


def fence_claim(run_id: str, claim: int | None, holder: Owner | None, generation: int | None) -> None:
    """Refuse a write made under the claim ``claim`` once the run's current claim has another token."""
    if claim is not None and generation != claim:
        raise LeaseLostError(run_id, None, claim, holder.describe() if holder else None, generation)


def check_owner(
    con: Connection, location: str, run_id: str, me: Owner, step: str = "", claim: int | None = None
) -> RunView:
    """Raise RunOwnedError when another live process holds the run or runs one of its steps.

    ``claim``: the fencing token under which ``me`` believes it holds the run; LeaseLostError when
    the run has been claimed under another one since. Running steps of dead owners become
    ``interrupted`` on the way. Returns what the one query behind this learned about the run and
    ``step``, so callers need no second round trip.
    """
    # Two plain point queries: DuckDB plans correlated subqueries far more slowly (8 ms vs 1 ms).
    pipeline, holder, generation = pipeline_and_holder(con, location, run_id)
    fence_claim(run_id, claim, holder, generation)
    if holder is not None and not same_process(holder, me):
        if owner_alive(con, holder):
            raise RunOwnedError(run_id, pipeline, holder.host, holder.pid, clock(holder.started), None)
        # The gone owner's token goes with it: a late write of its claim is refused (``fence_claim``).
        con.execute(
            "UPDATE runs SET owner_host = NULL, owner_pid = NULL, owner_generation = NULL WHERE run_id = ?", [run_id]
        )
    rows = con.execute(
        f"SELECT {VIEW_COLUMNS} FROM steps WHERE run_id = ? AND (step = ? OR state = 'running')", [run_id, step]
    ).fetchall()
    mine = next((r for r in rows if r[0] == step), None)
    state = mine[1] if mine else None
    for name, running_state, _, *owner_cols in (r[:7] for r in rows):
        if running_state != StepState.RUNNING.value:
            continue
        owner = owner_from(*owner_cols)
        if owner is not None and same_process(owner, me):
            continue
        if owner is not None and owner_alive(con, owner):
            raise RunOwnedError(run_id, pipeline, owner.host, owner.pid, clock(owner.started), name)
        transition(
            con, run_id, name, StepState.RUNNING, StepState.INTERRUPTED, me,
            f"owner {owner.describe() if owner else 'unknown'} is gone",
        )  # fmt: skip
        if name == step:
            state = StepState.INTERRUPTED.value
    if mine is None:
        return RunView(pipeline, None, None, None, None, None)
    return view_from(pipeline, state, mine)


# What a decision about one step reads of its row (``view_from`` makes the RunView of it).
VIEW_COLUMNS = """step, state, attempts, owner_host, owner_pid, owner_started, owner_kernel, source_digest,
    outputs, finished_at, inputs, effect, key_generation, key_used, rerun_token,
    coalesce(checkpoint_run, run_id), coalesce(checkpoint_generation, 0)"""


def view_from(pipeline: str, state: str | None, row: Sequence[Any]) -> RunView:
    """The RunView of a row of ``VIEW_COLUMNS`` (``state`` as found, after any recovery)."""
    return RunView(
        pipeline, state, row[2], row[7], row[8], row[9], row[10], bool(row[11]), int(row[12] or 1),
        bool(row[13]), row[14], row[15], int(row[16]),
    )  # fmt: skip


def unlock(con: Connection, location: str, run_id: str, who: Owner) -> Unlocked:
    """Release the run from every owner except a live one on this host (RunOwnedError, nothing changed)."""
    pipeline, holder, _ = pipeline_and_holder(con, location, run_id)
    running = [
        (r[0], owner_from(r[1], r[2], r[3], r[4]))
        for r in con.execute(
            """SELECT step, owner_host, owner_pid, owner_started, owner_kernel FROM steps
               WHERE run_id = ? AND state = 'running' ORDER BY seq""",
            [run_id],
        ).fetchall()
    ]
    holders: list[tuple[str | None, Owner | None]] = [(None, holder), *running]
    for step, owner in holders:
        if owner is not None and is_local(owner) and is_alive(owner):
            raise RunOwnedError(run_id, pipeline, owner.host, owner.pid, clock(owner.started), step)
    released: list[Owner] = []
    for _, owner in holders:
        if owner is not None and not any(same_process(owner, o) for o in released):
            released.append(owner)
    con.execute(
        """UPDATE runs SET owner_host = NULL, owner_pid = NULL, owner_started = NULL, owner_kernel = NULL,
                          owner_generation = NULL
           WHERE run_id = ?""",
        [run_id],
    )
    for step, owner in running:
        gone = owner.describe() if owner is not None else "unknown"
        transition(
            con,
            run_id,
            step,
            StepState.RUNNING,
            StepState.INTERRUPTED,
            who,
            f"unlocked by the user: owner {gone} released",
        )
    return Unlocked(tuple(released), tuple(step for step, _ in running))
