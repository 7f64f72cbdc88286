"""A run's parameters as the store records them: each value as the Python literal that rebuilds it.

Parameters used to be stored as JSON, which cannot hold what ``-p`` accepts: ``{1: 2, 'a': 3}``
failed to encode at all, and ``set()`` or ``[0j]`` came back from a resumed run as the strings
``'set()'`` and ``['0j']``. Now each value is kept as its ``repr``, and only values whose ``repr``
reads back (``ast.literal_eval``) as an equal value of the same type are accepted, so a resumed run
gets exactly what it started with. Rows written before hold plain JSON and are read as such.
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


def encode(params: Mapping[str, Any]) -> str:
    """The stored text of ``params``: ``{"$literals": {name: repr}}``, names sorted."""
    for name in params:
        if not isinstance(name, str):
            raise ParameterValueError(name, params[name], "its name is not a string")
    return json.dumps({FORMAT_KEY: {name: literal(name, params[name]) for name in sorted(params)}})


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

    Values are compared by their literals, so a change of type (``1`` to ``True``) counts. A row
    written as JSON is compared with ``new`` as JSON saw it, so an old run does not differ from
    the parameters it was started with.
    """
    recorded = literals(old_text)
    if recorded is None:
        old: dict[str, Any] = decode(old_text)
        given = json.loads(json.dumps(dict(new), sort_keys=True, default=repr))
        old_shown = {k: repr(v) for k, v in old.items()}
        new_shown = {k: repr(v) for k, v in given.items()}
    else:
        old_shown = recorded
        new_shown = {k: literal(k, v) for k, v in new.items()}
    out = []
    for key in sorted(set(old_shown) | set(new_shown)):
        if key not in new_shown:
            out.append(f"{key}: started with {old_shown[key]}, now missing")
        elif key not in old_shown:
            out.append(f"{key}: not set at the start, now {new_shown[key]}")
        elif old_shown[key] != new_shown[key]:
            out.append(f"{key}: started with {old_shown[key]}, now {new_shown[key]}")
    return out


def jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` for a JSON document (``--json``): a value JSON keeps as it is, else its Python literal."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        try:
            kept = _same(json.loads(json.dumps(value)), value)
        except (TypeError, ValueError, RecursionError):
            kept = False
        out[name] = value if kept else repr(value)
    return out
