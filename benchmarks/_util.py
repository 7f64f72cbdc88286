"""Shared helpers: sizes, timing, subprocess workers, fsynced writes and peak-memory probes."""

from __future__ import annotations

import gc
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MB = 1_000_000
GB = 1_000_000_000
RESULT_PREFIX = "@@RESULT "


@dataclass(frozen=True, slots=True)
class Config:
    """Sizes and repetitions of one benchmark run (``--quick`` picks the small set)."""

    quick: bool
    steps: int  # no-op steps timed per implementation
    plain_calls: int
    frame_sizes: tuple[int, ...]  # bytes of in-memory DataFrame
    array_sizes: tuple[int, ...]
    dict_objects: int
    reps: int
    notebook_size: int
    noop_cells: int
    probes: int  # store opens from other processes during a long run
    dbos: bool = True
    smoke: bool = False  # the suite's check that each concern runs: kernel-based concerns shrink to one repetition

    @classmethod
    def make(cls, quick: bool, dbos: bool = True, smoke: bool = False) -> Config:
        if smoke:  # the test suite's check that every concern runs: figures too small to mean anything
            return cls(True, 20, 200, (1 * MB,), (1 * MB,), 1_000, 2, 1 * MB, 3, 1, dbos, smoke=True)
        if quick:
            return cls(True, 100, 2000, (10 * MB,), (10 * MB,), 10_000, 3, 10 * MB, 30, 3, dbos)
        return cls(False, 500, 20_000, (100 * MB, 1 * GB), (1 * GB,), 10_000, 3, 1 * GB, 100, 10, dbos)


def median_ms(samples: list[float]) -> float:
    """Median of durations in seconds, in milliseconds."""
    return statistics.median(samples) * 1000


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``fn`` once; return (seconds, its result)."""
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def fsync_path(path: Path) -> None:
    """Flush a file written by someone else's code (joblib, pyarrow) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_fsync(path: Path, data: memoryview | bytes, chunk: int = 8 * 1024 * 1024) -> None:
    """Raw bandwidth baseline: write ``data`` in chunks, then fsync."""
    view = memoryview(data).cast("B")
    with open(path, "wb", buffering=0) as f:
        for start in range(0, view.nbytes, chunk):
            f.write(view[start : start + chunk])
        os.fsync(f.fileno())


def run_worker(
    module: str, func: str, args: dict[str, Any], timeout: float = 1800, env: dict[str, str] | None = None
) -> Any:
    """Run ``benchmarks.<module>.<func>(**args)`` in a fresh interpreter and return its JSON result.

    A fresh process per case keeps memory peaks, DuckDB handles and DBOS's globals from one case out
    of the next.
    """
    cmd = [sys.executable, "-m", "benchmarks._worker", module, func, json.dumps(args)]
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=full_env, cwd=_root())
    for text in reversed(proc.stdout.splitlines()):
        if text.startswith(RESULT_PREFIX):
            return json.loads(text[len(RESULT_PREFIX) :])
    tail = (proc.stderr or proc.stdout)[-2000:]
    msg = f"worker {module}.{func} exited {proc.returncode} without a result:\n{tail}"
    raise RuntimeError(msg)


def _root() -> Path:
    return Path(__file__).resolve().parent.parent


# The folder of the checkout's compiled bytecode: made once per benchmark run, removed at exit.
_BYTECODE: dict[str, Any] = {}


@contextmanager
def bytecode_cache() -> Iterator[dict[str, str]]:
    """Environment for workers whose kernels import the checkout: its bytecode compiled once, untimed.

    An installed package ships its ``.pyc`` files; a checkout run with ``PYTHONDONTWRITEBYTECODE``
    (as on the benchmark machine) compiles every module of ``resumable`` from source in every new
    kernel, about 0.1-0.2 s of each ``%load_ext resumable`` that no user of a wheel pays. As in the
    import concern, the bytecode goes to a private folder (``PYTHONPYCACHEPREFIX``), compiled
    before anything is timed, once for the whole benchmark run; nothing is written beside the
    sources. ``RESUMABLE_BENCH_SOURCE=1`` keeps compiling from source, to compare.
    """
    if os.environ.get("RESUMABLE_BENCH_SOURCE") == "1":
        yield {}
        return
    if not _BYTECODE:
        import tempfile

        folder = tempfile.TemporaryDirectory(prefix="rsm-bench-pyc-")  # removed when the run exits
        root = _root()
        env = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": folder.name}
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(root / "resumable"), str(root / "benchmarks")],
            env={**os.environ, **env}, cwd=root, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        _BYTECODE["folder"] = folder
    yield {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": _BYTECODE["folder"].name}


# ---------------------------------------------------------------------------- memory


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for text in f:
            if text.startswith(field + ":"):
                return int(text.split()[1])
    return -1


def _trim() -> None:
    gc.collect()
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass


@contextmanager
def peak_extra_rss() -> Iterator[dict[str, int]]:
    """Measure the peak resident memory added while the block runs, in bytes.

    On Linux the kernel's high-water mark is reset through ``/proc/self/clear_refs`` so the peak is
    exact; elsewhere a 1 ms sampling thread (psutil) estimates it.
    """
    _trim()
    out: dict[str, int] = {"peak_extra": 0, "method": 0}
    before = _status_kb("VmRSS")
    exact = False
    if before > 0:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            exact = _status_kb("VmHWM") <= before + 1024
        except OSError:
            exact = False
    if exact:
        yield out
        out["peak_extra"] = max(0, (_status_kb("VmHWM") - before) * 1024)
        out["method"] = 1
        return
    import psutil

    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["peak_extra"] = max(0, peak[0] - base)
        out["method"] = 2


def _git(*args: str) -> str:
    try:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, cwd=_root(), timeout=10, check=False)
    except OSError:
        return ""
    return proc.stdout.strip()


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for text in f:
                if text.startswith("model name"):
                    cpu = text.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for name in ("resumable", "duckdb", "cloudpickle", "pandas", "numpy", "pyarrow", "joblib", "dbos", "IPython"):
        try:
            versions[name] = importlib.metadata.version(name.lower())
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "commit": _git("rev-parse", "--short", "HEAD"),
        "library_changes_uncommitted": bool(_git("status", "--porcelain", "--", "resumable")),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
    }
