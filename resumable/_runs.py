"""Which run a front end joins: one decision for the Python API, the magics and the headless executor.

Precedence, as DESIGN.md documents it: an explicit run id (``run_id=``, ``--run-id``) >
``RESUMABLE_RUN_ID`` (a headless executor or supervisor chose the run) > ``new`` (a fresh run) >
the latest run of the pipeline > a fresh run. ``new`` gives way to ``RESUMABLE_RUN_ID`` because an
executor restarts the notebook into its run: ``--new`` must not start another run on every restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from resumable._config import env_run_id
from resumable._keys import DEFAULT_PIPELINE, new_run_id
from resumable._records import RunInfo
from resumable._store.base import Store
from resumable.errors import RunExistsError


class JoinedBy(str, Enum):
    """Which rule of the precedence chose the run."""

    RUN_ID = "run id"
    ENVIRONMENT = "RESUMABLE_RUN_ID"
    NEW = "new"
    LATEST = "latest"
    FIRST = "first"  # the pipeline had no run yet

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class RunChoice:
    """The run to join; ``existing`` is None when it starts now."""

    pipeline: str
    run_id: str
    existing: RunInfo | None
    joined_by: JoinedBy


def choose_run(
    store: Store,
    pipeline: str | None,
    run_id: str | None = None,
    *,
    new: bool = False,
    default_pipeline: str = DEFAULT_PIPELINE,
) -> RunChoice:
    """The run to join (see the module docstring), read from ``store``; nothing is written.

    With ``pipeline=None`` (a notebook's first step without ``%durable_run``) an existing run keeps
    its pipeline and a new one is ``default_pipeline``. Raises :class:`RunExistsError` when ``new``
    is asked for under an explicit run id that exists.
    """
    joined_by = JoinedBy.RUN_ID
    if run_id is None and env_run_id() is not None:
        run_id, new, joined_by = env_run_id(), False, JoinedBy.ENVIRONMENT
    existing = store.get_run(run_id) if run_id is not None else None
    name = pipeline or (existing.pipeline if existing is not None else default_pipeline)
    if run_id is not None:
        if new and existing is not None:
            raise RunExistsError(run_id, existing.pipeline)
        return RunChoice(name, run_id, existing, joined_by)
    if not new:
        latest = store.latest_run(name)
        if latest is not None:
            return RunChoice(name, latest.run_id, latest, JoinedBy.LATEST)
        return RunChoice(name, new_run_id(), None, JoinedBy.FIRST)
    return RunChoice(name, new_run_id(), None, JoinedBy.NEW)
