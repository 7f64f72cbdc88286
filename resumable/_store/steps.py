"""Steps: deciding restore or execute, staleness, completions, failures, retries and invalidation.

Plain functions over an open transaction; ``DuckDBStore`` opens the transactions, defers quick
steps (``journal.py``) and reads a failed commit back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from resumable import _inputs
from resumable import _why as _why_text
from resumable._inputs import InputChange
from resumable._records import Event, Owner, StepStatus
from resumable._states import StepState, Transition, check_transition
from resumable._store import checkpoints
from resumable._store.base import Begin, Completion, StepRequest
from resumable._store.dialect import Connection, dialect_of
from resumable._store.liveness import OwnerKey, dead_owners, shown_state
from resumable._store.rows import STEP_COLUMNS, RunView, log_events, status_from
from resumable._store.runs import check_owner
from resumable._store.transitions import transition
from resumable._why import Held, Why
from resumable.errors import CheckpointNotFoundError, RerunError, StepChangedError, StepRunningError

_RESTART = """, attempts = attempts + 1, owner_host = ?, owner_pid = ?, owner_started = ?, owner_kernel = ?,
    started_at = now(), finished_at = NULL, duration_s = NULL"""


def _rerun_token(req: StepRequest) -> str:
    """What a rerun was asked for: the same source and inputs asking again finds it done."""
    material = json.dumps([req.source_digest, _inputs.encode(req.inputs)], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _why(view: RunView, req: StepRequest) -> Why:
    """What differs between the completed step and this request (recorded inputs NULL: not tracked)."""
    source_changed = req.source_digest is not None and view.source_digest != req.source_digest
    changed: tuple[InputChange, ...] = ()
    if view.inputs is not None:
        changed = tuple(_inputs.changes(_inputs.decode(json.loads(view.inputs)), req.inputs))
    return Why(source_changed, changed, req.force, req.rerun)


ABANDONED = "left running by this process: its last attempt ended without being recorded"


def begin(con: Connection, location: str, req: StepRequest, *, abandoned: bool = False) -> Begin:
    """Restore or start a step: the decision of :meth:`Store.begin_step`, in the caller's transaction.

    ``abandoned``: this process is not executing the step now, so if the store still shows it
    running under this process, that attempt's end was never recorded; it becomes interrupted
    and starts again, instead of failing as a transition from running to running.
    """
    view = check_owner(con, location, req.run_id, req.owner, req.step)
    if abandoned and view.state == StepState.RUNNING.value:
        transition(con, req.run_id, req.step, StepState.RUNNING, StepState.INTERRUPTED, req.owner, ABANDONED,
                   owned_by=req.owner)  # fmt: skip
        view = replace(view, state=StepState.INTERRUPTED.value)
    owner_params = [req.owner.host, req.owner.pid, req.owner.started, req.owner.kernel_id]
    inputs_json = json.dumps(_inputs.encode(req.inputs))
    common = [req.source, req.source_digest, json.dumps(list(req.reads)), json.dumps(req.options), inputs_json]
    if view.state is None:
        if req.rerun:
            raise RerunError(req.step, req.run_id, None)
        started = check_transition(req.step, StepState.PENDING, StepState.RUNNING)
        con.execute(
            """INSERT INTO steps (run_id, step, seq, state, attempts, source, source_digest, reads, options, inputs,
                                  owner_host, owner_pid, owner_started, owner_kernel, started_at, outputs,
                                  output_bytes, effect, key_generation, key_used)
               SELECT ?, ?, count(*), 'running', 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, now(), '[]', 0, ?, 1, false
               FROM steps WHERE run_id = ?""",
            [req.run_id, req.step, *common, *owner_params, req.effect, req.run_id],
        )
        log_events(
            con, [(req.run_id, req.step, started, StepState.PENDING, StepState.RUNNING, 1, req.owner, "new", None)]
        )
        return Begin("execute", 1, (), None, (), effect=req.effect)
    state = StepState(view.state)
    effect = view.effect or req.effect
    ever_completed = view.key_used or view.key_generation > 1 or state is StepState.COMPLETED
    if req.rerun and not ever_completed:
        raise RerunError(req.step, req.run_id, state.value)
    reason = state.value
    why: Why | None = None
    # A rerun is consumed by the execution it starts, also when that execution is resumed after a
    # crash: the token goes with every start the rerun request makes.
    token = _rerun_token(req) if req.rerun else None
    if state is StepState.COMPLETED:
        why = _why(view, req)
        restore_as = Begin(
            "restore", view.attempts or 0, (), view.finished_at, (), view.key_generation, why, None, effect
        )  # fmt: skip
        if effect:
            # A completed side effect is never repeated implicitly: only a rerun asked for this
            # source and these inputs for the first time executes it, under a new key generation.
            if token is None or token == view.rerun_token:
                held = None
                if why:
                    held = Held.RERUN_DONE if token is not None else Held.CHANGED
                    detail = _why_text.what_changed(why)
                    log_events(con, [(req.run_id, req.step, Transition.HELD, state, state, view.attempts or 0,
                                      req.owner, detail, None)])  # fmt: skip
                return replace(restore_as, checkpoints=checkpoints.refs(con, req.run_id, req.step), held=held)
        elif not why:
            return replace(restore_as, checkpoints=checkpoints.refs(con, req.run_id, req.step))
        reason = _why_text.reason(why)
        transition(con, req.run_id, req.step, state, StepState.PENDING, req.owner, reason)
        state = StepState.PENDING
    elif view.inputs is not None:  # failed, interrupted or pending: say which inputs differ too (``why``)
        changed = _inputs.changes(_inputs.decode(json.loads(view.inputs)), req.inputs)
        if changed:
            reason = f"{reason}; {_inputs.describe(changed)}"
    # A step that produced outputs before and runs again (edited, forced, invalidated, or itself
    # stale) makes the completed steps that read those outputs stale: chains follow.
    stale = _invalidate_readers(con, req.run_id, req.step, json.loads(view.outputs or "[]"), req.owner)
    generation, key_sql = view.key_generation, ""
    if effect and view.key_used:  # a completed effect executes again only when the user asked: a new key
        generation, key_sql = generation + 1, ", key_generation = key_generation + 1, key_used = false"
    # The source before an edit, for ``resumable why``'s diff (the right-hand ``source`` is the old value).
    edited = None not in (req.source_digest, view.source_digest) and view.source_digest != req.source_digest
    attempts = transition(
        con, req.run_id, req.step, state, StepState.RUNNING, req.owner, reason,
        ", previous_source = CASE WHEN ? THEN source END"
        ", source = ?, source_digest = ?, reads = ?, options = ?, inputs = ?, effect = ?, rerun_token = ?"
        + key_sql + _RESTART,
        [edited, *common, effect, token, *owner_params],
    )  # fmt: skip
    return Begin("execute", attempts, (), None, tuple(stale), generation, why, None, effect)


def mark_effect(con: Connection, run_id: str, step: str, owner: Owner) -> None:
    """Record that a running step has side effects (it asked for an idempotency key)."""
    changed = con.execute(
        """UPDATE steps SET effect = true WHERE run_id = ? AND step = ? AND state = 'running'
             AND owner_host = ? AND owner_pid = ? RETURNING step""",
        [run_id, step, owner.host, owner.pid],
    ).fetchone()
    if changed is None:
        raise StepChangedError(run_id, step, StepState.RUNNING.value)


def _invalidate_readers(con: Connection, run_id: str, step: str, names: list[str], who: Owner) -> list[str]:
    """Send completed steps after ``step`` that read any of ``names`` back to pending (stale).

    Effect steps stay completed: they are held when reached (their inputs then differ).
    """
    if not names:
        return []
    rows = con.execute(
        """SELECT s.step, s.reads FROM steps s, steps me
           WHERE s.run_id = ? AND me.run_id = s.run_id AND me.step = ? AND s.seq > me.seq
             AND s.state = 'completed' AND NOT coalesce(s.effect, false) ORDER BY s.seq""",
        [run_id, step],
    ).fetchall()
    stale = []
    for other, reads in rows:
        if set(json.loads(reads)) & set(names):
            detail = f"stale: upstream step '{step}' re-executed"
            transition(con, run_id, other, StepState.COMPLETED, StepState.PENDING, who, detail)
            stale.append(other)
    return stale


def complete(con: Connection, done: Completion) -> None:
    """Mark the step completed and make ``done``'s outputs its checkpoints, in the caller's transaction."""
    names = [b.name for b in done.outputs]
    extra = (
        ", outputs = ?, output_bytes = ?, finished_at = now(), duration_s = ?, error = NULL, traceback = NULL"
        ", key_used = true"
    )
    params: list[object] = [json.dumps(names), sum(b.size for b in done.outputs), done.duration_s]
    if done.reads is not None:
        extra += ", reads = ?"
        params.append(json.dumps(list(done.reads)))
    attempts = transition(
        con, done.run_id, done.step, StepState.RUNNING, StepState.COMPLETED, done.owner, None, extra, params,
        owned_by=done.owner,
    )  # fmt: skip
    # Checkpoint rows are written only as a step completes, and every entry into 'running' after
    # the first counts an attempt: on the first attempt there is nothing to replace, so the
    # DELETE (a statement on every new step) is skipped.
    checkpoints.replace(con, done.run_id, done.step, done.outputs, done.display, had_checkpoints=attempts > 1)


def fail(
    con: Connection,
    run_id: str,
    step: str,
    owner: Owner,
    error: str,
    traceback: str | None,
    duration_s: float,
) -> None:
    """Record a failed attempt with its error and traceback."""
    transition(
        con, run_id, step, StepState.RUNNING, StepState.FAILED, owner, error.splitlines()[0] if error else None,
        ", error = ?, traceback = ?, finished_at = now(), duration_s = ?", [error, traceback, duration_s],
        owned_by=owner,
    )  # fmt: skip


def fail_if_running(
    con: Connection,
    run_id: str,
    step: str,
    owner: Owner,
    error: str,
    traceback: str | None,
    duration_s: float,
) -> bool:
    """Record a kept failure, unless the step is no longer running under ``owner`` (its commit happened)."""
    row = con.execute(
        "SELECT state FROM steps WHERE run_id = ? AND step = ? AND owner_host = ? AND owner_pid = ?",
        [run_id, step, owner.host, owner.pid],
    ).fetchone()
    if row is None or row[0] != StepState.RUNNING.value:
        return False
    fail(con, run_id, step, owner, error, traceback, duration_s)
    return True


def retry(con: Connection, location: str, run_id: str, step: str, owner: Owner) -> int:
    """Failed or interrupted back to running under ``owner``; returns the attempt number."""
    view = check_owner(con, location, run_id, owner, step)
    if view.state is None:
        raise CheckpointNotFoundError(location, run_id, step)
    params = [owner.host, owner.pid, owner.started, owner.kernel_id]
    return transition(con, run_id, step, StepState(view.state), StepState.RUNNING, owner, "retry", _RESTART, params)


def invalidate(
    con: Connection, location: str, run_id: str, step: str, who: Owner, downstream: bool, reason: str
) -> list[str]:
    """Send a step (and with ``downstream`` every later one) back to pending; returns the steps changed."""
    check_owner(con, location, run_id, who)
    row = con.execute("SELECT seq FROM steps WHERE run_id = ? AND step = ?", [run_id, step]).fetchone()
    if row is None:
        raise CheckpointNotFoundError(location, run_id, step)
    query = "SELECT step, state FROM steps WHERE run_id = ? AND " + (
        "seq >= ? ORDER BY seq" if downstream else "seq = ?"
    )
    changed = []
    for name, state in con.execute(query, [run_id, row[0]]).fetchall():
        if state == StepState.PENDING.value:
            continue
        if state == StepState.RUNNING.value:
            raise StepRunningError(run_id, name)
        transition(con, run_id, name, StepState(state), StepState.PENDING, who, reason)
        changed.append(name)
    return changed


def get_step(con: Connection, run_id: str, step: str) -> StepStatus | None:
    """The step as a reader sees it: a dead owner's running step reads as interrupted (nothing is written)."""
    row = con.execute(f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ? AND step = ?", [run_id, step]).fetchone()
    if row is None:
        return None
    found = _honest(row, dead_owners(con, run_id) if row[2] == StepState.RUNNING.value else frozenset())
    return _with_kept(con, run_id, [found])[0]


def _honest(row: Sequence[Any], dead: frozenset[OwnerKey]) -> StepStatus:
    state = shown_state(row[2], (row[14], row[15], row[16]), dead)
    return status_from(row if state == row[2] else (*row[:2], state, *row[3:]))


def list_steps(con: Connection, run_id: str) -> list[StepStatus]:
    """Every step of the run, a dead owner's running steps shown as interrupted (nothing is written)."""
    rows = con.execute(f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ? ORDER BY seq", [run_id]).fetchall()
    dead = dead_owners(con, run_id) if any(r[2] == StepState.RUNNING.value for r in rows) else frozenset()
    return _with_kept(con, run_id, [_honest(r, dead) for r in rows])


def _with_kept(con: Connection, run_id: str, found: list[StepStatus]) -> list[StepStatus]:
    """Name the attempt whose checkpoint a not-completed step still keeps (its last completed one).

    Checkpoint rows are replaced only when an attempt completes, so rows of a step that is not
    completed are those of its last completion. Only steps past their first attempt can have
    any, so the usual listing costs no extra query.
    """
    candidates = [s.step for s in found if s.state is not StepState.COMPLETED and s.attempts > 1]
    if not candidates:
        return found
    kept = dict(
        con.execute(
            f"""SELECT e.step, max(e.attempt) FROM events e
               WHERE e.run_id = ? AND e.target = 'completed' AND {dialect_of(con).in_list("e.step")}
                 AND EXISTS (SELECT 1 FROM checkpoints c WHERE c.run_id = e.run_id AND c.step = e.step)
               GROUP BY e.step""",
            [run_id, candidates],
        ).fetchall()
    )
    return [replace(s, kept_attempt=int(kept[s.step])) if s.step in kept else s for s in found]


def list_events(con: Connection, run_id: str, step: str | None) -> list[Event]:
    rows = con.execute(
        """SELECT seq, run_id, step, happened_at, transition, source, target, attempt, host, pid, detail
           FROM events WHERE run_id = ? AND (? IS NULL OR step = ?) ORDER BY seq""",
        [run_id, step, step],
    ).fetchall()
    return [Event(*r) for r in rows]


def previous_source(con: Connection, run_id: str, step: str) -> str | None:
    row = con.execute("SELECT previous_source FROM steps WHERE run_id = ? AND step = ?", [run_id, step]).fetchone()
    return row[0] if row else None


def last_event_seq(con: Connection) -> int:
    row = con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
    return int(row[0]) if row else 0
