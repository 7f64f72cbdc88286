"""A mid-size step output against DBOS: a 96 MB DataFrame returned by a step, saved and restored.

Ours: ``run.step`` returning the frame inside ``with pipe.run()`` (the real path: pickle protocol 5,
digest, payload file fsynced, the completing transaction), then a resumed run whose step restores
it. DBOS: a ``@DBOS.step`` returning the same frame inside a workflow, system database on SQLite
(DBOS pickles the value and stores it base64-encoded in that database); its restore is a fork of
the workflow from the step after it (``DBOS.fork_workflow``), where the step returns its recorded
output. Each side is timed around the step call only, in its own fresh process, ``reps`` times;
every timing starts after an untimed ``os.sync()``. Target: save at least 3 x and restore at least
5 x faster than DBOS.
"""

from __future__ import annotations

import gc
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _data
from benchmarks._report import Result, Skipped, spread
from benchmarks._util import MB, Config, run_worker

CONCERN = "midsize"


def _ready() -> None:
    os.sync()
    gc.collect()


def measure_ours(folder: str, size: int, reps: int) -> dict[str, Any]:
    """Seconds of each save (a new step) and each restore (the resumed run's step)."""
    import resumable

    value = _data.frame(size)
    pipe = resumable.Pipeline("bench_mid", store=Path(folder) / "s" / "store.duckdb")
    with pipe.run(run_id="warmup") as run:
        run.step("warm", lambda: _data.frame(MB))
    save, restore = [], []
    for rep in range(reps):
        with pipe.run(run_id=f"r{rep}") as run:
            _ready()
            t0 = time.perf_counter()
            run.step("big", lambda: value)
            save.append(time.perf_counter() - t0)
        with pipe.run(run_id=f"r{rep}") as run:
            _ready()
            t0 = time.perf_counter()
            restored = run.step("big", lambda: None)
            restore.append(time.perf_counter() - t0)
        assert restored is not None and restored.shape == value.shape, "the step did not restore"
        del restored
    return {"nbytes": _data.nbytes(value), "save_s": save, "restore_s": restore}


def measure_dbos(folder: str, size: int, reps: int) -> dict[str, Any]:
    """Seconds of the same step under DBOS: executed in a workflow, then restored by a fork of it."""
    from dbos import DBOS, DBOSConfig, SetWorkflowID

    logging.getLogger("dbos").setLevel(logging.WARNING)
    config: DBOSConfig = {
        "name": "bench_mid",
        "system_database_url": f"sqlite:///{Path(folder) / 'dbos.sqlite'}",
        "run_admin_server": False,  # type: ignore[typeddict-unknown-key]
        "log_level": "WARNING",
    }
    DBOS(config=config)
    value = _data.frame(size)
    calls: list[int] = []
    times: list[float] = []

    @DBOS.step()
    def big() -> Any:
        calls.append(1)
        return value

    @DBOS.workflow()
    def workflow() -> int:
        _ready()
        t0 = time.perf_counter()
        out = big()
        times.append(time.perf_counter() - t0)
        return len(out)

    DBOS.launch()
    save, restore = [], []
    try:
        for rep in range(reps):
            with SetWorkflowID(f"mid-{rep}"):
                workflow()
            save.append(times[-1])
            executed = len(calls)
            # Step 1 is `big`; forking from step 2 copies its recorded output into the new workflow.
            DBOS.fork_workflow(f"mid-{rep}", 2).get_result()
            restore.append(times[-1])
            assert len(calls) == executed, "DBOS executed the step again instead of restoring it"
    finally:
        DBOS.destroy()
    return {"save_s": save, "restore_s": restore}


def run(cfg: Config) -> list[Result | Skipped]:
    """Save and restore of a mid-size frame, ours against DBOS in the same run."""
    size = cfg.frame_sizes[0] if cfg.quick else 96 * MB
    label = _data.label("frame", size)
    if not cfg.dbos:
        return [Skipped(CONCERN, f"{label} step vs DBOS", "--no-dbos given")]
    try:
        import dbos  # noqa: F401
    except ImportError:
        return [Skipped(CONCERN, f"{label} step vs DBOS", "dbos is not installed (pip install 'resumable[bench]')")]
    with tempfile.TemporaryDirectory(prefix="rsm-bench-") as tmp:
        args = {"folder": tmp, "size": size, "reps": cfg.reps}
        ours = run_worker("midsize", "measure_ours", args)
        try:
            theirs = run_worker("midsize", "measure_dbos", args, timeout=600)
        except Exception as exc:  # report rather than crash: DBOS is a comparison, not ours
            return [Skipped(CONCERN, f"{label} step vs DBOS", f"DBOS did not run: {str(exc).splitlines()[-1]}")]
    med = statistics.median
    note = f"{ours['nbytes'] / 1e6:,.0f} MB in memory; median of {cfg.reps}"
    out: list[Result | Skipped] = []
    for what, key, target in (("save", "save_s", ">= 3"), ("restore", "restore_s", ">= 5")):
        # Speeds (higher is better): the ratio is DBOS's time over ours, one per repetition for the noise.
        per_rep = [b / a for a, b in zip(ours[key], theirs[key], strict=False)]
        mb = ours["nbytes"] / 1e6
        out.append(
            Result(CONCERN, f"{label} step output {what}", mb / med(ours[key]), "MB/s",
                   f"DBOS step {what} (SQLite, base64 pickle)", mb / med(theirs[key]), target, note, spread(per_rep))
        )  # fmt: skip
    return out
