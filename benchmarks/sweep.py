"""Sweep speed-up: a 20-run sweep of a notebook whose steps sleep 1 s, on 1, 2 and 4 local workers.

Each run is a fresh kernel executing two durable steps that sleep 1 s each, so a run costs a kernel
start plus 2 s of waiting. The baseline is the same sweep on one worker, measured in the same
invocation; each worker count gets its own fresh store, so every run executes (none restores).
The figure is the wall time of ``resumable.sweep`` (Dask's local cluster start included); the
speed-up is the one-worker time divided by it. Sleeping steps do not compete for the CPU, but
starting kernels does, so on 2 cores the speed-up of 4 workers is bounded by kernel starts.
``--quick``: 4 runs on 1 and 2 workers. ``--smoke`` (the suite's check that the concern runs): 2 runs on 1
and 2 workers, steps sleeping 0.1 s.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks._report import Result, Skipped
from benchmarks._util import Config

CONCERN = "sweep"
STEPS = 2


def _notebook(path: Path, sleep_s: float) -> None:
    import nbformat

    cells = [
        nbformat.v4.new_code_cell("i = 0", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("%load_ext resumable\nimport time"),
        *(nbformat.v4.new_code_cell(f"%%durable_step s{k}\ntime.sleep({sleep_s})\nv{k} = i") for k in range(STEPS)),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))  # type: ignore[no-untyped-call]


def _timed(folder: Path, runs: int, workers: int, sleep_s: float) -> float:
    import resumable

    run_dir = folder / f"w{workers}"
    run_dir.mkdir()
    nb = run_dir / "sleepy.ipynb"
    _notebook(nb, sleep_s)
    started = time.perf_counter()
    result = resumable.sweep(
        nb, {"grid": {"i": list(range(runs))}}, workers=workers, store=run_dir / "store.duckdb", progress=False
    )
    took = time.perf_counter() - started
    if not result.ok:
        failed = next(r for r in result.runs if not r.ok)
        raise RuntimeError(f"run {failed.run_id} ended {failed.state}: {failed.error}")
    return took


def run(cfg: Config) -> list[Result | Skipped]:
    """Wall time of the sweep on 1, 2 and 4 workers; ratios against one worker."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return [Skipped(CONCERN, "all", "Dask is not installed (pip install 'resumable[dask]')")]
    runs, counts = (2, (1, 2)) if cfg.smoke else (4, (1, 2)) if cfg.quick else (20, (1, 2, 4))
    sleep_s = 0.1 if cfg.smoke else 1.0  # the smoke run checks that the concern runs: 6 s of sleeping was most of it
    with tempfile.TemporaryDirectory(prefix="rsm-bench-sweep-") as tmp:
        times = {w: _timed(Path(tmp), runs, w, sleep_s) for w in counts}
    one = times[1]
    out: list[Result | Skipped] = []
    for workers in counts[1:]:
        note = f"speed-up {one / times[workers]:.2f}x against 1 worker ({one:.1f} s); {STEPS} steps of {sleep_s:g} s"
        note += " per run"
        out.append(
            Result(CONCERN, f"{runs}-run sweep, {workers} workers", times[workers], "s", "1 worker", one, "", note)
        )
    return out
