"""Executes a ``%%durable_step`` cell for the engine, one attempt per call.

Besides the names the cell binds, an attempt stores what the cell changed without binding it:
objects it read whose content fingerprint changed while it ran (``rng.normal()``, a helper's
``items.append``), variables sharing memory with its outputs (pickled together with them), and
the ``<state>`` pseudo-output (global random states, settings, setup magics: ``hidden``).
"""

from __future__ import annotations

import ast
import functools
import inspect
import sys
import types
import uuid
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from resumable import _aliases, _capture, _cellast, _engine, _fingerprint, _why
from resumable._magics import hidden
from resumable._magics.functions import NotebookFunction
from resumable._magics.outputs import OutputSpec, collect_outputs, withhold_secrets

_NOT_DATA = (
    types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, NotebookFunction,
    int, float, complex, str, bytes, bool, type(None), range,
)  # fmt: skip
Tell = Callable[[str, str], None]  # (variable, what could not be done): the magics say it once
# name -> (id of the value, a weak reference to it when it takes one, its fingerprint after the last step read it)
Known = dict[str, tuple[int, Any, str]]


def _data(value: object) -> bool:
    """Whether a variable holds data a step may change (not a module, function, class or immutable scalar)."""
    return not isinstance(value, _NOT_DATA)


def _worth_telling(value: object, problem: str | None) -> bool:
    """Whether a read without a fingerprint is worth a warning.

    A large object might be changed in place unseen, and an iterator (a generator, a file) is
    advanced by reading it, which a restore cannot bring back. A connection or a client that
    cannot be pickled holds no state a later cell computes from, and warning about every one
    would drown the warnings that matter.
    """
    return not (problem or "").startswith("cannot be pickled") or hasattr(type(value), "__next__")


def _weak(value: object) -> Any:
    """A weak reference to ``value`` when it takes one (a DataFrame, an array), else None (a list: id only)."""
    try:
        return weakref.ref(value)
    except TypeError:
        return None


def show_from_the_cell(shell: Any, error: BaseException) -> None:
    """Make IPython show ``error`` from the step cell's own code on, as it shows a plain cell's error.

    IPython would start the traceback at the line it runs for any cell magic
    (``get_ipython().run_cell_magic(...)``) and its own ``run_cell_magic`` frame, burying the cell's
    line under two frames that are not the user's. IPython asks an exception for
    ``_render_traceback_`` first; the rendering is a list of strings, so the exception still pickles.
    ``%tb`` and ``%debug`` keep the full traceback.
    """
    try:
        lines = shell.InteractiveTB.structured_traceback(type(error), error, error.__traceback__, tb_offset=0)
        error._render_traceback_ = functools.partial(list, lines)  # type: ignore[attr-defined]
    except Exception:
        pass


def data_variables(namespace: dict[str, Any], hidden_names: Iterable[str]) -> dict[str, Any]:
    """The notebook's own data variables (not IPython's ``In``/``Out``/``_``, not modules or functions)."""
    skip = set(hidden_names)
    return {n: v for n, v in namespace.items() if not n.startswith("_") and n not in skip and _data(v)}


class CellExecutor:
    """Executes a cell's code for the engine, one attempt per call, and keeps its last value."""

    call: _engine.StepCall  # set once the store is known

    def __init__(
        self,
        shell: Any,
        python: str,
        names: _cellast.CellNames,
        spec: OutputSpec,
        raw: str = "",
        watch: Iterable[str] = (),
        tell: Tell | None = None,
        known: Known | None = None,
    ) -> None:
        self.shell = shell
        self.names = names
        self.spec = spec
        self.raw = raw  # the cell as written: its setup magics are run again on restore
        # What the cell read and may change in place without the syntax showing it.
        skip = {*names.binds, *names.mutates, *spec.excluded}
        # ``--outputs a,b`` says exactly what to store: nothing is added to it.
        self.watch = [n for n in dict.fromkeys(watch) if n not in skip] if spec.exact is None else []
        self.tell = tell or (lambda name, problem: None)
        self.known: Known = known if known is not None else {}
        self.value: Any = None
        self.shown: _capture.Bundle | None = None  # the value's mime bundle, formatted for the recording
        self.filename = filename = shell.compile.cache(python, shell.execution_count, raw_code=python)
        tree = shell.transform_ast(shell.compile.ast_parse(python, filename=filename))
        # The last expression is evaluated apart, as IPython does, so its value becomes Out[n].
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        # Top-level ``await`` compiles as IPython compiles it in a plain cell: to a coroutine.
        with shell.compile.extra_flags(ast.PyCF_ALLOW_TOP_LEVEL_AWAIT):
            self.body_code = shell.compile(tree, filename, "exec")
            self.last_code = shell.compile(ast.Expression(last.value), filename, "eval") if last is not None else None
        codes = (self.body_code, self.last_code)
        self.is_async = any(c is not None and c.co_flags & inspect.CO_COROUTINE for c in codes)
        self.quiet = python.rstrip().endswith(";")

    def attempt(self) -> dict[str, Any]:
        """One execution of the cell; returns the outputs to store."""
        __tracebackhide__ = True
        before, settings = self._begin()
        with _capture.tee(self.shell) as recording:
            exec(self.body_code, self.shell.user_global_ns, self.shell.user_ns)  # noqa: S102 - the user's own cell
            if self.last_code is not None:
                self._result(eval(self.last_code, self.shell.user_global_ns, self.shell.user_ns), recording)  # noqa: S307
        return self._end(before, settings, recording)

    async def attempt_async(self) -> dict[str, Any]:
        """One execution of a cell with top-level ``await``, on the loop the cell is awaited on."""
        __tracebackhide__ = True
        before, settings = self._begin()
        with _capture.tee(self.shell) as recording:
            body = eval(self.body_code, self.shell.user_global_ns, self.shell.user_ns)  # noqa: S307 - the user's cell
            if inspect.iscoroutine(body):
                await body
            if self.last_code is not None:
                value = eval(self.last_code, self.shell.user_global_ns, self.shell.user_ns)  # noqa: S307
                self._result(await value if inspect.iscoroutine(value) else value, recording)
        return self._end(before, settings, recording)

    def _result(self, value: Any, recording: _capture.Recording) -> None:
        """The value of the cell's last expression, shown as ``Out[n]`` and recorded for a restore."""
        if value is not None and not self.quiet:
            self.value = value
            self.shown = self.shell.display_formatter.format(value)
            recording.result(*self.shown)

    def _begin(self) -> tuple[dict[str, str], dict[str, Any]]:
        """Say why the step executes (or which attempt this is); fingerprint what it reads."""
        call = self.call
        tried = len(call.errors)
        begin_why = call.why
        if tried == 0 and begin_why:
            print(_why.runs_again(call.step, begin_why))
        if tried == 0 and call.stale:
            stale = ", ".join(f"'{s}'" for s in call.stale)
            print(f"resumable: step '{call.step}' runs again, so {stale} will run again when reached (stale)")
        elif tried:
            print(
                f"↻ step '{call.step}': attempt {call.attempt} of {call.policy.retries + 1} "
                f"(attempt {call.attempt - 1} failed: {call.errors[-1]})",
                file=sys.stderr,
            )
        self.value = self.shown = None
        return self._fingerprints(self.shell.user_ns), hidden.settings()

    def _end(self, before: dict[str, str], settings: dict[str, Any], recording: _capture.Recording) -> dict[str, Any]:
        """The outputs to store once the cell's code has run."""
        call = self.call
        namespace = self.shell.user_ns
        call.display = recording.outputs()
        outputs = collect_outputs(call.step, self.names, self.spec, namespace)
        withheld = withhold_secrets(call.step, self.spec, [n for n in before if n in namespace and n not in outputs])
        taken: set[str] = set()
        for name, print_before in before.items():
            if name not in namespace or name in withheld:
                continue
            value = namespace[name]
            now = _fingerprint.fingerprint(value).digest
            if now is not None:
                self.known[name] = (id(value), _weak(value), now)
                taken.add(name)
            if name not in outputs and now != print_before:
                outputs[name] = NotebookFunction.wrap(value, namespace)
        outputs = self._share(outputs, namespace)
        self._forget_stored(outputs, taken)
        state = hidden.capture(settings, self.raw)
        if state:
            outputs[hidden.STATE] = state
        return outputs

    def _forget_stored(self, outputs: dict[str, Any], taken: set[str]) -> None:
        """Drop the fingerprints earlier steps took of what this step stores, unless taken just now.

        A fingerprint in ``known`` stands for the value as a restore brings it back: the next
        reader compares its value after it ran with it, so a change an earlier step made unseen
        is stored then. A step that stores a variable without fingerprinting it (it binds it,
        changes it visibly, or it shares memory with an output) makes that fingerprint stale: a
        later step changing the value back to it would look unchanged and not be stored. The next
        reader fingerprints it afresh instead (the sharing walk adds a second name of one object
        to the outputs, so it is dropped too).
        """
        for name in [n for n in self.known if n in outputs and n not in taken]:
            del self.known[name]

    def _fingerprints(self, namespace: dict[str, Any]) -> dict[str, str]:
        """Content fingerprints of what the cell read, before it runs (what has none is told, once)."""
        out: dict[str, str] = {}
        for name in self.watch:
            if name not in namespace or not _data(namespace[name]):
                continue
            value = namespace[name]
            cached = self.known.get(name)
            if cached is not None and cached[0] == id(value) and (cached[1] is None or cached[1]() is value):
                # The fingerprint the last step reading it took afterwards: one pass per step, not two.
                # Any plain cell in between clears these (``DurableMagics.remember_cell``).
                out[name] = cached[2]
                continue
            found = _fingerprint.fingerprint(value)
            if found.digest is not None:
                out[name] = found.digest
            elif _worth_telling(value, found.problem):
                self.tell(name, found.problem or "cannot be fingerprinted")
        return out

    def _share(self, outputs: dict[str, Any], namespace: dict[str, Any]) -> dict[str, Any]:
        """Add the variables that share memory with the outputs, and pickle the sharing ones together."""
        others = data_variables(namespace, self.shell.user_ns_hidden)
        others = {n: v for n, v in others.items() if n not in self.spec.excluded and self.spec.exact is None}
        secret = withhold_secrets(self.call.step, self.spec, [n for n in others if n not in outputs])
        others = {n: v for n, v in others.items() if n not in secret}
        shared, added = _aliases.sharing(outputs, others)
        # A variable met through its parts (a dict holding an output and a connection) may not pickle:
        # it is left out rather than failing a step that stored fine before.
        refused = {n for n in added if _fingerprint.fingerprint(others[n]).digest is None}
        added -= refused
        shared -= refused
        if len(shared) < 2:  # sharing needs two
            shared = set()
        outputs = {**outputs, **{n: others[n] for n in sorted(added)}}
        if not shared:
            return outputs
        token = uuid.uuid4().hex
        outputs[_aliases.SHARED] = _aliases.pack({n: outputs[n] for n in sorted(shared)})
        for name in shared:
            outputs[name] = _aliases.SharedRef(name, token)
        return outputs
