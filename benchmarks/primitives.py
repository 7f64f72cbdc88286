"""What one step record costs at the storage layer, to judge designs of the store against DBOS.

All in one fresh process, each the median of many repetitions: a DuckDB connect + close; a one-row
INSERT committed on a held DuckDB connection; the same on SQLite in WAL mode with
``synchronous=FULL`` (what DBOS's SQLite system database pays per step); and appending one
record to a file with ``os.fsync`` or ``os.fdatasync`` (an append-only journal).
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._report import Result, Skipped
from benchmarks._util import Config, run_worker

CONCERN = "primitives"


def _median_ms(fn: Callable[[int], object], n: int) -> float:
    fn(-1)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _append(fd: int, record: bytes, sync: Callable[[int], None]) -> None:
    os.write(fd, record)
    sync(fd)


def measure(folder: str, n: int) -> dict[str, Any]:
    """Median ms of each storage primitive."""
    import duckdb

    base = Path(folder)
    path = str(base / "p.duckdb")
    duckdb.connect(path).close()
    out = {"duckdb_connect_close": _median_ms(lambda i: duckdb.connect(path).close(), max(10, n // 10))}
    con = duckdb.connect(path)
    con.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, state VARCHAR, ts TIMESTAMP)")
    out["duckdb_insert_commit"] = _median_ms(
        lambda i: (con.execute("BEGIN"), con.execute("INSERT INTO t VALUES (?, 'x', now())", [i + 1]),
                   con.execute("COMMIT")), n)  # fmt: skip
    out["duckdb_update_commit"] = _median_ms(
        lambda i: (con.execute("BEGIN"), con.execute("UPDATE t SET state = 'y' WHERE k = ?", [i % n + 1]),
                   con.execute("COMMIT")), n)  # fmt: skip
    con.close()
    lite = sqlite3.connect(str(base / "p.sqlite"), isolation_level=None)
    lite.execute("PRAGMA journal_mode=WAL")
    lite.execute("PRAGMA synchronous=FULL")
    lite.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, state TEXT, ts TEXT)")
    out["sqlite_insert_commit"] = _median_ms(
        lambda i: (lite.execute("BEGIN"), lite.execute("INSERT INTO t VALUES (?, 'x', datetime('now'))", [i + 1]),
                   lite.execute("COMMIT")), n)  # fmt: skip
    lite.close()
    fd = os.open(base / "journal", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    record = b"step s1 running pid 1234 attempt 1 " + b"x" * 60 + b"\n"
    out["append_fsync"] = _median_ms(lambda i: _append(fd, record, os.fsync), n)
    out["append_fdatasync"] = _median_ms(lambda i: _append(fd, record, os.fdatasync), n)
    os.close(fd)
    return out


def run(cfg: Config) -> list[Result | Skipped]:
    """Storage primitives next to SQLite's commit, the floor of a DBOS step."""
    with tempfile.TemporaryDirectory(prefix="rsm-bench-") as tmp:
        m = run_worker("primitives", "measure", {"folder": tmp, "n": cfg.steps})
    base = ("SQLite WAL insert+commit", m["sqlite_insert_commit"])
    return [
        Result(CONCERN, "DuckDB connect + close", m["duckdb_connect_close"], "ms", *base),
        Result(CONCERN, "DuckDB 1-row INSERT + COMMIT, held connection", m["duckdb_insert_commit"], "ms", *base),
        Result(CONCERN, "DuckDB 1-row UPDATE + COMMIT, held connection", m["duckdb_update_commit"], "ms", *base),
        Result(CONCERN, "append a record + fsync", m["append_fsync"], "ms", *base),
        Result(CONCERN, "append a record + fdatasync", m["append_fdatasync"], "ms", *base),
    ]
