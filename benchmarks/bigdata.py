"""A 1 GB checkpoint in a notebook: what the user waits, when it is durable, restore and memory.

On a real IPython ``InteractiveShell`` (``run_cell``), per repetition and interleaved:

1. the cell ``x = template.copy(deep=True)`` (it builds the frame) without the magic, then the same
   cell under ``%%durable_step``: the difference is the time the user waits for the checkpoint;
2. ``joblib.dump`` of the frame (no fsync: joblib does not) and a raw write + fsync of as many
   bytes as the checkpoint file holds (a 64 MiB random buffer written over and over);
3. ``resumable.load`` of the checkpoint against ``joblib.load`` of joblib's file;
4. peak extra memory while a ``%%durable_step`` cell checkpoints the frame (``y = template``: the
   body allocates nothing), from the kernel's peak-RSS mark;
5. after those repetitions, as many more: a no-op step cell run at once after a new frame's cell
   returns, against the same cell once nothing is pending (the first may wait for the group commit).

A ``%%durable_step`` cell returns once its completion is in the process's completion log, with its
payload file written behind (renamed, write-back started, not yet fsynced: docs/durability.md); the
group commit then fsyncs the payload and commits the completed row. So the time until durable is
taken apart from the wait: from the cell's start until no completion of this process is pending
any more (the row committed, the payload synced), polled every 2 ms, minus the cell without the
magic. Every timed write starts after an untimed ``os.sync()``, every write goes to a new file.
Targets: wait <= 1.0 x joblib.dump; durable <= 1.1 x raw write + fsync; restore >= 2 x joblib.load;
peak extra memory <= 0.25 x the frame.
"""

from __future__ import annotations

import gc
import os
import pickle
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _data
from benchmarks._report import Result, Skipped, spread
from benchmarks._util import Config, peak_extra_rss, run_worker

CONCERN = "bigdata"
RUN_ID = "big-bench"
RAW_CHUNK = 64 * 1024 * 1024


def _timed(fn: Any) -> float:
    os.sync()
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _committed(store: str) -> None:
    """Wait until no kernel cell of this process is pending for ``store``: its row committed, its payloads synced."""
    from resumable._store import cells, filelock

    key, deadline = str(filelock.lock_path(Path(store))), time.monotonic() + 300
    while cells.has_pending(key):
        if time.monotonic() > deadline:
            raise RuntimeError("the group commit did not write the cell within 300 s")
        time.sleep(0.002)


def _magic_cell(ip: Any, cell: str, store: str) -> tuple[float, float]:
    """Seconds until the cell returned, and until its completion was committed (durable)."""
    from benchmarks.notebook import _cell

    os.sync()
    gc.collect()
    t0 = time.perf_counter()
    _cell(ip, cell)
    returned = time.perf_counter() - t0
    _committed(store)
    return returned, time.perf_counter() - t0


def _raw_write(path: Path, chunk: bytes, nbytes: int) -> None:
    with open(path, "wb", buffering=0) as f:
        left = nbytes
        while left > 0:
            left -= f.write(memoryview(chunk)[: min(left, len(chunk))])
        os.fsync(f.fileno())


def measure(folder: str, size: int, reps: int) -> dict[str, Any]:
    """Per repetition, seconds of each cell and baseline, and the peak extra bytes of a checkpoint."""
    import joblib  # type: ignore[import-untyped]
    import numpy as np

    import resumable
    from benchmarks.notebook import _cell, _shell

    base = Path(folder)
    store = str(base / "s" / "store.duckdb")
    os.environ["RESUMABLE_STORE"] = store
    os.environ["RESUMABLE_RUN_ID"] = RUN_ID
    ip = _shell()
    template = _data.frame(size)
    with open(os.devnull, "wb") as sink:  # the frame's one-time cost of combining its string chunks
        pickle.dump(template, sink, protocol=5)
    ip.user_ns["template"] = template
    _cell(ip, f"%durable_run bench_big --run-id {RUN_ID}")
    _cell(ip, "%%durable_step warm\nw = template.head(1000).copy()")
    chunk = np.random.default_rng(1).bytes(RAW_CHUNK)
    refs = resumable.Pipeline("bench_big", store=store).store
    t: dict[str, list[float]] = {}
    peaks: list[float] = []
    checkpoint = 0
    for rep in range(reps):
        # A new frame each time, as a cell that builds one makes: a checkpoint of bytes the store already
        # holds (the same frame again) is synced before it takes the name, so it is not written behind.
        builds = f"x = template.copy(deep=True)\nx.iat[0, 0] = {rep}"
        t.setdefault("plain_cell", []).append(_timed(lambda: _cell(ip, builds)))  # noqa: B023
        del ip.user_ns["x"]
        returned, durable = _magic_cell(ip, f"%%durable_step big_{rep}\n{builds}", store)
        t.setdefault("magic_cell", []).append(returned)
        t.setdefault("magic_durable", []).append(durable)
        del ip.user_ns["x"]
        checkpoint = next(r.size for r in refs.checkpoint_refs(RUN_ID, f"big_{rep}") if r.name == "x")
        dumped = base / f"v{rep}.joblib"
        t.setdefault("joblib_dump", []).append(_timed(lambda: joblib.dump(template, dumped)))  # noqa: B023
        raw = base / f"raw{rep}.bin"
        t.setdefault("raw_write", []).append(_timed(lambda: _raw_write(raw, chunk, checkpoint)))  # noqa: B023
        raw.unlink()
        loaded: list[Any] = []
        t.setdefault("restore", []).append(
            _timed(lambda: loaded.append(resumable.load(RUN_ID, f"big_{rep}", "x", store=store)))  # noqa: B023
        )
        assert loaded[0].shape == template.shape, "the checkpoint did not restore the frame"
        loaded.clear()
        t.setdefault("joblib_load", []).append(_timed(lambda: loaded.append(joblib.load(dumped))))  # noqa: B023
        loaded.clear()
        dumped.unlink()
        os.sync()
        with peak_extra_rss() as m:
            _cell(ip, f"%%durable_step mem_{rep}\ny = template")
            _committed(store)
        peaks.append(m["peak_extra"])
        del ip.user_ns["y"]
    for rep in range(reps):
        # A no-op step cell run at once after a new frame's cell: its transaction waits for that cell's
        # group commit (the payload's fsync, then the row) when the commit is under way. Its own loop,
        # after the others: its writes, in theirs, made the disk slower for the next repetition's cells.
        os.sync()
        _cell(ip, f"%%durable_step next_{rep}\nx = template.copy(deep=True)\nx.iat[0, 0] = -{rep + 1}")
        t.setdefault("next_step_cell", []).append(_cell(ip, f"%%durable_step right_after_{rep}\nn = {rep}"))
        _committed(store)
        t.setdefault("step_cell", []).append(_cell(ip, f"%%durable_step once_durable_{rep}\nn = {rep}"))
        del ip.user_ns["x"]
    return {"nbytes": _data.nbytes(template), "checkpoint": checkpoint, "s": t, "peaks": peaks}


def run(cfg: Config) -> list[Result | Skipped]:
    """The four figures of a large checkpoint, each against its baseline of the same run."""
    size = cfg.notebook_size
    label = _data.label("frame", size)
    with tempfile.TemporaryDirectory(prefix="rsm-bench-") as tmp:
        try:
            m = run_worker("bigdata", "measure", {"folder": tmp, "size": size, "reps": cfg.reps})
        except Exception as exc:
            return [Skipped(CONCERN, "all", str(exc).strip().splitlines()[-1])]
    s, med = m["s"], statistics.median
    wait = [a - b for a, b in zip(s["magic_cell"], s["plain_cell"], strict=True)]
    durable = [a - b for a, b in zip(s["magic_durable"], s["plain_cell"], strict=True)]
    mb, x = m["nbytes"] / 1e6, m["nbytes"]
    note = f"{mb:,.0f} MB in memory, {m['checkpoint'] / 1e6:,.0f} MB checkpoint; median of {cfg.reps}"

    def per_rep(ours: list[float], base: list[float]) -> float | None:
        return spread([a / b for a, b in zip(ours, base, strict=True)])

    return [
        Result(CONCERN, f"{label} %%durable_step cell: time the user waits", med(wait), "s",
               "joblib.dump (no fsync)", med(s["joblib_dump"]), "<= 1.0",
               note + f"; cell {med(s['magic_cell']):.2f} s, without the magic {med(s['plain_cell']):.2f} s",
               per_rep(wait, s["joblib_dump"])),
        Result(CONCERN, f"{label} %%durable_step cell: time until durable", med(durable), "s",
               "raw write + fsync of as many bytes", med(s["raw_write"]), "<= 1.1",
               "until the completed row is committed (payload fsynced), from the cell's start, minus the plain "
               f"cell; committed {med(s['magic_durable']):.2f} s after the cell started",
               per_rep(durable, s["raw_write"])),
        Result(CONCERN, f"{label} restore (resumable.load)", mb / med(s["restore"]), "MB/s",
               "joblib.load", mb / med(s["joblib_load"]), ">= 2", note,
               per_rep(s["joblib_load"], s["restore"])),
        Result(CONCERN, f"{label} %%durable_step cell: peak extra memory checkpointing", med(m["peaks"]) / 1e6,
               "MB", "the frame X", x / 1e6, "<= 0.25", "kernel peak-RSS mark", spread(m["peaks"])),
        Result(CONCERN, f"no-op step cell run at once after a {label} cell", med(s["next_step_cell"]) * 1e3, "ms",
               "the same once nothing is pending", med(s["step_cell"]) * 1e3, "",
               "it waits for the large cell's group commit if under way", per_rep(s["next_step_cell"], s["step_cell"])),
    ]  # fmt: skip
