"""resumable: notebooks and pipelines that survive failure.

Completed steps are checkpointed into a DuckDB store and restored instead of re-run; side effects
get idempotency keys that stay stable across retries and crashes.
"""

from __future__ import annotations

from typing import Any

from resumable._headless import ExecutionResult, execute_notebook
from resumable._query import StoreReader, connect
from resumable._records import RunInfo, StepStatus
from resumable._states import RunState, StepState
from resumable._store import QueryResult
from resumable._sweep import SweepResult, SweepRun, sweep
from resumable.errors import (
    ArgumentTypeError,
    AsyncStepError,
    CheckpointIntegrityError,
    CheckpointNotFoundError,
    DependencyError,
    DuplicateStepError,
    DuplicateStepWarning,
    EffectHeldWarning,
    ForkError,
    InvalidTransition,
    KernelDiedError,
    LastGoodCheckpointWarning,
    LeaseLostError,
    NoActiveRunError,
    NotebookExecutionError,
    NotebookInputError,
    NotInStepError,
    OptionError,
    ParameterMismatchError,
    ParameterValueError,
    PipelineMismatchError,
    QueryError,
    RerunError,
    ResumableError,
    RunExistsError,
    RunOwnedError,
    SchemaVersionError,
    SecretNotStoredWarning,
    SigningKeyError,
    StepChangedError,
    StepDefinitionError,
    StepFailed,
    StepRunningError,
    StepTimeout,
    StoreCorruptError,
    StoreDatabaseError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    StoreLogTornWarning,
    StorePathError,
    StoreReadOnlyError,
    StoreRemovedError,
    StoreServerError,
    StoreWriteError,
    SweepClusterError,
    SweepFileError,
    UnserializableOutputError,
)
from resumable.pipeline import Pipeline, Run, fencing_token, idempotency_key, load, remove_runs

__version__ = "0.1.0"

__all__ = [
    "ArgumentTypeError",
    "AsyncStepError",
    "CheckpointIntegrityError",
    "CheckpointNotFoundError",
    "DependencyError",
    "DuplicateStepError",
    "DuplicateStepWarning",
    "EffectHeldWarning",
    "ExecutionResult",
    "ForkError",
    "InvalidTransition",
    "KernelDiedError",
    "LastGoodCheckpointWarning",
    "LeaseLostError",
    "NoActiveRunError",
    "NotInStepError",
    "NotebookExecutionError",
    "NotebookInputError",
    "OptionError",
    "ParameterMismatchError",
    "ParameterValueError",
    "Pipeline",
    "PipelineMismatchError",
    "QueryError",
    "QueryResult",
    "RerunError",
    "ResumableError",
    "Run",
    "RunExistsError",
    "RunInfo",
    "RunOwnedError",
    "RunState",
    "SchemaVersionError",
    "SecretNotStoredWarning",
    "SigningKeyError",
    "StepChangedError",
    "StepDefinitionError",
    "StepFailed",
    "StepRunningError",
    "StepState",
    "StepStatus",
    "StepTimeout",
    "StoreCorruptError",
    "StoreDatabaseError",
    "StoreError",
    "StoreFullError",
    "StoreLockedError",
    "StoreLogTornWarning",
    "StorePathError",
    "StoreReadOnlyError",
    "StoreReader",
    "StoreRemovedError",
    "StoreServerError",
    "StoreWriteError",
    "SweepClusterError",
    "SweepFileError",
    "SweepResult",
    "SweepRun",
    "UnserializableOutputError",
    "connect",
    "execute_notebook",
    "fencing_token",
    "idempotency_key",
    "load",
    "load_ipython_extension",
    "panel",
    "remove_runs",
    "sweep",
]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext resumable``: imported lazily so ``import resumable`` never pulls in IPython."""
    from resumable._magics import load_ipython_extension as load

    load(ipython, make_panel=panel)


def panel(run_id: str | None = None, **options: Any) -> Any:
    """The status panel widget of a run (see :func:`resumable._panel.widget.panel`); imports ipywidgets lazily."""
    from resumable._panel import panel as make  # ipywidgets: imported when a panel is asked for

    return make(run_id, **options)
