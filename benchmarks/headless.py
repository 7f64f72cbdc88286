"""Headless runs: resume after a kernel death, and what ``resumable execute`` adds per step cell.

Needs ``resumable execute`` (``resumable.execute_notebook``); where it is missing, the concern is
skipped with a message saying so.

1. Resume after a kernel death, against kernel start + restores + 0.3 s. A notebook computes a
   large step, then a cell kills its own kernel the first time it runs (it touches a marker file
   first, so the instant of death is known); ``execute_notebook(max_restarts=1)`` starts a new
   kernel and runs again from the top, restoring the step. Resume cost = the restored step's end -
   instant of death (also reported: until the executor returns); baseline = a kernel start
   (started as the executor starts one) + the pure restore of the step (``resumable.load`` in a
   new process, as the new kernel restores it; the note also gives the ratio with the restore
   timed in a warm process, the stricter reading of earlier rounds) + 0.3 s, both taken before
   and after each resume. Cells stamp the time into a file, so the note splits the resume into
   its phases.
2. Step cells: a notebook of ``%load_ext resumable`` and N trivial cells ``%%durable_step sI`` /
   ``xI = I`` (40 in a full run). ``resumable execute`` of a new run against nbclient running the
   same notebook (target: at most 15 ms added per step cell), and ``resumable execute`` restoring
   all of it against nbclient running the notebook without the magic (target: at most 1.5 x).
   Every way reads the notebook, executes it on a fresh kernel and writes the executed copy, as a
   scheduled run would; the ways take turns in each repetition and the medians are compared. The
   full restore against plain nbclient takes more turns than the rest (alternating which goes
   first), since a plain run of about a second swings by a third between turns on a shared machine.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import _data
from benchmarks._report import Result, Skipped, spread
from benchmarks._util import Config, bytecode_cache, run_worker

RESUME_SLACK_S = 0.3
ADDED_PER_CELL_MS = 15.0

CONCERN = "headless"
RUN_ID = "headless-bench"


def _stamp(stamps: Path, what: str) -> str:
    return f"import time\nwith open({str(stamps)!r}, 'a') as f:\n    f.write(f'{what} {{time.time()}}\\n')"


def _notebook(path: Path, marker: Path, stamps: Path, size: int) -> None:
    import nbformat

    cell: Callable[[str], Any] = nbformat.v4.new_code_cell
    cells = [
        cell(_stamp(stamps, "first")),
        cell("%load_ext resumable\nimport numpy as np"),
        cell(f"%%durable_step big\nx = np.random.default_rng(0).random({size // 8})"),
        cell(_stamp(stamps, "step")),
        cell(
            "import os, pathlib\n"
            f"marker = pathlib.Path({str(marker)!r})\n"
            "if not marker.exists():\n"
            "    marker.write_text(repr(__import__('time').time()))\n"
            "    os._exit(1)\n"
        ),
        cell("print(len(x))"),
        cell(_stamp(stamps, "end")),
    ]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), str(path))  # type: ignore[no-untyped-call]


def _kernel_start(cwd: str, sockets: str) -> float:
    """Seconds from launching a kernel to its answering, the way the executor starts one.

    The executor's kernel manager (``resumable._headless.kernel``: Unix sockets in a private folder,
    nbclient's in-memory history) in the notebook's working folder; launch, connect, wait for ready.
    """
    from jupyter_core.utils import run_sync

    from resumable._headless.kernel import ipc_config

    try:
        from resumable._headless.kernel import manager_class

        manager = manager_class()
    except ImportError:  # a checkout from before the executor had its own manager (to compare with it)
        from jupyter_client.manager import AsyncKernelManager

        manager = AsyncKernelManager
    km = manager(kernel_name="python3", config=ipc_config(sockets))
    t0 = time.perf_counter()
    run_sync(km.start_kernel)(cwd=cwd, extra_arguments=["--HistoryManager.hist_file=:memory:"])
    kc = km.client()
    kc.start_channels()
    run_sync(kc.wait_for_ready)(timeout=60)
    took = time.perf_counter() - t0
    kc.stop_channels()
    run_sync(km.shutdown_kernel)(now=True)
    return took


def measure(folder: str, size: int, reps: int = 1) -> dict[str, Any]:
    """Median seconds over ``reps`` deaths: resume after the death, kernel start, pure restore."""
    import resumable

    base = Path(folder)
    store = str(base / "s" / "store.duckdb")
    nb, out, marker, stamps = base / "bench.ipynb", base / "out.ipynb", base / "died", base / "stamps"
    _notebook(nb, marker, stamps, size)
    execute = resumable.execute_notebook  # type: ignore[attr-defined]
    # The kernel runs in the checkout being measured, so it imports the same resumable as this process.
    root = str(Path(__file__).resolve().parent.parent)
    samples: list[dict[str, float]] = []
    sockets = tempfile.mkdtemp(prefix="rsm-bench-kernel-")
    for _ in range(reps):
        # Each repetition: the first pass restores (or, the first time, computes) the step and its
        # kernel dies; the second pass, on a new kernel, restores it again. The second pass is timed.
        # The budget's kernel start and restore are taken before and after it (medians of the two),
        # so a drift of the machine's load during the repetition weighs on both sides alike.
        marker.unlink(missing_ok=True)
        stamps.unlink(missing_ok=True)
        kernel_starts = [_kernel_start(root, sockets)]
        # No checkpoint before the first run; ``fresh`` restores in a new process, as the new kernel does.
        restores = [_pure_restore(store)] if samples else []
        fresh = [_pure_restore(store, fresh=True)] if samples else []
        execute(str(nb), str(out), run_id=RUN_ID, store=store, max_restarts=1, progress=False, cwd=root)
        ended = time.time()
        died = float(marker.read_text())
        last: dict[str, float] = {}  # the second pass's stamps: first cell, after the step, last cell
        for text in stamps.read_text().splitlines():
            what, when = text.split()
            last[what] = float(when)
        restores.append(_pure_restore(store))
        fresh.append(_pure_restore(store, fresh=True))
        if samples:  # the first repetition (the only one of a smoke run) takes the kernel start once
            kernel_starts.append(_kernel_start(root, sockets))
        samples.append({
            "resume_s": ended - died, "kernel_start_s": statistics.median(kernel_starts),
            "restore_s": statistics.median(fresh), "warm_restore_s": statistics.median(restores),
            "death_to_first_cell_s": last["first"] - died,
            "first_cell_to_step_restored_s": last["step"] - last["first"],
            "step_to_last_cell_s": last["end"] - last["step"],
            "last_cell_to_return_s": ended - last["end"],
        })  # fmt: skip
    med = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
    phases = {k: v for k, v in med.items() if k not in ("resume_s", "kernel_start_s", "restore_s", "warm_restore_s")}
    back = [s["death_to_first_cell_s"] + s["first_cell_to_step_restored_s"] for s in samples]
    budgets = [s["kernel_start_s"] + s["restore_s"] + RESUME_SLACK_S for s in samples]
    warm = [s["kernel_start_s"] + s["warm_restore_s"] + RESUME_SLACK_S for s in samples]
    return {"resume_s": med["resume_s"], "kernel_start_s": med["kernel_start_s"], "restore_s": med["restore_s"],
            "warm_restore_s": med["warm_restore_s"], "phases": phases, "reps": reps,
            "back_ratios": [b / g for b, g in zip(back, budgets, strict=True)],
            "back_ratios_warm": [b / g for b, g in zip(back, warm, strict=True)],
            "exit_ratios": [s["resume_s"] / g for s, g in zip(samples, budgets, strict=True)]}  # fmt: skip


def _pure_restore(store: str, fresh: bool = False) -> float:
    """Seconds for ``resumable.load`` of the step the resume restores, in this process or a new one.

    The new kernel restores in a process that has restored nothing yet: it opens the store (DuckDB's
    import and connect) and unpickles with numpy not yet imported. ``fresh`` times the same
    ``resumable.load`` in a new interpreter (``import resumable`` before the clock starts), which is
    that restore; in this process, everything is already imported and open.
    """
    if fresh:
        code = (
            "import sys, time, resumable\nt0 = time.perf_counter()\n"
            f"resumable.load({RUN_ID!r}, 'big', 'x', store={store!r})\nprint(time.perf_counter() - t0)"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
        return float(done.stdout.split()[-1])
    import resumable

    t0 = time.perf_counter()
    resumable.load(RUN_ID, "big", "x", store=store)
    return time.perf_counter() - t0


def _cells_notebook(path: Path, cells: int, magic: bool) -> None:
    import nbformat

    new: Callable[[str], Any] = nbformat.v4.new_code_cell
    first = [new("%load_ext resumable" if magic else "pass")]
    body = [new(f"%%durable_step s{i}\nx{i} = {i}" if magic else f"x{i} = {i}") for i in range(cells)]
    doc = nbformat.v4.new_notebook(cells=first + body)
    doc.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(doc, str(path))  # type: ignore[no-untyped-call]


def nbclient_run(path: Path, out: Path, env: dict[str, str], cwd: str) -> float:
    """Seconds for nbclient to read, execute (a fresh kernel) and write a notebook.

    The kernel listens on Unix sockets in a folder of its own, as ``resumable execute``'s do: the two
    compare like for like, and no TCP port can be taken between jupyter_client's choice of it and the
    kernel's bind (a kernel that loses that race dies at start, and the run waits 60 s).
    """
    import nbformat
    from nbclient import NotebookClient

    from resumable._headless.kernel import ipc_config

    sockets = tempfile.mkdtemp(prefix="rsm-bench-kernel-")
    try:
        t0 = time.perf_counter()
        doc = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
        client = NotebookClient(
            doc, kernel_name="python3", resources={"metadata": {"path": cwd}}, config=ipc_config(sockets)
        )
        client.execute(env=env)
        nbformat.write(doc, str(out))  # type: ignore[no-untyped-call]
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


def measure_cells(folder: str, cells: int, reps: int, pairs: int = 0, warm_up: bool = True) -> dict[str, Any]:
    """Median seconds: nbclient plain and with the magic, ``resumable execute`` new and restoring.

    ``reps`` turns of all four ways (each turn a new store, so ``execute_new`` is a new run), then
    ``pairs`` more turns of the two ways target 6 compares (a full restore and plain nbclient),
    which of the two goes first alternating, so a drift of the load weighs on both alike. The
    per-turn ratios restored / plain give the noise.
    """
    import resumable

    base = Path(folder)
    base.mkdir(parents=True, exist_ok=True)
    plain, magic, out = base / "plain.ipynb", base / "cells.ipynb", base / "out.ipynb"
    _cells_notebook(plain, cells, magic=False)
    _cells_notebook(magic, cells, magic=True)
    root = str(Path(__file__).resolve().parent.parent)  # the kernels import the checkout measured
    execute = resumable.execute_notebook  # type: ignore[attr-defined]
    times: dict[str, list[float]] = {"plain": [], "nbclient_magic": [], "execute_new": [], "execute_restore": []}
    if warm_up:
        nbclient_run(plain, out, dict(os.environ), root)  # warm-up: the first kernel start pays for disk caches

    def run_execute(key: str, store: str) -> None:
        t0 = time.perf_counter()
        result = execute(str(magic), str(out), run_id="run", store=store, progress=False, cwd=root)
        times[key].append(time.perf_counter() - t0)
        done = result.steps_executed if key == "execute_new" else result.steps_restored
        assert len(done) == cells, f"{key}: {len(done)} of {cells} steps"

    store = ""
    for rep in range(reps):
        store = str(base / f"s{rep}" / "store.duckdb")
        env = {**os.environ, "RESUMABLE_STORE": str(base / f"n{rep}" / "store.duckdb"), "RESUMABLE_RUN_ID": "nb"}
        times["plain"].append(nbclient_run(plain, out, dict(os.environ), root))
        times["nbclient_magic"].append(nbclient_run(magic, out, env, root))
        run_execute("execute_new", store)
        run_execute("execute_restore", store)
    for turn in range(pairs):
        if turn % 2:
            run_execute("execute_restore", store)
            times["plain"].append(nbclient_run(plain, out, dict(os.environ), root))
        else:
            times["plain"].append(nbclient_run(plain, out, dict(os.environ), root))
            run_execute("execute_restore", store)
    ratios = [r / p for r, p in zip(times["execute_restore"], times["plain"], strict=True)]
    added = [(n - m) / cells * 1000 for n, m in zip(times["execute_new"], times["nbclient_magic"], strict=True)]
    return {key: statistics.median(v) for key, v in times.items()} | {
        "cells": cells, "reps": reps, "pairs": pairs, "restore_ratios": ratios, "added_ms": added,
        "plain_all": times["plain"],
    }  # fmt: skip


def run(cfg: Config) -> list[Result | Skipped]:
    """The resume and step-cell figures, or a skip until ``resumable execute`` exists."""
    import resumable

    if not hasattr(resumable, "execute_notebook"):
        return [Skipped(CONCERN, "all", "resumable execute (resumable.execute_notebook) is not in this checkout yet")]
    with tempfile.TemporaryDirectory(prefix="rsm-bench-") as tmp, bytecode_cache() as env:
        try:
            m = run_worker(
                "headless",
                "measure",
                {"folder": tmp, "size": cfg.notebook_size, "reps": 1 if cfg.smoke else max(cfg.reps, 5)},
                env=env,
            )
        except Exception as exc:
            return [Skipped(CONCERN, "all", str(exc).strip().splitlines()[-1])]
    budget = m["kernel_start_s"] + m["restore_s"] + RESUME_SLACK_S
    label = _data.label("array", cfg.notebook_size)
    p = m["phases"]
    warm = statistics.median(m["back_ratios_warm"])
    note = (
        f"budget = kernel start {m['kernel_start_s']:.2f} s + restore in a new process {m['restore_s']:.2f} s + "
        f"{RESUME_SLACK_S} s (with the restore timed in a process that has everything imported and open, "
        f"{m['warm_restore_s']:.2f} s: ratio {warm:.2f}); "
        f"resume = death to first cell {p['death_to_first_cell_s']:.2f} s + load_ext, import numpy and step restore "
        f"{p['first_cell_to_step_restored_s']:.2f} s + rest {p['step_to_last_cell_s']:.2f} s + "
        f"saving and shutdown {p['last_cell_to_return_s']:.2f} s; medians of {m['reps']}; per-repetition ratios "
        + ", ".join(f"{r:.2f}" for r in m["back_ratios"])
    )
    # What resuming costs is the time to get back to where the run was when its kernel died: from
    # the death to the restored step. Later cells, writing the executed notebook and shutting the
    # kernel down are paid by every run, crashed or not; the second figure includes them anyway.
    back = p["death_to_first_cell_s"] + p["first_cell_to_step_restored_s"]
    return [
        Result(CONCERN, f"headless resume after kernel death, back to where it died ({label})", back, "s",
               f"kernel start + restore + {RESUME_SLACK_S} s", budget, "<= 1", note, spread(m["back_ratios"])),
        Result(CONCERN, f"headless resume after kernel death, until the executor exits ({label})", m["resume_s"],
               "s", f"kernel start + restore + {RESUME_SLACK_S} s", budget, "", note, spread(m["exit_ratios"])),
        *_cells(cfg),
    ]  # fmt: skip


def _cells(cfg: Config) -> list[Result | Skipped]:
    """Target 6: ``resumable execute`` of trivial step cells, new and restoring, against nbclient."""
    cells = 3 if cfg.smoke else 10 if cfg.quick else 40
    # The plain run is about a second and swings by a third between turns on a shared machine: the
    # restore figure takes more alternated turns than the others (medians of reps + pairs).
    reps, pairs = (1, 0) if cfg.smoke else (cfg.reps, 2 * cfg.reps + 2)
    # A smoke run checks that the concern runs: no warm-up kernel (one kernel start of its five).
    job = {"cells": cells, "reps": reps, "pairs": pairs, "warm_up": not cfg.smoke}
    with tempfile.TemporaryDirectory(prefix="rsm-bench-") as tmp, bytecode_cache() as env:
        try:
            m = run_worker("headless", "measure_cells", {**job, "folder": tmp}, env=env)
        except Exception as exc:
            return [Skipped(CONCERN, "step cells", str(exc).strip().splitlines()[-1])]
    added_ms = (m["execute_new"] - m["nbclient_magic"]) / cells * 1000
    budget = m["nbclient_magic"] + cells * ADDED_PER_CELL_MS / 1000
    turns = m["reps"] + m["pairs"]
    ratios = ", ".join(f"{r:.2f}" for r in m["restore_ratios"])
    plain = m["plain_all"]
    return [
        Result(CONCERN, f"resumable execute, new run of {cells} trivial step cells", m["execute_new"], "s",
               f"nbclient with the magic {m['nbclient_magic']:.2f} s + {ADDED_PER_CELL_MS:g} ms per cell", budget,
               "<= 1", f"adds {added_ms:.1f} ms per step cell; plain nbclient {m['plain']:.2f} s; "
               f"medians of {m['reps']}", spread(m["added_ms"]) if m["reps"] > 1 else None),
        Result(CONCERN, f"resumable execute, {cells} trivial step cells all restored", m["execute_restore"], "s",
               "plain nbclient (no magic)", m["plain"], "<= 1.5",
               f"medians of {turns} alternated turns; per-turn ratios {ratios}; plain runs "
               f"{min(plain):.2f}-{max(plain):.2f} s", spread(m["restore_ratios"])),
    ]  # fmt: skip
