"""Step overhead: a no-op durable step against a plain call and against a DBOS step on SQLite.

Each implementation runs in its own fresh process. Two figures each: the median time of one call,
measured around each call over many distinct step names (so every step is new and executes), and
the wall time of the whole run divided by its steps, which also counts work the store defers
(group commits on a helper thread, a flush when the run exits).

Ours is measured in the default durability (each quick step's completion appended to the
completion log before it returns) and, as the alternatives docs/performance.md compares, with
durability 'deferred' (nothing written before the step returns) and with group commit turned off
(``RESUMABLE_GROUP_COMMIT_MS=0``: two DuckDB commits per step).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._report import Result, Skipped
from benchmarks._util import Config, median_ms, run_worker

CONCERN = "step"


def _noop() -> None:
    return None


def measure_ours(
    store: str, steps: int, plain_calls: int, durability: str = "durable", fsync_each: bool = False
) -> dict[str, Any]:
    """Median ms of ``run.step(name, noop)`` for new names, of a restored step, and of a plain call.

    ``fsync_each`` measures a design not taken: fsync the completion log before every step returns
    (power-cut safe at once), by wrapping the log's append in this worker process only.
    """
    import resumable

    if fsync_each:
        from resumable._store.completion_log import CompletionLog

        append = CompletionLog.append

        def append_and_sync(self: CompletionLog, payload: bytes) -> int:
            number = append(self, payload)
            self.sync()
            return number

        CompletionLog.append = append_and_sync  # type: ignore[method-assign]

    plain = []
    for _ in range(plain_calls):
        t0 = time.perf_counter()
        _noop()
        plain.append(time.perf_counter() - t0)
    pipe = resumable.Pipeline("bench_step", store=store, durability=durability)
    with pipe.run(run_id="warmup") as run:
        run.step("warmup", _noop)
    # Wall time of the whole run, its exit included: work a store defers (a group commit on a
    # helper thread, a flush at exit) is paid here even when each call returns at once.
    wall0 = time.perf_counter()
    with pipe.run(run_id="steps") as run:
        executed = []
        for i in range(steps):
            t0 = time.perf_counter()
            run.step(f"s{i}", _noop)
            executed.append(time.perf_counter() - t0)
    wall = (time.perf_counter() - wall0) / steps
    with pipe.run(run_id="steps") as run:
        run.step("warmup", _noop)
        restored = []
        for i in range(steps):
            t0 = time.perf_counter()
            run.step(f"s{i}", _noop)
            restored.append(time.perf_counter() - t0)
    return {
        "plain_ms": median_ms(plain),
        "executed_ms": median_ms(executed),
        "executed_wall_ms": wall * 1000,
        "restored_ms": median_ms(restored),
    }


def measure_dbos(folder: str, steps: int, url: str | None = None) -> dict[str, Any]:
    """Median ms of a no-op ``@DBOS.step`` called inside a workflow, system database on SQLite (or ``url``)."""
    from dbos import DBOS, DBOSConfig

    logging.getLogger("dbos").setLevel(logging.WARNING)
    config: DBOSConfig = {
        "name": "bench",
        "system_database_url": url or f"sqlite:///{Path(folder) / 'dbos.sqlite'}",
        "run_admin_server": False,  # type: ignore[typeddict-unknown-key]
        "log_level": "WARNING",
    }
    DBOS(config=config)

    @DBOS.step()
    def noop() -> None:
        return None

    @DBOS.workflow()
    def workflow(n: int) -> list[float]:
        noop()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            noop()
            times.append(time.perf_counter() - t0)
        return times

    DBOS.launch()
    try:
        workflow(1)
        t0 = time.perf_counter()
        times = workflow(steps)
        wall = (time.perf_counter() - t0) / steps
    finally:
        DBOS.destroy()
    return {"dbos_ms": median_ms(times), "dbos_wall_ms": wall * 1000}


def run(cfg: Config) -> list[Result | Skipped]:
    """Print-ready figures for the step concern."""
    out: list[Result | Skipped] = []
    with tempfile.TemporaryDirectory(prefix="rsm-bench-") as tmp:
        ours = run_worker("step", "measure_ours", {"store": str(Path(tmp) / "s" / "store.duckdb"),
                                                   "steps": cfg.steps, "plain_calls": cfg.plain_calls})  # fmt: skip
        deferred = run_worker("step", "measure_ours", {"store": str(Path(tmp) / "d" / "store.duckdb"),
                                                       "steps": cfg.steps, "plain_calls": cfg.plain_calls,
                                                       "durability": "deferred"})  # fmt: skip
        synced = run_worker("step", "measure_ours", {"store": str(Path(tmp) / "f" / "store.duckdb"),
                                                     "steps": cfg.steps, "plain_calls": cfg.plain_calls,
                                                     "fsync_each": True})  # fmt: skip
        each = run_worker("step", "measure_ours", {"store": str(Path(tmp) / "e" / "store.duckdb"),
                                                   "steps": cfg.steps, "plain_calls": cfg.plain_calls},
                          env={"RESUMABLE_GROUP_COMMIT_MS": "0"})  # fmt: skip
        out.append(Result(CONCERN, "no-op step (new, executes, default durability)", ours["executed_ms"],
                          "ms", "plain call", ours["plain_ms"],
                          note=f"median per call; adds {ours['executed_ms'] - ours['plain_ms']:.2f} ms"))  # fmt: skip
        out.append(Result(CONCERN, "alternative: durability 'deferred' (quick steps of the last 50 ms may rerun)",
                          deferred["executed_ms"], "ms", "default durability", ours["executed_ms"],
                          note=f"median per call; wall per step {deferred['executed_wall_ms']:.3f} ms"))  # fmt: skip
        out.append(Result(CONCERN, "alternative: completion log fsynced before every step returns",
                          synced["executed_ms"], "ms", "default durability", ours["executed_ms"],
                          note=f"median per call; wall per step {synced['executed_wall_ms']:.3f} ms"))  # fmt: skip
        out.append(Result(CONCERN, "alternative: no group commit (two DuckDB commits per step)",
                          each["executed_ms"], "ms", "default durability", ours["executed_ms"],
                          note=f"median per call; wall per step {each['executed_wall_ms']:.3f} ms"))  # fmt: skip
        out.append(Result(CONCERN, "no-op step (new), wall time per step over the whole run",
                          ours["executed_wall_ms"], "ms", "plain call", ours["plain_ms"],
                          note="run exit and deferred commits included"))  # fmt: skip
        out.append(Result(CONCERN, "no-op step (completed, restored)", ours["restored_ms"], "ms",
                          "plain call", ours["plain_ms"],
                          note=f"median per call; adds {ours['restored_ms'] - ours['plain_ms']:.2f} ms"))  # fmt: skip
        if not cfg.dbos:
            out.append(Skipped(CONCERN, "no-op step vs DBOS", "--no-dbos given"))
            return out
        try:
            import dbos  # noqa: F401
        except ImportError:
            out.append(Skipped(CONCERN, "no-op step vs DBOS", "dbos is not installed (pip install 'resumable[bench]')"))
            return out
        try:
            theirs = run_worker("step", "measure_dbos", {"folder": tmp, "steps": cfg.steps}, timeout=300)
        except Exception as exc:  # DBOS needs no server on SQLite, but report rather than crash
            out.append(Skipped(CONCERN, "no-op step vs DBOS", f"DBOS did not run: {str(exc).splitlines()[-1]}"))
            return out
        out.append(Result(CONCERN, "no-op step (new, executes, default durability) vs DBOS", ours["executed_ms"],
                          "ms", "DBOS step on SQLite", theirs["dbos_ms"], "<= 0.5", "median per call"))  # fmt: skip
        out.append(Result(CONCERN, "no-op step (new, default durability) vs DBOS, wall time per step over the run",
                          ours["executed_wall_ms"], "ms", "DBOS workflow of as many steps", theirs["dbos_wall_ms"],
                          "<= 0.5", "run exit, deferred commits and the workflow's own records included"))  # fmt: skip
        out.append(Result(CONCERN, "no-op step (completed, restored) vs DBOS", ours["restored_ms"], "ms",
                          "DBOS step on SQLite", theirs["dbos_ms"], "<= 0.25", "median per call"))  # fmt: skip
    return out
