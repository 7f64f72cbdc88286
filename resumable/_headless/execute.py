"""Headless runs: execute a notebook on nbclient, restart a dead kernel and resume the run.

Each pass starts a fresh kernel with ``RESUMABLE_RUN_ID`` and ``RESUMABLE_STORE`` in its
environment and runs the notebook from the top. Durable steps that completed in an earlier pass
restore from their checkpoints; the first unfinished step executes. A kernel that dies (out of
memory, ``os._exit``, a SIGKILL) starts the next pass, up to ``max_restarts``; a cell that raises
ends the run with the exact command that resumes it.

Whether a step executed or was restored is read from the store's event log, not from the cell's
output (see ``progress.Tracker``). Parameters are parsed and injected by ``params``.
"""

from __future__ import annotations

import copy
import math
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from resumable import _config, _params, _step_report
from resumable._headless import params as _headless_params
from resumable._headless.kernel import (
    check_kernel,
    client_class,
    execute_or_interrupt,
    ipc_config,
    manager_class,
)
from resumable._headless.lock import executor_lock
from resumable._headless.names import (
    DEFAULT_MAX_RESTARTS,
    check_magic_lines,
    check_step_names,
    default_output,
    pinned_run_id,
    pipeline_of,
    resume_command,
    step_of,
)
from resumable._headless.notebook import (
    error_output,
    mark_error,
    preview,
    read_notebook,
    strip_ansi,
    write_notebook,
)
from resumable._headless.progress import Progress, Tracker
from resumable._keys import NAME_RULE, is_valid_name
from resumable._owner import current_owner
from resumable._runs import choose_run
from resumable._store import Store, open_store
from resumable._units import is_seconds
from resumable.errors import (
    KernelDiedError,
    NotebookExecutionError,
    NotebookInputError,
    RunOwnedError,
    error_class,
    front_end,
    option_words,
)

Outcome = Literal["completed", "failed", "kernel_died", "owned"]


@dataclass(frozen=True, slots=True)
class PassReport:
    """One kernel's pass over the notebook."""

    number: int
    executed: tuple[str, ...]
    restored: tuple[str, ...]
    cells_executed: int
    outcome: Literal["completed", "failed", "kernel_died"]
    cell_index: int | None = None  # where the pass stopped, when it did not complete
    step: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """What a headless run did; ``ok`` is True only when every cell succeeded."""

    run_id: str
    pipeline: str
    notebook: Path
    output: Path
    store: Path | str  # the store file, or a server store's URL
    params: dict[str, Any]
    ok: bool
    outcome: Outcome
    cells_executed: int
    steps_executed: tuple[str, ...]
    steps_restored: tuple[str, ...]
    restarts: int
    passes: tuple[PassReport, ...]
    duration_s: float
    resume_command: str
    error: str | None = None  # the whole message, resume command included
    failed_cell: int | None = None
    failed_step: str | None = None
    # The notebook's steps the last pass neither executed nor restored (it stopped before them):
    # a run is never reported as done while one of these has not run.
    steps_not_reached: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (``resumable execute --json`` prints it)."""
        doc = asdict(self)
        for key in ("notebook", "output", "store"):
            doc[key] = str(doc[key])
        doc["duration_s"] = round(self.duration_s, 3)
        doc["params"] = _params.jsonable(self.params)
        return doc


@dataclass
class _Failure:
    cell_index: int
    step: str | None
    ename: str
    evalue: str
    traceback: str


@dataclass
class _Job:
    """Everything one headless run needs, resolved and checked before the first kernel starts."""

    source_nb: Any
    pipeline: str
    run_id: str
    params: dict[str, Any]
    store: Store
    store_path: Path | str
    kernel: str
    cwd: Path
    timeout: float | None
    socket_dir: str
    progress: Progress
    hinted: dict[str, Any]  # the parameters a failure's hint offers to correct: those given, else the run's


class _Pass:
    """One kernel's pass over the notebook: its copy of the notebook, its client and its kernel.

    The kernel is started by :meth:`launch`, before the executor's own store work (recording and
    claiming the run, reading the store's last event, after a death reading the dead pass's
    events), so that work overlaps the half second or more a kernel takes to start instead of
    adding to it. A kernel runs nothing until nbclient sends it the first cell, which happens only
    after that work is done; a kernel launched for a run that then does not go ahead is killed
    (:meth:`discard`).
    """

    def __init__(self, job: _Job, number: int) -> None:
        self.number = number
        self.nb = copy.deepcopy(job.source_nb)
        _headless_params.inject(self.nb, job.params)
        token = secrets.token_hex(16)  # a report carrying another pass's token (or none) is not this kernel's
        self.tracker = Tracker(job.store, job.run_id, job.progress, token)
        self.client = client_class()(
            self.nb,
            timeout=math.ceil(job.timeout) if job.timeout is not None else None,
            kernel_name=job.kernel,
            kernel_manager_class=manager_class(),
            config=ipc_config(job.socket_dir),
            resources={"metadata": {"path": str(job.cwd)}},
            on_cell_start=self.tracker.on_cell_start,
            on_cell_executed=self.tracker.on_cell_executed,
            coalesce_streams=True,
        )
        self.client.on_step_report = self.tracker.on_report
        self.env = {
            **os.environ, "RESUMABLE_RUN_ID": job.run_id, "RESUMABLE_STORE": str(job.store_path),
            _step_report.ENV: token,
        }  # fmt: skip
        self.handed_over = False  # nbclient owns the kernel from here: it shuts it down

    def launch(self) -> _Pass:
        """Start the kernel process; nbclient connects to it and waits for it in ``execute``."""
        from jupyter_core.utils import run_sync

        self.client.km = self.client.create_kernel_manager()
        try:
            run_sync(self.client.async_start_new_kernel)(env=self.env)
        except BaseException:
            self.discard()
            raise
        return self

    def discard(self) -> None:
        """Kill a kernel that ran nothing (the run did not go ahead); nbclient's own once it executes."""
        from jupyter_core.utils import run_sync

        km = self.client.km
        if self.handed_over or km is None:
            return
        self.client.km = None
        try:
            if km.has_kernel:
                run_sync(km.shutdown_kernel)(now=True)
            run_sync(km.cleanup_resources)()
        except Exception:  # a kernel that cannot be killed must not hide the error that stopped the run
            pass


def _run_pass(
    job: _Job, this: _Pass, max_restarts: int, launch_next: Callable[[], _Pass] | None
) -> tuple[Any, PassReport, _Failure | None, _Pass | None]:
    """Execute the notebook once on the pass's fresh kernel.

    When the kernel dies and ``launch_next`` is given, the next pass's kernel is started before
    this pass's events are read from the store, so the read overlaps its start.
    """
    from nbclient.exceptions import CellControlSignal, CellTimeoutError, DeadKernelError

    nb, tracker, client, number = this.nb, this.tracker, this.client, this.number
    try:
        tracker.begin()
    except BaseException:
        this.discard()
        raise
    code_cells = sum(1 for c in nb.cells if c.cell_type == "code" and c.source.strip())
    job.progress.start_pass(number, code_cells, max_restarts)
    outcome: Literal["completed", "failed", "kernel_died"] = "completed"
    failure: _Failure | None = None
    this.handed_over = True
    try:
        execute_or_interrupt(client, this.env)
    except DeadKernelError:
        outcome = "kernel_died"
    except CellControlSignal as exc:  # a raising cell, or a cell past --timeout
        outcome = "failed"
        index = tracker.cell_index if tracker.cell_index is not None else 0
        cell = nb.cells[index]
        tracker.classify(cell, ending="failed")
        found = error_output(cell)
        if isinstance(exc, CellTimeoutError):
            # The kernel may still report the interrupt that stopped the cell; the cause is the timeout.
            limit = f"{job.timeout:g} s" if job.timeout is not None else "its time limit"
            found = ("CellTimeoutError", f"the cell ran longer than --timeout {limit} and was stopped", "")
        elif found is None:
            # Some errors leave no error output: IPython prints a UsageError (an unknown magic, a bad
            # magic option) on stderr and reports it only in the execute reply, which nbclient carries.
            found = _reply_error(exc)
        failure = _Failure(index, tracker.step, *found)
    except RuntimeError as exc:
        if "Kernel didn't respond" not in str(exc) and "Kernel died" not in str(exc):
            raise
        outcome = "kernel_died"  # the kernel died while starting
        tracker.cell_index = None
        tracker.step = None
    finally:
        job.progress.end_pass()
    following = launch_next() if outcome == "kernel_died" and launch_next is not None else None
    try:
        if outcome == "kernel_died" and tracker.cell_index is not None:
            tracker.classify(nb.cells[tracker.cell_index], ending="kernel_died")
    except BaseException:
        if following is not None:
            following.discard()
        raise
    report = PassReport(
        number,
        tuple(tracker.executed),
        tuple(tracker.restored),
        client.code_cells_executed,
        outcome,
        tracker.cell_index if outcome != "completed" else None,
        tracker.step if outcome != "completed" else None,
    )
    return nb, report, failure, following


def _reply_error(exc: BaseException) -> tuple[str, str, str]:
    """The error the kernel's execute reply named, for a cell that left no error output."""
    ename = getattr(exc, "ename", None) or type(exc).__name__
    evalue = getattr(exc, "evalue", None)
    if evalue is None:
        evalue = str(exc)
    return str(ename), strip_ansi(str(evalue)), ""


def _check_options(run_id: str | None, new: bool, max_restarts: int, timeout: float | None) -> None:
    if run_id is not None and new:
        new_words = option_words("new=True", "--new")
        fix = f"Pass a run id to resume or name a run, or {new_words} to start one, not both."
        raise NotebookInputError("run id", run_id, f"was given together with {new_words}", fix)
    if run_id is not None and not is_valid_name(run_id):
        raise NotebookInputError("run id", run_id, "is not valid", f"Use {NAME_RULE}.")
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        fix = "It counts kernel restarts: give a whole number, 0 or more."
        raise NotebookInputError("max_restarts", max_restarts, "is not valid", fix)
    if timeout is not None and not is_seconds(timeout, zero_ok=False):
        fix = "It is the longest a cell may run: give a finite number of seconds above 0, or None for no limit."
        raise NotebookInputError("timeout", timeout, "is not valid", fix)


@front_end("python")  # errors name new=True; the command line, calling this, keeps its --new
def execute_notebook(
    notebook: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    run_id: str | None = None,
    new: bool = False,
    params: Mapping[str, Any] | None = None,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    timeout: float | None = None,
    kernel: str | None = None,
    store: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    progress: bool = True,
    raise_on_error: bool = True,
) -> ExecutionResult:
    """Execute a notebook headless, restarting a dead kernel and resuming the run.

    Parameters
    ----------
    notebook
        The ``.ipynb`` file. It is read, never written.
    output
        Where the executed notebook goes, with restored outputs included. Default: beside the
        input with the suffix ``.resumable.ipynb``.
    run_id, new
        The run to resume or create. Without either, the latest run of the notebook's pipeline
        is resumed (as ``%durable_run`` does), or a new one starts when there is none.
    params
        Injected after the cell tagged ``parameters`` and recorded with the run. Resuming a run
        without ``params`` reuses the ones it started with; different values are recorded, and
        the steps that read a changed parameter execute again (effect steps are held).
    max_restarts
        How many times a dead kernel is replaced before giving up.
    timeout
        The longest one cell may run, in seconds (None: no limit).
    kernel
        The Jupyter kernel name; default: the notebook's kernelspec, else ``python3``.
    store
        The store file; default: ``RESUMABLE_STORE``, else ``.resumable/store.duckdb``.
    cwd
        The kernel's working directory; default: the notebook's folder, as Jupyter does.
    progress
        Show a progress bar and one line per step on stderr.
    raise_on_error
        Raise on failure (the default), or return a result with ``ok=False``.

    Returns
    -------
    ExecutionResult
        The run id, output path, steps executed and restored in the last pass, restarts, passes.

    Raises
    ------
    NotebookExecutionError
        A cell raised (or ran past ``timeout``): carries the cell, step, error and resume command.
    KernelDiedError
        The kernel died ``max_restarts + 1`` times.
    RunOwnedError
        Another live process is executing a step of the run.
    NotebookInputError
        The notebook, a parameter or an option cannot be used.

    Examples
    --------
    >>> result = resumable.execute_notebook("checkout.ipynb", params={"order": "order-42"})  # doctest: +SKIP
    >>> result.steps_restored  # doctest: +SKIP
    ('charge', 'reserve')
    """
    started = time.perf_counter()
    _check_options(run_id, new, max_restarts, timeout)
    nb_path = Path(notebook)
    for what, path_given in (("notebook", notebook), ("output", output)):
        text = os.fspath(path_given) if path_given is not None else None
        if text is not None and (not text or "\x00" in text or not Path(text).name):
            raise NotebookInputError(what, text, "is not a file name", "Pass the path of an .ipynb file.")
    out_path = Path(output) if output is not None else default_output(nb_path)
    if out_path.absolute() == nb_path.absolute():
        fix = "Pick another path so the input stays as written."
        raise NotebookInputError("output", str(out_path), "is the input notebook", fix)
    source_nb = read_notebook(nb_path)
    check_magic_lines(source_nb)  # a line the magic would refuse fails here, before any kernel starts
    check_step_names(source_nb)  # as does a step name two cells share
    kernel_name = kernel or source_nb.metadata.get("kernelspec", {}).get("name") or "python3"
    check_kernel(kernel_name)
    given = _headless_params.checked(params or {})
    pipeline = pipeline_of(source_nb, nb_path)
    pinned = pinned_run_id(source_nb)
    if pinned is not None and (new or (run_id is not None and pinned != run_id)):
        problem = (
            f"pins its run with '%durable_run {pipeline} --run-id {pinned}', which its kernel obeys, "
            f"so it cannot run as {repr(run_id) if run_id else 'a new run'}"
        )
        drop = option_words("run_id= / new=", "--run-id/--new")
        fix = f"Drop {drop}, or remove --run-id from the notebook's %durable_run."
        raise NotebookInputError("notebook", str(nb_path), problem, fix)
    store_path = _config.store_location(store)  # a server URL stays a URL
    opened = open_store(store_path)
    choice = choose_run(opened, pipeline, run_id or pinned, new=new)
    chosen, existing = choice.run_id, choice.existing
    merged = {**(existing.params if existing is not None else {}), **given}
    resume = resume_command(
        os.fspath(notebook), chosen, os.fspath(output) if output is not None else None,
        os.fspath(store) if store is not None else None, kernel, max_restarts, timeout,
    )  # fmt: skip
    job = _Job(
        source_nb, pipeline, chosen, merged, opened, store_path, kernel_name,
        Path(cwd) if cwd is not None else nb_path.absolute().parent, timeout,
        tempfile.mkdtemp(prefix="resumable-kernel-"), Progress(progress, pipeline, chosen),
        {name: merged[name] for name in (given or merged)},
    )  # fmt: skip
    try:
        with executor_lock(store_path, chosen, pipeline):  # RunOwnedError when another executor runs it
            first = _Pass(job, 1).launch()  # it starts while the run is recorded and claimed below
            try:
                _record_and_claim(opened, chosen, pipeline, merged, new_run=existing is None)
                try:
                    final_nb, passes, failure = _execute_passes(job, first, max_restarts)
                except KeyboardInterrupt:
                    job.progress.say(f"interrupted; completed steps are checkpointed. Resume the run with:\n  {resume}")
                    raise
                return _finish(job, nb_path, out_path, final_nb, passes, failure, resume, started, raise_on_error)
            finally:
                first.discard()  # the run did not go ahead: its kernel ran nothing
    finally:
        shutil.rmtree(job.socket_dir, ignore_errors=True)


def _record_and_claim(opened: Store, run_id: str, pipeline: str, params: dict[str, Any], *, new_run: bool) -> None:
    """Check that no live process runs a step of the run, then record its parameters.

    A changed parameter is recorded, not refused: the steps that read it see it changed (their
    inputs), execute again and say so; completed effect steps are held. It is recorded only once
    the run is this execution's: a refused execution leaves the run's values as they were, or a
    later plain resume would take the refused values for the run's. The kernel, not this process,
    owns the steps it runs, so the claim is released at once.

    Raises
    ------
    RunOwnedError
        A live process runs a step of the run (dead owners' steps become ``interrupted``).
    """
    me = current_owner()
    if new_run:  # created first: there is nothing to claim before
        opened.open_run(run_id, pipeline, params, update_params=True)
    opened.claim_run(run_id, me)
    try:
        if not new_run:  # a new run has its values already
            opened.open_run(run_id, pipeline, params, update_params=True)
    finally:
        opened.release_run(run_id, me)


def _execute_passes(job: _Job, first: _Pass, max_restarts: int) -> tuple[Any, list[PassReport], _Failure | None]:
    passes: list[PassReport] = []
    this: _Pass | None = first
    for number in range(1, max_restarts + 2):
        assert this is not None
        restarts_left = number <= max_restarts
        launch_next = (lambda n=number + 1: _Pass(job, n).launch()) if restarts_left else None
        nb, report, failure, this = _run_pass(job, this, max_restarts, launch_next)
        passes.append(report)
        if report.outcome != "kernel_died":
            return nb, passes, failure
        where = f"step '{report.step}' (cell {report.cell_index})" if report.step else f"cell {report.cell_index}"
        if report.cell_index is None:
            where = "while starting"
        try:
            if restarts_left:
                job.progress.say(
                    f"the kernel died in {where}; starting a new kernel and resuming run '{job.run_id}' "
                    f"(restart {number} of {max_restarts})"
                )
            else:
                job.progress.say(f"the kernel died in {where}; no restarts left (max_restarts={max_restarts})")
        except BaseException:
            if this is not None:
                this.discard()
            raise
    return nb, passes, None


def _finish(
    job: _Job,
    nb_path: Path,
    out_path: Path,
    nb: Any,
    passes: list[PassReport],
    failure: _Failure | None,
    resume: str,
    started: float,
    raise_on_error: bool,
) -> ExecutionResult:
    last = passes[-1]
    outcome: Outcome = last.outcome
    cells = [c for c in job.source_nb.cells if c.cell_type == "code"]
    known = dict.fromkeys(n for n in (step_of(c.source) for c in cells) if n is not None)
    stopped_in = {failure.step if failure else None, last.step}  # reached: the pass stopped there
    not_reached = tuple(n for n in known if n not in {*last.executed, *last.restored, *stopped_in})
    error: Exception | None = None
    if failure is not None:
        kind = error_class(failure.ename)
        if kind is not None and issubclass(kind, RunOwnedError):
            outcome = "owned"
        error = NotebookExecutionError(
            failure.cell_index, failure.ename, failure.evalue, failure.traceback, failure.step,
            preview=preview(nb.cells[failure.cell_index].source, failure.cell_index),
            output=str(out_path), resume_command=resume, params=job.hinted,
        )  # fmt: skip
        mark_error(nb, failure.cell_index, f"{failure.ename}: {failure.evalue}", resume)
    elif last.outcome == "kernel_died":
        error = KernelDiedError(
            job.run_id, len(passes) - 1, step=last.step, cell_index=last.cell_index,
            resume_command=resume, output=str(out_path),
        )  # fmt: skip
        mark_error(nb, last.cell_index, str(error).split(". ", 1)[0] + ".", resume)
    nb.metadata["resumable"] = {
        "run_id": job.run_id,
        "pipeline": job.pipeline,
        "params": _params.jsonable(job.params),  # notebook metadata is JSON: a set is kept as its literal
        "outcome": outcome,
        "restarts": len(passes) - 1,
        "steps_executed": list(last.executed),
        "steps_restored": list(last.restored),
        "steps_not_reached": list(not_reached),
    }
    write_notebook(nb, out_path, nb_path)
    result = ExecutionResult(
        run_id=job.run_id,
        pipeline=job.pipeline,
        notebook=nb_path,
        output=out_path,
        store=job.store_path,
        params=job.params,
        ok=error is None,
        outcome=outcome,
        cells_executed=last.cells_executed,
        steps_executed=last.executed,
        steps_restored=last.restored,
        restarts=len(passes) - 1,
        passes=tuple(passes),
        duration_s=time.perf_counter() - started,
        resume_command=resume,
        error=str(error) if error is not None else None,
        failed_cell=failure.cell_index if failure else last.cell_index,
        failed_step=failure.step if failure else last.step,
        steps_not_reached=not_reached,
    )
    if error is not None and raise_on_error:
        raise error
    return result
