"""Headless resume after a kernel death against kernel start + restores + 0.5 s.

Needs ``resumable execute`` (``resumable.execute_notebook``); where it is missing, the concern is
skipped with a message saying so.

How it measures once it is there: a notebook computes a large step, then a cell kills its own
kernel the first time it runs (it touches a marker file first, so the instant of death is known);
``execute_notebook(max_restarts=1)`` starts a new kernel and runs again from the top, restoring the
step. Resume cost = the restored step's end - instant of death (also reported: until the executor
returns); baseline = a kernel start (measured with
jupyter_client in the same run) + the pure restore of the step (``resumable.load``) + 0.5 s. Cells
stamp the time into a file, so the note splits the resume into its phases.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import _data
from benchmarks._report import Result, Skipped
from benchmarks._util import Config, run_worker

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


def measure(folder: str, size: int) -> dict[str, Any]:
    """Seconds: resume after the death, kernel start, pure restore."""
    from jupyter_client.manager import start_new_kernel

    import resumable

    base = Path(folder)
    store = str(base / "s" / "store.duckdb")
    nb, out, marker, stamps = base / "bench.ipynb", base / "out.ipynb", base / "died", base / "stamps"
    _notebook(nb, marker, stamps, size)
    t0 = time.perf_counter()
    km, kc = start_new_kernel(kernel_name="python3")
    kernel_start = time.perf_counter() - t0
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    execute = resumable.execute_notebook  # type: ignore[attr-defined]
    # The kernel runs in the checkout being measured, so it imports the same resumable as this process.
    root = str(Path(__file__).resolve().parent.parent)
    execute(str(nb), str(out), run_id=RUN_ID, store=store, max_restarts=1, progress=False, cwd=root)
    ended = time.time()
    died = float(marker.read_text())
    # The second pass's stamps: first cell, after the durable step, last cell.
    last: dict[str, float] = {}
    for text in stamps.read_text().splitlines():
        what, when = text.split()
        last[what] = float(when)
    phases = {
        "death_to_first_cell_s": last["first"] - died,
        "first_cell_to_step_restored_s": last["step"] - last["first"],
        "step_to_last_cell_s": last["end"] - last["step"],
        "last_cell_to_return_s": ended - last["end"],
    }
    t0 = time.perf_counter()
    resumable.load(RUN_ID, "big", "x", store=store)
    restore = time.perf_counter() - t0
    return {"resume_s": ended - died, "kernel_start_s": kernel_start, "restore_s": restore, "phases": phases}


def run(cfg: Config) -> list[Result | Skipped]:
    """The resume figure, or a skip until ``resumable execute`` exists."""
    import resumable

    if not hasattr(resumable, "execute_notebook"):
        return [Skipped(CONCERN, "all", "resumable execute (resumable.execute_notebook) is not in this checkout yet")]
    with tempfile.TemporaryDirectory(prefix="rsm-bench-") as tmp:
        try:
            m = run_worker("headless", "measure", {"folder": tmp, "size": cfg.notebook_size})
        except Exception as exc:
            return [Skipped(CONCERN, "all", str(exc).strip().splitlines()[-1])]
    budget = m["kernel_start_s"] + m["restore_s"] + 0.5
    label = _data.label("array", cfg.notebook_size)
    p = m["phases"]
    note = (
        f"budget = kernel start {m['kernel_start_s']:.2f} s + restore {m['restore_s']:.2f} s + 0.5 s; "
        f"resume = death to first cell {p['death_to_first_cell_s']:.2f} s + load_ext and step restore "
        f"{p['first_cell_to_step_restored_s']:.2f} s + rest {p['step_to_last_cell_s']:.2f} s + "
        f"saving and shutdown {p['last_cell_to_return_s']:.2f} s"
    )
    # What resuming costs is the time to get back to where the run was when its kernel died: from
    # the death to the restored step. Later cells, writing the executed notebook and shutting the
    # kernel down are paid by every run, crashed or not; the second figure includes them anyway.
    back = p["death_to_first_cell_s"] + p["first_cell_to_step_restored_s"]
    return [
        Result(CONCERN, f"headless resume after kernel death, back to where it died ({label})", back, "s",
               "kernel start + restore + 0.5 s", budget, "<= 1", note),
        Result(CONCERN, f"headless resume after kernel death, until the executor exits ({label})", m["resume_s"],
               "s", "kernel start + restore + 0.5 s", budget, "", note),
    ]  # fmt: skip
