"""Headless runs: execute a notebook on nbclient, restart a dead kernel and resume the run.

``execute`` drives the passes; ``kernel`` starts kernels on Unix sockets and notices their death;
``progress`` tells executed from restored steps through the store's event log; ``notebook`` reads
and writes notebooks; ``names`` reads step and pipeline names and builds the resume command.
Nothing here imports nbclient or nbformat until a notebook is executed.
"""

from __future__ import annotations

from resumable._headless.execute import ExecutionResult, PassReport, execute_notebook
from resumable._headless.names import default_output, pinned_run_id, pipeline_of, step_of

__all__ = [
    "ExecutionResult",
    "PassReport",
    "default_output",
    "execute_notebook",
    "pinned_run_id",
    "pipeline_of",
    "step_of",
]
