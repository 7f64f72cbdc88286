"""A run's parameters as the store records them: each value as the Python literal that rebuilds it.

Parameters used to be stored as JSON, which cannot hold what ``-p`` accepts: ``{1: 2, 'a': 3}``
failed to encode at all, and ``set()`` or ``[0j]`` came back from a resumed run as the strings
``'set()'`` and ``['0j']``. Now each value is kept as its ``repr``, and only values whose ``repr``
reads back (``ast.literal_eval``) as an equal value of the same type are accepted, so a resumed run
gets exactly what it started with. When every value survives JSON unchanged (strings, numbers,
booleans, None, lists and string-keyed dicts of them: nearly every run), the row is plain JSON, so
``resumable sql`` and any JSON tool read it as it is; otherwise it is ``{"$literals": {name: repr}}``.
Rows written by older versions are plain JSON and are read as such.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from typing import Any

from resumable.errors import ParameterValueError

FORMAT_KEY = "$literals"  # not a Python name, so never a parameter's


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (``1``, ``1.0`` and ``True`` are three values here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def literal(name: str, value: Any) -> str:
    """The Python literal that rebuilds ``value``; ParameterValueError when there is none."""
    try:
        text = repr(value)
        back = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise ParameterValueError(name, value, f"its repr is not a Python literal ({type(exc).__name__})") from None
    except Exception as exc:  # a repr that raises: anything a user's class does
        raise ParameterValueError(name, value, f"its repr raised {type(exc).__name__}") from None
    if not _same(back, value):
        raise ParameterValueError(name, value, "its repr does not read back as the same value")
    return text


def _json_faithful(value: Any) -> bool:
    try:
        return _same(json.loads(json.dumps(value)), value)
    except (TypeError, ValueError, RecursionError):
        return False


def encode(params: Mapping[str, Any]) -> str:
    """The stored text of ``params``, names sorted: plain JSON when it keeps every value, else literals."""
    for name in params:
        if not isinstance(name, str):
            raise ParameterValueError(name, params[name], "its name is not a string")
    shown = {name: literal(name, params[name]) for name in sorted(params)}  # refuses what cannot be kept
    if all(_json_faithful(params[name]) for name in shown):
        return json.dumps({name: params[name] for name in shown})
    return json.dumps({FORMAT_KEY: shown})


def literals(text: str) -> dict[str, str] | None:
    """The stored literals by name, or None for a row written as plain JSON by an older resumable."""
    data = json.loads(text)
    if isinstance(data, dict) and set(data) == {FORMAT_KEY} and isinstance(data[FORMAT_KEY], dict):
        return dict(data[FORMAT_KEY])
    return None


def decode(text: str) -> dict[str, Any]:
    """The parameters a run was recorded with, as the values they were."""
    found = literals(text)
    if found is None:
        data = json.loads(text)
        return data if isinstance(data, dict) else {}
    return {name: ast.literal_eval(shown) for name, shown in found.items()}


def differences(old_text: str, new: Mapping[str, Any]) -> list[str]:
    """What changed between the recorded parameters and ``new``, one line per name.

    Values are compared with their types, so a change of type (``1`` to ``True``) counts. A row
    written as plain JSON (by this version, or by an older one that wrote every row so) is compared
    with ``new`` as JSON sees it, so an old run does not differ from the parameters it started with.
    """
    old = decode(old_text)
    new_shown = {k: literal(k, v) for k, v in new.items()}  # refuses a value that cannot be recorded
    if literals(old_text) is None:
        new = json.loads(json.dumps(dict(new), default=repr))
    out = []
    for key in sorted(set(old) | set(new_shown)):
        if key not in new_shown:
            out.append(f"{key}: started with {old[key]!r}, now missing")
        elif key not in old:
            out.append(f"{key}: not set at the start, now {new_shown[key]}")
        elif not _same(old[key], new[key]):
            out.append(f"{key}: started with {old[key]!r}, now {new_shown[key]}")
    return out


def jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` for a JSON document (``--json``): a value JSON keeps as it is, else its Python literal."""
    return {name: value if _json_faithful(value) else repr(value) for name, value in params.items()}
