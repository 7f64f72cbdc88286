"""What ``import resumable`` costs in a fresh interpreter, against ``import duckdb, cloudpickle``.

Each statement runs in its own fresh ``python -c`` process, the statements interleaved, repeated,
and the median taken. Two measures: the wall time of the whole process (interpreter start
included, the same for every statement) and the cumulative import time ``python -X importtime``
reports for the statement's own top-level imports. Compiled bytecode is written to a private cache
folder (``PYTHONPYCACHEPREFIX``) by an untimed first import, as an installed package has its
``.pyc`` files; nothing is written beside the sources.

``from resumable import Pipeline`` (what a script's first step needs: the store, DuckDB,
cloudpickle) is printed too, against the same baseline, without a target.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks._report import Result, Skipped
from benchmarks._util import Config, _root

CONCERN = "import"

BASELINE = "import duckdb, cloudpickle"
STATEMENTS = {"import": "import resumable", "pipeline": "from resumable import Pipeline", "base": BASELINE}


def _import_ms(stderr: str) -> float:
    """Cumulative ms of the top-level imports ``-X importtime`` reports after the interpreter's own start."""
    total, started = 0, False
    for text in stderr.splitlines():
        if not text.startswith("import time:") or "|" not in text:
            continue
        _, cumulative, name = text.split("|")
        if name.strip() and not name.startswith("  "):  # a top-level import
            if name.strip() == "site":
                started, total = True, 0  # everything before (and of) site is the interpreter's start
                continue
            if started:
                total += int(cumulative)
    return total / 1000


def _one(code: str, env: dict[str, str], importtime: bool) -> float:
    args = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", code]
    t0 = time.perf_counter()
    proc = subprocess.run(args, env=env, cwd=_root(), capture_output=True, text=True, timeout=120, check=True)
    wall = time.perf_counter() - t0
    return _import_ms(proc.stderr) if importtime else wall * 1000


def run(cfg: Config) -> list[Result | Skipped]:
    """Print-ready figures for the import concern."""
    reps = 5 if cfg.quick else 15
    with tempfile.TemporaryDirectory(prefix="rsm-bench-pyc-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = cache
        env["PYTHONPATH"] = os.pathsep.join([str(_root()), *filter(None, [os.environ.get("PYTHONPATH")])])
        for code in STATEMENTS.values():  # untimed: compiles and caches the bytecode
            _one(code, env, importtime=False)
        wall: dict[str, list[float]] = {k: [] for k in STATEMENTS}
        imp: dict[str, list[float]] = {k: [] for k in STATEMENTS}
        for _ in range(reps):
            for key, code in STATEMENTS.items():
                wall[key].append(_one(code, env, importtime=False))
                imp[key].append(_one(code, env, importtime=True))
    med = {k: statistics.median(v) for k, v in wall.items()}
    med_imp = {k: statistics.median(v) for k, v in imp.items()}
    note = f"median of {reps} fresh processes each, interleaved"
    return [
        Result(CONCERN, "import resumable, wall time of a fresh interpreter", med["import"], "ms",
               f"{BASELINE} (same)", med["base"], "<= 1.2", note),
        Result(CONCERN, "import resumable, -X importtime", med_imp["import"], "ms",
               BASELINE, med_imp["base"], "<= 1.2", note),
        Result(CONCERN, "from resumable import Pipeline, wall time (the store, DuckDB, cloudpickle)",
               med["pipeline"], "ms", f"{BASELINE} (same)", med["base"], "", note),
        Result(CONCERN, "from resumable import Pipeline, -X importtime", med_imp["pipeline"], "ms",
               BASELINE, med_imp["base"], "", note),
    ]  # fmt: skip
