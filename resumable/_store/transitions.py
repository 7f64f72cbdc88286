"""The one place a step changes state: checked against the table, guarded, logged in the same transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

from resumable._records import Owner
from resumable._states import StepState, Transition, check_transition
from resumable._store.dialect import Connection
from resumable._store.rows import log_events, owner_from
from resumable.errors import LeaseLostError, StepChangedError

# Each entry into running counts, here and nowhere else: a start (from pending) begins a new
# execution at its first attempt; a retry (of a failed or interrupted step) is the next attempt of
# the same execution. ``numbering.py`` numbers the event log by the same rule.
_COUNTS = {
    Transition.START: ", attempts = 1, executions = coalesce(executions, 1) + 1",
    Transition.RETRY: ", attempts = attempts + 1",
}


def transition(
    con: Connection,
    run_id: str,
    step: str,
    source: StepState,
    target: StepState,
    who: Owner,
    detail: str | None = None,
    set_sql: str = "",
    set_params: Sequence[Any] = (),
    *,
    owned_by: Owner | None = None,
    generation: int | None = None,
) -> tuple[int, int]:
    """Move a step from ``source`` to ``target`` (plus ``set_sql`` columns) and log the event.

    The row changes only while it is still in ``source`` (and, with ``owned_by``, still owned by
    that process, and with ``generation``, still running under that fencing token); otherwise
    StepChangedError (LeaseLostError when another token took the step), and the caller's
    transaction rolls back. Returns
    the step's attempt within its execution, and its executions, after the change; the event
    records that attempt.
    """
    checked = check_transition(step, source, target)
    set_sql = _COUNTS.get(checked, "") + set_sql
    guard, guard_params = "", []
    if owned_by is not None:
        guard, guard_params = " AND owner_host = ? AND owner_pid = ?", [owned_by.host, owned_by.pid]
    if generation is not None:
        guard += " AND owner_generation = ?"
        guard_params.append(generation)
    changed = con.execute(
        f"UPDATE steps SET state = ?{set_sql} WHERE run_id = ? AND step = ? AND state = ?{guard}"
        " RETURNING attempts, executions",
        [target.value, *set_params, run_id, step, source.value, *guard_params],
    ).fetchone()
    if changed is None:
        refused(con, run_id, step, source, generation)
    attempt, executions = int(changed[0]), int(changed[1] or 1)
    log_events(con, [(run_id, step, checked, source, target, attempt, who, detail, None)])
    return attempt, executions


def refused(con: Connection, run_id: str, step: str, source: StepState, generation: int | None) -> NoReturn:
    """Why a guarded write to a step changed nothing: LeaseLostError when it runs under another token now."""
    if generation is not None:
        row = con.execute(
            "SELECT owner_host, owner_pid, owner_started, owner_kernel, owner_generation FROM steps"
            " WHERE run_id = ? AND step = ?",
            [run_id, step],
        ).fetchone()
        if row is not None and row[4] is not None and int(row[4]) != generation:
            holder = owner_from(row[0], row[1], row[2], row[3])
            raise LeaseLostError(run_id, step, generation, holder.describe() if holder else None, int(row[4]))
    raise StepChangedError(run_id, step, source.value)
