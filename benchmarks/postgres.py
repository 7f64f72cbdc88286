"""A no-op step on the PostgreSQL store, against the DuckDB store and against DBOS on the same server.

One throwaway PostgreSQL cluster (the tests' ``tests/pg_server.py``: initdb in a temp folder,
127.0.0.1, fsync off as in the tests) serves both our store and DBOS's system database, so the
two server figures pay the same round trips. Every implementation runs in a fresh process
(``step.measure_ours`` / ``step.measure_dbos``), over distinct step names so every step executes.
Skipped, with the reason, where no cluster can start (no PostgreSQL binaries, no psycopg).

The server store commits each step's start and its completion as they happen (no group commit
and no completion log: docs/scale.md), so its figure is two server transactions per step, the
DuckDB store's a log append. fsync is off on this cluster, so the figures are round trips and the
server's work, not the disk's: say so next to them.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchmarks._report import Result, Skipped
from benchmarks._util import Config, run_worker

CONCERN = "postgres"


def _cluster() -> object:
    """A running throwaway cluster (``tests/pg_server.py``), or why it cannot start."""
    tests = Path(__file__).resolve().parent.parent / "tests"
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    import pg_server

    return pg_server.start()


def run(cfg: Config) -> list[Result | Skipped]:
    """The server store's no-op step against the file store's and DBOS's on the same server."""
    cluster = _cluster()
    if isinstance(cluster, str):
        return [Skipped(CONCERN, "no-op step on PostgreSQL", f"no PostgreSQL server could start: {cluster}")]
    out: list[Result | Skipped] = []
    try:
        with tempfile.TemporaryDirectory(prefix="rsm-bench-pg-") as tmp:
            args = {"steps": cfg.steps, "plain_calls": cfg.plain_calls}
            url = cluster.new_database()  # type: ignore[attr-defined]
            server = run_worker("step", "measure_ours", {"store": f"{url}?payloads={tmp}/payloads", **args})
            local = run_worker("step", "measure_ours", {"store": str(Path(tmp) / "s" / "store.duckdb"), **args})
            out.append(Result(CONCERN, "no-op step (new, executes) on PostgreSQL vs the DuckDB store",
                              server["executed_ms"], "ms", "DuckDB store, default durability", local["executed_ms"],
                              note="median per call; two server transactions per step"))  # fmt: skip
            out.append(Result(CONCERN, "no-op step on PostgreSQL vs the DuckDB store, wall time per step",
                              server["executed_wall_ms"], "ms", "DuckDB store over its whole run",
                              local["executed_wall_ms"], note="run exit and deferred commits included"))  # fmt: skip
            out.append(Result(CONCERN, "no-op step (completed, restored) on PostgreSQL vs the DuckDB store",
                              server["restored_ms"], "ms", "DuckDB store, restored", local["restored_ms"],
                              note="median per call"))  # fmt: skip
            if not cfg.dbos:
                out.append(Skipped(CONCERN, "no-op step on PostgreSQL vs DBOS", "--no-dbos given"))
                return out
            try:
                import dbos  # noqa: F401
            except ImportError:
                out.append(Skipped(CONCERN, "no-op step on PostgreSQL vs DBOS", "dbos is not installed"))
                return out
            dbos_url = cluster.url("dbos_bench")  # type: ignore[attr-defined]  # DBOS creates it
            try:
                theirs = run_worker("step", "measure_dbos", {"folder": tmp, "steps": cfg.steps, "url": dbos_url},
                                    timeout=300)  # fmt: skip
            except Exception as exc:
                reason = f"DBOS on PostgreSQL did not run: {str(exc).splitlines()[-1]}"
                out.append(Skipped(CONCERN, "no-op step on PostgreSQL vs DBOS", reason))
                return out
            out.append(Result(CONCERN, "no-op step (new, executes) on PostgreSQL vs DBOS on PostgreSQL",
                              server["executed_ms"], "ms", "DBOS step, same server", theirs["dbos_ms"], "<= 1",
                              "median per call"))  # fmt: skip
            out.append(Result(CONCERN, "no-op step on PostgreSQL vs DBOS on PostgreSQL, wall time per step",
                              server["executed_wall_ms"], "ms", "DBOS workflow of as many steps",
                              theirs["dbos_wall_ms"], "<= 1", "the workflow's own records included"))  # fmt: skip
    finally:
        cluster.stop()  # type: ignore[attr-defined]
    return out
