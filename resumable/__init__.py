"""resumable: notebooks and pipelines that survive failure.

Completed steps are checkpointed into a DuckDB store and restored instead of re-run; side effects
get idempotency keys that stay stable across retries and crashes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers; at run time each name is imported when first used (``_LAZY``)
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
        ObjectStoreError,
        ObjectStoreWriteError,
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
        StagingFolderError,
        StepChangedError,
        StepDefinitionError,
        StepFailed,
        StepNotStoredError,
        StepRunningError,
        StepTimeout,
        StepWriteBackError,
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

# Every exported name and the module that defines it. ``import resumable`` imports none of these
# modules: a front end's code (the store, DuckDB, cloudpickle, the headless executor) is loaded
# when one of its names is first used, so a script that only needs ``Pipeline`` never pays for the
# notebook executor, and ``import resumable`` stays cheap next to ``import duckdb, cloudpickle``.
_LAZY: dict[str, str] = {
    "ExecutionResult": "resumable._headless",
    "execute_notebook": "resumable._headless",
    "StoreReader": "resumable._query",
    "connect": "resumable._query",
    "RunInfo": "resumable._records",
    "StepStatus": "resumable._records",
    "RunState": "resumable._states",
    "StepState": "resumable._states",
    "QueryResult": "resumable._store",
    "SweepResult": "resumable._sweep",
    "SweepRun": "resumable._sweep",
    "sweep": "resumable._sweep",
    "ArgumentTypeError": "resumable.errors",
    "AsyncStepError": "resumable.errors",
    "CheckpointIntegrityError": "resumable.errors",
    "CheckpointNotFoundError": "resumable.errors",
    "DependencyError": "resumable.errors",
    "DuplicateStepError": "resumable.errors",
    "DuplicateStepWarning": "resumable.errors",
    "EffectHeldWarning": "resumable.errors",
    "ForkError": "resumable.errors",
    "InvalidTransition": "resumable.errors",
    "KernelDiedError": "resumable.errors",
    "LastGoodCheckpointWarning": "resumable.errors",
    "LeaseLostError": "resumable.errors",
    "NoActiveRunError": "resumable.errors",
    "NotInStepError": "resumable.errors",
    "NotebookExecutionError": "resumable.errors",
    "NotebookInputError": "resumable.errors",
    "OptionError": "resumable.errors",
    "ParameterMismatchError": "resumable.errors",
    "ParameterValueError": "resumable.errors",
    "PipelineMismatchError": "resumable.errors",
    "QueryError": "resumable.errors",
    "RerunError": "resumable.errors",
    "ResumableError": "resumable.errors",
    "RunExistsError": "resumable.errors",
    "RunOwnedError": "resumable.errors",
    "SchemaVersionError": "resumable.errors",
    "SecretNotStoredWarning": "resumable.errors",
    "SigningKeyError": "resumable.errors",
    "StagingFolderError": "resumable.errors",
    "StepChangedError": "resumable.errors",
    "StepDefinitionError": "resumable.errors",
    "StepFailed": "resumable.errors",
    "StepNotStoredError": "resumable.errors",
    "StepWriteBackError": "resumable.errors",
    "StepRunningError": "resumable.errors",
    "StepTimeout": "resumable.errors",
    "StoreCorruptError": "resumable.errors",
    "StoreDatabaseError": "resumable.errors",
    "StoreError": "resumable.errors",
    "ObjectStoreError": "resumable.errors",
    "ObjectStoreWriteError": "resumable.errors",
    "StoreFullError": "resumable.errors",
    "StoreLockedError": "resumable.errors",
    "StoreLogTornWarning": "resumable.errors",
    "StorePathError": "resumable.errors",
    "StoreReadOnlyError": "resumable.errors",
    "StoreRemovedError": "resumable.errors",
    "StoreServerError": "resumable.errors",
    "StoreWriteError": "resumable.errors",
    "SweepClusterError": "resumable.errors",
    "SweepFileError": "resumable.errors",
    "UnserializableOutputError": "resumable.errors",
    "Pipeline": "resumable.pipeline",
    "Run": "resumable.pipeline",
    "fencing_token": "resumable.pipeline",
    "idempotency_key": "resumable.pipeline",
    "load": "resumable.pipeline",
    "remove_runs": "resumable.pipeline",
}

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
    "ObjectStoreError",
    "ObjectStoreWriteError",
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
    "StagingFolderError",
    "StepChangedError",
    "StepDefinitionError",
    "StepFailed",
    "StepNotStoredError",
    "StepRunningError",
    "StepState",
    "StepStatus",
    "StepTimeout",
    "StepWriteBackError",
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


def __getattr__(name: str) -> Any:
    """Import a lazily exported name on first use and keep it in the module's namespace."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'resumable' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
