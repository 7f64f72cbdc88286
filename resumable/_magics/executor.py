"""Executes a ``%%durable_step`` cell for the engine, one attempt per call."""

from __future__ import annotations

import ast
import sys
from typing import Any

from resumable import _capture, _cellast, _engine, _why
from resumable._magics.outputs import OutputSpec, collect_outputs


class CellExecutor:
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
        begin_why = call.why
        if tried == 0 and begin_why:
            print(_why.runs_again(call.step, begin_why))
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
