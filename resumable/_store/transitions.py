"""The one place a step changes state: checked against the table, guarded, logged in the same transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from resumable._records import Owner
from resumable._states import StepState, check_transition
from resumable._store.dialect import Connection
from resumable._store.rows import log_events
from resumable.errors import StepChangedError


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
) -> int:
    """Move a step from ``source`` to ``target`` (plus ``set_sql`` columns) and log the event.

    The row changes only while it is still in ``source`` (and, with ``owned_by``, still owned by
    that process); otherwise StepChangedError, and the caller's transaction rolls back. Returns
    the step's attempt count after the change.
    """
    checked = check_transition(step, source, target)
    guard, guard_params = "", []
    if owned_by is not None:
        guard, guard_params = " AND owner_host = ? AND owner_pid = ?", [owned_by.host, owned_by.pid]
    changed = con.execute(
        f"UPDATE steps SET state = ?{set_sql} WHERE run_id = ? AND step = ? AND state = ?{guard} RETURNING attempts",
        [target.value, *set_params, run_id, step, source.value, *guard_params],
    ).fetchone()
    if changed is None:
        raise StepChangedError(run_id, step, source.value)
    attempts = int(changed[0])
    log_events(con, [(run_id, step, checked, source, target, attempts, who, detail, None)])
    return attempts
