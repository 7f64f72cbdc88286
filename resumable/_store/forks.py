"""Forks: a new run made of another run's completed steps before a step, sharing their checkpoints.

Plain functions over an open transaction; the store (DuckDB or PostgreSQL) opens it. Nothing of a checkpoint is
copied: the fork's steps point at the rows their origin step points at (``checkpoint_run``,
``checkpoint_generation``), and ``checkpoints.drop_superseded`` keeps rows while any such pointer
of a step that is not pending exists. The origin run is only read, so a run a live process owns
can be forked; the transaction reads one consistent snapshot of it.
"""

from __future__ import annotations

from typing import Any

from resumable import _params
from resumable._records import Owner, RunInfo
from resumable._states import StepState, Transition, check_arrival
from resumable._store.dialect import Connection, dialect_of
from resumable._store.rows import log_events
from resumable._store.runs import check_new_id, get_run
from resumable.errors import CheckpointNotFoundError, ForkError, PipelineMismatchError, option_words

# Copied from the origin's step as it is; state, owner, error and pointer are set by the fork.
_COPIED = (
    "attempts, source, source_digest, reads, outputs, options, started_at, finished_at, duration_s, output_bytes, "
    "inputs, effect, key_generation, key_used, rerun_token"
)


def fork(
    con: Connection,
    location: str,
    origin: str,
    step: str,
    run_id: str,
    who: Owner,
    params: dict[str, Any] | None,
    pipeline: str | None,
) -> RunInfo:
    """Create run ``run_id`` from ``origin``'s completed steps before ``step``; returns the new run.

    Its parameters are the origin's, overridden by ``params``. Steps before ``step`` that are not
    completed in the origin (failed, pending) are not copied: they execute in the fork, as do
    ``step`` and everything after it.
    """
    sql = dialect_of(con)
    # A server store: the origin's row is locked first, so a removal of it waits for the fork (or the
    # fork, after the removal, finds no origin), then the steps it copies below.
    found = con.execute(f"SELECT pipeline, params FROM runs WHERE run_id = ?{sql.for_update}", [origin]).fetchone()
    if found is None:
        raise CheckpointNotFoundError(location, origin)
    origin_pipeline, origin_params = found
    if pipeline is not None and pipeline != origin_pipeline:
        raise PipelineMismatchError(origin, origin_pipeline, pipeline)
    at = con.execute("SELECT seq FROM steps WHERE run_id = ? AND step = ?", [origin, step]).fetchone()
    if at is None:
        names = [r[0] for r in con.execute("SELECT step FROM steps WHERE run_id = ? ORDER BY seq", [origin]).fetchall()]
        listed = ", ".join(f"'{n}'" for n in names) or "none yet"
        raise ForkError(
            f"cannot fork run '{origin}' from step '{step}': the run has no step '{step}' (its steps: {listed}); "
            f"nothing was written",
            f"Name one of its steps; see them with: resumable show {origin}",
        )
    sql.lock_name(con, f"run:{run_id}")  # two forks into one new id: one creates it
    taken = get_run(con, run_id)
    if taken is not None:
        raise ForkError(
            f"cannot fork run '{origin}' into run '{run_id}': run '{run_id}' (pipeline '{taken.pipeline}') already "
            f"exists; nothing was written",
            f"Choose another id with {option_words('run_id=', '--run-id')}, or leave it out to get a new one.",
        )
    check_new_id(con, run_id)
    if sql.for_update:  # a server store: a completion of a copied step waits until the fork points at its rows
        con.execute(f"SELECT step FROM steps WHERE run_id = ? AND seq < ? AND state = ?{sql.for_update}",
                    [origin, at[0], StepState.COMPLETED.value])  # fmt: skip
    _refuse_unfinished_effects(con, origin, step, at[0])
    merged = {**_params.decode(origin_params), **(params or {})}
    con.execute(
        """INSERT INTO runs (run_id, pipeline, created_at, params, forked_from, forked_at)
           VALUES (?, ?, now(), ?, ?, ?)""",
        [run_id, origin_pipeline, _params.encode(merged), origin, step],
    )
    con.execute(
        f"""INSERT INTO steps (run_id, step, seq, state, {_COPIED}, checkpoint_run, checkpoint_generation)
            SELECT ?, step, row_number() OVER (ORDER BY seq) - 1, ?, {_COPIED},
                   coalesce(checkpoint_run, run_id), coalesce(checkpoint_generation, 0)
            FROM steps WHERE run_id = ? AND seq < ? AND state = ?""",
        [run_id, StepState.COMPLETED.value, origin, at[0], StepState.COMPLETED.value],
    )
    rows = con.execute("SELECT step, attempts FROM steps WHERE run_id = ? ORDER BY seq", [run_id]).fetchall()
    detail = f"forked from run '{origin}' at step '{step}': shares its checkpoint"
    log_events(
        con,
        [
            (run_id, name, check_arrival(name, Transition.FORKED, StepState.COMPLETED), None, StepState.COMPLETED,
             int(attempts or 0), who, detail, None)
            for name, attempts in rows
        ],
    )  # fmt: skip
    made = get_run(con, run_id)
    assert made is not None
    return made


def _refuse_unfinished_effects(con: Connection, origin: str, step: str, seq: int) -> None:
    """Refuse a fork past an effect step whose last execution did not complete in the origin.

    Such a step is not copied, so the fork would execute it under the new run's key, although its
    effect may have happened under the origin's (a rerun that failed after calling the service,
    a process killed inside it): a repeated effect that nobody would notice.
    """
    rows = con.execute(
        """SELECT step, state FROM steps WHERE run_id = ? AND seq < ? AND coalesce(effect, false) AND state <> ?
           ORDER BY seq""",
        [origin, seq, StepState.COMPLETED.value],
    ).fetchall()
    if rows:
        name, state = rows[0]
        raise ForkError(
            f"cannot fork run '{origin}' from step '{step}': step '{name}' before it has side effects and its last "
            f"execution did not complete ({state}), so its effect may have happened; the fork would execute it "
            f"again under a new key; nothing was written",
            f"Finish '{name}' in run '{origin}' first (resume that run), or fork from '{name}' to do it again "
            "deliberately.",
        )
