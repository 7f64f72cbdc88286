"""Kernel side of the notebook trials: a comparable summary of every variable a notebook left bound.

The trials copy this file beside each notebook; the notebook's last (plain) cell imports it and
writes ``final.json``. A summary is equal for two runs exactly when a user reading the variables
would find them equal: arrays and frames by their bytes, a random generator by its state, a
figure by what is drawn on it, a fitted estimator by its parameters and fitted attributes.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import types
from typing import Any

SKIP = frozenset({"In", "Out", "exit", "quit", "get_ipython", "trial_summary"})


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _artist(artist: Any) -> list[Any]:
    """What one axes holds: lines by their data, collections by their offsets and colours, patches, texts."""
    import numpy as np

    lines = [_sha(np.asarray(line.get_xydata(), dtype=float).tobytes()) for line in artist.lines]
    collections = [
        [_sha(np.asarray(c.get_offsets(), dtype=float).tobytes()), _sha(np.asarray(c.get_array()).tobytes())]
        if c.get_array() is not None
        else _sha(np.asarray(c.get_offsets(), dtype=float).tobytes())
        for c in artist.collections
    ]
    patches = [[round(p.get_height(), 6)] if hasattr(p, "get_height") else [] for p in artist.patches]
    return [artist.get_title(), lines, collections, patches]


def summarize(value: Any, depth: int = 0) -> Any:
    """A JSON-ready description of ``value`` that two equal values share."""
    import numpy as np
    import pandas as pd

    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, np.generic):
        return summarize(value.item(), depth)
    if depth > 4:
        return ["deep", type(value).__name__]
    if isinstance(value, (list, tuple)):
        return [type(value).__name__, [summarize(v, depth + 1) for v in value]]
    if isinstance(value, dict):
        return ["dict", [[repr(k), summarize(v, depth + 1)] for k, v in value.items()]]
    if isinstance(value, (set, frozenset)):
        return ["set", sorted(repr(v) for v in value)]
    if isinstance(value, np.ndarray) and value.dtype == object:  # e.g. plt.subplots' array of Axes
        return ["ndarray", list(value.shape), [summarize(v, depth + 1) for v in value.ravel()]]
    if isinstance(value, np.ndarray):
        return ["ndarray", str(value.dtype), list(value.shape), _sha(np.ascontiguousarray(value).tobytes())]
    if isinstance(value, (pd.DataFrame, pd.Series)):
        hashed = pd.util.hash_pandas_object(value, index=True).to_numpy()
        columns = [str(c) for c in value.columns] if isinstance(value, pd.DataFrame) else [str(value.name)]
        return [type(value).__name__, list(value.shape), columns, _sha(hashed.tobytes())]
    if isinstance(value, pd.Index):
        return ["index", [str(v) for v in value]]
    if isinstance(value, np.random.Generator):
        return ["generator", repr(value.bit_generator.state)]
    if isinstance(value, random.Random):
        return ["random", _sha(repr(value.getstate()).encode())]
    kind = type(value).__module__.split(".")[0]
    if kind == "matplotlib":
        from matplotlib.axes import Axes
        from matplotlib.figure import Figure

        if isinstance(value, Figure):
            return ["figure", [_artist(ax) for ax in value.axes]]
        if isinstance(value, Axes):
            return ["axes", _artist(value)]
        return ["matplotlib", type(value).__name__]
    if hasattr(value, "get_params") and hasattr(value, "fit"):  # a scikit-learn estimator
        fitted = {k: summarize(v, depth + 1) for k, v in sorted(vars(value).items()) if k.endswith("_")}
        return ["estimator", type(value).__name__, repr(sorted(value.get_params(deep=False).items())), fitted]
    return ["object", f"{type(value).__module__}.{type(value).__qualname__}"]


def dump(namespace: dict[str, Any], path: str, volatile: tuple[str, ...] = ()) -> None:
    """Write the summary of every user variable (not modules, functions, classes) to ``path``."""
    found = {}
    for name, value in sorted(namespace.items()):
        if name.startswith("_") or name in SKIP or name in volatile:
            continue
        if isinstance(value, (types.ModuleType, types.FunctionType, type)):
            continue
        found[name] = summarize(value)
    with open(path, "w") as out:
        json.dump(found, out, indent=1, sort_keys=True, default=_plain)


def _plain(value: Any) -> Any:
    """numpy scalars inside matplotlib's values, as plain numbers."""
    return value.item() if hasattr(value, "item") else repr(value)
