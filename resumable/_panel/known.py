"""Which steps the panel lists: the run's own, plus those known from before that it has not reached.

A kernel cannot see cells that have not run, so "the whole run" comes from what is written down:
the notebook file the kernel was started for (its ``%%durable_step`` cells, in order), or, when
there is no notebook file to read (a Python pipeline, a run of another pipeline), the steps the
pipeline's latest earlier runs recorded. A step known from there that this run has not reached is
listed as ``not reached``, so a run is never called completed while a known step has not run.
Reading never writes: the notebook file is only read, the store only through the Store seam.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from resumable._keys import is_valid_name
from resumable._records import RunInfo
from resumable._states import RunState, StepState
from resumable._store import Store

EARLIER_RUNS = 3  # the earlier runs whose steps are known; a step renamed long ago is forgotten
RUNS_READ = 50  # the newest runs looked through for those started before the shown one
MAX_NOTEBOOK_BYTES = 50_000_000  # a notebook file above this is not read for its step names

_STEP_LINE = re.compile(r"^\s*%%durable_step[ \t]+([^\s]+)")


def notebook_steps(path: str | os.PathLike[str]) -> list[str]:
    """The step names of a notebook file's ``%%durable_step`` cells, in order; [] when unreadable.

    Only the name (the first word of the line) is taken; a cell whose line the magic would refuse
    is skipped here, as it would stop the notebook when it runs.
    """
    try:
        file = Path(path)
        if file.stat().st_size > MAX_NOTEBOOK_BYTES:
            return []
        cells = json.loads(file.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return []
    names: list[str] = []
    for cell in cells if isinstance(cells, list) else []:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else str(source)
        match = _STEP_LINE.match(text.lstrip("\n").split("\n", 1)[0])
        if match and is_valid_name(match.group(1)) and match.group(1) not in names:
            names.append(match.group(1))
    return names


def notebook_file(candidates: Iterable[object]) -> Path | None:
    """The notebook file a kernel was started for (``__session__``, ``JPY_SESSION_NAME``), if it exists.

    Front ends give an absolute path or one relative to the server's root; the kernel starts in
    the notebook's folder, so its name is also looked for there.
    """
    for candidate in candidates:
        if not isinstance(candidate, str) or not candidate.endswith(".ipynb"):
            continue
        for path in (Path(candidate), Path.cwd() / Path(candidate).name):
            if path.is_file():
                return path
    return None


def merged(reached: Sequence[str], *orders: Sequence[str]) -> list[str]:
    """``reached`` in its order, with each name of ``orders`` it lacks placed after its predecessor there.

    >>> merged(["load", "courier"], ["load", "courier", "email"])
    ['load', 'courier', 'email']
    """
    result = list(reached)
    for order in orders:
        for i, name in enumerate(order):
            if name in result:
                continue
            before = next((order[j] for j in range(i - 1, -1, -1) if order[j] in result), None)
            result.insert(result.index(before) + 1 if before is not None else 0, name)
    return result


def earlier_orders(store: Store, run: RunInfo) -> list[list[str]]:
    """The step names of the latest runs of the pipeline started before ``run``, newest first."""
    runs = store.list_runs(run.pipeline, limit=RUNS_READ)
    earlier = [r for r in runs if r.run_id != run.run_id and r.created_at <= run.created_at]
    return [[s.step for s in store.list_steps(r.run_id)] for r in earlier[:EARLIER_RUNS]]


def whole_run_state(states: Iterable[StepState], not_reached: int) -> RunState:
    """The run's state with its unreached steps counted as pending: never completed while one is left."""
    return RunState.of([*states, *([StepState.PENDING] * not_reached)])
