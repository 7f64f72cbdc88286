"""A sweep's parameter sets: read from YAML (a list, a grid, or both), checked, and given stable run ids.

Two forms, which may be combined in one mapping::

    # a list: one run per entry
    - {lr: 0.1, depth: 3}
    - {lr: 0.01, depth: 5}

    # a grid: one run per combination (the last name varies fastest), plus listed runs
    grid:
      lr: [0.1, 0.01]
      depth: [3, 5]
    runs:
      - {lr: 0.5, depth: 1}

A run's id is derived from the pipeline and its parameters in canonical form (mapping keys and set
members sorted, each value with its type, so ``1``, ``1.0`` and ``true`` are three different sets,
and a set or a mapping gives the same id in every process, whatever its order). The same sweep run
again therefore maps every parameter set to the run it had: completed runs restore and interrupted
ones resume. The notebook's path and source are not part of the id, so
editing a step of the notebook resumes the same runs and re-executes that step, as any resume does.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from resumable._headless import params as _headless_params
from resumable.errors import NotebookInputError, SweepFileError

ParamSets = str | os.PathLike[str] | Sequence[Mapping[str, Any]] | Mapping[str, Any]

_WRITE = "Write a list of parameter sets or a grid, "
_EXAMPLE = "for example:\n  grid:\n    lr: [0.1, 0.01]\n    depth: [3, 5]\nor a list:\n  - {lr: 0.1, depth: 3}"


def run_id_for(pipeline: str, params: Mapping[str, Any]) -> str:
    """The run id of one parameter set: the pipeline name and a digest of the canonical parameters."""
    digest = hashlib.sha256(f"{pipeline}\0{_canonical(params)}".encode()).hexdigest()[:16]
    return f"{pipeline[:100]}-{digest}"


def _canonical(value: Any) -> str:
    """``value`` as text that depends on neither set order (hash-seeded per process) nor mapping order.

    Each value carries its type, so ``1``, ``1.0``, ``True`` and ``"1"`` stay apart; the parameters
    were checked to be literals of these types (``_value``), so nothing else reaches here.
    """
    if isinstance(value, Mapping):
        items = sorted(f"{_canonical(k)}:{_canonical(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, (set, frozenset)):
        return f"{type(value).__name__}(" + ",".join(sorted(_canonical(v) for v in value)) + ")"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}(" + ",".join(_canonical(v) for v in value) + ")"
    return f"{type(value).__name__}:{value!r}"


def load(params: ParamSets) -> tuple[dict[str, Any], ...]:
    """The parameter sets of a sweep, in order, from a YAML file or the same structure given in Python."""
    if isinstance(params, (str, os.PathLike)):
        label, data = _read(Path(params))
    else:
        label, data = None, params
    if isinstance(data, Mapping):
        sets = _from_mapping(label, data)
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        sets = _entries(label, data, "entry")
    else:
        kind = "nothing" if data is None else f"a {type(data).__name__}"
        raise SweepFileError(label, None, f"holds {kind}, not a list of parameter sets or a grid", _WRITE + _EXAMPLE)
    if not sets:
        raise SweepFileError(label, None, "holds no parameter set", "Give at least one, " + _EXAMPLE)
    _refuse_duplicates(label, sets)
    return tuple(members for _, members in sets)


def _read(path: Path) -> tuple[str | None, Any]:
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror or exc})"
        raise SweepFileError(label, None, problem, "Pass a YAML file of parameter sets with --sweep.") from None
    import yaml

    try:
        return label, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SweepFileError(label, None, f"is not valid YAML ({' '.join(str(exc).split())})") from None


def _from_mapping(label: str | None, data: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    unknown = sorted(map(str, set(data) - {"grid", "runs"}))
    if unknown:
        problem = f"has the key {unknown[0]!r}; a sweep mapping has only 'grid' and 'runs'"
        fix = "Put a list of parameter sets under 'runs', or the values to combine under 'grid', " + _EXAMPLE
        raise SweepFileError(label, None, problem, fix)
    runs = data.get("runs", [])
    if not isinstance(runs, Sequence) or isinstance(runs, (str, bytes)):
        raise SweepFileError(
            label, "runs", f"is a {type(runs).__name__}, not a list of parameter sets", _WRITE + _EXAMPLE
        )
    return _grid(label, data.get("grid")) + _entries(label, runs, "runs entry")


def _grid(label: str | None, grid: Any) -> list[tuple[str, dict[str, Any]]]:
    if grid is None:
        return []
    if not isinstance(grid, Mapping):
        problem = f"is a {type(grid).__name__}, not a mapping of parameter names to lists of values"
        raise SweepFileError(label, "grid", problem, _WRITE + _EXAMPLE)
    for name, values in grid.items():
        _name(label, f"grid {name!r}", name)
        if not isinstance(values, Sequence) or isinstance(values, (str, bytes)) or not values:
            shown = "an empty list" if isinstance(values, Sequence) and not values else repr(values)
            problem = f"is {shown}, not a list of values"
            fix = f"Write the values as a list, for example [{values!r}]."
            raise SweepFileError(label, f"grid {name!r}", problem, fix)
        for value in values:
            _value(label, f"grid {name!r}", name, value)
    names = list(grid)
    combos = itertools.product(*(grid[n] for n in names))
    return [(f"grid combination {i}", dict(zip(names, c, strict=True))) for i, c in enumerate(combos, 1)]


def _entries(label: str | None, entries: Sequence[Any], word: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i, entry in enumerate(entries, 1):
        where = f"{word} {i}"
        if not isinstance(entry, Mapping):
            problem = f"is {entry!r} ({type(entry).__name__}), not a mapping of parameter names to values"
            raise SweepFileError(label, where, problem, "Write each entry as {name: value, ...}.")
        out.append((where, {_name(label, where, k): _value(label, where, k, v) for k, v in entry.items()}))
    return out


def _name(label: str | None, where: str, name: object) -> str:
    try:
        return _headless_params.check_name(name)
    except NotebookInputError as exc:
        problem = f"parameter name {name!r} {exc.problem}"
        raise SweepFileError(label, where, problem, "Use a Python variable name.") from None


def _value(label: str | None, where: str, name: str, value: Any) -> Any:
    try:
        return _headless_params.check_value(name, value)
    except NotebookInputError as exc:
        raise SweepFileError(label, where, f"parameter '{name}' {exc.problem}", exc.fix) from None


def _refuse_duplicates(label: str | None, sets: list[tuple[str, dict[str, Any]]]) -> None:
    seen: dict[str, str] = {}
    for where, params in sets:
        key = _canonical(params)
        if key in seen:
            problem = f"repeats the parameter set of {seen[key]}, which would be the same run"
            raise SweepFileError(label, where, problem, "Remove one of them.")
        seen[key] = where
