"""A second process opening the store while a long run of steps executes in the first.

The first process runs no-op steps back to back until told to stop; meanwhile fresh processes
each time ``resumable.Pipeline(...).store.list_runs()`` (imports excluded). Target: within 1 s.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._report import Result, Skipped
from benchmarks._util import Config, run_worker

CONCERN = "open"


def long_run(store: str, stop_file: str, ready_file: str, max_s: float = 600) -> dict[str, Any]:
    """Run no-op steps until ``stop_file`` appears; report how many ran."""
    import resumable

    pipe = resumable.Pipeline("bench_long", store=store)
    stop = Path(stop_file)
    n = 0
    deadline = time.monotonic() + max_s
    with pipe.run(run_id="long") as run:
        while not stop.exists() and time.monotonic() < deadline:
            run.step(f"s{n}", lambda: None)
            n += 1
            if n == 20:
                Path(ready_file).touch()
    return {"steps": n}


def probe(store: str) -> dict[str, Any]:
    """Seconds to open the store and list its runs from this (new) process."""
    import resumable

    t0 = time.perf_counter()
    runs = resumable.Pipeline("bench_probe", store=store).store.list_runs()
    return {"open_s": time.perf_counter() - t0, "runs": len(runs)}


def run(cfg: Config) -> list[Result | Skipped]:
    """Open times from other processes while a run holds the store busy."""
    with tempfile.TemporaryDirectory(prefix="rsm-bench-") as tmp:
        store = str(Path(tmp) / "s" / "store.duckdb")
        stop, ready = Path(tmp) / "stop", Path(tmp) / "ready"
        cmd = [sys.executable, "-m", "benchmarks._worker", "open_store", "long_run",
               f'{{"store": "{store}", "stop_file": "{stop}", "ready_file": "{ready}"}}']  # fmt: skip
        child = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not ready.exists():
                if child.poll() is not None or time.monotonic() > deadline:
                    return [Skipped(CONCERN, "open store during a run", "the long run did not start")]
                time.sleep(0.01)
            opens = [run_worker("open_store", "probe", {"store": store})["open_s"] for _ in range(cfg.probes)]
            still_running = child.poll() is None
        finally:
            stop.touch()
            out, _ = child.communicate(timeout=120)
    steps = next((line for line in out.splitlines() if line.startswith("@@RESULT")), "")
    order = ", ".join(f"{t:.2f}" for t in opens)
    note = f"{len(opens)} probes in order: {order} s; writer {'kept running' if still_running else 'had ENDED'}"
    note += f", {steps.split(':')[-1].strip(' }')} steps" if steps else ""
    name = "open store + list_runs from another process during a run"
    return [
        Result(CONCERN, f"{name} (median)", sorted(opens)[len(opens) // 2], "s", "limit", 1.0, "<= 1", note),
        Result(CONCERN, f"{name} (worst)", max(opens), "s", "limit", 1.0, "<= 1", note),
    ]
