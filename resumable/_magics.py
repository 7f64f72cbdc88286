"""The IPython extension: ``%durable_run``, ``%%durable_step`` and ``%durable_status``.

``%load_ext resumable`` builds one :class:`DurableMagics` and registers it. A ``%%durable_step``
cell goes through the same engine as a ``@pipe.step`` function: the store decides whether the
step restores or executes, and the engine runs the attempts, retries and timeout. This module
adds what only a notebook has: outputs read from the cell's syntax (``_cellast``), live output
that is also recorded (``_capture``), and the namespace the cell runs in.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import os
import re
import shlex
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.utils.capture import RichOutput
from traitlets import Bool

from resumable import _capture, _cellast, _engine, _keys
from resumable._config import env_run_id
from resumable._context import NotebookRun, notebook_run, set_notebook_run
from resumable._owner import current_owner
from resumable._records import Owner, StepStatus
from resumable._store import Store, open_store
from resumable._units import human_duration, human_size
from resumable.errors import DuplicateStepWarning, StepDefinitionError
from resumable.pipeline import check_name, make_policy

DEFAULT_PIPELINE = "default"


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """What ``--outputs`` and ``--exclude`` say about a step's outputs."""

    exact: tuple[str, ...] | None  # ``--outputs a,b``: exactly these
    added: tuple[str, ...]  # ``--outputs +a,+b``: these besides the detected ones
    excluded: tuple[str, ...]


_REBIND = "__resumable_rebind__"


def _function_from_code(
    code: types.CodeType,
    qualname: str,
    defaults: tuple[Any, ...] | None,
    kwdefaults: dict[str, Any] | None,
    annotations: dict[str, Any],
    doc: str | None,
    attrs: dict[str, Any],
) -> types.FunctionType:
    """Rebuild a notebook function from its code, with a bare namespace until a restore rebinds it."""
    fn = types.FunctionType(code, {"__builtins__": builtins, "__name__": "__main__"}, code.co_name, defaults)
    fn.__kwdefaults__ = kwdefaults
    fn.__qualname__ = qualname
    fn.__annotations__ = annotations
    fn.__doc__ = doc
    fn.__dict__.update(attrs)
    setattr(fn, _REBIND, True)
    return fn


class _NotebookFunction:
    """A function defined in the notebook, stored as its code, without its globals.

    cloudpickle would copy every global such a function uses into its checkpoint (a connection
    makes it unpicklable, a DataFrame makes it large) and the restored function would read those
    copies forever. Stored as code, it unpickles to a plain function (``resumable.load`` returns a
    function), and a restore rebinds it to the notebook's namespace, as if its ``def`` ran again.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: types.FunctionType) -> None:
        self.fn = fn

    def __reduce__(self) -> tuple[Any, ...]:
        fn = self.fn
        attrs = {k: v for k, v in fn.__dict__.items() if k != _REBIND}
        state = (fn.__code__, fn.__qualname__, fn.__defaults__, fn.__kwdefaults__, dict(fn.__annotations__))
        return (_function_from_code, (*state, fn.__doc__, attrs))

    @classmethod
    def wrap(cls, value: Any, namespace: dict[str, Any]) -> Any:
        """Wrap a function whose globals are the notebook's; anything else is stored as it is."""
        if isinstance(value, types.FunctionType) and value.__globals__ is namespace and value.__closure__ is None:
            return cls(value)
        return value


def _unwrap(value: Any, namespace: dict[str, Any]) -> Any:
    """A restored notebook function, bound to the notebook's namespace again."""
    if not (isinstance(value, types.FunctionType) and getattr(value, _REBIND, False)):
        return value
    fn = types.FunctionType(value.__code__, namespace, value.__name__, value.__defaults__)
    fn.__kwdefaults__ = value.__kwdefaults__
    fn.__qualname__ = value.__qualname__
    fn.__annotations__ = value.__annotations__
    fn.__doc__ = value.__doc__
    fn.__dict__.update({k: v for k, v in value.__dict__.items() if k != _REBIND})
    return fn


def _names(option: str, raw: str | None, *, allow_plus: bool) -> list[str]:
    """Split ``a,b`` (or ``+a,+b``) into identifiers; anything else is a UsageError."""
    if raw is None:
        return []
    names = [part.strip() for part in raw.split(",") if part.strip()]
    for name in names:
        bare = name[1:] if allow_plus and name.startswith("+") else name
        if not bare.isidentifier():
            msg = f"{option} takes variable names separated by commas (e.g. '{option} model,scores'), not {name!r}."
            raise UsageError(msg)
    return names


def parse_output_spec(outputs: str | None, exclude: str | None) -> OutputSpec:
    """Read ``--outputs`` and ``--exclude``."""
    listed = _names("--outputs", outputs, allow_plus=True)
    plus = [n for n in listed if n.startswith("+")]
    if plus and len(plus) != len(listed):
        msg = (
            "--outputs either lists the outputs exactly ('--outputs a,b') or adds to the detected ones "
            "('--outputs +a,+b'); do not mix the two forms."
        )
        raise UsageError(msg)
    excluded = tuple(_names("--exclude", exclude, allow_plus=False))
    if plus:
        return OutputSpec(None, tuple(n[1:] for n in plus), excluded)
    return OutputSpec(tuple(listed) if outputs is not None else None, (), excluded)


def collect_outputs(
    step: str, names: _cellast.CellNames, spec: OutputSpec, namespace: dict[str, Any]
) -> dict[str, Any]:
    """The values to store after the cell ran, each under its own name.

    Detected names the cell did not end up binding (a branch not taken) are skipped; a name given
    with ``--outputs`` must exist. Modules a cell merely used (``sys.path.append``) are not stored.
    """
    explicit = spec.exact if spec.exact is not None else spec.added
    if spec.exact is not None:
        chosen = list(spec.exact)
    else:
        chosen = list(dict.fromkeys([*names.binds, *names.mutates, *spec.added]))
    outputs: dict[str, Any] = {}
    for name in chosen:
        if name in spec.excluded:
            continue
        if name not in namespace:
            if name in explicit:
                msg = (
                    f"step '{step}': --outputs names '{name}', but no variable '{name}' exists after the cell ran. "
                    f"Bind it in the cell or leave it out of --outputs."
                )
                raise StepDefinitionError(msg)
            continue
        value = namespace[name]
        if name not in names.binds and name not in explicit and isinstance(value, types.ModuleType):
            continue
        outputs[name] = _NotebookFunction.wrap(value, namespace)
    return outputs


def _normalized(source: str) -> str:
    """The cell as compared for edits: trailing spaces and surrounding blank lines do not count."""
    return "\n".join(line.rstrip() for line in source.strip("\n").splitlines()).strip("\n")


def source_digest(body: str, spec: OutputSpec) -> str:
    """Digest of what decides a step's result: its code and which variables it stores.

    Retry, backoff and timeout options are left out: changing them does not change the result.
    """
    parts = [_normalized(body), f"outputs={spec.exact}", f"added={sorted(spec.added)}"]
    parts.append(f"excluded={sorted(spec.excluded)}")
    return _keys.source_digest("\x00".join(parts))


def resolve_exceptions(raw: str | None, namespace: dict[str, Any]) -> tuple[type[BaseException], ...]:
    """``--retry-on ConnectionError,mylib.RateLimited`` to exception classes."""
    if raw is None:
        return (Exception,)
    kinds: list[type[BaseException]] = []
    for name in (n.strip() for n in raw.split(",") if n.strip()):
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


def _clock(moment: Any) -> str:
    if moment is None:
        return "an earlier run"
    return str(moment.astimezone().strftime("%Y-%m-%d %H:%M:%S"))


def _notebook_pipeline(namespace: dict[str, Any]) -> str:
    """A pipeline name from the notebook's file name, when the frontend tells the kernel."""
    for candidate in (
        namespace.get("__vsc_ipynb_file__"),
        namespace.get("__session__"),
        os.environ.get("JPY_SESSION_NAME"),
    ):
        if isinstance(candidate, str) and candidate.strip():
            stem = re.sub(r"[^A-Za-z0-9_.\-]", "_", Path(candidate).stem).lstrip("-.")[:128]
            if _keys.is_valid_name(stem):
                return stem
    return DEFAULT_PIPELINE


def _kernel_id() -> str | None:
    """The kernel's id from its connection file (``kernel-<id>.json``), when running in ipykernel."""
    app_module = sys.modules.get("ipykernel.kernelapp")
    if app_module is None or not app_module.IPKernelApp.initialized():
        return None
    name = Path(app_module.IPKernelApp.instance().connection_file or "").stem
    return name[len("kernel-") :] if name.startswith("kernel-") else None


def _shown_path(path: str) -> str:
    """A store path as the user gave it: relative to the working folder when inside it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def status_table(run: NotebookRun, steps: list[StepStatus]) -> str:
    """``%durable_status`` as text: one row per step, in the order the steps first ran."""
    head = f"run '{run.run_id}' of pipeline '{run.pipeline}' ({len(steps)} steps) in {_shown_path(run.store_path)}"
    if not steps:
        return head + "\nno steps yet"
    rows = [("#", "step", "state", "attempts", "duration", "outputs", "last error")]
    for i, s in enumerate(steps, 1):
        duration = human_duration(s.duration_s) if s.duration_s is not None else ""
        error = (s.error_line or "")[:60] if s.state.value != "completed" else ""
        rows.append((str(i), s.step, s.state.value, str(s.attempts), duration, human_size(s.output_bytes), error))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows]
    return "\n".join([head, *(line.rstrip() for line in lines)])


@magics_class
class DurableMagics(Magics):  # type: ignore[misc]
    """Durable notebook cells. Configure notebook-wide defaults with ``c.DurableMagics.<name>``."""

    show_restored = Bool(
        True, help="Print one line naming the checkpoint when a step is restored instead of executed."
    ).tag(config=True)
    replay_outputs = Bool(
        True, help="Show a restored step's recorded output (prints, tables, plots, result) again."
    ).tag(config=True)

    def __init__(self, shell: Any) -> None:
        super().__init__(shell=shell)
        self._ip: Any = shell  # typed: IPython declares ``Magics.shell`` optional
        self._run: NotebookRun | None = None
        self._store: Store | None = None
        self._owner: Owner | None = None
        self._cell: tuple[str | None, str] = (None, "")  # the executing cell's id and source
        self._step_cells: dict[tuple[str, str], str] = {}  # (run, step) -> the cell id that ran it
        shell.events.register("pre_run_cell", self.remember_cell)

    def remember_cell(self, info: Any) -> None:
        """``pre_run_cell``: which notebook cell is executing (front ends send its id)."""
        self._cell = (getattr(info, "cell_id", None), getattr(info, "raw_cell", "") or "")

    def _check_one_cell_per_step(self, run_id: str, name: str, body: str) -> None:
        """Warn when a step name is used by a second cell: each would keep re-running the other."""
        cell_id, raw = self._cell
        if cell_id is None or body.strip() not in raw:  # not run from a cell (a panel's Retry)
            return
        first = self._step_cells.setdefault((run_id, name), cell_id)
        if first != cell_id:
            msg = (
                f"step '{name}' was run by another cell of this notebook before. Two cells sharing a step "
                f"name replace each other's checkpoint and re-run on every pass: give this cell its own "
                f"name ('%%durable_step {name}_2'), or ignore this if you moved the step here."
            )
            warnings.warn(DuplicateStepWarning(msg), stacklevel=2)

    # ------------------------------------------------------------------ the current run

    @property
    def owner(self) -> Owner:
        """This kernel, as recorded on the steps it runs."""
        if self._owner is None:
            self._owner = current_owner(_kernel_id())
        return self._owner

    def _join(self, pipeline: str | None, run_id: str | None = None, new: bool = False) -> str:
        """Make a run current; return the line that says which.

        ``run_id`` > RESUMABLE_RUN_ID > (``new``: a fresh run) > the latest run of ``pipeline`` > a fresh
        run. With ``pipeline=None`` (a first step without ``%durable_run``) an existing run keeps its
        pipeline and a new one is named after the notebook.
        """
        store = open_store()
        note = ""
        if run_id is None and env_run_id() is not None:
            # A headless executor chose the run and restarts the notebook into it: --new must not
            # start another run on every restart.
            run_id, new, note = env_run_id(), False, " (RESUMABLE_RUN_ID)"
        existing = store.get_run(run_id) if run_id is not None else None
        if new and existing is not None:
            msg = f"run '{run_id}' already exists; drop --new to resume it, or choose another --run-id."
            raise UsageError(msg)
        if pipeline is None:
            pipeline = existing.pipeline if existing is not None else _notebook_pipeline(self._ip.user_ns)
        if run_id is None and not new:
            existing = store.latest_run(pipeline)
            run_id = existing.run_id if existing is not None else None
        run_id = run_id or _keys.new_run_id()
        store.open_run(check_name("run", run_id), pipeline)
        self._run = NotebookRun(pipeline, run_id, str(getattr(store, "path", "")))
        self._store = store
        set_notebook_run(self._run)
        if existing is None:
            return f"resumable: started run '{run_id}' of pipeline '{pipeline}'{note}"
        steps = store.list_steps(run_id)
        done = sum(1 for s in steps if s.state.value == "completed")
        return (
            f"resumable: resumed run '{run_id}' of pipeline '{pipeline}'{note}: {done} of {len(steps)} steps completed"
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

    @magic_arguments()
    @argument("pipeline", nargs="?", help="The pipeline's name, e.g. 'checkout'.")
    @argument("--new", action="store_true", help="Start a fresh run instead of resuming the latest one.")
    @argument("--run-id", default=None, help="Join (or start) the run with this id, e.g. 'order-42'.")
    @line_magic
    def durable_run(self, line: str) -> None:
        """Choose the run this notebook's durable steps belong to.

        Joins RESUMABLE_RUN_ID when set (a headless executor chose the run), else resumes the
        latest run of the pipeline, else starts one. Completed steps of a resumed run are restored
        instead of executed.
        """
        args = parse_argstring(self.durable_run, line)
        if not args.pipeline:
            raise UsageError("%durable_run needs a pipeline name, for example '%durable_run checkout'.")
        try:
            pipeline = check_name("pipeline", args.pipeline)
            run_id = check_name("run", args.run_id) if args.run_id is not None else None
        except StepDefinitionError as exc:
            raise UsageError(str(exc)) from None
        print(self._join(pipeline, run_id, args.new))

    @line_magic
    def durable_status(self, line: str) -> None:
        """Print the current run's steps: state, attempts, duration, stored size and last error."""
        run = notebook_run() or self._run
        if run is None:
            print("resumable: no run yet. Start one with '%durable_run NAME' or run a '%%durable_step' cell.")
            return
        store = open_store(run.store_path)
        store.reap_dead_owners(run.run_id, self.owner)
        print(status_table(run, store.list_steps(run.run_id)))

    # ------------------------------------------------------------------ steps

    @magic_arguments()
    @argument("name", nargs="?", help="The step's name, unique within the run, e.g. 'load_data'.")
    @argument("--retries", type=int, default=0, help="Attempts after the first when the cell raises.")
    @argument(
        "--backoff", type=float, default=1.0, help="First delay between attempts in seconds; doubles, with jitter."
    )
    @argument(
        "--retry-on", default=None, help="Exception classes worth another attempt, comma-separated (default: all)."
    )
    @argument("--timeout", type=float, default=None, help="Seconds one attempt may take before StepTimeout.")
    @argument(
        "--outputs",
        default=None,
        help="Variables to store: 'a,b' stores exactly these, '+a,+b' adds them to the detected ones.",
    )
    @argument("--exclude", default=None, help="Variables not to store (connections, generators), comma-separated.")
    @argument("--force", action="store_true", help="Execute even when a checkpoint could be restored.")
    @cell_magic
    def durable_step(self, line: str, cell: str) -> Any:
        """Run the cell as a durable step, restored from its checkpoint when it can be.

        A step restores when it already completed in this run with the same code; otherwise it
        executes and is checkpointed.

        Outputs are the variables the cell binds at top level, plus variables from earlier cells it
        visibly changes in place (``rows.append(x)``, ``df.drop(..., inplace=True)``, ``d[k] = v``).
        """
        args = parse_argstring(self.durable_step, line)
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
        executor = _CellExecutor(self._ip, python, names, spec)
        run, store = self._current()
        self._check_one_cell_per_step(run.run_id, name, cell)
        executor.call = call = _engine.StepCall(
            store, run.pipeline, run.run_id, name, self.owner, policy,
            source=cell, source_digest=source_digest(cell, spec), reads=names.reads, force=args.force,
            fix_hint=lambda variable: f"Leave it out with '%%durable_step {_with_exclude(line, variable)}'.",
            extra_options={"magic_line": line},
        )  # fmt: skip
        __tracebackhide__ = True
        try:
            outcome = _engine.run_sync(call, executor.attempt)
        except BaseException as exc:
            _trim_traceback(exc, executor.filename)
            raise
        if isinstance(outcome, _engine.Restored):
            return self._restore(name, outcome, names)
        return executor.value

    def _restore(self, name: str, restored: _engine.Restored, names: _cellast.CellNames) -> Any:
        namespace = self._ip.user_ns
        self._ip.push({k: _unwrap(v, namespace) for k, v in restored.values.items()}, interactive=True)
        for gone in names.deletes:
            namespace.pop(gone, None)
        if self.show_restored:
            print(f"↺ restored step '{name}' from checkpoint of {_clock(restored.finished_at)}")
        if not self.replay_outputs or not restored.display:
            return None
        result = _capture.replay(self._ip, restored.display)
        return RichOutput(result["data"], result.get("metadata")) if result is not None else None


class _CellExecutor:
    """Executes a cell's code for the engine, one attempt per call, and keeps its last value."""

    call: _engine.StepCall  # set once the store is known

    def __init__(self, shell: Any, python: str, names: _cellast.CellNames, spec: OutputSpec) -> None:
        self.shell = shell
        self.names = names
        self.spec = spec
        self.value: Any = None
        self.filename = filename = shell.compile.cache(python, shell.execution_count, raw_code=python)
        tree = shell.transform_ast(shell.compile.ast_parse(python, filename=filename))
        # The last expression is evaluated apart, as IPython does, so its value becomes Out[n].
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        self.body_code = shell.compile(tree, filename, "exec")
        self.last_code = shell.compile(ast.Expression(last.value), filename, "eval") if last is not None else None
        self.quiet = python.rstrip().endswith(";")

    def attempt(self) -> dict[str, Any]:
        """One execution of the cell; returns the outputs to store."""
        __tracebackhide__ = True
        call = self.call
        tried = len(call.errors)
        if tried == 0 and call.stale:
            stale = ", ".join(f"'{s}'" for s in call.stale)
            print(f"resumable: step '{call.step}' runs again, so {stale} will run again when reached (stale)")
        elif tried:
            print(
                f"↻ step '{call.step}': attempt {tried + 1} of {call.policy.retries + 1} "
                f"(attempt {tried} failed: {call.errors[-1]})",
                file=sys.stderr,
            )
        namespace = self.shell.user_ns
        self.value = None
        with _capture.tee(self.shell) as recording:
            exec(self.body_code, self.shell.user_global_ns, namespace)  # noqa: S102 - the user's own cell
            if self.last_code is not None:
                value = eval(self.last_code, self.shell.user_global_ns, namespace)  # noqa: S307
                if value is not None and not self.quiet:
                    self.value = value
                    recording.result(*self.shell.display_formatter.format(value))
        call.display = recording.outputs()
        return collect_outputs(call.step, self.names, self.spec, namespace)


_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def _trim_traceback(error: BaseException, filename: str) -> None:
    """Start each traceback in the chain at the cell's own code, as for a plain cell.

    Only tracebacks that lead in through resumable are touched. One that never reached the cell
    (retries exhausted, an output that cannot be pickled) is dropped: its message says everything
    and resumable's frames would only bury the user's. Errors chained inside a library keep theirs.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb = current.__traceback__
        if tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            while tb is not None and tb.tb_frame.f_code.co_filename != filename:
                tb = tb.tb_next
            current.__traceback__ = tb
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext resumable``: register one :class:`DurableMagics` (loading twice keeps the first)."""
    for existing in ipython.magics_manager.registry.values():
        if isinstance(existing, DurableMagics):
            return
    ipython.register_magics(DurableMagics(ipython))
