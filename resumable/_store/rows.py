"""Rows of the store's tables and how they become records: helpers for the store module."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from resumable._inputs import encode as encode_inputs
from resumable._keys import is_pseudo_output
from resumable._records import Owner, StepStatus
from resumable._states import RunState, StepState, Transition, check_transition
from resumable._store.dialect import Connection, dialect_of
from resumable._store.journal import PendingStep, utc_now

STEP_COLUMNS = (
    "run_id, step, state, attempts, seq, started_at, finished_at, duration_s, output_bytes, outputs, reads, "
    "error, traceback, source, owner_host, owner_pid, owner_started, owner_kernel, options, source_digest, "
    "inputs, effect, key_generation, executions"
)


def owner_from(host: str | None, pid: int | None, started: float | None, kernel: str | None) -> Owner | None:
    if host is None or pid is None:
        return None
    return Owner(host, int(pid), float(started or 0.0), kernel)


def status_from(row: Sequence[Any]) -> StepStatus:
    return StepStatus(
        run_id=row[0],
        step=row[1],
        state=StepState(row[2]),
        attempts=row[3],
        seq=row[4],
        started_at=row[5],
        finished_at=row[6],
        duration_s=row[7],
        output_bytes=row[8],
        # ``<state>`` and ``<shared>`` are pseudo-outputs a notebook step stores beside its variables.
        outputs=tuple(n for n in json.loads(row[9]) if not is_pseudo_output(n)),
        reads=tuple(json.loads(row[10])),
        error=row[11],
        traceback=row[12],
        source=row[13],
        owner=owner_from(row[14], row[15], row[16], row[17]),
        options=json.loads(row[18]),
        inputs=json.loads(row[20] or "{}"),
        effect=bool(row[21]),
        key_generation=int(row[22] or 1),
        executions=int(row[23] or 1),
    )


@dataclass(frozen=True, slots=True)
class RunView:
    """What one query tells about a run and one of its steps (None fields: the step does not exist)."""

    pipeline: str
    state: str | None
    attempts: int | None
    source_digest: str | None
    outputs: str | None
    finished_at: datetime | None
    inputs: str | None = None
    effect: bool = False
    key_generation: int = 1
    key_used: bool = False
    rerun_token: str | None = None
    checkpoint_run: str | None = None  # whose checkpoint rows the step points at (a fork's: its origin's)
    checkpoint_generation: int = 0


def run_state(states: list[str]) -> RunState:
    """A run's overall state, derived from its steps (never stored, so never out of date)."""
    return RunState.of(states)


EventRow = tuple[str, str, Transition, StepState | None, StepState, int, Owner, str | None, datetime | None]
STEP_INSERT = (
    ("run_id", "VARCHAR"), ("step", "VARCHAR"), ("seq", "INTEGER"), ("state", "VARCHAR"), ("attempts", "INTEGER"),
    ("source", "VARCHAR"), ("source_digest", "VARCHAR"), ("reads", "VARCHAR"), ("options", "VARCHAR"),
    ("owner_host", "VARCHAR"), ("owner_pid", "INTEGER"), ("owner_started", "DOUBLE"), ("owner_kernel", "VARCHAR"),
    ("started_at", "TIMESTAMPTZ"), ("finished_at", "TIMESTAMPTZ"), ("duration_s", "DOUBLE"), ("outputs", "VARCHAR"),
    ("output_bytes", "BIGINT"), ("inputs", "VARCHAR"), ("effect", "BOOLEAN"), ("key_used", "BOOLEAN"),
    ("owner_generation", "BIGINT"),
)  # fmt: skip
EVENT_INSERT = (
    ("run_id", "VARCHAR"), ("step", "VARCHAR"), ("happened_at", "TIMESTAMPTZ"), ("transition", "VARCHAR"),
    ("source", "VARCHAR"), ("target", "VARCHAR"), ("attempt", "INTEGER"), ("host", "VARCHAR"), ("pid", "INTEGER"),
    ("detail", "VARCHAR"),
)  # fmt: skip
CHECKPOINT_INSERT = (
    ("run_id", "VARCHAR"), ("step", "VARCHAR"), ("name", "VARCHAR"), ("kind", "VARCHAR"), ("codec", "VARCHAR"),
    ("digest", "VARCHAR"), ("signature", "VARCHAR"), ("size", "BIGINT"), ("data", "BLOB"), ("file", "VARCHAR"),
    ("created_at", "TIMESTAMPTZ"),
)  # fmt: skip
# Above this many rows, one list parameter per column beats a VALUES list, whose planning grows
# faster than linearly (measured: 500 rows, 100 ms as VALUES, 12 ms as lists).
_VALUES_LIMIT = 16


def insert_rows(
    con: Connection, table: str, columns: tuple[tuple[str, str], ...], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert rows into a table with one statement, whatever their number."""
    if not rows:
        return
    names = ", ".join(name for name, _ in columns)
    if len(rows) <= _VALUES_LIMIT or not dialect_of(con).unnest_lists:
        one = "(" + ", ".join("?" * len(columns)) + ")"
        con.execute(
            f"INSERT INTO {table} ({names}) VALUES " + ", ".join([one] * len(rows)), [v for r in rows for v in r]
        )
        return
    lists = ", ".join(f"unnest(?::{kind}[])" for _, kind in columns)
    con.execute(f"INSERT INTO {table} ({names}) SELECT {lists}", [list(col) for col in zip(*rows, strict=True)])


def same_process(a: Owner, b: Owner) -> bool:
    return a.host == b.host and a.pid == b.pid


def clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def event_values(rows: Sequence[EventRow]) -> list[list[Any]]:
    """Event-log rows as inserted (``EVENT_INSERT``); a None time means now."""
    return [
        [run_id, step, at or utc_now(), transition.value, source.value if source else None, target.value, attempt,
         who.host, who.pid, detail]
        for run_id, step, transition, source, target, attempt, who, detail, at in rows
    ]  # fmt: skip


def log_events(con: Connection, rows: Sequence[EventRow]) -> None:
    """Append to the event log (one statement for several rows); a None time means now."""
    insert_rows(con, "events", EVENT_INSERT, event_values(rows))


@dataclass(frozen=True, slots=True)
class QuickRows:
    """Every row that records quick steps: what a group commit inserts and a completion log holds.

    ``unsynced``: ``[run_id, step, file]`` of each payload file written behind (not fsynced yet)
    that a completed step's checkpoint points at; a replay checks those before it trusts the step.
    """

    steps: list[list[Any]]
    events: list[list[Any]]
    checkpoints: list[list[Any]]
    unsynced: list[list[str]] = field(default_factory=list)


def quick_rows(steps: Sequence[PendingStep]) -> QuickRows:
    """Rows of quick steps in their final state, every event, every checkpoint."""
    step_rows: list[list[Any]] = []
    events: list[EventRow] = []
    checkpoints: list[list[Any]] = []
    unsynced: list[list[str]] = []
    for p in steps:
        req, done, finished_at = p.req, p.completion, p.finished_at
        start = check_transition(req.step, StepState.PENDING, StepState.RUNNING)
        events.append(
            (req.run_id, req.step, start, StepState.PENDING, StepState.RUNNING, 1, req.owner, "new", p.started_at)
        )
        state = StepState.RUNNING
        if done is not None:
            ok = check_transition(req.step, StepState.RUNNING, StepState.COMPLETED)
            events.append(
                (req.run_id, req.step, ok, StepState.RUNNING, StepState.COMPLETED, 1, req.owner, None, finished_at)
            )
            state = StepState.COMPLETED
            kinds = [(b, "value") for b in done.outputs] + ([(done.display, "display")] if done.display else [])
            checkpoints += [
                [req.run_id, req.step, b.name, kind, b.codec, b.digest, b.signature, b.size, b.inline, b.file,
                 finished_at]
                for b, kind in kinds
            ]  # fmt: skip
            unsynced += [[req.run_id, req.step, b.file] for b, _ in kinds if not b.synced and b.file is not None]
        reads = done.reads if done is not None and done.reads is not None else req.reads
        step_rows.append(
            [
                req.run_id,
                req.step,
                p.seq,
                state.value,
                1,
                req.source,
                req.source_digest,
                json.dumps(list(reads)),
                json.dumps(req.options),
                req.owner.host,
                req.owner.pid,
                req.owner.started,
                req.owner.kernel_id,
                p.started_at,
                finished_at if done else None,
                done.duration_s if done else None,
                json.dumps([b.name for b in done.outputs]) if done else "[]",
                sum(b.size for b in done.outputs) if done else 0,
                json.dumps(encode_inputs(req.inputs)),
                req.effect,
                done is not None and req.effect,  # key_used: see ``steps.complete``
                p.generation,
            ]
        )
    return QuickRows(step_rows, event_values(events), checkpoints, unsynced)


def insert_quick_rows(con: Connection, rows: QuickRows) -> None:
    """Insert quick steps' rows: one statement per table, whatever their number."""
    insert_rows(con, "steps", STEP_INSERT, rows.steps)
    insert_rows(con, "events", EVENT_INSERT, rows.events)
    insert_rows(con, "checkpoints", CHECKPOINT_INSERT, rows.checkpoints)


def write_quick_steps(con: Connection, steps: list[PendingStep]) -> None:
    """Write quick steps in one go: rows in their final state, every event, every checkpoint."""
    insert_quick_rows(con, quick_rows(steps))


def _to_json(value: object) -> object:
    if isinstance(value, datetime):
        return {"$t": value.isoformat()}
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"a quick step's row holds a {type(value).__name__}")


def _from_json(obj: dict[str, Any]) -> object:
    if len(obj) == 1:
        if "$t" in obj:
            return datetime.fromisoformat(obj["$t"])
        if "$b" in obj:
            return base64.b64decode(obj["$b"])
    return obj


def encode_quick_rows(number: int, rows: QuickRows) -> bytes:
    """Rows as the ``number``-th completion-log record: JSON (plain data, never pickle: replay runs no code)."""
    record = [number, rows.steps, rows.events, rows.checkpoints] + ([rows.unsynced] if rows.unsynced else [])
    return json.dumps(record, default=_to_json).encode()


def decode_quick_rows(payload: bytes) -> tuple[int, QuickRows]:
    """The number and the rows a completion-log record holds."""
    number, steps, events, checkpoints, *rest = json.loads(payload, object_hook=_from_json)
    # A record written before fencing tokens (schema 7) has no token: the step ran under none.
    steps = [row + [None] * (len(STEP_INSERT) - len(row)) for row in steps]
    unsynced = [[str(v) for v in entry] for entry in rest[0]] if rest else []  # none before write-behind
    return int(number), QuickRows(steps, events, checkpoints, unsynced)
