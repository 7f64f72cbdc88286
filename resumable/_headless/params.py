"""Notebook parameters for headless runs: parsing ``-p``/``-f`` and injecting them, as papermill does.

A value given on the command line is a Python literal when :func:`ast.literal_eval` accepts it
(``-p n 3`` is the int 3, ``-p rate 0.5`` a float, ``-p tags "['a']"`` a list) and a string
otherwise (``-p order order-42``). A file given with ``-f`` holds a mapping in YAML or JSON.
The values are injected after the cell tagged ``parameters`` in a new cell tagged
``injected-parameters``, so the notebook's own defaults stay visible above the ones that won.
"""

from __future__ import annotations

import ast
import json
import keyword
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from resumable import _params
from resumable.errors import NotebookInputError, ParameterValueError

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


def parse_value(text: str) -> Any:
    """``'3'`` -> 3, ``'[1, 2]'`` -> [1, 2], ``'order-42'`` -> ``'order-42'`` (papermill's ``-p``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def check_name(name: object) -> str:
    """A parameter becomes a variable, so its name must be a Python identifier."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        fix = (
            "The notebook receives each parameter as 'NAME = VALUE', so use letters, digits and '_', "
            "for example -p order_id 42."
        )
        raise NotebookInputError("parameter name", name, "is not a Python variable name", fix)
    return name


def check_value(name: str, value: Any) -> Any:
    """A value must survive ``repr`` -> Python source -> the store's record, and come back equal."""
    try:
        _params.literal(name, value)
    except ParameterValueError as exc:
        problem = f"= {exc.value!r} ({type(value).__name__}) cannot be written into the notebook as a Python literal"
        fix = "Use strings, numbers, booleans, None, and lists, tuples, sets or dicts of them."
        raise NotebookInputError("parameter", name, f"{problem} ({exc.problem})", fix) from None
    return value


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file holding a mapping of parameter names to values."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror or exc})"
        raise NotebookInputError("parameter file", str(file), problem, "Pass a YAML or JSON file with -f.") from None
    import yaml

    try:
        data = json.loads(text) if file.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if file.suffix.lower() == ".json" else "YAML"
        raise NotebookInputError("parameter file", str(file), f"is not valid {kind} ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        fix = "Write one 'name: value' per line, for example:\n  order_id: 42\n  region: eu"
        raise NotebookInputError("parameter file", str(file), f"holds a {type(data).__name__}, not a mapping", fix)
    return {check_name(k): check_value(k, v) for k, v in data.items()}


def collect(pairs: Iterable[tuple[str, str]] = (), file: str | Path | None = None) -> dict[str, Any]:
    """Parameters from ``-f FILE`` overridden by ``-p NAME VALUE`` pairs (the later flag wins)."""
    params: dict[str, Any] = load_file(file) if file is not None else {}
    for name, text in pairs:
        params[check_name(name)] = check_value(name, parse_value(text))
    return params


def checked(params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a mapping given from Python (names are identifiers, values are literals)."""
    return {check_name(k): check_value(k, v) for k, v in params.items()}


def source(params: Mapping[str, Any]) -> str:
    """The injected cell's source: one ``name = value`` line per parameter."""
    lines = ["# Parameters (injected by resumable execute)"]
    lines += [f"{name} = {value!r}" for name, value in params.items()]
    return "\n".join(lines) + "\n"


def inject(nb: Any, params: Mapping[str, Any]) -> int | None:
    """Put a cell tagged ``injected-parameters`` after the ``parameters`` cell (or first).

    An injected cell left by an earlier run is replaced. Returns the new cell's index, or None
    when there is nothing to inject.
    """
    import nbformat

    cells = nb.cells
    for i in reversed(range(len(cells))):
        if INJECTED_TAG in _tags(cells[i]):
            del cells[i]
    if not params:
        return None
    cell = nbformat.v4.new_code_cell(source(params), metadata={"tags": [INJECTED_TAG]})  # type: ignore[no-untyped-call]
    where = next((i + 1 for i, c in enumerate(cells) if PARAMETERS_TAG in _tags(c)), 0)
    cells.insert(where, cell)
    return where


def _tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))
