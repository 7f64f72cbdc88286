"""Payloads to checkpoint: a mixed-dtype DataFrame, a numpy array and a dict of small objects."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pandas as pd


def frame(nbytes: int, seed: int = 0) -> pd.DataFrame:
    """A DataFrame of about ``nbytes`` in memory (deep) with int, float, datetime, category and string columns."""
    rng = np.random.default_rng(seed)
    probe = _frame(1000, rng)
    per_row = float(probe.memory_usage(deep=True).sum()) / len(probe)
    rows = max(1, int(nbytes / per_row))
    return _frame(rows, rng)


def _frame(rows: int, rng: np.random.Generator) -> pd.DataFrame:
    ids = rng.integers(0, 2**40, rows)
    df: pd.DataFrame = pd.DataFrame(
        {
            "id": ids,
            "amount": rng.random(rows) * 1000,
            "when": pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**9, rows), unit="s"),
            "city": pd.Categorical.from_codes(rng.integers(0, 50, rows), pd.Index([f"city-{i}" for i in range(50)])),
            "note": pd.Series(ids).map("order-{:012x}".format),
        }
    )
    return df


def array(nbytes: int, seed: int = 0) -> np.ndarray:
    """A float64 array of ``nbytes`` (random, so no layer can cheat by compressing it)."""
    return np.random.default_rng(seed).random(max(1, nbytes // 8))


def objects(n: int) -> dict[str, Any]:
    """A dict of ``n`` small Python objects, the shape of parsed JSON records."""
    return {
        f"key-{i}": {"id": i, "price": i * 0.5, "name": f"item {i}", "tags": ["a", "b", str(i)], "ok": i % 2 == 0}
        for i in range(n)
    }


def nbytes(value: object) -> int:
    """The payload size that MB/s figures divide: memory for frames and arrays, pickle size otherwise."""
    if isinstance(value, pd.DataFrame):
        return int(value.memory_usage(deep=True).sum())
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    return len(pickle.dumps(value, protocol=5))


def make(kind: str, size: int) -> Any:
    """Build a payload by kind name (``frame``, ``array``, ``dict``)."""
    if kind == "frame":
        return frame(size)
    if kind == "array":
        return array(size)
    if kind == "dict":
        return objects(size)
    raise ValueError(kind)


def label(kind: str, size: int) -> str:
    """A short human name: 'DataFrame 100 MB', 'dict 10,000 objects'."""
    if kind == "dict":
        return f"dict {size:,} objects"
    name = {"frame": "DataFrame", "array": "ndarray"}[kind]
    return f"{name} {size / 1e9:g} GB" if size >= 1e9 else f"{name} {size / 1e6:g} MB"
