"""Checkpoint throughput: save and restore through the real step path, next to baselines.

For each payload (DataFrames, a numpy array, a dict of objects) one fresh process measures, in
the same run and interleaved per repetition: raw write+fsync of as many bytes, pickle protocol 5
to a file (+fsync), joblib.dump/joblib.load, Arrow IPC (feather, +fsync) for DataFrames, a step
returning the value then a resume restoring it, and the codec alone (``store.encode`` and
``store.load_value``) to separate serialization from bookkeeping. Every timing starts after an
untimed ``os.sync()``, so no method pays for another's write-back. Reads come from a warm page
cache for every method alike (dropping caches needs privileges a benchmark should not take).
"""

from __future__ import annotations

import gc
import os
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import _data
from benchmarks._report import Result, Skipped, spread
from benchmarks._util import Config, fsync_path, run_worker, write_fsync

CONCERN = "throughput"


def _time(samples: dict[str, list[float]], key: str, fn: Callable[..., Any], *args: Any) -> Any:
    # joblib.dump does not fsync: without a sync here its write-back would slow whatever runs next.
    os.sync()
    gc.collect()
    t0 = time.perf_counter()
    out = fn(*args)
    samples.setdefault(key, []).append(time.perf_counter() - t0)
    return out


def _pickle_dump(value: object, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(value, f, protocol=5)
        f.flush()
        os.fsync(f.fileno())


def _joblib_dump_fsync(joblib: Any, value: object, path: Path) -> None:
    joblib.dump(value, path)
    fsync_path(path)


def _pickle_load(path: Path) -> object:
    with open(path, "rb") as f:
        return pickle.load(f)


def _feather_write(value: Any, path: Path) -> None:
    value.to_feather(path)
    fsync_path(path)


def measure_payload(kind: str, size: int, folder: str, reps: int) -> dict[str, Any]:
    """Median seconds of every save and restore method for one payload."""
    import joblib  # type: ignore[import-untyped]
    import numpy as np

    import resumable

    value = _data.make(kind, size)
    nbytes = _data.nbytes(value)
    raw = np.random.default_rng(1).bytes(nbytes)
    base = Path(folder)
    pipe = resumable.Pipeline("bench_io", store=base / "s" / "store.duckdb")
    store = pipe.store
    is_frame = kind == "frame"
    t: dict[str, list[float]] = {}
    payload_bytes = 0
    for rep in range(reps):
        raw_path = base / "raw.bin"
        _time(t, "raw_write", write_fsync, raw_path, raw)
        raw_path.unlink()
        # Every method writes a new file, as a new checkpoint does: on some file systems (this
        # machine's among them) overwriting a file's existing blocks is 2-3x faster than
        # allocating new ones, which would flatter whichever method rewrites its last file.
        for name in ("v.pkl", "v.joblib", "v.feather"):
            (base / name).unlink(missing_ok=True)
        _time(t, "pickle_dump", lambda: _pickle_dump(value, base / "v.pkl"))
        _time(t, "joblib_dump", lambda: joblib.dump(value, base / "v.joblib"))
        (base / "v.joblib").unlink()
        # joblib.dump does not fsync; the same dump made durable, as a checkpoint must be:
        _time(t, "joblib_dump_fsync", _joblib_dump_fsync, joblib, value, base / "v.joblib")
        if is_frame:
            _time(t, "feather_write", _feather_write, value, base / "v.feather")
        run_id = f"r{rep}"
        with pipe.run(run_id=run_id) as run:
            _time(t, "step_save", lambda: run.step("save", lambda: value))
        blob = _time(t, "codec_encode", lambda: store.encode("value", value))
        payload_bytes = blob.size
        # Restores: each result is dropped before the next one is timed.
        del blob
        _time(t, "pickle_load", lambda: _pickle_load(base / "v.pkl"))
        _time(t, "joblib_load", lambda: joblib.load(base / "v.joblib"))
        if is_frame:
            import pandas as pd

            _time(t, "feather_read", lambda: pd.read_feather(base / "v.feather"))
        with pipe.run(run_id=run_id) as run:
            restored = _time(t, "step_restore", lambda: run.step("save", lambda: None))
        assert restored is not None and restored is not value, "the step did not restore"
        del restored
        ref = next(r for r in store.checkpoint_refs(run_id, "save") if r.kind == "value")
        _time(t, "codec_decode", store.load_value, ref)
    sizes = {"pickle_file": (base / "v.pkl").stat().st_size, "payload": payload_bytes}
    return {
        "nbytes": nbytes,
        "sizes": sizes,
        "median_s": {k: statistics.median(v) for k, v in t.items()},
        "samples_s": t,
    }


def payloads(cfg: Config) -> list[tuple[str, int]]:
    """The (kind, size) cases of this run."""
    cases = [("frame", s) for s in cfg.frame_sizes] + [("dict", cfg.dict_objects)]
    return cases + [("array", s) for s in cfg.array_sizes]


def run(cfg: Config) -> list[Result | Skipped]:
    """MB/s of our save and restore next to each baseline."""
    out: list[Result | Skipped] = []
    for kind, size in payloads(cfg):
        label = _data.label(kind, size)
        with tempfile.TemporaryDirectory(prefix="rsm-bench-") as tmp:
            try:
                args = {"kind": kind, "size": size, "folder": tmp, "reps": cfg.reps}
                m = run_worker("throughput", "measure_payload", args)
            except Exception as exc:
                out.append(Skipped(CONCERN, label, str(exc).splitlines()[0]))
                continue
        out.extend(_results(label, m))
    return out


def _results(label: str, m: dict[str, Any]) -> list[Result | Skipped]:
    s = m["median_s"]
    reps = m.get("samples_s", {})
    mb = m["nbytes"] / 1e6

    def speed(key: str) -> float:
        return float(mb / s[key])

    def fig(name: str, ours: str, base_name: str, base: str, target: str = "", note: str = "") -> Result:
        # Per repetition, both speeds come from the same pass, so their ratio's spread is the noise.
        per_rep = [b / a for a, b in zip(reps.get(ours, []), reps.get(base, []), strict=False)]
        return Result(CONCERN, name, speed(ours), "MB/s", base_name, speed(base), target, note, spread(per_rep))

    note = f"{mb:,.0f} MB in memory, {m['sizes']['payload'] / 1e6:,.0f} MB checkpoint"
    save, enc = f"{label} checkpoint (step, fsync)", f"{label} codec encode only (fsync)"
    out: list[Result | Skipped] = [
        fig(save, "step_save", "joblib.dump", "joblib_dump", ">= 1", note),
        fig(save, "step_save", "joblib.dump + fsync", "joblib_dump_fsync"),
        fig(save, "step_save", "pickle p5 to file + fsync", "pickle_dump"),
        fig(save, "step_save", "raw write + fsync", "raw_write"),
        fig(enc, "codec_encode", "pickle p5 to file + fsync", "pickle_dump"),
    ]
    if "feather_write" in s:
        out.append(fig(save, "step_save", "feather write + fsync", "feather_write"))
    restore, dec = f"{label} restore (step)", f"{label} codec decode only"
    out += [
        fig(restore, "step_restore", "joblib.load", "joblib_load", ">= 1"),
        fig(restore, "step_restore", "pickle.load from file", "pickle_load"),
        fig(dec, "codec_decode", "pickle.load from file", "pickle_load"),
    ]
    if "feather_read" in s:
        out.append(fig(restore, "step_restore", "feather read", "feather_read"))
    return out
