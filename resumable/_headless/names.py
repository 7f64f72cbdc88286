"""Names a headless run reads from a notebook, and the command line that resumes a run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

DEFAULT_MAX_RESTARTS = 3
OUTPUT_SUFFIX = ".resumable.ipynb"

_RUN_LINE = re.compile(r"^\s*%durable_run\b(.*)$", re.MULTILINE)
_STEP_LINE = re.compile(r"^\s*%%durable_step\b(.*)$")
_BOOLEAN_FLAGS = frozenset({"--force", "--new", "--rerun", "--quiet"})


def default_output(notebook: Path) -> Path:
    """``analysis.ipynb`` -> ``analysis.resumable.ipynb`` in the same folder."""
    stem = notebook.name[: -len(".ipynb")] if notebook.name.endswith(".ipynb") else notebook.name
    return notebook.with_name(stem + OUTPUT_SUFFIX)


def step_of(source: str) -> str | None:
    """The step name of a ``%%durable_step NAME ...`` cell, else None."""
    first = source.lstrip("\n").split("\n", 1)[0]
    match = _STEP_LINE.match(first)
    if match is None:
        return None
    return _first_positional(match.group(1))


def pinned_run_id(nb: Any) -> str | None:
    """The run id a notebook names itself with ``%durable_run NAME --run-id ID``, which the magic obeys."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for match in _RUN_LINE.finditer(cell.source):
            tokens = _tokens(match.group(1))
            for i, arg in enumerate(tokens):
                if arg == "--run-id" and i + 1 < len(tokens):
                    return tokens[i + 1]
                if arg.startswith("--run-id="):
                    return arg.split("=", 1)[1]
    return None


def pipeline_of(nb: Any, notebook: Path) -> str:
    """The notebook's ``%durable_run NAME``, else its file stem made into a valid name."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for match in _RUN_LINE.finditer(cell.source):
            name = _first_positional(match.group(1))
            if name:
                return name
    stem = notebook.name.split(".", 1)[0]
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).lstrip("-.")[:128]
    return name or "default"


def _tokens(arguments: str) -> list[str]:
    try:
        return shlex.split(arguments, comments=True)
    except ValueError:
        return arguments.split()


def _first_positional(arguments: str) -> str | None:
    skip = False
    for token in _tokens(arguments):
        if skip:
            skip = False
            continue
        if token.startswith("-"):
            skip = "=" not in token and token not in _BOOLEAN_FLAGS
            continue
        return token
    return None


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
