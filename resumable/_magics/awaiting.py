"""Top-level ``await`` in a ``%%durable_step`` cell, run on the loop the kernel runs cells on.

IPython runs a plain cell with a top-level ``await`` as a coroutine on its event loop (in a
Jupyter kernel, the kernel's own loop) because the cell's code awaits. A step cell reaches IPython
as ``get_ipython().run_cell_magic(...)``, which does not await, so its ``await`` would meet a
running loop it cannot wait on. This input transformer turns such a cell, and only such a cell,
into an awaited call of :meth:`DurableMagics.durable_step_awaited`: IPython then sees a cell that
awaits and runs it the way it runs a plain async cell. The engine runs the step with ``run_async``.
"""

from __future__ import annotations

import ast
import inspect
from typing import Any

MAGIC = "durable_step"
AWAITED = "durable_step_awaited"


def _step_call(python: str) -> tuple[str, str] | None:
    """``(line, cell)`` when ``python`` is exactly IPython's call of the ``%%durable_step`` magic."""
    if "run_cell_magic" not in python:
        return None
    try:
        tree = ast.parse(python)
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr):
        return None
    call = tree.body[0].value
    if not (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "run_cell_magic"
        and isinstance(call.func.value, ast.Call)
        and isinstance(call.func.value.func, ast.Name)
        and call.func.value.func.id == "get_ipython"
        and len(call.args) == 3
        and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in call.args)
    ):
        return None
    magic, line, cell = (a.value for a in call.args)  # type: ignore[attr-defined]
    return (line, cell) if magic == MAGIC else None


def awaits(python: str) -> bool:
    """Whether code awaits at top level (compiled as IPython compiles a plain cell)."""
    try:
        code = compile(python, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    except SyntaxError:  # the magic reports it, with the cell's own line
        return False
    return bool(code.co_flags & inspect.CO_COROUTINE)


def _awaits_cells_on_asyncio(shell: Any) -> bool:
    """Whether IPython (and ipykernel) await a cell that awaits, on asyncio: not with ``%autoawait off`` or trio."""
    from IPython.core.interactiveshell import _asyncio_runner  # type: ignore[attr-defined]

    return bool(getattr(shell, "autoawait", False)) and getattr(shell, "loop_runner", None) is _asyncio_runner


class AwaitStepCells:
    """``input_transformers_post``: a step cell whose body awaits becomes an awaited call of the magic."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell

    def __call__(self, lines: list[str]) -> list[str]:
        if not _awaits_cells_on_asyncio(self.shell):  # the magic then runs the step on a loop of its own
            return lines
        found = _step_call("".join(lines))
        if found is None:
            return lines
        line, cell = found
        try:
            body = self.shell.transform_cell(cell)
        except Exception:  # the magic transforms it again and reports the problem
            return lines
        if not awaits(body):
            return lines
        magics = "get_ipython().magics_manager.registry['DurableMagics']"
        return [f"await {magics}.{AWAITED}({line!r}, {cell!r})\n"]


def install(shell: Any) -> None:
    """Add the transformer to ``shell`` once (a second ``DurableMagics`` reuses it)."""
    if not any(isinstance(t, AwaitStepCells) for t in shell.input_transformers_post):
        shell.input_transformers_post.append(AwaitStepCells(shell))
