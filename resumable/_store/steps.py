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
from resumable._store.base import Begin, CheckpointRef, Completion, StepRequest
from resumable._store.dialect import Connection, dialect_of
from resumable._store.journal import PendingStep
from resumable._store.liveness import OwnerKey, dead_owners, shown_state
from resumable._store.numbering import numbered_events
from resumable._store.rows import (
    CHECKPOINT_INSERT,
    EVENT_INSERT,
    STEP_COLUMNS,
    STEP_INSERT,
    RunView,
    insert_rows,
    log_events,
    quick_rows,
    status_from,
)
from resumable._store.runs import check_owner, next_token
from resumable._store.transitions import refused, transition
from resumable._why import Held, Why
from resumable.errors import CheckpointNotFoundError, RerunError, StepChangedError, StepRunningError

# Entering running (the attempt and execution counts are the transition's: ``transitions.py``).
_RESTART = """, owner_host = ?, owner_pid = ?, owner_started = ?, owner_kernel = ?, owner_generation = ?,
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


def _pointed(con: Connection, view: RunView, step: str) -> tuple[CheckpointRef, ...]:
    """The checkpoint rows the step points at, as ``check_owner`` read its pointer."""
    assert view.checkpoint_run is not None
    return checkpoints.refs_at(con, view.checkpoint_run, step, view.checkpoint_generation)


ABANDONED = "left running by this process: its last attempt ended without being recorded"


def begin(
    con: Connection, location: str, req: StepRequest, *, abandoned: bool = False, claim: int | None = None
) -> Begin:
    """Restore or start a step: the decision of :meth:`Store.begin_step`, in the caller's transaction.

    ``abandoned``: this process is not executing the step now, so if the store still shows it
    running under this process, that attempt's end was never recorded; it becomes interrupted
    and starts again, instead of failing as a transition from running to running.
    ``claim``: the fencing token of this process's claim of the run (None: it holds no claim).
    A started step runs under that token, or under a new one of its own; ``Begin.generation``.
    """
    view = check_owner(con, location, req.run_id, req.owner, req.step, claim)
    if abandoned and view.state == StepState.RUNNING.value:
        transition(con, req.run_id, req.step, StepState.RUNNING, StepState.INTERRUPTED, req.owner, ABANDONED,
                   owned_by=req.owner)  # fmt: skip
        view = replace(view, state=StepState.INTERRUPTED.value)
    if view.state is None:
        if req.rerun:
            raise RerunError(req.step, req.run_id, None)
        fence = insert_started(con, req, claim)
        return Begin("execute", 1, (), None, (), effect=req.effect, generation=fence)
    state = StepState(view.state)
    effect = view.effect or req.effect
    if req.rerun and not (view.key_generation > 1 or state is StepState.COMPLETED or _completed_once(con, req)):
        raise RerunError(req.step, req.run_id, state.value)
    reason = state.value
    why: Why | None = None
    # A rerun is consumed by the execution it starts, also when that execution is resumed after a
    # crash: the token goes with every start the rerun request makes.
    token = _rerun_token(req) if req.rerun else None
    if state is StepState.COMPLETED:
        why = _why(view, req)
        restore_as = _restore_as(view, req, why)
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
                return replace(restore_as, checkpoints=_pointed(con, view, req.step), held=held)
        elif not why:
            return replace(restore_as, checkpoints=_pointed(con, view, req.step))
        reason = _why_text.reason(why)
        transition(con, req.run_id, req.step, state, StepState.PENDING, req.owner, reason)
        state = StepState.PENDING
    else:
        state, reason, why = _restart(con, view, req, state)
    # A step that produced outputs before and runs again (edited, forced, invalidated, or itself
    # stale) makes the completed steps that read those outputs stale: chains follow.
    stale = _invalidate_readers(con, req.run_id, req.step, json.loads(view.outputs or "[]"), req.owner)
    generation, key_sql = view.key_generation, ""
    if effect and view.key_used:  # a completed effect executes again only when the user asked: a new key
        generation, key_sql = generation + 1, ", key_generation = key_generation + 1, key_used = false"
    # The source before an edit, for ``resumable why``'s diff (the right-hand ``source`` is the old value).
    edited = None not in (req.source_digest, view.source_digest) and view.source_digest != req.source_digest
    common, owner_params = _request_params(req)
    fence = claim if claim is not None else next_token(con)
    attempt, execution = transition(
        con, req.run_id, req.step, state, StepState.RUNNING, req.owner, reason,
        ", previous_source = CASE WHEN ? THEN source END"
        ", source = ?, source_digest = ?, reads = ?, options = ?, inputs = ?, effect = ?, rerun_token = ?"
        + key_sql + _RESTART,
        [edited, *common, effect, token, *owner_params, fence],
    )  # fmt: skip
    return Begin("execute", attempt, (), None, tuple(stale), generation, why, None, effect, execution, fence)


def _request_params(req: StepRequest) -> tuple[list[object], list[object]]:
    """A step row's parameters from the request: what it is (source, reads, options, inputs), and who runs it."""
    inputs_json = json.dumps(_inputs.encode(req.inputs))
    common: list[object] = [
        req.source, req.source_digest, json.dumps(list(req.reads)), json.dumps(req.options), inputs_json,
    ]  # fmt: skip
    return common, [req.owner.host, req.owner.pid, req.owner.started, req.owner.kernel_id]


def insert_started(con: Connection, req: StepRequest, claim: int | None = None) -> int:
    """Write a new step's first attempt, running (its row and event); returns the fencing token it runs under.

    For :func:`begin`, and for a kernel's step decided in memory (``cells.py``) when its start is
    written. The token is the claim's, or without one a new one taken in the same statement (one
    round trip less).
    """
    started = check_transition(req.step, StepState.PENDING, StepState.RUNNING)
    common, owner_params = _request_params(req)
    token_sql, token_param = ("?", [claim]) if claim is not None else ("nextval('lease_generation')", [])
    row = con.execute(
        f"""INSERT INTO steps (run_id, step, seq, state, attempts, source, source_digest, reads, options, inputs,
                              owner_host, owner_pid, owner_started, owner_kernel, owner_generation, started_at,
                              outputs, output_bytes, effect, key_generation, key_used)
           SELECT ?, ?, count(*), 'running', 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, {token_sql}, now(), '[]', 0, ?, 1, false
           FROM steps WHERE run_id = ? RETURNING owner_generation""",
        [req.run_id, req.step, *common, *owner_params, *token_param, req.effect, req.run_id],
    ).fetchone()
    assert row is not None
    log_events(con, [(req.run_id, req.step, started, StepState.PENDING, StepState.RUNNING, 1, req.owner, "new", None)])
    return int(row[0])


def insert_completed(con: Connection, pending: PendingStep) -> None:
    """Write a new step a kernel decided in memory directly in its final state (start and completion together).

    The rows a start followed by :func:`complete` write on a first attempt, built as the group
    commit builds quick steps (``rows.quick_rows``: both transitions checked against the table and
    logged), with the step's place in the run and a new fencing token taken in its own INSERT.
    """
    rows = quick_rows([pending])
    names = [name for name, _ in STEP_INSERT]
    assert names[2] == "seq" and names[-1] == "owner_generation"
    values = ["?", "?", "count(*)", *["?"] * (len(names) - 4), "nextval('lease_generation')"]
    row = rows.steps[0]
    con.execute(
        f"INSERT INTO steps ({', '.join(names)}) SELECT {', '.join(values)} FROM steps WHERE run_id = ?",
        [*row[:2], *row[3:-1], pending.req.run_id],
    )
    insert_rows(con, "events", EVENT_INSERT, rows.events)
    insert_rows(con, "checkpoints", CHECKPOINT_INSERT, rows.checkpoints)


def found_cell(con: Connection, location: str, req: StepRequest) -> tuple[str, int | None]:
    """Check again, before a kernel's in-memory step is written, that it is still new and the run not owned elsewhere.

    Asked when the file may have been let go of since the step was decided (a write of it failed).
    ``("new", None)``: write it. ``("running", token)`` / ``("completed", token)``: this process's
    own earlier write of it, whose commit was not acknowledged. Raises RunOwnedError (another live
    process holds the run or runs a step of it) or StepChangedError (the step exists otherwise).
    """
    view = check_owner(con, location, req.run_id, req.owner, req.step)
    if view.state is None:
        return "new", None
    row = con.execute(
        """SELECT state, owner_generation FROM steps WHERE run_id = ? AND step = ? AND attempts = 1
             AND state IN ('running', 'completed') AND owner_host = ? AND owner_pid = ?""",
        [req.run_id, req.step, req.owner.host, req.owner.pid],
    ).fetchone()
    if row is None:
        raise StepChangedError(req.run_id, req.step, "new")
    return str(row[0]), None if row[1] is None else int(row[1])


def run_step_names(con: Connection, run_id: str) -> set[str]:
    """Every step the run has in the store, whatever its state (what a kernel's window starts from)."""
    return {name for (name,) in con.execute("SELECT step FROM steps WHERE run_id = ?", [run_id]).fetchall()}


def _restore_as(view: RunView, req: StepRequest, why: Why) -> Begin:
    """The restore of the completed step ``view`` describes (its checkpoints not read yet)."""
    effect = view.effect or req.effect
    return Begin("restore", view.attempts or 0, (), view.finished_at, (), view.key_generation, why, None, effect)


def plain_restore(view: RunView, req: StepRequest) -> Begin | None:
    """The decision of :func:`begin` when it needs nothing but ``view``: a completed step restored as it is.

    None when :func:`begin` must decide in a transaction: the step is not completed, or its
    source or inputs changed, or it is forced or rerun (which may log, hold or start it). Both
    paths take their answer from here and ``_restore_as``, so a snapshot's restore is the same
    decision as the transaction's.
    """
    if view.state != StepState.COMPLETED.value or req.rerun or req.force:
        return None
    why = _why(view, req)
    return None if why else _restore_as(view, req, why)


def _completed_once(con: Connection, req: StepRequest) -> bool:
    """Whether the step ever completed (a rerun of one that never did is refused)."""
    row = con.execute(
        "SELECT 1 FROM events WHERE run_id = ? AND step = ? AND target = 'completed' LIMIT 1", [req.run_id, req.step]
    ).fetchone()
    return row is not None


def _restart(con: Connection, view: RunView, req: StepRequest, state: StepState) -> tuple[StepState, str, Why | None]:
    """How a failed, interrupted or pending step starts again: its state then, the reason, what changed.

    A failed or interrupted step that was edited, reads changed inputs or is forced begins a new
    execution (with its whole retry budget): back to pending first, the reason logged. Without a
    change it is retried: the next attempt of the same execution. A pending step (stale or
    invalidated) names the inputs that differ too (``resumable why``).
    """
    if state is not StepState.PENDING:
        why = _why(view, req)
        if not why:
            return state, state.value, None
        reason = _why_text.reason(why)
        transition(con, req.run_id, req.step, state, StepState.PENDING, req.owner, reason)
        return StepState.PENDING, reason, why
    changed = _inputs.changes(_inputs.decode(json.loads(view.inputs)), req.inputs) if view.inputs else []
    return state, state.value + (f"; {_inputs.describe(changed)}" if changed else ""), None


def mark_effect(con: Connection, run_id: str, step: str, owner: Owner, generation: int | None = None) -> None:
    """Record that a running step has side effects (it asked for an idempotency key), under its fencing token."""
    changed = con.execute(
        """UPDATE steps SET effect = true WHERE run_id = ? AND step = ? AND state = 'running'
             AND owner_host = ? AND owner_pid = ? AND (? IS NULL OR owner_generation = ?) RETURNING step""",
        [run_id, step, owner.host, owner.pid, generation, generation],
    ).fetchone()
    if changed is None:
        refused(con, run_id, step, StepState.RUNNING, generation)


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


def complete(con: Connection, done: Completion, generation: int | None = None) -> None:
    """Mark the step completed and make ``done``'s outputs its checkpoints, in the caller's transaction.

    ``generation``: the fencing token the attempt started under; refused (LeaseLostError) once the
    step runs under another one.
    """
    names = [b.name for b in done.outputs]
    extra = (
        ", outputs = ?, output_bytes = ?, finished_at = now(), duration_s = ?, error = NULL, traceback = NULL"
        # The key of this generation now belongs to a completed effect: executing the step again
        # deliberately moves it to the next generation. A step that completed without side
        # effects and asks for a key only in a later execution keeps this generation's key through
        # that execution's retries (a repeated effect never gets a new key by accident).
        ", key_used = coalesce(effect, false)"
    )
    params: list[object] = [json.dumps(names), sum(b.size for b in done.outputs), done.duration_s]
    if done.reads is not None:
        extra += ", reads = ?"
        params.append(json.dumps(list(done.reads)))
    attempt, executions = transition(
        con, done.run_id, done.step, StepState.RUNNING, StepState.COMPLETED, done.owner, None, extra, params,
        owned_by=done.owner, generation=generation,
    )  # fmt: skip
    # Checkpoint rows are written only as a step completes, so on the first attempt of its first
    # execution the step has no rows and no pointer yet: it writes generation 0 with no further
    # statement (a statement on every new step saved).
    if attempt <= 1 and executions <= 1:
        checkpoints.write(con, done.run_id, done.step, 0, done.outputs, done.display)
        return
    # Otherwise the new rows get a generation of their own and the step points at them; the rows it
    # pointed at before go unless another step (a fork's) still needs them (``drop_superseded``).
    row = con.execute(
        "SELECT coalesce(checkpoint_run, run_id) FROM steps WHERE run_id = ? AND step = ?", [done.run_id, done.step]
    ).fetchone()
    before = row[0] if row is not None else done.run_id
    generation = checkpoints.next_generation(con, done.run_id, done.step)
    con.execute(
        "UPDATE steps SET checkpoint_run = NULL, checkpoint_generation = ? WHERE run_id = ? AND step = ?",
        [generation, done.run_id, done.step],
    )
    checkpoints.write(con, done.run_id, done.step, generation, done.outputs, done.display)
    checkpoints.drop_superseded(con, [(done.run_id, done.step), (before, done.step)])


def fail(
    con: Connection,
    run_id: str,
    step: str,
    owner: Owner,
    error: str,
    traceback: str | None,
    duration_s: float,
    generation: int | None = None,
) -> None:
    """Record a failed attempt with its error and traceback (under the attempt's fencing token ``generation``)."""
    transition(
        con, run_id, step, StepState.RUNNING, StepState.FAILED, owner, error.splitlines()[0] if error else None,
        ", error = ?, traceback = ?, finished_at = now(), duration_s = ?", [error, traceback, duration_s],
        owned_by=owner, generation=generation,
    )  # fmt: skip


def fail_if_running(
    con: Connection,
    run_id: str,
    step: str,
    owner: Owner,
    error: str,
    traceback: str | None,
    duration_s: float,
    generation: int | None = None,
) -> bool:
    """Record a kept failure, unless the step no longer runs under ``owner`` and its token (its commit happened)."""
    row = con.execute(
        """SELECT state FROM steps WHERE run_id = ? AND step = ? AND owner_host = ? AND owner_pid = ?
             AND (? IS NULL OR owner_generation = ?)""",
        [run_id, step, owner.host, owner.pid, generation, generation],
    ).fetchone()
    if row is None or row[0] != StepState.RUNNING.value:
        return False
    fail(con, run_id, step, owner, error, traceback, duration_s, generation)
    return True


def running_under(con: Connection, run_id: str, step: str, owner: Owner, generation: int | None) -> bool:
    """Whether the step still runs under ``owner``'s attempt of token ``generation``: its completion may be written."""
    row = con.execute(
        """SELECT 1 FROM steps WHERE run_id = ? AND step = ? AND state = 'running' AND owner_host = ?
             AND owner_pid = ? AND (? IS NULL OR owner_generation = ?)""",
        [run_id, step, owner.host, owner.pid, generation, generation],
    ).fetchone()
    return row is not None


def completed_by(con: Connection, done: Completion, generation: int | None) -> bool:
    """Whether ``done`` itself is in the store: completed under its owner and token, with its outputs.

    What a completion whose commit was not acknowledged (a cut connection) reads back before it is
    written again: its own commit found means done, never a second completion.
    """
    row = con.execute(
        """SELECT outputs FROM steps WHERE run_id = ? AND step = ? AND state = 'completed'
             AND owner_host = ? AND owner_pid = ? AND (? IS NULL OR owner_generation = ?)""",
        [done.run_id, done.step, done.owner.host, done.owner.pid, generation, generation],
    ).fetchone()
    return row is not None and json.loads(row[0]) == [b.name for b in done.outputs]


def retried_by(con: Connection, run_id: str, step: str, owner: Owner, claim: int | None) -> tuple[int, int] | None:
    """The attempt and token of a retry of ``owner``'s already in the store: running under it (and ``claim``).

    What a retry whose commit was not acknowledged (a cut connection) reads back before it is tried
    again: the step was failed or interrupted before, and only this owner's retry makes it run under
    this owner, so finding that is finding its own commit (a second try would be running to running).
    """
    row = con.execute(
        """SELECT attempts, owner_generation FROM steps WHERE run_id = ? AND step = ? AND state = 'running'
             AND owner_host = ? AND owner_pid = ? AND (? IS NULL OR owner_generation = ?)""",
        [run_id, step, owner.host, owner.pid, claim, claim],
    ).fetchone()
    if row is None or row[1] is None:
        return None
    return int(row[0]), int(row[1])


def retry(
    con: Connection, location: str, run_id: str, step: str, owner: Owner, claim: int | None = None
) -> tuple[int, int]:
    """Failed or interrupted back to running under ``owner``; returns the attempt number and its fencing token."""
    view = check_owner(con, location, run_id, owner, step, claim)
    if view.state is None:
        raise CheckpointNotFoundError(location, run_id, step)
    token = claim if claim is not None else next_token(con)
    params = [owner.host, owner.pid, owner.started, owner.kernel_id, token]
    attempt = transition(con, run_id, step, StepState(view.state), StepState.RUNNING, owner, "retry", _RESTART, params)
    return attempt[0], token


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
    candidates = [s.step for s in found if s.state is not StepState.COMPLETED and (s.attempts > 1 or s.executions > 1)]
    if not candidates:
        return found
    sql = dialect_of(con)
    events = numbered_events(f"(SELECT * FROM events WHERE run_id = ? AND {sql.in_list('step')})")
    kept = {
        step: (int(execution), int(attempt))
        for step, execution, attempt in con.execute(
            f"""SELECT e.step, {sql.last("e.execution", "e.seq")}, {sql.last("e.attempt", "e.seq")} FROM ({events}) e
               WHERE e.target = 'completed'
                 AND EXISTS (SELECT 1 FROM steps s JOIN checkpoints c ON {checkpoints.POINTED}
                             WHERE s.run_id = e.run_id AND s.step = e.step)
               GROUP BY e.step""",
            [run_id, candidates],
        ).fetchall()
    }
    return [
        replace(s, kept_execution=kept[s.step][0], kept_attempt=kept[s.step][1]) if s.step in kept else s for s in found
    ]


def list_events(con: Connection, run_id: str, step: str | None) -> list[Event]:
    """The run's (or one step's) events, oldest first, numbered by execution and attempt (``numbering.py``)."""
    events = numbered_events("(SELECT * FROM events WHERE run_id = ? AND (? IS NULL OR step = ?))")
    rows = con.execute(
        f"""SELECT seq, run_id, step, happened_at, transition, source, target, attempt, host, pid, detail, execution
           FROM ({events}) AS numbered ORDER BY seq""",
        [run_id, step, step],
    ).fetchall()
    return [Event(*r) for r in rows]


def previous_source(con: Connection, run_id: str, step: str) -> str | None:
    row = con.execute("SELECT previous_source FROM steps WHERE run_id = ? AND step = ?", [run_id, step]).fetchone()
    return row[0] if row else None


def last_event_seq(con: Connection) -> int:
    row = con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
    return int(row[0]) if row else 0
