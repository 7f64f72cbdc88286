"""Forking a run whose step checkpointed a large array: the store's size before and after, and the time.

A run of two steps (``load`` returns an ndarray of ``cfg.array_sizes[-1]`` bytes, ``report`` a
number) is forked from ``report``. The fork shares ``load``'s checkpoint by reference, so the store
should grow by a few rows, not by the array. Sizes are measured as ``du`` would (the database file,
its log and the payload folder) and as the database's used blocks (DuckDB keeps free blocks in the
file, so its size alone swings by a few blocks between checkpoints). Baseline: the array's size.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np

from benchmarks._report import Result, Skipped
from benchmarks._util import Config

CONCERN = "fork"


def _du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _used(store: Path) -> int:
    with duckdb.connect(str(store), read_only=True) as con:
        row = con.execute("SELECT block_size * used_blocks FROM pragma_database_size()").fetchone()
    return int(row[0]) if row else 0


def run(cfg: Config) -> list[Result | Skipped]:
    import resumable
    from resumable._store import forget_all

    size = cfg.array_sizes[-1]
    with tempfile.TemporaryDirectory(prefix="bench-fork-") as tmp:
        store = Path(tmp) / "store" / "store.duckdb"
        pipe = resumable.Pipeline("bench_fork", store=store)
        with pipe.run(run_id="origin") as r:
            values = r.step("load", lambda: np.ones(size // 8))
            r.step("report", lambda v: float(v[:10].sum()), values)
        del values
        forget_all()
        du_before, used_before = _du(store.parent), _used(store)
        pipe = resumable.Pipeline("bench_fork", store=store)
        started = time.perf_counter()
        pipe.fork("origin", "report", run_id="fork")
        took = time.perf_counter() - started
        forget_all()
        du_after, used_after = _du(store.parent), _used(store)
        started = time.perf_counter()
        with resumable.Pipeline("bench_fork", store=store).run(run_id="fork") as r:
            restored = r.step("load", lambda: np.ones(1))
            r.step("report", lambda v: float(v[:10].sum()), restored)
        restore_s = time.perf_counter() - started
        assert restored.nbytes == size // 8 * 8
        forget_all()
    label = f"{size / 1e9:.0f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"
    return [
        Result(CONCERN, f"store growth (du) forking a run with a {label} ndarray checkpoint",
               (du_after - du_before) / 2**20, "MiB", "the checkpoint", size / 2**20, "",
               f"du {du_before / 2**20:.1f} -> {du_after / 2**20:.1f} MiB"),
        Result(CONCERN, "database used blocks growth", (used_after - used_before) / 2**10, "KiB",
               note=f"used {used_before / 2**10:.0f} -> {used_after / 2**10:.0f} KiB"),
        Result(CONCERN, "time to fork", took * 1000, "ms"),
        Result(CONCERN, f"first pass of the fork (restores the {label} array, executes 'report')", restore_s * 1000,
               "ms"),
    ]  # fmt: skip
