"""Resuming a run past many completed steps, and forking it from its last step, against DBOS.

A first process runs a pipeline of ``STEPS`` no-op steps (each returns its number). Then, each in
a fresh process:

- resume: the same script again: ``Pipeline(...)`` (opening the store) and ``with pipe.run(...)``
  over every step, each restored. Timed from before the store is opened to the run's exit.
- fork: ``pipe.fork(run, last_step)`` and then the script on the fork: every step but the last
  restores (from the origin's checkpoints), the last executes.

DBOS (SQLite system database, no server): a workflow of as many ``@DBOS.step`` calls, then in a
fresh, launched process ``DBOS.fork_workflow(id, start_step)`` and the handle's result: with
``start_step`` past the last step every step's recorded output is copied and replayed (the resume),
with the last step's number that step executes again (the fork). DBOS's launch (seconds) is not
timed; ours includes opening the store. DBOS also offers recovery of a workflow whose process died,
which runs the same replay after a launch; fork is the call a user makes.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._report import Result, Skipped
from benchmarks._util import Config, median_ms, run_worker

CONCERN = "resume"
STEPS = 200


def build_ours(store: str, steps: int) -> dict[str, Any]:
    import resumable

    pipe = resumable.Pipeline("bench_resume", store=store)
    with pipe.run(run_id="origin") as run:
        for i in range(steps):
            run.step(f"s{i}", lambda i=i: i)
    return {}


def resume_ours(store: str, steps: int, fork: bool) -> dict[str, Any]:
    """Wall ms of the script run again (or of a fork from the last step and the script on it)."""
    from resumable import Pipeline  # imported before the clock starts, as DBOS is

    calls = []
    t0 = time.perf_counter()
    pipe = Pipeline("bench_resume", store=store)
    run_id = "origin"
    if fork:
        run_id = pipe.fork("origin", f"s{steps - 1}", run_id="forked").run_id
    forked_s = time.perf_counter() - t0
    each = []
    with pipe.run(run_id=run_id) as run:
        for i in range(steps):
            s0 = time.perf_counter()
            assert run.step(f"s{i}", lambda i=i: calls.append(i) or i) == i
            each.append(time.perf_counter() - s0)
    wall = time.perf_counter() - t0
    assert calls == ([steps - 1] if fork else []), calls
    return {"wall_ms": wall * 1000, "fork_ms": forked_s * 1000, "restore_ms": median_ms(each[: steps - 1])}


def _dbos(folder: str) -> Any:
    from dbos import DBOS, DBOSConfig

    logging.getLogger("dbos").setLevel(logging.WARNING)
    config: DBOSConfig = {
        "name": "bench",
        "system_database_url": f"sqlite:///{Path(folder) / 'dbos-resume.sqlite'}",
        "run_admin_server": False,  # type: ignore[typeddict-unknown-key]
        "log_level": "WARNING",
    }
    DBOS(config=config)
    calls: list[int] = []

    @DBOS.step()
    def noop(i: int) -> int:
        calls.append(i)
        return i

    @DBOS.workflow()
    def workflow(n: int) -> int:
        return sum(noop(i) for i in range(n))

    DBOS.launch()
    return DBOS, workflow, calls


def build_dbos(folder: str, steps: int) -> dict[str, Any]:
    from dbos import SetWorkflowID

    dbos, workflow, _ = _dbos(folder)
    try:
        t0 = time.perf_counter()
        with SetWorkflowID("origin"):
            workflow(steps)
        wall = time.perf_counter() - t0
    finally:
        dbos.destroy()
    return {"run_ms": wall * 1000}


def resume_dbos(folder: str, steps: int, start_step: int) -> dict[str, Any]:
    """Wall ms of ``fork_workflow(origin, start_step)`` until its result (DBOS already launched)."""
    dbos, _, calls = _dbos(folder)
    try:
        t0 = time.perf_counter()
        result = dbos.fork_workflow("origin", start_step).get_result()
        wall = time.perf_counter() - t0
    finally:
        dbos.destroy()
    assert result == sum(range(steps)), result
    return {"wall_ms": wall * 1000, "executed": len(calls)}


def run(cfg: Config) -> list[Result | Skipped]:
    """Print-ready figures for the resume concern."""
    steps = 50 if cfg.quick else STEPS
    out: list[Result | Skipped] = []
    with tempfile.TemporaryDirectory(prefix="rsm-bench-resume-") as tmp:
        store = str(Path(tmp) / "s" / "store.duckdb")
        run_worker(CONCERN, "build_ours", {"store": store, "steps": steps})
        resumed = run_worker(CONCERN, "resume_ours", {"store": store, "steps": steps, "fork": False})
        forked = run_worker(CONCERN, "resume_ours", {"store": store, "steps": steps, "fork": True})
        out.append(Result(CONCERN, f"resume past {steps} completed steps, new process (store opened, all restored)",
                          resumed["wall_ms"], "ms", note=f"median restore {resumed['restore_ms']:.3f} ms"))  # fmt: skip
        out.append(Result(CONCERN, f"fork of a {steps}-step run from its last step, then the script on it",
                          forked["wall_ms"], "ms", note=f"the fork itself {forked['fork_ms']:.1f} ms"))  # fmt: skip
        if not cfg.dbos:
            out.append(Skipped(CONCERN, "resume vs DBOS", "--no-dbos given"))
            return out
        try:
            import dbos  # noqa: F401
        except ImportError:
            out.append(Skipped(CONCERN, "resume vs DBOS", "dbos is not installed (pip install 'resumable[bench]')"))
            return out
        try:
            built = run_worker(CONCERN, "build_dbos", {"folder": tmp, "steps": steps}, timeout=300)
            theirs = run_worker(CONCERN, "resume_dbos", {"folder": tmp, "steps": steps, "start_step": steps + 1},
                                timeout=300)  # fmt: skip
            their_fork = run_worker(CONCERN, "resume_dbos", {"folder": tmp, "steps": steps, "start_step": steps},
                                    timeout=300)  # fmt: skip
        except Exception as exc:
            out.append(Skipped(CONCERN, "resume vs DBOS", f"DBOS did not run: {str(exc).splitlines()[-1]}"))
            return out
        out.append(Result(CONCERN, f"resume past {steps} completed steps vs DBOS", resumed["wall_ms"], "ms",
                          f"DBOS fork_workflow past the last step ({theirs['executed']} executed)", theirs["wall_ms"],
                          "<= 0.2", "ours: new process, store opened; DBOS: launched, untimed"))  # fmt: skip
        out.append(Result(CONCERN, f"fork of a {steps}-step run from its last step vs DBOS", forked["wall_ms"], "ms",
                          f"DBOS fork_workflow from the last step ({their_fork['executed']} executed)",
                          their_fork["wall_ms"], "<= 0.2"))  # fmt: skip
        out.append(Result(CONCERN, f"resume past {steps} completed steps vs DBOS running the workflow anew",
                          resumed["wall_ms"], "ms", f"DBOS workflow of {steps} steps, executed", built["run_ms"],
                          note="no target: how a resume compares with executing the steps in DBOS"))  # fmt: skip
    return out
