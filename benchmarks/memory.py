"""Peak extra memory while checkpointing X bytes, next to pickle and joblib writing the same value.

Each payload is built in a fresh process; then, for each method in turn, the kernel's peak-RSS
mark is reset and read back after the write (``/proc/self/clear_refs``; a sampling thread where
that is missing). Target: a checkpoint adds at most 0.5 X.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import _data
from benchmarks._report import Result, Skipped
from benchmarks._util import Config, peak_extra_rss, run_worker

CONCERN = "memory"


def measure_peaks(kind: str, size: int, folder: str) -> dict[str, Any]:
    """Peak extra bytes of: a step checkpointing the value, the codec alone, pickle.dump, joblib.dump."""
    import joblib  # type: ignore[import-untyped]

    import resumable

    value = _data.make(kind, size)
    base = Path(folder)
    pipe = resumable.Pipeline("bench_mem", store=base / "s" / "store.duckdb")
    store = pipe.store
    peaks: dict[str, int] = {}
    # The first pickling of an Arrow-backed string column combines its chunks and keeps the result
    # in the frame (a one-time cost of the value, about a third of X here); without this warm-up it
    # lands on whichever method is measured first.
    with open(os.devnull, "wb") as sink:
        pickle.dump(value, sink, protocol=5)
    with pipe.run(run_id="mem") as run:
        run.step("warmup", lambda: 1)
        with peak_extra_rss() as m:
            run.step("save", lambda: value)
        peaks["step_save"] = m["peak_extra"]
    with peak_extra_rss() as m:
        store.encode("value", value)
    peaks["codec_encode"] = m["peak_extra"]
    with peak_extra_rss() as m, open(base / "v.pkl", "wb") as f:
        pickle.dump(value, f, protocol=5)
        os.fsync(f.fileno())
    peaks["pickle_dump"] = m["peak_extra"]
    with peak_extra_rss() as m:
        joblib.dump(value, base / "v.joblib")
    peaks["joblib_dump"] = m["peak_extra"]
    with pipe.run(run_id="mem") as run, peak_extra_rss() as m:
        restored = run.step("save", lambda: None)
    peaks["step_restore"] = m["peak_extra"]
    del restored
    return {"nbytes": _data.nbytes(value), "peaks": peaks, "exact": m["method"] == 1}


def run(cfg: Config) -> list[Result | Skipped]:
    """Peak extra MB per method, as a fraction of the payload's size."""
    out: list[Result | Skipped] = []
    cases = [("frame", s) for s in cfg.frame_sizes] + [("array", s) for s in cfg.array_sizes]
    for kind, size in cases:
        label = _data.label(kind, size)
        with tempfile.TemporaryDirectory(prefix="rsm-bench-") as tmp:
            try:
                m = run_worker("memory", "measure_peaks", {"kind": kind, "size": size, "folder": tmp})
            except Exception as exc:
                out.append(Skipped(CONCERN, label, str(exc).splitlines()[0]))
                continue
        x = m["nbytes"] / 1e6
        p = {k: v / 1e6 for k, v in m["peaks"].items()}
        how = "kernel peak-RSS mark" if m["exact"] else "1 ms RSS sampling"
        out += [
            Result(CONCERN, f"{label} checkpoint (step) peak extra", p["step_save"], "MB",
                   "payload X", x, "<= 0.5", how),
            Result(CONCERN, f"{label} codec encode only peak extra", p["codec_encode"], "MB", "payload X", x),
            Result(CONCERN, f"{label} pickle.dump to file peak extra", p["pickle_dump"], "MB", "payload X", x),
            Result(CONCERN, f"{label} joblib.dump peak extra", p["joblib_dump"], "MB", "payload X", x),
            Result(CONCERN, f"{label} restore (step) peak extra", p["step_restore"], "MB", "payload X", x,
                   note="a restore must hold the value itself: about 1 X is the floor"),
        ]  # fmt: skip
    return out
