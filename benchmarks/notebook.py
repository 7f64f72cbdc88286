"""Notebook costs, on a real IPython InteractiveShell driven by ``run_cell``.

1. Skipping a completed large step (its cell runs again in the same run: outputs restored, body
   not executed) against the pure restore ``resumable.load`` of the same output. Target <= 1.2x.
2. A no-op cell under ``%%durable_step`` against the same cell without the magic. Target: at most
   10 ms added.
3. Deciding that a completed step restores: ten small inputs add at most 1 ms, and reading a
   restored large frame adds nothing proportional to it (against a skipped no-input step).

Needs the notebook magics (``%load_ext resumable``); without them this concern is skipped with a
message saying so.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _data
from benchmarks._report import Result, Skipped
from benchmarks._util import Config, run_worker

CONCERN = "notebook"
RUN_ID = "nb-bench"


def _shell() -> Any:
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "resumable")
    if ip.magics_manager is None or "durable_step" not in ip.magics_manager.magics["cell"]:
        msg = "%load_ext resumable did not register %%durable_step"
        raise RuntimeError(msg)
    return ip


def _cell(ip: Any, source: str) -> float:
    t0 = time.perf_counter()
    result = ip.run_cell(source, store_history=True)
    elapsed = time.perf_counter() - t0
    result.raise_error()
    return elapsed


def measure(store: str, size: int, cells: int, reps: int) -> dict[str, Any]:
    """Median seconds: a skipped large step, its pure restore, no-op cells with and without the magic."""
    import resumable

    os.environ["RESUMABLE_STORE"] = store
    os.environ["RESUMABLE_RUN_ID"] = RUN_ID
    ip = _shell()
    calls: list[int] = []

    def make() -> Any:
        calls.append(1)
        return _data.frame(size)

    ip.user_ns["make_payload"] = make
    _cell(ip, f"%durable_run bench_nb --run-id {RUN_ID}")
    big = "%%durable_step big\nx = make_payload()"
    _cell(ip, big)
    nbytes = _data.nbytes(ip.user_ns["x"])
    skip, restore = [], []
    for _ in range(reps):
        del ip.user_ns["x"]
        gc.collect()
        skip.append(_cell(ip, big))
        assert "x" in ip.user_ns and len(calls) == 1, "the completed step ran its body again"
        del ip.user_ns["x"]
        gc.collect()
        t0 = time.perf_counter()
        value = resumable.load(RUN_ID, "big", "x", store=store)
        restore.append(time.perf_counter() - t0)
        del value
        ip.user_ns["x"] = None
    plain, magic, again = [], [], []
    for i in range(cells):
        plain.append(_cell(ip, "pass"))
        magic.append(_cell(ip, f"%%durable_step noop_{i}\npass"))
    for i in range(cells):
        again.append(_cell(ip, f"%%durable_step noop_{i}\npass"))
    # Deciding restore or execute: ten small inputs from plain cells, and one restored large frame
    # (fingerprinted by its checkpoint digest, never hashed), against the no-input skip above.
    for k in range(10):
        _cell(ip, f"a{k} = {k}")
    total = " + ".join(f"a{k}" for k in range(10))
    _cell(ip, big)  # x is the restored frame again
    ten, reads_big, ten_new, ten_plain = [], [], [], []
    for i in range(cells):
        ten_plain.append(_cell(ip, f"s = {total}"))
        ten_new.append(_cell(ip, f"%%durable_step ten_{i}\ns = {total}"))
        _cell(ip, f"%%durable_step len_{i}\nn = len(x)")
    for i in range(cells):
        ten.append(_cell(ip, f"%%durable_step ten_{i}\ns = {total}"))
        reads_big.append(_cell(ip, f"%%durable_step len_{i}\nn = len(x)"))
    med = statistics.median
    return {
        "nbytes": nbytes,
        "skip_s": med(skip),
        "restore_s": med(restore),
        "plain_cell_s": med(plain),
        "magic_cell_s": med(magic),
        "restored_cell_s": med(again),
        "restored_ten_inputs_s": med(ten),
        "new_ten_inputs_s": med(ten_new),
        "plain_ten_inputs_s": med(ten_plain),
        "restored_reads_big_s": med(reads_big),
    }


def run(cfg: Config) -> list[Result | Skipped]:
    """Figures for the notebook concern, or a skip when the magics are not there yet."""
    if importlib.util.find_spec("resumable._magics") is None:
        return [Skipped(CONCERN, "all", "the notebook magics (resumable._magics) are not in this checkout yet")]
    label = _data.label("frame", cfg.notebook_size)
    with tempfile.TemporaryDirectory(prefix="rsm-bench-") as tmp:
        args = {"store": str(Path(tmp) / "s" / "store.duckdb"), "size": cfg.notebook_size,
                "cells": cfg.noop_cells, "reps": cfg.reps}  # fmt: skip
        try:
            m = run_worker("notebook", "measure", args)
        except Exception as exc:
            return [Skipped(CONCERN, "all", str(exc).strip().splitlines()[-1])]
    ms = 1000.0
    added = (m["magic_cell_s"] - m["plain_cell_s"]) * ms
    ten_added = (m["restored_ten_inputs_s"] - m["restored_cell_s"]) * ms
    big_added = (m["restored_reads_big_s"] - m["restored_cell_s"]) * ms
    new_ten_added = (m["new_ten_inputs_s"] - m["plain_ten_inputs_s"]) * ms
    return [
        Result(CONCERN, f"skip completed step ({label})", m["skip_s"], "s",
               "pure restore (resumable.load)", m["restore_s"], "<= 1.2"),
        Result(CONCERN, "no-op %%durable_step cell (new step)", m["magic_cell_s"] * ms, "ms",
               "same cell without the magic", m["plain_cell_s"] * ms, note=f"adds {added:.2f} ms; target <= 10 ms "
               f"added: {'ok' if added <= 10 else 'MISS'}"),
        Result(CONCERN, "no-op %%durable_step cell (completed, skipped)", m["restored_cell_s"] * ms, "ms",
               "same cell without the magic", m["plain_cell_s"] * ms,
               note=f"adds {(m['restored_cell_s'] - m['plain_cell_s']) * ms:.2f} ms"),
        Result(CONCERN, "no-op %%durable_step cell with ten small inputs (new step)", m["new_ten_inputs_s"] * ms,
               "ms", "same cell without the magic", m["plain_ten_inputs_s"] * ms,
               note=f"adds {new_ten_added:.2f} ms; target <= 5 ms added: {'ok' if new_ten_added <= 5 else 'MISS'}"),
        Result(CONCERN, "skipped step with ten small inputs", m["restored_ten_inputs_s"] * ms, "ms",
               "skipped no-op step (no inputs)", m["restored_cell_s"] * ms,
               note=f"inputs add {ten_added:.2f} ms; target <= 1 ms: {'ok' if ten_added <= 1 else 'MISS'}"),
        Result(CONCERN, f"skipped step reading a restored {label}", m["restored_reads_big_s"] * ms, "ms",
               "skipped no-op step (no inputs)", m["restored_cell_s"] * ms,
               note=f"adds {big_added:.2f} ms: nothing proportional to the frame (its checkpoint digest is the "
               f"fingerprint): {'ok' if big_added <= 1 else 'MISS'}"),
    ]  # fmt: skip
