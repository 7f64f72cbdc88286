"""The cost of finding in-place changes: a step that reads a large frame and does 1 s of work.

A ``%%durable_step`` fingerprints what it reads before and after its body, so an object changed
in place (``rng.normal()``, ``np.add.at(counts, ...)``) is checkpointed. This measures what that
adds to a step that reads a frame of the notebook size (1 GB full, 10 MB quick) and works for one
second, against the same step with ``--no-inplace-check``, in the same run. Target (issue 10 §4):
below 10 % of the step. A step reuses the fingerprint the previous reader took afterwards, so only
the first step to read the frame takes two; it is reported apart. Also: one fingerprint alone.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _data
from benchmarks._report import Result, Skipped
from benchmarks._util import Config, run_worker

CONCERN = "inplace"
WORK_S = 1.0


def _work(frame: Any) -> float:
    """One second of work that reads the frame (its sum) and then computes."""
    total = float(frame["amount"].sum())
    deadline = time.perf_counter() + WORK_S
    n = 0
    while time.perf_counter() < deadline:
        n += 1
    return total + n * 0.0


def measure(store: str, size: int, reps: int) -> dict[str, Any]:
    """Median seconds of the step with and without the check, and of one fingerprint of the frame."""
    from IPython.core.interactiveshell import InteractiveShell

    from resumable import _fingerprint
    from resumable._store import open_store

    os.environ["RESUMABLE_STORE"] = store
    os.environ["RESUMABLE_RUN_ID"] = "inplace-bench"
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "resumable")
    ip.user_ns["make_frame"] = lambda: _data.frame(size)
    ip.user_ns["work"] = _work
    ip.run_cell("frame = make_frame()").raise_error()  # a plain cell: the frame is not written to the store
    nbytes = _data.nbytes(ip.user_ns["frame"])
    ip.run_cell("%%durable_step warm_up\nresult = 0").raise_error()  # joining the run is not the check's cost
    checked, unchecked, prints = [], [], []
    for i in range(reps + 1):  # the first step to read the frame takes two fingerprints, later ones one
        for flag, into in (("", checked), (" --no-inplace-check", unchecked)):
            t0 = time.perf_counter()
            ip.run_cell(f"%%durable_step work_{i}{flag.replace(' --', '_').replace('-', '_')}{flag}\n"
                        "result = work(frame)").raise_error()  # fmt: skip
            into.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _fingerprint.fingerprint(ip.user_ns["frame"])
        prints.append(time.perf_counter() - t0)
    outputs = open_store(store).get_step("inplace-bench", "work_0")
    assert outputs is not None and outputs.outputs == ("result",), "the frame was taken as changed"
    med = statistics.median
    return {
        "nbytes": nbytes, "first_checked_s": checked[0], "checked_s": med(checked[1:]),
        "unchecked_s": med(unchecked), "fingerprint_s": med(prints),
    }  # fmt: skip


def run(cfg: Config) -> list[Result | Skipped]:
    """Figures for the in-place check."""
    label = _data.label("frame", cfg.notebook_size)
    with tempfile.TemporaryDirectory(prefix="rsm-bench-") as tmp:
        args = {"store": str(Path(tmp) / "s" / "store.duckdb"), "size": cfg.notebook_size, "reps": cfg.reps}
        try:
            m = run_worker("inplace", "measure", args)
        except Exception as exc:
            return [Skipped(CONCERN, "all", str(exc).strip().splitlines()[-1])]
    added = m["checked_s"] - m["unchecked_s"]
    share = added / m["unchecked_s"] * 100
    first = m["first_checked_s"] - m["unchecked_s"]
    return [
        Result(CONCERN, f"step reading a {label} with 1 s of work", m["checked_s"], "s",
               "same step with --no-inplace-check", m["unchecked_s"], "<= 1.1",
               note=f"the check adds {added * 1000:.0f} ms ({share:.1f} %); target below 10 %"),
        Result(CONCERN, f"first step reading that {label}", m["first_checked_s"], "s",
               "same step with --no-inplace-check", m["unchecked_s"],
               note=f"adds {first * 1000:.0f} ms ({first / m['unchecked_s'] * 100:.1f} %): nothing to reuse yet"),
        Result(CONCERN, f"one fingerprint of the {label}", m["fingerprint_s"] * 1000, "ms",
               note=f"{m['nbytes'] / m['fingerprint_s'] / 1e9:.1f} GB/s"),
    ]  # fmt: skip
