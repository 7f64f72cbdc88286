"""The IPython extension: ``%durable_run``, ``%%durable_step``, ``%durable_status`` and ``%durable_panel``.

``%load_ext resumable`` builds one :class:`DurableMagics` and registers it. A ``%%durable_step``
cell goes through the same engine as a ``@pipe.step`` function: the store decides whether the
step restores or executes, and the engine runs the attempts, retries and timeout. This module
adds what only a notebook has: outputs read from the cell's syntax (``_cellast``), live output
that is also recorded (``_capture``), and the namespace the cell runs in.
"""

from __future__ import annotations

import asyncio
import builtins
import importlib
import os
import shlex
import sys
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.utils.capture import RichOutput
from traitlets import Bool

from resumable import _aliases, _capture, _cellast, _engine, _inputs, _magic_lines, _step_report, _why
from resumable._inputs import Input
from resumable._kernel_run import NotebookRun, notebook_run, set_notebook_run
from resumable._keys import DEFAULT_PIPELINE, new_run_id, notebook_pipeline
from resumable._magics import awaiting, hidden
from resumable._magics.executor import CellExecutor, Known, show_from_the_cell
from resumable._magics.functions import rebind_class, unwrap
from resumable._magics.outputs import parse_output_spec, source_digest
from resumable._magics.provenance import Provenance, injected_parameters, is_injected_parameters_cell, is_step_cell
from resumable._owner import current_owner
from resumable._records import Owner, StepStatus
from resumable._runs import JoinedBy, choose_run
from resumable._states import StepState
from resumable._store import Store, open_store
from resumable._tracebacks import label_files, trim_chain
from resumable._units import human_time
from resumable.errors import (
    CheckpointNotFoundError,
    DependencyError,
    DuplicateStepError,
    ForkError,
    PipelineMismatchError,
    RerunError,
    RunExistsError,
    StepDefinitionError,
)
from resumable.pipeline import check_name, make_policy

MakePanel = Callable[..., Any]  # resumable.panel: handed in by ``%load_ext resumable``


def resolve_exceptions(raw: list[str] | None, namespace: dict[str, Any]) -> tuple[type[BaseException], ...]:
    """``--retry-on ConnectionError,mylib.RateLimited`` (each ``--retry-on`` given) to exception classes."""
    if raw is None:
        return (Exception,)
    kinds: list[type[BaseException]] = []
    for name in (n.strip() for given in raw for n in given.split(",") if n.strip()):
        found: Any = namespace.get(name, getattr(builtins, name, None))
        if found is None and "." in name:
            module, _, attr = name.rpartition(".")
            try:
                found = getattr(importlib.import_module(module), attr, None)
            except ImportError:
                found = None
        if not (isinstance(found, type) and issubclass(found, BaseException)):
            msg = (
                f"--retry-on: {name!r} is not an exception class. Name a builtin (ConnectionError), "
                f"a class defined in the notebook, or a dotted path (requests.exceptions.HTTPError)."
            )
            raise UsageError(msg)
        kinds.append(found)
    if not kinds:
        raise UsageError("--retry-on needs at least one exception class, e.g. '--retry-on ConnectionError'.")
    return tuple(kinds)


def _with_exclude(line: str, variable: str) -> str:
    """The magic line with ``variable`` added to ``--exclude``: the exact fix to show the user."""
    tokens = shlex.split(line)
    for i, token in enumerate(tokens):
        if token == "--exclude" and i + 1 < len(tokens):  # noqa: S105 - an option, not a password
            tokens[i + 1] = f"{tokens[i + 1]},{variable}"
            break
        if token.startswith("--exclude="):
            tokens[i] = f"{token},{variable}"
            break
    else:
        tokens += ["--exclude", variable]
    return " ".join(shlex.quote(t) for t in tokens)


def _notebook_pipeline(namespace: dict[str, Any]) -> str:
    """The pipeline named after the notebook's file, when the front end tells the kernel its name."""
    for candidate in (
        namespace.get("__vsc_ipynb_file__"),
        namespace.get("__session__"),
        os.environ.get("JPY_SESSION_NAME"),
    ):
        if isinstance(candidate, str) and candidate.strip():
            name = notebook_pipeline(candidate)
            if name is not None:
                return name
    return DEFAULT_PIPELINE


def _shown_path(path: str) -> str:
    """A store path as the user gave it: relative to the working folder when inside it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def status_text(run: NotebookRun, steps: list[StepStatus]) -> str:
    """``%durable_status``: a line naming the run, then the step table (the one ``resumable show`` prints)."""
    from resumable._table import as_text, step_table  # rich: imported when a status is asked for

    head = f"run '{run.run_id}' of pipeline '{run.pipeline}' ({len(steps)} steps) in {_shown_path(run.store_path)}"
    return head + "\n" + (as_text(step_table(steps)) if steps else "no steps yet")


def _kernel_id() -> str | None:
    """The kernel's id from its connection file (``kernel-<id>.json``), when running in ipykernel."""
    app_module = sys.modules.get("ipykernel.kernelapp")
    if app_module is None or not app_module.IPKernelApp.initialized():
        return None
    name = Path(app_module.IPKernelApp.instance().connection_file or "").stem
    return name[len("kernel-") :] if name.startswith("kernel-") else None


@dataclass(frozen=True, slots=True)
class _Step:
    """A ``%%durable_step`` cell ready for the engine: what its checks and analysis found."""

    name: str
    line: str
    python: str  # the cell as IPython transformed it
    names: _cellast.CellNames
    inputs: dict[str, Input]
    executor: CellExecutor
    call: _engine.StepCall


def _run_to_completion(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a step that awaits when nothing awaits the magic: on a loop of its own (a thread's, when one runs)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(1, thread_name_prefix="resumable-step") as pool:
        return pool.submit(asyncio.run, coroutine).result()


@magics_class
class DurableMagics(Magics):  # type: ignore[misc]
    """Durable notebook cells. Configure notebook-wide defaults with ``c.DurableMagics.<name>``."""

    show_restored = Bool(
        True, help="Print one line naming the checkpoint when a step is restored instead of executed."
    ).tag(config=True)
    replay_outputs = Bool(
        True, help="Show a restored step's recorded output (prints, tables, plots, result) again."
    ).tag(config=True)

    def __init__(self, shell: Any, make_panel: MakePanel | None = None) -> None:
        super().__init__(shell=shell)
        self._ip: Any = shell  # typed: IPython declares ``Magics.shell`` optional
        self.make_panel = make_panel  # front ends never import each other: the panel is handed in
        self._run: NotebookRun | None = None
        self._store: Store | None = None
        self._owner: Owner | None = None
        self._cell: tuple[str | None, str] = (None, "")  # the executing cell's id and source
        self._step_cells: dict[tuple[str, str], str] = {}  # (run, step) -> the cell id that ran it
        self._refused: dict[tuple[str, str], str] = {}  # (run, step) -> the cell last refused its name
        self.provenance = Provenance()
        self._injected: dict[str, Any] = {}  # parameters a runner injected, recorded with the run joined
        self._unseen_told: set[str] = set()  # variables whose in-place changes cannot be seen, told once
        self._known: Known = {}  # fingerprints steps took of what they read: the next reader's "before"
        shell.events.register("pre_run_cell", self.remember_cell)
        shell.events.register("post_run_cell", self.track_plain_cell)
        self._take_parameters_injected_before_loading()
        awaiting.install(shell)  # a step cell with top-level ``await`` is awaited like a plain one
        label_files(self._cell_label)  # stored tracebacks say ``Cell In[16]``, not a temporary file

    def _cell_label(self, filename: str) -> str | None:
        """``Cell In[16]`` for the file IPython compiled a cell into; None for any other file."""
        format_code_name = getattr(self._ip.compile, "format_code_name", None)  # IPython 8 and later
        found = format_code_name(filename) if format_code_name is not None else None
        return f"{found[0]} {found[1]}" if found else None

    def remember_cell(self, info: Any) -> None:
        """``pre_run_cell``: which notebook cell is executing (front ends send its id).

        Any other cell may change in place what the last step read, so the fingerprints steps took
        afterwards are no longer a next step's "before": it takes them afresh.
        """
        _capture.forget_shown(self._ip)
        self._cell = (getattr(info, "cell_id", None), getattr(info, "raw_cell", "") or "")
        if not is_step_cell(self._cell[1]):
            self._known.clear()

    def track_plain_cell(self, result: Any) -> None:
        """``post_run_cell``: fingerprint what a plain cell bound, for the steps that read it later."""
        _capture.forget_shown(self._ip)  # a step's value nothing displayed
        raw = getattr(getattr(result, "info", None), "raw_cell", None) or ""
        if not raw.strip() or is_step_cell(raw):
            return
        try:
            python = self._ip.transform_cell(raw)
        except Exception:  # a cell IPython could not transform did not run
            return
        self.provenance.after_plain_cell(python, self._ip.user_ns)
        injected = injected_parameters(raw, python, self._ip.user_ns)
        if injected:
            self._injected.update(injected)
            if self._run is not None and self._store is not None:
                self._store.open_run(self._run.run_id, self._run.pipeline, self._injected, update_params=True)

    def _take_parameters_injected_before_loading(self) -> None:
        """Parameters a runner injected in a cell that ran before ``%load_ext resumable``.

        Papermill's usual layout puts the parameters cell first, so its injected cell runs before
        the hook above exists; the kernel's input history still holds it. Values are read from the
        namespace, as the hook reads them.
        """
        history = getattr(getattr(self._ip, "history_manager", None), "input_hist_raw", None) or []
        for raw in history:
            if not is_injected_parameters_cell(raw):  # checked first: transforming every earlier cell is not needed
                continue
            try:
                python = self._ip.transform_cell(raw)
            except Exception:  # noqa: S112 - a cell IPython could not transform did not run
                continue
            self._injected.update(injected_parameters(raw, python, self._ip.user_ns))

    def _check_one_cell_per_step(self, run_id: str, name: str, body: str) -> None:
        """Refuse a step name another cell of this kernel ran, before anything executes or is written.

        The second cell would overwrite the first one's checkpoint. Running the refused cell again
        at once moves the step to it; a pass over the notebook (the first cell runs in between)
        refuses it again, so "Run All" never overwrites.
        """
        cell_id, raw = self._cell
        if cell_id is None or body.strip() not in raw:  # not run from a cell (a panel's Retry)
            return
        key = (run_id, name)
        first = self._step_cells.setdefault(key, cell_id)
        if first == cell_id:
            self._refused.pop(key, None)
            return
        if self._refused.pop(key, None) == cell_id:  # asked twice in a row: the step moved here
            self._step_cells[key] = cell_id
            return
        self._refused[key] = cell_id
        raise UsageError(str(DuplicateStepError(name, run_id)))

    # ------------------------------------------------------------------ the current run

    @property
    def owner(self) -> Owner:
        """This kernel, as recorded on the steps it runs."""
        if self._owner is None:
            self._owner = current_owner(_kernel_id())
        return self._owner

    def _join(self, pipeline: str | None, run_id: str | None = None, new: bool = False) -> str:
        """Make a run current (chosen by :func:`resumable._runs.choose_run`); return the line that says which.

        With ``pipeline=None`` (a first step without ``%durable_run``) an existing run keeps its
        pipeline and a new one is named after the notebook.
        """
        store = open_store()
        try:
            choice = choose_run(store, pipeline, run_id, new=new, default_pipeline=_notebook_pipeline(self._ip.user_ns))
        except RunExistsError as exc:
            raise UsageError(str(exc)) from None
        run_id, pipeline = check_name("run", choice.run_id), choice.pipeline
        # Parameters a runner injected are recorded with the run (``resumable show`` lists them);
        # changed ones are recorded too: the steps that read them see the change in their inputs.
        opened = store.open_run(run_id, pipeline, self._injected or None, update_params=True)
        self._run = NotebookRun(pipeline, run_id, store.location)
        self._store = store
        set_notebook_run(self._run)
        note = f" ({JoinedBy.ENVIRONMENT})" if choice.joined_by is JoinedBy.ENVIRONMENT else ""
        if choice.existing is None:
            return f"resumable: started run '{run_id}' of pipeline '{pipeline}'{note}"
        # The run as opened counts its steps by state (as a reader sees them): no second read of its steps.
        done = opened.counts.get(StepState.COMPLETED.value, 0)
        return (
            f"resumable: resumed run '{run_id}' of pipeline '{pipeline}'{note}: "
            f"{done} of {opened.step_count} steps completed"
        )

    def _current(self) -> tuple[NotebookRun, Store]:
        """The current run; the first step without ``%durable_run`` joins the notebook's default."""
        current = notebook_run()
        if current is not None and current != self._run:  # set by another front end in this kernel
            self._run, self._store = current, open_store(current.store_path)
        if self._run is None or self._store is None:
            print(self._join(None))
        assert self._run is not None and self._store is not None
        return self._run, self._store

    @_magic_lines.arguments("durable_run")
    @line_magic
    def durable_run(self, line: str) -> None:
        """Choose the run this notebook's durable steps belong to.

        Joins RESUMABLE_RUN_ID when set (a headless executor chose the run), else resumes the
        latest run of the pipeline, else starts one. Completed steps of a resumed run are restored
        instead of executed.
        """
        args = _magic_lines.parse("durable_run", line)
        if not args.pipeline:
            raise UsageError("%durable_run needs a pipeline name, for example '%durable_run checkout'.")
        try:
            pipeline = check_name("pipeline", args.pipeline)
            run_id = check_name("run", args.run_id) if args.run_id is not None else None
            if args.fork is not None or args.from_step is not None:
                print(self._fork(pipeline, args.fork, args.from_step, run_id, args.new))
                return
        except StepDefinitionError as exc:
            raise UsageError(str(exc)) from None
        print(self._join(pipeline, run_id, args.new))

    def _fork(self, pipeline: str, origin: str | None, step: str | None, run_id: str | None, new: bool) -> str:
        """``%durable_run NAME --fork RUN --from STEP``: fork RUN and make the new run current."""
        if origin is None or step is None:
            missing = "--from STEP" if origin is not None else "--fork RUN"
            raise UsageError(
                f"%durable_run {pipeline}: --fork and --from go together; add {missing}, for example "
                f"'%durable_run {pipeline} --fork order-42 --from charge'."
            )
        if new:
            raise UsageError(f"%durable_run {pipeline}: --fork always starts a new run; leave out --new.")
        store = open_store()
        try:
            check_name("run", origin)
            check_name("step", step)
            made = store.fork_run(origin, step, run_id or new_run_id(), self.owner, self._injected or None,
                                  pipeline=pipeline)  # fmt: skip
        except (ForkError, PipelineMismatchError, CheckpointNotFoundError, StepDefinitionError) as exc:
            raise UsageError(str(exc)) from None
        self._run = NotebookRun(pipeline, made.run_id, store.location)
        self._store = store
        set_notebook_run(self._run)
        shared = [s.step for s in store.list_steps(made.run_id)]
        listed = ", ".join(shared) if shared else "none"
        return (
            f"resumable: started run '{made.run_id}' of pipeline '{pipeline}', forked from run '{origin}' at step "
            f"'{step}': {len(shared)} step{'s restore' if len(shared) != 1 else ' restores'} from its checkpoints "
            f"({listed}); '{step}' and later steps execute"
        )

    def fork_from(self, step: str) -> str:
        """Fork the notebook's current run from ``step`` and make the new run current; returns its id.

        Exactly ``%durable_run NAME --fork CURRENT --from STEP`` (the panel's "Fork from here").
        Raises UsageError when there is no current run or the fork is refused.
        """
        run = notebook_run() or self._run
        if run is None:
            raise UsageError("resumable: no run to fork yet. Start one with '%durable_run NAME'.")
        print(self._fork(run.pipeline, run.run_id, step, None, False))
        assert self._run is not None
        return self._run.run_id

    @line_magic
    def durable_status(self, line: str) -> None:
        """Print the current run's steps: state, attempts, duration, stored size and last error."""
        if line.strip():  # ignored, a run named here would show the current run's table under its name
            raise UsageError(
                f"%durable_status {line.strip()}: %durable_status takes no arguments; it shows the kernel's current "
                f"run, and nothing was read or changed. For another run use '%durable_panel RUN' or, in a terminal, "
                f"'resumable show RUN'."
            )
        run = notebook_run() or self._run
        if run is None:
            print("resumable: no run yet. Start one with '%durable_run NAME' or run a '%%durable_step' cell.")
            return
        store = open_store(run.store_path)  # a dead owner's steps read as interrupted; nothing is written
        print(status_text(run, store.list_steps(run.run_id)))

    @line_magic
    def durable_why(self, line: str) -> None:
        """Why STEP of the current run last executed, or was held: ``resumable why`` as a magic."""
        name = line.strip()
        if not name or len(name.split()) != 1:
            raise UsageError("%durable_why needs one step name, for example '%durable_why train'.")
        run = notebook_run() or self._run
        if run is None:
            raise UsageError(
                "%durable_why: no run yet. Start one with '%durable_run NAME' or run a '%%durable_step' cell."
            )
        store = open_store(run.store_path)
        status = store.get_step(run.run_id, name)
        found = None
        if status is not None:
            found = _why.explain(name, store.list_events(run.run_id, name), status.source,
                                 store.previous_source(run.run_id, name))  # fmt: skip
        if found is None:
            raise UsageError(f"%durable_why: run '{run.run_id}' has no step '{name}' yet.")
        print(found.text())

    @_magic_lines.arguments("durable_panel")
    @line_magic
    def durable_panel(self, line: str) -> Any:
        """The status panel of the kernel's current run, or of RUN_ID: ``resumable.panel()`` as a magic."""
        args = _magic_lines.parse("durable_panel", line)
        try:
            run_id = check_name("run", args.run_id) if args.run_id is not None else None
        except StepDefinitionError as exc:
            raise UsageError(str(exc)) from None
        if self.make_panel is None:
            raise UsageError("%durable_panel needs the panel, which '%load_ext resumable' brings.")
        return self.make_panel(run_id, shell=self._ip, fork=self.fork_from)  # Fork from here

    # ------------------------------------------------------------------ steps

    @_magic_lines.arguments("durable_step")
    @cell_magic
    def durable_step(self, line: str, cell: str) -> Any:
        """Run the cell as a durable step, restored from its checkpoint when it can be.

        A step restores when it already completed in this run with the same code; otherwise it
        executes and is checkpointed.

        Outputs are the variables the cell binds at top level, plus variables from earlier cells it
        visibly changes in place (``rows.append(x)``, ``df.drop(..., inplace=True)``, ``d[k] = v``).
        """
        __tracebackhide__ = True
        step = self._prepare(line, cell)
        if step.executor.is_async:  # not awaited (a panel's Retry): run it on a loop of its own
            return _run_to_completion(self._execute_async(step))
        try:
            outcome = _engine.run_sync(step.call, step.executor.attempt)
        except BaseException as exc:
            error = self._failed(step, exc)
            if error is exc:
                raise
            raise error from None
        return self._done(step, outcome)

    async def durable_step_awaited(self, line: str, cell: str) -> Any:
        """``%%durable_step`` for a cell with top-level ``await``, awaited on the cell's event loop.

        IPython calls it for such a cell (see :mod:`resumable._magics.awaiting`), as it awaits a
        plain cell that awaits: in a kernel, on the kernel's loop.
        """
        __tracebackhide__ = True
        return await self._execute_async(self._prepare(line, cell))

    async def _execute_async(self, step: _Step) -> Any:
        __tracebackhide__ = True
        try:
            if step.executor.is_async:
                outcome = await _engine.run_async(step.call, step.executor.attempt_async)
            else:
                outcome = _engine.run_sync(step.call, step.executor.attempt)
        except BaseException as exc:
            error = self._failed(step, exc)
            if error is exc:
                raise
            raise error from None
        return self._done(step, outcome)

    def _prepare(self, line: str, cell: str) -> _Step:
        """Check the line, analyse the cell and join the run: everything before the engine decides."""
        args = _magic_lines.parse("durable_step", line)
        if not args.name:
            raise UsageError("%%durable_step needs a step name, for example '%%durable_step load_data'.")
        try:
            name = check_name("step", args.name)
            retry_on = resolve_exceptions(args.retry_on, self._ip.user_ns)
            policy = make_policy(name, args.retries, args.backoff, retry_on, args.timeout)
        except StepDefinitionError as exc:
            raise UsageError(str(exc)) from None
        spec = parse_output_spec(args.outputs, args.exclude)
        python = self._ip.transform_cell(cell)
        names = _cellast.analyze(python)  # a SyntaxError stops here or below, before the store is touched
        namespace = self._ip.user_ns
        inputs = self.provenance.inputs(names.reads, namespace)
        watch = () if args.no_inplace_check else [n for n in inputs if not n.startswith(_inputs.FILE_PREFIX)]
        executor = CellExecutor(self._ip, python, names, spec, cell, watch, self._tell_unseen(name), self._known)
        try:
            inputs.update(_inputs.of_file(name, path) for path in args.depends_on)
        except DependencyError as exc:
            raise UsageError(str(exc)) from None
        run, store = self._current()
        self._check_one_cell_per_step(run.run_id, name, cell)
        executor.call = call = _engine.StepCall(
            store, run.pipeline, run.run_id, name, self.owner, policy,
            source=cell, source_digest=source_digest(cell, spec), reads=names.reads, force=args.force,
            fix_hint=lambda variable: f"Leave it out with '%%durable_step {_with_exclude(line, variable)}'.",
            extra_options={"magic_line": line}, inputs=inputs, effect=args.effect, rerun=args.rerun,
        )  # fmt: skip
        notice = self.provenance.weak_notice(name, inputs, namespace)
        if notice is not None:
            print(notice, file=sys.stderr)
        return _Step(name, line, python, names, inputs, executor, call)

    def _failed(self, step: _Step, exc: BaseException) -> BaseException:
        """The error to raise for a step that raised: a one-line UsageError for a misuse, else its own."""
        if isinstance(exc, RerunError):
            return UsageError(str(exc))
        self.provenance.after_step(step.python, step.names, step.inputs, {}, self._ip.user_ns)  # what it left bound
        trim_chain(exc)  # the traceback starts at the cell's own code, as for a plain cell
        show_from_the_cell(self._ip, exc)
        return exc

    def _done(self, step: _Step, outcome: _engine.StepOutcome) -> Any:
        """Bring a restored step's outputs back; the value the cell shows as ``Out[n]``."""
        restored = outcome.restored
        value = self._restore(step.name, outcome, step.names, step.line) if restored else step.executor.value
        shown = step.executor.shown
        # Formatted once, not again for Out[n]; only when the step is the cell (a cell magic takes the
        # rest of its cell, so the value shown next is this one, unchanged): a plain cell calling
        # ``run_cell_magic`` may change the value before showing it.
        if not restored and value is not None and shown is not None and is_step_cell(self._cell[1]):
            _capture.show_as_recorded(self._ip, value, shown)
        if restored:  # a headless executor learns it here instead of from the store (no event says so)
            _step_report.restored(step.call.run_id, step.name)
        self.provenance.after_step(step.python, step.names, step.inputs, outcome.digests, self._ip.user_ns)
        return value

    def _tell_unseen(self, step: str) -> Callable[[str, str], None]:
        """Once per variable: a read whose changes in place cannot be seen, what that means, and the fix."""

        def tell(variable: str, problem: str) -> None:
            if variable in self._unseen_told:
                return
            self._unseen_told.add(variable)
            kind = type(self._ip.user_ns.get(variable)).__name__
            if problem.startswith("cannot be pickled"):
                after = (
                    "it cannot be checkpointed either, so after a restore it is as the cell that made it left it. "
                    "Make and use it within one step, or keep what it yields in a list."
                )
            else:
                after = f"if the step changes it, store it too: %%durable_step {step} --outputs +{variable}"
            print(
                f"resumable: step '{step}' reads '{variable}' ({kind}), which {problem}; a change the step makes "
                f"to it in place is not seen: {after}",
                file=sys.stderr,
            )

        return tell

    def _restore(self, name: str, restored: _engine.StepOutcome, names: _cellast.CellNames, line: str) -> Any:
        namespace = self._ip.user_ns
        values = {k: unwrap(v, namespace) for k, v in _aliases.resolve(restored.values).items()}
        for value in values.values():
            rebind_class(value, namespace)
        self._ip.push(values, interactive=True)
        for gone in names.deletes:
            namespace.pop(gone, None)
        for problem in hidden.apply(restored.values.get(hidden.STATE), self._ip):
            print(f"resumable: step '{name}' was restored but its setting could not be made again: {problem}",
                  file=sys.stderr)  # fmt: skip
        if self.show_restored:
            print(f"↺ restored step '{name}' from checkpoint of {human_time(restored.finished_at) or 'an earlier run'}")
        begin = restored.begin
        if begin.held is not None and begin.why is not None:
            run = self._run.run_id if self._run is not None else "RUN"
            tokens = [t for t in shlex.split(line) if t != "--force"] + ["--rerun"]
            held = _why.held_warning(
                name, begin.why, begin.held, "%%durable_step " + " ".join(shlex.quote(t) for t in tokens),
                f"resumable invalidate {run} {name}, then run the cell", begin.key_generation,
            )  # fmt: skip
            print(str(held), file=sys.stderr)
        if not self.replay_outputs or not restored.display:
            return None
        result = _capture.replay(self._ip, restored.display)
        return RichOutput(result["data"], result.get("metadata")) if result is not None else None
