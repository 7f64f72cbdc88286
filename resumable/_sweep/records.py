"""What a sweep reports: one frozen record per run, and the sweep as a whole."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from resumable import _params

# ``completed``, ``failed``, ``kernel_died`` and ``owned`` are the outcomes of ``resumable execute``;
# ``worker_died`` means the workers running it died too often (Dask's allowed failures),
# ``scheduler_lost`` that the connection to the Dask scheduler was lost before the run reported
# (the scheduler died), and ``cancelled`` that --max-failures stopped the sweep before the run finished.
SweepState = Literal["completed", "failed", "kernel_died", "owned", "worker_died", "scheduler_lost", "cancelled"]


@dataclass(frozen=True, slots=True)
class SweepRun:
    """One parameter set's run: its id, state, and what its last pass executed and restored."""

    run_id: str
    params: dict[str, Any]
    state: SweepState
    steps_executed: tuple[str, ...] = ()
    steps_restored: tuple[str, ...] = ()
    duration_s: float = 0.0
    restarts: int = 0
    output: Path | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether every cell of the run succeeded."""
        return self.state == "completed"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready record (``resumable execute --sweep --json`` prints a list of them)."""
        return {
            "run_id": self.run_id,
            "params": _params.jsonable(self.params),
            "state": self.state,
            "steps_executed": list(self.steps_executed),
            "steps_restored": list(self.steps_restored),
            "duration_s": round(self.duration_s, 3),
            "restarts": self.restarts,
            "output": str(self.output) if self.output is not None else None,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class SweepResult:
    """A whole sweep: its runs in the order of the parameter sets, and whether it stopped early."""

    notebook: Path
    pipeline: str
    output_dir: Path
    store: Path | str
    runs: tuple[SweepRun, ...]
    duration_s: float
    stopped_early: bool = False
    cluster: str | None = field(default=None)  # the scheduler's address, None for the local pool

    @property
    def ok(self) -> bool:
        """Whether every run completed."""
        return all(r.ok for r in self.runs)

    def counts(self) -> dict[str, int]:
        """How many runs ended in each state, in a fixed order."""
        return {s: n for s in get_args(SweepState) if (n := sum(r.state == s for r in self.runs))}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary of the sweep."""
        return {
            "ok": self.ok,
            "notebook": str(self.notebook),
            "pipeline": self.pipeline,
            "output_dir": str(self.output_dir),
            "store": str(self.store),
            "cluster": self.cluster,
            "stopped_early": self.stopped_early,
            "duration_s": round(self.duration_s, 3),
            "counts": self.counts(),
            "runs": [r.to_json() for r in self.runs],
        }
