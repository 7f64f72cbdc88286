"""The ``resumable`` command: thin click commands over the public API, with exit codes and --json.

The exit codes live in one table, :data:`EXIT_CODES`; every command's --help lists the ones it can
return. Commands that only read open the store read-only and never change it. Tables are drawn for
a terminal and written as plain tab-separated lines into a pipe or a file.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from resumable import _params
from resumable._owner import current_owner
from resumable._records import RunInfo, StepStatus
from resumable._states import RunState
from resumable._store import Compaction, PayloadsAt, QueryResult, Removal, RunFilter, Store, open_store
from resumable._table import COLUMNS, step_rows
from resumable._units import human_duration, human_size, human_time
from resumable._why import explain
from resumable.errors import (
    CheckpointNotFoundError,
    LastGoodCheckpointWarning,
    ParameterMismatchError,
    QueryError,
    ResumableError,
    RunOwnedError,
    StoreError,
    front_end,
)
from resumable.pipeline import load

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_RESTARTS_EXHAUSTED = 3
EXIT_OWNED = 4
EXIT_PARAMS = 5
EXIT_STORE = 6

EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it

# The one home for the exit-code table: the group's --help lists every code, each command's --help
# the codes it can return (``exit_codes_help``), and docs/cli.md repeats them (checked by a test).
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FAILED: "a step or cell failed",
    EXIT_USAGE: "usage error (a bad option, argument or query)",
    EXIT_RESTARTS_EXHAUSTED: "kernel restarts exhausted",
    EXIT_OWNED: "the run is owned by another live process",
    EXIT_PARAMS: "the run was started with other parameters",
    EXIT_STORE: "the store cannot be used (locked, not a store, integrity failure, no such run or step)",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C",
}


def exit_codes_help(*codes: int) -> str:
    """The ``Exit codes:`` block of a command's --help: the listed codes, in order (click keeps its lines)."""
    lines = [f"  {code:>3}  {EXIT_CODES[code]}" for code in sorted(codes)]
    return "\b\nExit codes:\n" + "\n".join(lines) + "\n"


EXIT_CODES_HELP = exit_codes_help(*EXIT_CODES)
# What a command that reads the store can return.
_READ_CODES = (EXIT_OK, EXIT_USAGE, EXIT_STORE)

F = TypeVar("F", bound=Callable[..., Any])


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an error."""
    if isinstance(exc, RunOwnedError):
        return EXIT_OWNED
    if isinstance(exc, ParameterMismatchError):
        return EXIT_PARAMS
    if isinstance(exc, QueryError):
        return EXIT_USAGE
    if isinstance(exc, StoreError):
        return EXIT_STORE
    return EXIT_FAILED


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn our errors into a message on stderr and the documented exit code (never exit 0)."""
    try:
        yield
    except ResumableError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exit_code_for(exc))


def store_option(fn: F) -> F:
    """``--store PATH`` with RESUMABLE_STORE as its environment default.

    Kept as the string given (``open_store`` resolves it): a ``postgresql://`` URL is not a path.
    """
    return click.option(
        "--store",
        "store",
        envvar="RESUMABLE_STORE",
        type=click.Path(dir_okay=False),
        default=None,
        help="The store file (default: RESUMABLE_STORE, else .resumable/store.duckdb).",
    )(fn)


def parameter_option(what: str) -> Callable[[F], F]:
    """``-p NAME VALUE``, repeatable, parsed the same way by every command that takes parameters."""
    return click.option(
        "-p",
        "--parameter",
        "parameters",
        nargs=2,
        multiple=True,
        metavar="NAME VALUE",
        help=f"{what}; VALUE is a Python literal when it parses as one, else a string. Repeat for more.",
    )


def _console() -> Console:
    """A terminal's own width; piped output is not squeezed into 80 columns (ids stay whole)."""
    return Console() if sys.stdout.isatty() else Console(width=240)


def _tsv_cell(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def print_table(columns: Sequence[str], rows: Sequence[Sequence[object]], *, no_wrap: Sequence[int] = (0,)) -> None:
    """A table: drawn by rich on a terminal, plain tab-separated lines (a header first) into a pipe or file.

    In the plain form a tab, a newline or a backslash inside a value is written as a backslash and
    ``t``, ``n`` or a second backslash, so every row is one line with one tab between cells.
    """
    if not sys.stdout.isatty():
        for row in (columns, *rows):
            click.echo("\t".join(_tsv_cell(v) for v in row))
        return
    table = Table(*columns)
    for i in no_wrap:  # what users copy into the next command: never wrapped
        table.columns[i].no_wrap = True
    for row in rows:  # Text: a value such as '[red]' is shown as it is, never taken for markup
        table.add_row(*(Text("" if v is None else str(v)) for v in row))
    _console().print(table)


def _run_json(run: RunInfo) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "pipeline": run.pipeline,
        "state": run.state.value,
        "steps": run.step_count,
        "steps_by_state": run.counts,
        "params": _params.jsonable(run.params),
        "created_at": run.created_at.isoformat(),
        "updated_at": run.updated_at.isoformat(),
        "duration_s": run.duration_s,
        "step_time_s": run.step_time_s,
        "forked_from": run.forked_from,
        "forked_at": run.forked_at,
    }


def _step_json(step: StepStatus) -> dict[str, Any]:
    return {
        "step": step.step,
        "state": step.state.value,
        "attempts": step.attempts,
        "executions": step.executions,
        "duration_s": step.duration_s,
        "output_bytes": step.output_bytes,
        "outputs": list(step.outputs),
        "started_at": step.started_at.isoformat() if step.started_at else None,
        "finished_at": step.finished_at.isoformat() if step.finished_at else None,
        "error": step.error,
        "kept_attempt": step.kept_attempt,
        "kept_execution": step.kept_execution,
        "effect": step.effect,
        "key_generation": step.key_generation,
        "inputs": step.inputs,
    }


class OrderedGroup(click.Group):
    """Lists commands in the order they were added, which is the order a user meets them."""

    def list_commands(self, ctx: click.Context) -> list[str]:  # noqa: D102
        return list(self.commands)


@click.group(cls=OrderedGroup, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="resumable")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Durable notebooks and pipelines: list runs, inspect and invalidate steps, execute notebooks."""
    ctx.with_resource(front_end("command"))  # our errors name --new and --store, not new=True and store=


# ---------------------------------------------------------------- runs


class _Count(click.ParamType[int]):
    """A whole number of 1 or more, refused with a message that names the option and an example."""

    name = "N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = None
        if number is None or number < 1 or isinstance(value, float):
            option = param.opts[0] if param is not None and param.opts else "--limit"
            self.fail(
                f"{value!r} is not a number of runs; give a whole number of 1 or more, e.g. {option} 20", param, ctx
            )
        return min(number, _MAX_COUNT)  # more than any store holds: every run


_MAX_COUNT = 2**63 - 1  # the largest LIMIT DuckDB takes
_SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class _Since(click.ParamType[datetime]):
    """``30m``, ``12h``, ``7d``, ``2w`` (that long ago), or a date or time such as ``2026-12-01``."""

    name = "AGE|DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        amount, unit = text[:-1], text[-1:].lower()
        if unit in _SINCE_UNITS and amount.replace(".", "", 1).isdigit():
            try:
                return datetime.now(timezone.utc) - timedelta(seconds=float(amount) * _SINCE_UNITS[unit])
            except OverflowError:
                self.fail(f"{text!r} reaches back before the year 1; give a shorter age or a date", param, ctx)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is neither an age like 30m, 12h, 7d or 2w nor a date like 2026-12-01", param, ctx)
        return moment if moment.tzinfo else moment.astimezone()


def _a_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An option naming a pipeline: an empty name names none, so it is refused rather than matching nothing."""
    if value is not None and not value.strip():
        raise click.BadParameter("a pipeline name cannot be empty; leave --pipeline out to list every pipeline")
    return value


def _counts_text(run: RunInfo) -> str:
    return ", ".join(f"{n} {state}" for state, n in run.counts.items()) or "none"


@main.command(epilog=exit_codes_help(*_READ_CODES))
@store_option
@click.option("--pipeline", "-P", default=None, callback=_a_name, help="Only runs of this pipeline.")
@click.option(
    "--state",
    type=click.Choice([s.value for s in RunState], case_sensitive=False),
    default=None,
    help="Only runs in this state (a run whose process died reads as interrupted).",
)
@click.option("--since", type=_Since(), default=None, help="Only runs started since then: 30m, 12h, 7d, 2w or a date.")
@click.option("--limit", type=_Count(), default=50, show_default=True, help="At most this many runs, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def runs(
    store: Path | None, pipeline: str | None, state: str | None, since: datetime | None, limit: int, as_json: bool
) -> None:
    """List runs, newest first, with their state, duration and steps by state.

    Read-only: the store is not changed. A run whose process died shows as interrupted.
    """
    with reported_errors():
        found = open_store(store, read_only=True).list_runs(
            pipeline, limit, state=RunState(state) if state else None, since=since
        )
    if as_json:
        click.echo(json.dumps([_run_json(r) for r in found], indent=2))
        return
    if not found:
        filtered = pipeline is not None or state is not None or since is not None
        click.echo("no runs match" if filtered else "no runs yet", err=not sys.stdout.isatty())
        return
    print_table(
        ("run", "pipeline", "state", "steps", "duration", "updated", "parameters"),
        [
            (r.run_id, r.pipeline, r.state.value, _counts_text(r), human_duration(r.duration_s),
             human_time(r.updated_at), ", ".join(f"{k}={v!r}" for k, v in r.params.items()))
            for r in found
        ],
    )  # fmt: skip


# ---------------------------------------------------------------- show


@main.command(epilog=exit_codes_help(*_READ_CODES))
@click.argument("run_id")
@store_option
@click.option("--events", is_flag=True, help="Also print the run's event log.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def show(run_id: str, store: Path | None, events: bool, as_json: bool) -> None:
    """Show the steps of RUN_ID with their state, attempts, executions, duration, size and last error.

    Attempts count within the step's current execution (retries after a failure); executions
    count how many times it executed (its first run, then each edit, changed input, stale
    upstream, invalidation or forced rerun). Read-only: the store is not changed. A step whose
    process died shows as interrupted.
    """
    with reported_errors():
        opened = open_store(store, read_only=True)
        run = opened.get_run(run_id)
        if run is None:
            raise CheckpointNotFoundError(opened.location, run_id)
        steps = opened.list_steps(run_id)
        log = opened.list_events(run_id) if events else []
    if as_json:
        doc: dict[str, Any] = {**_run_json(run), "steps": [_step_json(s) for s in steps]}
        if events:
            doc["events"] = [
                {"seq": e.seq, "step": e.step, "at": e.at.isoformat(), "transition": e.transition,
                 "from": e.source, "to": e.target, "execution": e.execution, "attempt": e.attempt, "pid": e.pid,
                 "detail": e.detail}
                for e in log
            ]  # fmt: skip
        click.echo(json.dumps(doc, indent=2))
        return
    params = ", ".join(f"{k}={v!r}" for k, v in run.params.items()) or "none"
    headline = f"run {run.run_id} of pipeline {run.pipeline}: {run.state} (parameters: {params})"
    if run.forked_from is not None:
        headline += f"\nforked from {run.forked_from} at {run.forked_at}"
    if sys.stdout.isatty():
        _console().print(headline, markup=False, highlight=False)
    else:
        click.echo(headline)
    print_table(COLUMNS, step_rows(steps), no_wrap=(1,))
    if events:
        print_table(
            ("seq", "when", "step", "change", "execution", "attempt", "pid", "detail"),
            [
                (
                    e.seq,
                    human_time(e.at),
                    e.step,
                    f"{e.source or '-'} -> {e.target}",
                    e.execution,
                    e.attempt,
                    e.pid,
                    e.detail or "",
                )
                for e in log
            ],
            no_wrap=(2,),
        )


# ---------------------------------------------------------------- why


@main.command(epilog=exit_codes_help(*_READ_CODES))
@click.argument("run_id")
@click.argument("step")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def why(run_id: str, step: str, store: Path | None, as_json: bool) -> None:
    """Say why STEP of RUN_ID last executed, or was held, from the store's event log.

    First run; its source changed (with a diff of the edit); an input changed (old -> new);
    an upstream step re-ran (stale); forced; retried after which error; a dead owner
    interrupted it; held because it has side effects. Read-only: the store is not changed.
    """
    with reported_errors():
        opened = open_store(store, read_only=True)
        status = opened.get_step(run_id, step)
        if status is None:
            if opened.get_run(run_id) is None:
                raise CheckpointNotFoundError(opened.location, run_id)
            raise CheckpointNotFoundError(opened.location, run_id, step)
        found = explain(step, opened.list_events(run_id, step), status.source, opened.previous_source(run_id, step))
        if found is None:  # a step row is written with its first start: not reached in practice
            raise CheckpointNotFoundError(opened.location, run_id, step)
    if as_json:
        executed = found.kind != "forked"  # a step a fork copied never executed in this run
        doc = {"run_id": run_id, "step": step, "state": status.state.value,
               "execution": found.execution if executed else None,
               "attempt": found.attempt if executed else None, "kind": found.kind, "why": found.line,
               "held": found.held, "diff": found.diff}  # fmt: skip
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    click.echo(found.text())


# ---------------------------------------------------------------- sql


_SQL_EXAMPLE = """\b
Examples:
  resumable sql "SELECT state, count(*) AS runs FROM runs GROUP BY state"
  resumable sql "SELECT * FROM attempts WHERE outcome = 'failed'" --csv > failed.csv

"""


@main.command(epilog=_SQL_EXAMPLE + exit_codes_help(*_READ_CODES))
@click.argument("query")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list of objects.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the rows as CSV with a header line.")
def sql(query: str, store: Path | None, as_json: bool, as_csv: bool) -> None:
    """Run a read-only SQL QUERY over the store's views and print the rows.

    The views are runs, steps, attempts, events, checkpoints (without the bytes), inputs and
    parameters; docs/sql.md lists their columns and example queries. A store file is opened
    read-only and the query cannot read or write other files, attach databases or load
    extensions; on a PostgreSQL store the query runs in a read-only transaction. Into a pipe
    or a file the table is plain tab-separated lines.
    """
    if as_json and as_csv:
        raise click.UsageError("--json and --csv cannot be combined; pick one.")
    with reported_errors():
        result = open_store(store, read_only=True).query(query)
    if as_json:
        click.echo(json.dumps(_json_rows(result), indent=2, default=_json_value))
    elif as_csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows(result.rows)
        click.echo(out.getvalue(), nl=False)
    else:
        print_table(result.columns, result.rows, no_wrap=())


def _json_rows(result: QueryResult) -> list[dict[str, Any]]:
    """One object per row; JSON columns (parameters, outputs) nested as JSON rather than as text."""
    nested = [kind == "JSON" for kind in result.types]
    return [
        {
            c: json.loads(v) if is_json and isinstance(v, str) else v
            for c, v, is_json in zip(result.columns, row, nested, strict=True)
        }
        for row in result.rows
    ]


def _json_value(value: object) -> object:
    """Dates as ISO text, bytes as hex; everything else JSON cannot hold as its text."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


# ---------------------------------------------------------------- fork


@main.command(epilog=exit_codes_help(EXIT_OK, EXIT_USAGE, EXIT_STORE))
@click.argument("run_id")
@click.option("--from", "from_step", required=True, metavar="STEP", help="The first step that executes in the fork.")
@click.option("--run-id", "new_run_id", default=None, help="The new run's id (default: a new one).")
@parameter_option("A parameter that replaces the run's own")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the new run as JSON.")
def fork(
    run_id: str, from_step: str, new_run_id: str | None, parameters: tuple[tuple[str, str], ...],
    store: Path | None, as_json: bool,
) -> None:  # fmt: skip
    """Make a new run from RUN_ID whose steps before STEP restore and the rest execute.

    The new run shares RUN_ID's checkpoints of the completed steps before STEP by reference (no
    bytes are copied) and keeps restoring exactly them, whatever RUN_ID does later. STEP and the
    steps after it execute when the new run is executed (resumable execute NOTEBOOK --run-id
    NEW, or pipe.run(run_id=NEW)). Its parameters are RUN_ID's, replaced by -p; a copied step
    that reads a changed parameter executes again. RUN_ID is only read: a run another process
    is executing can be forked.
    """
    from resumable._headless import params as _headless_params
    from resumable._keys import NAME_RULE, is_valid_name
    from resumable._keys import new_run_id as make_run_id
    from resumable.errors import NotebookInputError

    if new_run_id is not None and not is_valid_name(new_run_id):
        raise click.UsageError(f"--run-id {new_run_id!r} cannot name a run: use {NAME_RULE}, for example 'order-43'.")
    try:
        params = _headless_params.collect(parameters)
    except NotebookInputError as exc:
        raise click.UsageError(str(exc)) from None
    with reported_errors():
        opened = open_store(store, must_exist=True)
        made = opened.fork_run(run_id, from_step, new_run_id or make_run_id(), current_owner(), params)
        shared = [s.step for s in opened.list_steps(made.run_id)]
    if as_json:
        click.echo(json.dumps({**_run_json(made), "shared_steps": shared}, indent=2))
        return
    listed = ", ".join(shared) if shared else "none"
    click.echo(
        f"forked run '{made.run_id}' from run '{run_id}' at step '{from_step}': {len(shared)} "
        f"step{'s share' if len(shared) != 1 else ' shares'} its checkpoints ({listed}); '{from_step}' and later steps "
        f"execute when you run it: resumable execute NOTEBOOK --run-id {made.run_id}"
    )


# ---------------------------------------------------------------- invalidate, gc, export


@main.command(epilog=exit_codes_help(EXIT_OK, EXIT_USAGE, EXIT_OWNED, EXIT_STORE))
@click.argument("run_id")
@click.argument("step")
@store_option
@click.option("--downstream", is_flag=True, help="Also invalidate every step after STEP.")
def invalidate(run_id: str, step: str, store: Path | None, downstream: bool) -> None:
    """Send STEP of RUN_ID back to pending so it executes again on the next pass."""
    with reported_errors():
        changed = open_store(store, must_exist=True).invalidate(run_id, step, current_owner(), downstream=downstream)
    if changed:
        click.echo(f"invalidated in run '{run_id}': {', '.join(changed)}")
    else:
        click.echo(f"step '{step}' of run '{run_id}' was already pending; nothing changed")


@main.command(epilog=exit_codes_help(EXIT_OK, EXIT_USAGE, EXIT_OWNED, EXIT_STORE))
@click.argument("run_id")
@store_option
def unlock(run_id: str, store: Path | None) -> None:
    """Release RUN_ID from an owner that cannot answer (another host, no lease).

    That is a process on another host (a container restarted under a new name, a renamed laptop)
    whose lease has not run out yet, or one recorded before ownership leases. A live owner on
    this host is never released (exit 4): stop it first. The owner's running steps become
    interrupted, each logged as an event, and resume on the next start. Only unlock a run whose
    owner you know is gone: otherwise two processes may run its steps at once.
    """
    with reported_errors():
        done = open_store(store, must_exist=True).unlock_run(run_id, current_owner())
    if not done.owners:
        click.echo(f"run '{run_id}' had no owner; nothing changed")
        return
    owners = ", ".join(o.describe() for o in done.owners)
    steps = ", ".join(done.steps) or "none"
    click.echo(f"unlocked run '{run_id}': released {owners}; steps now interrupted: {steps}")


_COMPACT_HELP = (
    "Rewrite the store into a fresh file afterwards to give the space back: always (--compact), never "
    "(--no-compact), or by default when at least a fifth of the file is free."
)
_DRY_RUN_HELP = "Print what would be removed and the space it would free; change nothing."
_REMOVE_CODES = (EXIT_OK, EXIT_USAGE, EXIT_OWNED, EXIT_STORE)
_REMOVE_EXIT = """\b
Runs a live process owns or executes are left whole (exit 4, naming the
process); the other runs still go. A run that does not exist: exit 6.

"""


def _removal_lines(removal: Removal) -> None:
    """One line per run removed (or that would be), then one per run left in place, on stderr."""
    verb = "would remove" if removal.dry_run else "removed"
    for run in removal.removed:
        click.echo(
            f"{verb} run '{run.run_id}' of pipeline '{run.pipeline}' ({run.state.value}, {run.step_count} "
            f"step{'s' if run.step_count != 1 else ''}, last changed {human_time(run.updated_at)})"
        )
    for refused in removal.refused:
        click.echo(f"error: {refused.reason}", err=True)


def _payloads(count: int, at: PayloadsAt) -> str:
    """``4 payload files``, or ``4 payload objects in s3://bucket/prefix`` when they are a bucket's."""
    return f"{count} payload objects in {at.where}" if at.objects else f"{count} payload files"


def _freed_line(removal: Removal, compaction: Compaction | None, at: PayloadsAt) -> str:
    what = (
        f"{removal.checkpoints_removed} checkpoint rows ({human_size(removal.inline_bytes)} inside the database) "
        f"and {_payloads(removal.files_removed, at)} ({human_size(removal.file_bytes)})"
    )
    if removal.dry_run:
        return f"dry run, nothing changed: would free about {human_size(removal.bytes_freed)}: {what}"
    return f"freed {human_size(removal.bytes_freed)}: {what}" + _compaction_text(compaction)


def _compaction_text(compaction: Compaction | None) -> str:
    if compaction is None:
        return ""
    if compaction.done:
        return (
            f"; compacted the store from {human_size(compaction.size_before)} to "
            f"{human_size(compaction.size_after)} in {compaction.seconds:.1f} s"
        )
    return f"; the store was not compacted: {compaction.skipped}"


def _compact(opened: Store, compact: bool | None, freed: int) -> Compaction | None:
    """Compact when asked (True), never (False), or when worth it (None); None when not tried."""
    if compact is False:
        return None
    result = opened.compact(force=bool(compact), freed_hint=freed)
    if not result.done and compact is None and result.skipped and result.skipped.startswith("less than"):
        return None  # not worth it: nothing to say
    return result


def _removal_exit(removal: Removal) -> int:
    if any(not r.missing for r in removal.refused):
        return EXIT_OWNED
    return EXIT_STORE if removal.refused else EXIT_OK


@main.command(epilog=_REMOVE_EXIT + exit_codes_help(*_REMOVE_CODES))
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN...")
@store_option
@click.option(
    "--dry-run", is_flag=True, help="Print what would be removed and the space it would free; change nothing."
)
@click.option("--compact/--no-compact", default=None, help=_COMPACT_HELP)
def rm(run_ids: tuple[str, ...], store: Path | None, dry_run: bool, compact: bool | None) -> None:
    """Delete whole runs: their steps, events, checkpoints and payloads.

    Large payloads are files beside the store, or objects in a bucket for a server store
    that names one (docs/scale.md).

    Checkpoints another run still shares stay. Like gc, it also drops checkpoints of steps sent
    back to pending. The database file is then compacted when enough of it is free space
    (docs/durability.md says what that costs).
    """
    with reported_errors():
        opened = open_store(store, must_exist=True)
        removal = opened.remove_runs(run_ids, current_owner(), dry_run=dry_run)
        _removal_lines(removal)
        compaction = None if dry_run or not removal.removed else _compact(opened, compact, removal.inline_bytes)
    click.echo(_freed_line(removal, compaction, opened.payloads_at))
    sys.exit(_removal_exit(removal))


_GC_EXAMPLES = """\b
Examples:
  resumable gc --keep-last 5               the 5 newest runs of each pipeline stay
  resumable gc --older-than 7d --dry-run   what a week's retention would free
  resumable gc --state failed -P nightly   delete the failed runs of 'nightly'

"""


@main.command(epilog=_GC_EXAMPLES + _REMOVE_EXIT + exit_codes_help(*_REMOVE_CODES))
@store_option
@click.option("--keep-last", type=_Count(), default=None, help="Delete all but the newest N runs of each pipeline.")
@click.option(
    "--older-than",
    type=_Since(),
    default=None,
    help="Delete runs last changed before then: 30m, 12h, 7d, 2w or a date.",
)
@click.option("--pipeline", "-P", default=None, help="Only runs of this pipeline.")
@click.option(
    "--state",
    type=click.Choice([s.value for s in RunState]),
    default=None,
    help="Delete runs in this state (a run whose process died reads as interrupted).",
)
@click.option(
    "--dry-run", is_flag=True, help="Print what would be removed and the space it would free; change nothing."
)
@click.option("--compact/--no-compact", default=None, help=_COMPACT_HELP)
def gc(
    store: Path | None, keep_last: int | None, older_than: datetime | None, pipeline: str | None,
    state: str | None, dry_run: bool, compact: bool | None,
) -> None:  # fmt: skip
    """Give space back: delete old runs, unused checkpoints and payloads.

    Without --keep-last, --older-than or --state no run is deleted: only checkpoints of steps
    sent back to pending and payloads (files beside the store, or objects in a bucket) nothing
    points to. A failed, running or interrupted step keeps the checkpoint of its last completed
    attempt, and a checkpoint a forked run shares stays while that run needs it; payloads written
    within the last hour stay (a step may be about to record them). The given options narrow each
    other: --keep-last keeps the newest N runs of each pipeline among those --pipeline and --state
    select, and --older-than deletes only runs whose last change came before then.
    """
    selecting = keep_last is not None or older_than is not None or state is not None
    if pipeline is not None and not selecting:
        raise click.UsageError(
            f"--pipeline only narrows which runs are deleted; say which runs of '{pipeline}' to delete with "
            "--keep-last N, --older-than AGE or --state STATE (add --dry-run to see them first)."
        )
    rule = RunFilter(pipeline, RunState(state) if state else None, older_than, keep_last)
    with reported_errors():
        opened = open_store(store, must_exist=True)
        if dry_run:  # without a selection: what dropping superseded checkpoints would free
            preview = opened.remove_runs(rule if selecting else (), current_owner(), dry_run=True)
            _removal_lines(preview)
            click.echo(_freed_line(preview, None, opened.payloads_at))
            sys.exit(_removal_exit(preview))
        removal = opened.remove_runs(rule, current_owner()) if selecting else None
        if removal is not None:
            _removal_lines(removal)
            if not removal.removed and not removal.refused:
                click.echo("no runs match", err=True)
        report = opened.gc()
        freed = (removal.inline_bytes if removal else 0) + report.bytes_freed
        compaction = _compact(opened, compact, freed)
    if removal is not None:
        click.echo(_freed_line(removal, None, opened.payloads_at))
    click.echo(
        f"removed {report.checkpoints_removed} superseded checkpoint rows and "
        f"{_payloads(report.files_removed, opened.payloads_at)} ({human_size(report.bytes_freed)} freed)"
        f"{_compaction_text(compaction)}"
    )
    sys.exit(EXIT_OK if removal is None else _removal_exit(removal))


# Formats that only a table (a pandas DataFrame or anything with the same writer) can be written in.
_TABLE_FORMATS = {".parquet": ("Parquet", "to_parquet"), ".csv": ("CSV", "to_csv")}


@main.command(epilog=exit_codes_help(EXIT_OK, EXIT_USAGE, EXIT_STORE))
@click.argument("run_id")
@click.argument("step")
@click.argument("name", required=False)
@store_option
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write: .parquet or .csv for DataFrames only, .json for DataFrames and plain data, "
    "any other name (.pkl) a pickle.",
)
def export(run_id: str, step: str, name: str | None, store: Path | None, output: Path) -> None:
    """Write output NAME of STEP (its return value when omitted) to a file.

    The format follows the file name. A .parquet or .csv name is refused for a value that is not
    a DataFrame, rather than given bytes of another format; the message says what to use.
    """
    with reported_errors(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LastGoodCheckpointWarning)
        value = load(run_id, step, name, store=open_store(store, read_only=True))
    for warning in caught:
        if isinstance(warning.message, LastGoodCheckpointWarning):
            click.echo(f"note: {warning.message}", err=True)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    suffix = output.suffix.lower()
    shown = f"output '{name or 'return'}' of step '{step}' (run '{run_id}')"
    if suffix in _TABLE_FORMATS:
        label, writer = _TABLE_FORMATS[suffix]
        if not hasattr(value, writer):
            kind = type(value).__name__
            click.echo(
                f"error: {shown} is a {kind}, not a DataFrame, so it cannot be written as {label}; nothing was "
                f"written. Use {output.with_suffix('.json').name} for JSON (plain data) or "
                f"{output.with_suffix('.pkl').name} for a pickle.",
                err=True,
            )
            sys.exit(EXIT_USAGE)
        try:
            if suffix == ".csv":
                value.to_csv(output, index=False)
            else:
                value.to_parquet(output)
        except ImportError as exc:
            click.echo(f"error: writing {label} needs a library that is not installed ({exc}); use .csv", err=True)
            sys.exit(EXIT_USAGE)
    elif hasattr(value, "to_json") and suffix == ".json":
        value.to_json(output, orient="records")
    elif suffix == ".json":
        try:
            output.write_text(json.dumps(value, indent=2, default=str))
        except TypeError as exc:
            click.echo(f"error: the value cannot be written as JSON ({exc}); use a .pkl file", err=True)
            sys.exit(EXIT_USAGE)
    else:
        with open(output, "wb") as f:
            pickle.dump(value, f, protocol=5)
    click.echo(f"wrote {output}")


# ---------------------------------------------------------------- execute and demo (headless runs)

_EXECUTE_EXIT = {
    "completed": EXIT_OK,
    "failed": EXIT_FAILED,
    "kernel_died": EXIT_RESTARTS_EXHAUSTED,
    "owned": EXIT_OWNED,
}


@main.command(epilog=exit_codes_help(*EXIT_CODES))
@click.argument("notebook", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the executed notebook (default: NOTEBOOK with the suffix .resumable.ipynb).",
)
@click.option("--run-id", default=None, help="Resume this run, or start it under this id.")
@click.option("--new", is_flag=True, help="Start a new run (default: resume the pipeline's latest run).")
@parameter_option("A parameter, injected after the cell tagged 'parameters'")
@click.option(
    "-f",
    "--parameters-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A YAML or JSON file of parameters (-p wins over it).",
)
@click.option(
    "--max-restarts",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="How many times a dead kernel is replaced before giving up.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="The longest one cell may run, in seconds (default: no limit).",
)
@click.option("--kernel", default=None, help="Jupyter kernel name (default: the notebook's, else python3).")
@store_option
@click.option(
    "--sweep",
    "sweep_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A YAML file of parameter sets (a list, or grid: and runs:): one run per set, each resumable.",
)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Local worker processes (default: CPUs).")
@click.option("--cluster", default=None, metavar="ADDRESS", help="Run the sweep on this Dask scheduler.")
@click.option(
    "--max-failures", type=click.IntRange(min=1), default=None, help="Stop the sweep after this many failed runs."
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where a sweep's notebooks go, one RUN_ID.ipynb each (default: NOTEBOOK.sweep/).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or step lines.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def execute(
    notebook: Path, output: Path | None, run_id: str | None, new: bool, parameters: tuple[tuple[str, str], ...],
    parameters_file: Path | None, max_restarts: int, timeout: float | None, kernel: str | None,
    store: Path | None, sweep_file: Path | None, workers: int | None, cluster: str | None,
    max_failures: int | None, output_dir: Path | None, quiet: bool, as_json: bool,
) -> None:  # fmt: skip
    """Run NOTEBOOK headless; a dead kernel is replaced and the run resumes from its checkpoints.

    Completed durable steps restore instead of running again; cells without %%durable_step run
    on every pass. The executed notebook, restored outputs included, is written to -o. Ctrl-C
    stops the run (exit 130) and prints the command that resumes it.

    With --sweep, one run per parameter set, on a local pool of --workers processes or on the
    Dask scheduler --cluster; running the same sweep again resumes each run. A summary table
    follows; exit 0 when every run completed, else 1.
    """
    from resumable._headless import execute_notebook
    from resumable._headless import params as _headless_params

    sweep_options = {"--workers": workers, "--cluster": cluster, "--max-failures": max_failures,
                     "--output-dir": output_dir}  # fmt: skip
    if sweep_file is not None:
        single = {"-o": output, "--run-id": run_id, "--new": new or None, "-p": parameters or None,
                  "-f": parameters_file}  # fmt: skip
        given = [name for name, value in single.items() if value is not None]
        if given:
            msg = f"{given[0]} is for a single run; with --sweep each run's id and parameters come from the sweep file."
            raise click.UsageError(msg)
        _execute_sweep(notebook, sweep_file, workers, cluster, max_failures, output_dir, max_restarts, timeout,
                       kernel, store, quiet, as_json)  # fmt: skip
    given = [name for name, value in sweep_options.items() if value is not None]
    if given:
        raise click.UsageError(f"{given[0]} belongs to a sweep; pass the parameter sets with --sweep FILE.")
    try:
        params = _headless_params.collect(parameters, parameters_file)
        result = execute_notebook(
            notebook, output, run_id=run_id, new=new, params=params, max_restarts=max_restarts,
            timeout=timeout, kernel=kernel, store=store, progress=not quiet, raise_on_error=False,
        )  # fmt: skip
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)  # the resume command was printed
    except ResumableError as exc:
        _execute_failed(exc, as_json)
    code = _EXECUTE_EXIT[result.outcome]
    if as_json:
        click.echo(json.dumps({**result.to_json(), "exit_code": code}, indent=2))
    elif not quiet:
        restored = ", ".join(result.steps_restored) or "none"
        executed = ", ".join(result.steps_executed) or "none"
        click.echo(
            f"run '{result.run_id}' of pipeline '{result.pipeline}': {result.outcome.replace('_', ' ')} after "
            f"{result.restarts} kernel restart{'s' if result.restarts != 1 else ''}; steps executed: {executed}; "
            f"restored: {restored}"
            + (f"; not reached: {', '.join(result.steps_not_reached)}" if result.steps_not_reached else ""),
            err=True,
        )
        click.echo(f"executed notebook: {result.output}", err=True)
    if result.error is not None:
        click.echo(f"error: {result.error}", err=True)
    sys.exit(code)


def _execute_failed(exc: ResumableError, as_json: bool) -> NoReturn:
    """How ``execute`` (one run or a sweep) ends on an error of ours: bad input is a usage error, else its exit code.

    A sweep's cluster that cannot be reached or started is a usage error too: like a bad option, it
    stops the sweep before any run starts.
    """
    from resumable.errors import NotebookInputError, SweepClusterError

    if isinstance(exc, (NotebookInputError, SweepClusterError)):
        if as_json:
            click.echo(json.dumps({"ok": False, "outcome": "usage", "error": str(exc), "exit_code": EXIT_USAGE}))
        raise click.UsageError(str(exc)) from None
    code = exit_code_for(exc)
    if as_json:
        click.echo(json.dumps({"ok": False, "outcome": type(exc).__name__, "error": str(exc), "exit_code": code}))
    click.echo(f"error: {exc}", err=True)
    sys.exit(code)


def _execute_sweep(
    notebook: Path, sweep_file: Path, workers: int | None, cluster: str | None, max_failures: int | None,
    output_dir: Path | None, max_restarts: int, timeout: float | None, kernel: str | None, store: Path | None,
    quiet: bool, as_json: bool,
) -> None:  # fmt: skip
    """``execute --sweep``: the sweep, then a table of its runs (or JSON) and its exit code."""
    from resumable._sweep import sweep

    try:
        with front_end("command"):
            result = sweep(
                notebook, sweep_file, workers=workers, cluster=cluster, max_failures=max_failures,
                output_dir=output_dir, max_restarts=max_restarts, timeout=timeout, kernel=kernel, store=store,
                progress=not quiet,
            )  # fmt: skip
    except KeyboardInterrupt:
        click.echo("interrupted; completed steps are checkpointed. Run the same sweep again to resume it.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except ResumableError as exc:
        _execute_failed(exc, as_json)
    code = EXIT_OK if result.ok else EXIT_FAILED
    if as_json:
        click.echo(json.dumps({**result.to_json(), "exit_code": code}, indent=2))
        sys.exit(code)
    rows = [
        (r.run_id, " ".join(f"{k}={v!r}" for k, v in r.params.items()), r.state.replace("_", " "),
         len(r.steps_executed), len(r.steps_restored), human_duration(r.duration_s))
        for r in result.runs
    ]  # fmt: skip
    print_table(("run", "parameters", "state", "executed", "restored", "duration"), rows)
    counts = ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in result.counts().items())
    click.echo(f"sweep of {len(result.runs)} runs of pipeline '{result.pipeline}': {counts}", err=True)
    click.echo(f"executed notebooks: {result.output_dir}", err=True)
    for r in result.runs:
        if r.error is not None and r.state != "cancelled":
            click.echo(f"error in run '{r.run_id}': {r.error}", err=True)
    sys.exit(code)


@main.command(epilog=exit_codes_help(EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STORE))
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path), default=Path("resumable-demo"))
def demo(folder: Path) -> None:
    """Watch a checkout survive a crash: charge, reserve, courier (the kernel dies here), email.

    Writes the demo notebook into FOLDER (default ./resumable-demo), serves a fake shop on
    127.0.0.1 and runs the notebook headless; prints which steps ran, which were restored, and
    how many times the card was charged.
    """
    from resumable._demo.run import run_demo

    with reported_errors():
        ok = run_demo(folder)
    sys.exit(EXIT_OK if ok else EXIT_FAILED)
