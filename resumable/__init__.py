"""resumable: notebooks and pipelines that survive failure.

Completed steps are checkpointed into a DuckDB store and restored instead of re-run; side effects
get idempotency keys that stay stable across retries and crashes.
"""

from __future__ import annotations

from typing import Any

from resumable._records import RunInfo, StepStatus
from resumable._states import StepState
from resumable.errors import (
    CheckpointIntegrityError,
    CheckpointNotFoundError,
    InvalidTransition,
    NoActiveRunError,
    NotebookExecutionError,
    NotInStepError,
    ParameterMismatchError,
    ResumableError,
    RunOwnedError,
    SchemaVersionError,
    StepDefinitionError,
    StepFailed,
    StepTimeout,
    StoreError,
    StoreLockedError,
    StorePathError,
    UnserializableOutputError,
)
from resumable.pipeline import Pipeline, Run, idempotency_key, load

__version__ = "0.1.0"

__all__ = [
    "CheckpointIntegrityError",
    "CheckpointNotFoundError",
    "InvalidTransition",
    "NoActiveRunError",
    "NotInStepError",
    "NotebookExecutionError",
    "ParameterMismatchError",
    "Pipeline",
    "ResumableError",
    "Run",
    "RunInfo",
    "RunOwnedError",
    "SchemaVersionError",
    "StepDefinitionError",
    "StepFailed",
    "StepState",
    "StepStatus",
    "StepTimeout",
    "StoreError",
    "StoreLockedError",
    "StorePathError",
    "UnserializableOutputError",
    "idempotency_key",
    "load",
    "load_ipython_extension",
]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext resumable``: imported lazily so ``import resumable`` never pulls in IPython."""
    from resumable._magics import load_ipython_extension as load

    load(ipython)
