"""Parameter sweeps: one resumable headless run per parameter set, on a local Dask pool or a Dask cluster.

``spec`` reads the parameter sets (a list or a grid) and derives each run's stable id; ``member``
executes one run on a worker with ``execute_notebook``; ``cluster`` starts or reaches Dask (imported
only when a sweep starts); ``run`` checks everything once, submits the runs and gathers them;
``records`` holds the frozen results.
"""

from __future__ import annotations

from resumable._sweep.records import SweepResult, SweepRun, SweepState
from resumable._sweep.run import sweep
from resumable._sweep.spec import run_id_for

__all__ = ["SweepResult", "SweepRun", "SweepState", "run_id_for", "sweep"]
