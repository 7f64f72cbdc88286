"""The ``resumable`` command: thin click commands over the public API, with exit codes and --json.

Exit codes
----------
0 success; 1 a step or cell failed; 2 usage error; 3 kernel restarts exhausted; 4 the run is owned
by another live process; 5 the run was started with other parameters; 6 the store cannot be used
(locked, not a store, integrity failure, no such run or step).
"""

from __future__ import annotations

import json
import pickle
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from resumable import _params
from resumable._owner import current_owner
from resumable._records import RunInfo, StepStatus
from resumable._store import open_store
from resumable._table import step_table
from resumable._units import human_size, human_time
from resumable.errors import (
    CheckpointNotFoundError,
    LastGoodCheckpointWarning,
    ParameterMismatchError,
    ResumableError,
    RunOwnedError,
    StoreError,
)
from resumable.pipeline import load

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_RESTARTS_EXHAUSTED = 3
EXIT_OWNED = 4
EXIT_PARAMS = 5
EXIT_STORE = 6

EXIT_CODES_HELP = """\b
Exit codes:
  0  success
  1  a step or cell failed
  2  usage error
  3  kernel restarts exhausted (resumable execute)
  4  the run is owned by another live process
  5  the run was started with other parameters
  6  the store cannot be used (locked, not a store, integrity failure, no such run or step)
"""

F = TypeVar("F", bound=Callable[..., Any])


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an error."""
    if isinstance(exc, RunOwnedError):
        return EXIT_OWNED
    if isinstance(exc, ParameterMismatchError):
        return EXIT_PARAMS
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
    """``--store PATH`` with RESUMABLE_STORE as its environment default."""
    return click.option(
        "--store",
        "store",
        envvar="RESUMABLE_STORE",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="The store file (default: RESUMABLE_STORE, else .resumable/store.duckdb).",
    )(fn)


def _console() -> Console:
    """A terminal's own width; piped output is not squeezed into 80 columns (ids stay whole)."""
    return Console() if sys.stdout.isatty() else Console(width=240)


def _run_json(run: RunInfo) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "pipeline": run.pipeline,
        "state": run.state.value,
        "steps": run.step_count,
        "params": _params.jsonable(run.params),
        "created_at": run.created_at.isoformat(),
        "updated_at": run.updated_at.isoformat(),
    }


def _step_json(step: StepStatus) -> dict[str, Any]:
    return {
        "step": step.step,
        "state": step.state.value,
        "attempts": step.attempts,
        "duration_s": step.duration_s,
        "output_bytes": step.output_bytes,
        "outputs": list(step.outputs),
        "started_at": step.started_at.isoformat() if step.started_at else None,
        "finished_at": step.finished_at.isoformat() if step.finished_at else None,
        "error": step.error,
        "kept_attempt": step.kept_attempt,
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
def main() -> None:
    """Durable notebooks and pipelines: list runs, inspect and invalidate steps, execute notebooks."""


@main.command()
@store_option
@click.option("--pipeline", "-P", default=None, help="Only runs of this pipeline.")
@click.option("--limit", default=50, show_default=True, help="At most this many runs, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def runs(store: Path | None, pipeline: str | None, limit: int, as_json: bool) -> None:
    """List runs, newest first."""
    with reported_errors():
        found = open_store(store, must_exist=True, read_only=True).list_runs(pipeline, limit)
    if as_json:
        click.echo(json.dumps([_run_json(r) for r in found], indent=2))
        return
    if not found:
        click.echo("no runs yet")
        return
    table = Table()
    table.add_column("run", no_wrap=True)  # what users copy into the next command: never wrapped
    for column in ("pipeline", "state", "steps", "updated", "parameters"):
        table.add_column(column)
    for r in found:
        params = ", ".join(f"{k}={v!r}" for k, v in r.params.items())
        table.add_row(r.run_id, r.pipeline, r.state.value, str(r.step_count), human_time(r.updated_at), params)
    _console().print(table)


@main.command()
@click.argument("run_id")
@store_option
@click.option("--events", is_flag=True, help="Also print the run's event log.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def show(run_id: str, store: Path | None, events: bool, as_json: bool) -> None:
    """Show the steps of RUN_ID with their state, attempts, duration, size and last error."""
    with reported_errors():
        opened = open_store(store, must_exist=True, read_only=True)
        run = opened.reap_dead_owners(run_id, current_owner())
        if run is None:
            raise CheckpointNotFoundError(opened.location, run_id)
        steps = opened.list_steps(run_id)
        log = opened.list_events(run_id) if events else []
    if as_json:
        doc: dict[str, Any] = {**_run_json(run), "steps": [_step_json(s) for s in steps]}
        if events:
            doc["events"] = [
                {"seq": e.seq, "step": e.step, "at": e.at.isoformat(), "transition": e.transition,
                 "from": e.source, "to": e.target, "attempt": e.attempt, "pid": e.pid, "detail": e.detail}
                for e in log
            ]  # fmt: skip
        click.echo(json.dumps(doc, indent=2))
        return
    console = _console()
    params = ", ".join(f"{k}={v!r}" for k, v in run.params.items()) or "none"
    console.print(f"run [bold]{run.run_id}[/] of pipeline [bold]{run.pipeline}[/]: {run.state} (parameters: {params})")
    console.print(step_table(steps))
    if events:
        log_table = Table("seq", "when", "step", "change", "attempt", "pid", "detail")
        for e in log:
            change = f"{e.source or '-'} -> {e.target}"
            log_table.add_row(str(e.seq), human_time(e.at), e.step, change, str(e.attempt), str(e.pid), e.detail or "")
        console.print(log_table)


@main.command()
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


@main.command()
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


@main.command()
@store_option
def gc(store: Path | None) -> None:
    """Delete checkpoints of steps sent back to pending, and payload files nothing points to.

    A failed, running or interrupted step keeps the checkpoint of its last completed attempt.
    Payload files written within the last hour stay: a step may be about to record them.
    """
    with reported_errors():
        report = open_store(store, must_exist=True).gc()
    click.echo(
        f"removed {report.checkpoints_removed} superseded checkpoint rows and {report.files_removed} payload files "
        f"({human_size(report.bytes_freed)} freed)"
    )


@main.command()
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
    help="Where to write: .csv, .parquet or .json for DataFrames, .json for plain data, else pickle.",
)
def export(run_id: str, step: str, name: str | None, store: Path | None, output: Path) -> None:
    """Write output NAME of STEP (its return value when omitted) to a file."""
    with reported_errors(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LastGoodCheckpointWarning)
        value = load(run_id, step, name, store=open_store(store, must_exist=True, read_only=True))
    for warning in caught:
        if isinstance(warning.message, LastGoodCheckpointWarning):
            click.echo(f"note: {warning.message}", err=True)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    suffix = output.suffix.lower()
    if hasattr(value, "to_parquet") and suffix == ".parquet":
        value.to_parquet(output)
    elif hasattr(value, "to_csv") and suffix == ".csv":
        value.to_csv(output, index=False)
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


@main.command(epilog=EXIT_CODES_HELP)
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
@click.option(
    "-p",
    "--parameter",
    "parameters",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="A parameter, injected after the cell tagged 'parameters'; VALUE is a Python literal "
    "when it parses as one, else a string. Repeat for more.",
)
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
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or step lines.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def execute(
    notebook: Path, output: Path | None, run_id: str | None, new: bool, parameters: tuple[tuple[str, str], ...],
    parameters_file: Path | None, max_restarts: int, timeout: float | None, kernel: str | None,
    store: Path | None, quiet: bool, as_json: bool,
) -> None:  # fmt: skip
    """Run NOTEBOOK headless; a dead kernel is replaced and the run resumes from its checkpoints.

    Completed durable steps restore instead of running again; cells without %%durable_step run
    on every pass. The executed notebook, restored outputs included, is written to -o. Ctrl-C
    stops the run (exit 130) and prints the command that resumes it.
    """
    from resumable._headless import execute_notebook
    from resumable._headless import params as _headless_params
    from resumable.errors import NotebookInputError

    try:
        params = _headless_params.collect(parameters, parameters_file)
        result = execute_notebook(
            notebook, output, run_id=run_id, new=new, params=params, max_restarts=max_restarts,
            timeout=timeout, kernel=kernel, store=store, progress=not quiet, raise_on_error=False,
        )  # fmt: skip
    except KeyboardInterrupt:
        sys.exit(130)  # the resume command was printed; 128 + SIGINT, as shells report it
    except NotebookInputError as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "outcome": "usage", "error": str(exc), "exit_code": EXIT_USAGE}))
        raise click.UsageError(str(exc)) from None
    except ResumableError as exc:
        code = exit_code_for(exc)
        if as_json:
            click.echo(json.dumps({"ok": False, "outcome": type(exc).__name__, "error": str(exc), "exit_code": code}))
        click.echo(f"error: {exc}", err=True)
        sys.exit(code)
    code = _EXECUTE_EXIT[result.outcome]
    if as_json:
        click.echo(json.dumps({**result.to_json(), "exit_code": code}, indent=2))
    elif not quiet:
        restored = ", ".join(result.steps_restored) or "none"
        executed = ", ".join(result.steps_executed) or "none"
        click.echo(
            f"run '{result.run_id}' of pipeline '{result.pipeline}': {result.outcome.replace('_', ' ')} after "
            f"{result.restarts} kernel restart{'s' if result.restarts != 1 else ''}; steps executed: {executed}; "
            f"restored: {restored}",
            err=True,
        )
        click.echo(f"executed notebook: {result.output}", err=True)
    if result.error is not None:
        click.echo(f"error: {result.error}", err=True)
    sys.exit(code)


@main.command()
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
