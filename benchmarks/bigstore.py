"""Restoring small inline checkpoints from a store of several hundred MB, against a fresh store.

A store holds ``RUNS`` runs of ``STEPS`` steps, each returning ``INLINE`` random bytes (under the
inline limit: kept inside the database file). A fresh store holds one such run. In a fresh
process each time:

- lone restore: one step of the run called again (as a notebook cell would), the store already open;
- resume: every step of the run called again.

DuckDB reads the whole ``data`` column for any query that selects it (an index on the key columns
is not used with parameters), so a lone restore in a big store costs a scan of every inline byte
in it; a resume reads its steps' bytes ahead in windows (``_store/restorable.py``), one scan each.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._report import Result, Skipped
from benchmarks._util import Config, run_worker

CONCERN = "bigstore"
INLINE = 240_000
STEPS = 40


def _value(run_id: str, step: int) -> bytes:
    return os.urandom(INLINE)


def build(store: str, runs: int) -> dict[str, Any]:
    from resumable import Pipeline

    pipe = Pipeline("bench_big", store=store)
    for r in range(runs):
        with pipe.run(run_id=f"r{r:03d}") as run:
            for i in range(STEPS):
                run.step(f"s{i:03d}", _value, f"r{r:03d}", i)
    return {"mb": Path(store).stat().st_size / 1e6}


def restore(store: str, run_id: str, lone: bool) -> dict[str, Any]:
    from resumable import Pipeline

    pipe = Pipeline("bench_big", store=store)
    with pipe.run(run_id=run_id) as run:  # the store opened and the run claimed, untimed
        t0 = time.perf_counter()
        for i in [STEPS // 2] if lone else range(STEPS):
            value = run.step(f"s{i:03d}", _value, run_id, i)
            assert len(value) == INLINE
        took = time.perf_counter() - t0
    return {"ms": took * 1000}


def run(cfg: Config) -> list[Result | Skipped]:
    """Print-ready figures for the bigstore concern (no target: issue 14's third item is not met yet)."""
    runs = 4 if cfg.quick else 40
    with tempfile.TemporaryDirectory(prefix="rsm-bench-big-") as tmp:
        big, fresh = str(Path(tmp) / "big" / "store.duckdb"), str(Path(tmp) / "fresh" / "store.duckdb")
        size = run_worker(CONCERN, "build", {"store": big, "runs": runs})["mb"]
        run_worker(CONCERN, "build", {"store": fresh, "runs": 1})
        middle = f"r{runs // 2:03d}"
        out: list[Result | Skipped] = []
        for lone, label in ((True, "lone restore of one inline step"), (False, f"resume of {STEPS} inline steps")):
            in_big = run_worker(CONCERN, "restore", {"store": big, "run_id": middle, "lone": lone})["ms"]
            in_fresh = run_worker(CONCERN, "restore", {"store": fresh, "run_id": "r000", "lone": lone})["ms"]
            name = f"{label}, store of {size:.0f} MB"
            baseline = "the same from a fresh store (one run)"
            out.append(Result(CONCERN, name, in_big, "ms", baseline, in_fresh, "", "fresh process; claim untimed"))
    return out
