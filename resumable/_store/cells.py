"""A kernel's new step cells decided in memory while its store handle holds the DuckDB file.

A kernel never owns its run between cells, so its steps cannot be deferred as an owned run's are
(``journal.py``). But while a store handle holds the DuckDB file, no other process can read or
write the store at all (DuckDB lets one process hold it; ``connection.py`` keeps it at most 2 s
in a stretch unless someone waits). So within one hold, a **window**, the store decides a new
plain step as it would in a transaction, from what the window's first transaction read (the
run's owner check and every step name of the run), and writes it later:

- its start is appended to the process's completion log before the body runs, and its
  completion (with small outputs) before the cell returns: a kill at any instant leaves either
  nothing (the log write itself was torn), a step a dead process was running (replayed as
  ``running`` under the dead owner, so every reader shows it ``interrupted``), or the completed
  step;
- the pending rows are committed when the group-commit window closes, before the file is let go
  of, by any transaction of any handle of this process first, and before any fence (an effect
  step, ``idempotency_key()``, a fencing token asked for);
- only one handle of the process may hold the file when a step is decided in memory, and the
  pending steps live here, per file, so any other handle's first transaction writes them.

This module holds no SQL: the store module writes what it records.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from datetime import datetime

from resumable._records import Owner
from resumable._store.base import Completion, StepRequest
from resumable._store.journal import GROUP_COMMIT_S, PendingStep

# Guards every structure below; held briefly (never across a transaction's SQL).
LOCK = threading.Lock()


@dataclass(slots=True)
class Cell:
    """A new step of a kernel's run started in memory and not written yet."""

    pending: PendingStep  # the rows it becomes (``rows.quick_rows``); its completion once it returned
    location: str  # the deciding store's location (its ``_IN_FLIGHT`` key)
    held: object  # the deciding handle's mark; None: check against the store before writing (``steps.found_cell``)
    started: bool = False  # its start was written by a transaction: only its completion is pending

    @property
    def key(self) -> tuple[str, str]:
        return self.pending.req.run_id, self.pending.req.step


@dataclass(slots=True)
class Window:
    """What one hold of the file knows about a run: valid while the handle's mark stays ``mark``."""

    mark: object
    owner: Owner
    names: set[str]  # every step of the run in the store, plus those decided in memory since
    count: int  # the steps the run has: the next one's place


@dataclass(slots=True)
class _File:
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)


# Pending cells by the file's lock path: any handle of this process on that file writes them.
_FILES: dict[str, _File] = {}
# Cells whose write the store refused (another process or handle has the step), by (location, run, step):
# the step's end raises it.
REFUSED: dict[tuple[str, str, str], Exception] = {}
# Cells that had returned when the store refused to write them, by (location, run): the run's next
# step, fence or key raises it (``StepNotStoredError``), never only a log line.
LOST: dict[tuple[str, str], Exception] = {}


# New plain steps of a kernel still running, by (location, run, step): when their start is in the
# store already (written by a transaction, the first of a hold of the file, or by the group commit
# while a cell decided in memory ran on), their completion may still be logged and committed with
# the group (``DuckDBStore._complete_started_cell``), like that of a cell decided in memory.
STARTED: dict[tuple[str, str, str], StepRequest] = {}


def deferrable(req: StepRequest) -> bool:
    """Whether a kernel's step may be decided in memory: a new plain step of this very process."""
    return GROUP_COMMIT_S > 0 and not (req.effect or req.rerun or req.force) and req.owner.pid == os.getpid()


def pending(file: str) -> dict[tuple[str, str], Cell]:
    """The cells pending for ``file`` (call holding LOCK)."""
    entry = _FILES.get(file)
    if entry is None:
        entry = _FILES[file] = _File()
    return entry.cells


def has_pending(file: str) -> bool:
    with LOCK:
        entry = _FILES.get(file)
        return bool(entry and entry.cells)


def oldest(file: str) -> float | None:
    with LOCK:
        entry = _FILES.get(file)
        if not entry or not entry.cells:
            return None
        return min(c.pending.started_mono for c in entry.cells.values())


def take(file: str) -> list[Cell]:
    """Every pending cell of ``file``, oldest first, handed to a writer (call holding LOCK)."""
    entry = _FILES.get(file)
    if entry is None or not entry.cells:
        return []
    taken = sorted(entry.cells.values(), key=lambda c: c.pending.started_mono)
    entry.cells.clear()
    return taken


def put_back(file: str, taken: list[Cell]) -> None:
    """Cells a failed transaction did not write: checked against the store before their next write."""
    with LOCK:
        cells = pending(file)
        for cell in taken:
            cell.held = None
            cells.setdefault(cell.key, cell)


def forget(file: str) -> None:
    """The file was removed (what was pending went with it), or this is a forked child."""
    with LOCK:
        _FILES.pop(file, None)


def forget_all() -> None:
    """In a forked child: the parent's cells are the parent's."""
    with LOCK:
        _FILES.clear()
        STARTED.clear()
        REFUSED.clear()
        LOST.clear()


def new_pending(req: StepRequest, seq: int, started_at: datetime, started_mono: float) -> PendingStep:
    return PendingStep(req, seq, started_at, started_mono)


def complete(cell: Cell, done: Completion, finished_at: datetime) -> None:
    cell.pending.completion = done
    cell.pending.finished_at = finished_at
