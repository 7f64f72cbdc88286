"""Executes a ``%%durable_step`` cell for the engine and trims tracebacks to the user's code."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

from resumable import _capture, _cellast, _engine
from resumable._magics.outputs import OutputSpec, collect_outputs


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


_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


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
