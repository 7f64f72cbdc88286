"""Names a headless run reads from a notebook, and the command line that resumes a run.

Magic lines are parsed with the magics' own parser (:mod:`resumable._magic_lines`) and the
pipeline named after the file with the magics' own rule (:func:`resumable._keys.notebook_pipeline`),
so a headless run joins exactly the run the notebook's kernel would. A line the magic would refuse
is refused here, before any kernel starts.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from resumable import _magic_lines
from resumable._keys import DEFAULT_PIPELINE, EXECUTED_SUFFIX, notebook_pipeline
from resumable.errors import NotebookInputError

DEFAULT_MAX_RESTARTS = 3
OUTPUT_SUFFIX = EXECUTED_SUFFIX

_RUN_LINE = re.compile(r"^\s*%durable_run\b(.*)$", re.MULTILINE)
_STEP_LINE = re.compile(r"^\s*%%durable_step\b(.*)$")


def default_output(notebook: Path) -> Path:
    """``analysis.ipynb`` -> ``analysis.resumable.ipynb`` in the same folder."""
    stem = notebook.name[: -len(".ipynb")] if notebook.name.endswith(".ipynb") else notebook.name
    return notebook.with_name(stem + OUTPUT_SUFFIX)


def _parsed(magic: str, arguments: str, where: str) -> Any:
    from IPython.core.error import UsageError  # what the magics' parser raises; IPython loads lazily

    try:
        return _magic_lines.parse(magic, arguments)
    except UsageError as exc:
        line = f"%{'%' if magic == 'durable_step' else ''}{magic}{arguments}".strip()
        fix = "The magic would refuse it too: fix the line."
        raise NotebookInputError("magic line", line, f"in {where} cannot be parsed ({exc})", fix) from None


def step_of(source: str, where: str = "a cell") -> str | None:
    """The step name of a ``%%durable_step NAME ...`` cell, else None."""
    first = source.lstrip("\n").split("\n", 1)[0]
    match = _STEP_LINE.match(first)
    if match is None:
        return None
    arguments = match.group(1)
    if arguments not in _STEP_NAMES:  # the executor asks for every cell it runs: parse each line once
        _STEP_NAMES[arguments] = _parsed("durable_step", arguments, where).name
    return _STEP_NAMES[arguments]


_STEP_NAMES: dict[str, str | None] = {}  # a line's arguments -> its step name (lines that parse only)


def _run_lines(nb: Any) -> list[Any]:
    """The arguments of every ``%durable_run`` line, in notebook order."""
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            found += [_parsed("durable_run", m.group(1), f"cell {index}") for m in _RUN_LINE.finditer(cell.source)]
    return found


def check_magic_lines(nb: Any) -> None:
    """Refuse the notebook when a magic line would fail in the kernel (NotebookInputError naming it)."""
    _run_lines(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            step_of(cell.source, f"cell {index}")


def check_step_names(nb: Any) -> None:
    """Refuse a notebook in which two code cells name the same step, before any kernel starts.

    Each would overwrite the other's checkpoint on every pass (the kernel refuses the second cell
    only when it can tell cells apart, which a headless kernel may not). Cells are numbered from
    0, as in the other messages about a notebook's cells.
    """
    cells: dict[str, list[int]] = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            name = step_of(cell.source, f"cell {index}")
            if name is not None:
                cells.setdefault(name, []).append(index)
    repeated = [(name, where) for name, where in cells.items() if len(where) > 1]
    if not repeated:
        return
    name, where = repeated[0]
    listed = ", ".join(f"cell {i}" for i in where[:-1]) + f" and cell {where[-1]}"
    more = f" (and {len(repeated) - 1} more step names are repeated)" if len(repeated) > 1 else ""
    raise NotebookInputError(
        "step name",
        name,
        f"is used by {listed}{more}; they would overwrite each other's checkpoint, so nothing was run",
        f"Give each cell its own step name, e.g. '%%durable_step {name}_2' in cell {where[1]}.",
    )


def pinned_run_id(nb: Any) -> str | None:
    """The run id a notebook names itself with ``%durable_run NAME --run-id ID``, which the magic obeys."""
    return next((args.run_id for args in _run_lines(nb) if args.run_id is not None), None)


def pipeline_of(nb: Any, notebook: Path) -> str:
    """The notebook's ``%durable_run NAME``, else the pipeline named after its file, as the magics name it."""
    named = next((args.pipeline for args in _run_lines(nb) if args.pipeline), None)
    return named or notebook_pipeline(notebook.name) or DEFAULT_PIPELINE


def resume_command(
    notebook: str,
    run_id: str,
    output: str | None,
    store: str | None,
    kernel: str | None,
    max_restarts: int,
    timeout: float | None,
) -> str:
    parts = ["resumable", "execute", notebook]
    if output is not None:
        parts += ["-o", output]
    parts += ["--run-id", run_id]
    if store is not None:
        parts += ["--store", store]
    if kernel is not None:
        parts += ["--kernel", kernel]
    if max_restarts != DEFAULT_MAX_RESTARTS:
        parts += ["--max-restarts", str(max_restarts)]
    if timeout is not None:
        parts += ["--timeout", f"{timeout:g}"]
    return shlex.join(parts)
