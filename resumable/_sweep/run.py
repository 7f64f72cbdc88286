"""``sweep()``: one headless run per parameter set, on a local Dask pool or a Dask cluster.

Everything that can be checked once (the parameter sets, the notebook, the kernel, the store) is
checked here before any run starts, so a bad file fails the sweep at once instead of in every
run. Each run then goes to a worker as a :class:`~resumable._sweep.member.Member` and executes with
the full semantics of ``resumable execute``: kernel restarts, resume from checkpoints, exit reasons.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

from resumable import _config
from resumable._headless.kernel import check_kernel
from resumable._headless.names import (
    DEFAULT_MAX_RESTARTS,
    check_magic_lines,
    check_step_names,
    pinned_run_id,
    pipeline_of,
)
from resumable._headless.notebook import read_notebook
from resumable._store import open_store
from resumable._sweep import cluster as _cluster
from resumable._sweep import spec
from resumable._sweep.member import Member, run_member
from resumable._sweep.records import SweepResult, SweepRun
from resumable._units import is_seconds
from resumable.errors import NotebookInputError, front_end, option_words


def default_output_dir(notebook: Path) -> Path:
    """``NAME.sweep/`` beside ``NAME.ipynb``: one executed notebook per run, named by its run id."""
    return notebook.with_name(notebook.stem + ".sweep")


def _count(what: str, value: object, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NotebookInputError(what, value, "is not valid", "Give a whole number, 1 or more.")


def _check(
    workers: int | None, cluster: str | None, max_failures: int | None, max_restarts: int, timeout: float | None
) -> None:
    _count(option_words("workers", "--workers"), workers, allow_none=True)
    if workers is not None and cluster is not None:  # silently ignored, it would promise a parallelism it does not give
        problem = f"cannot be used with the cluster {cluster!r}, whose workers are its own"
        fix = "Start as many workers as you want on the cluster (dask worker ADDRESS) and leave this out."
        raise NotebookInputError(option_words("workers", "--workers"), workers, problem, fix)
    _count(option_words("max_failures", "--max-failures"), max_failures, allow_none=True)
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise NotebookInputError("max_restarts", max_restarts, "is not valid", "Give a whole number, 0 or more.")
    if timeout is not None and not is_seconds(timeout, zero_ok=False):
        raise NotebookInputError("timeout", timeout, "is not valid", "Give a number of seconds above 0, or None.")


def _checked_notebook(nb_path: Path, kernel: str | None) -> str:
    """The notebook's pipeline; refuses what would fail every run (the checks ``execute`` makes first)."""
    source_nb = read_notebook(nb_path)
    check_magic_lines(source_nb)
    check_step_names(source_nb)
    check_kernel(kernel or source_nb.metadata.get("kernelspec", {}).get("name") or "python3")
    pipeline = pipeline_of(source_nb, nb_path)
    pinned = pinned_run_id(source_nb)
    if pinned is not None:
        problem = f"pins its run with '%durable_run {pipeline} --run-id {pinned}', so every sweep run would be it"
        raise NotebookInputError("notebook", str(nb_path), problem, "Remove --run-id from the notebook's %durable_run.")
    return pipeline


@front_end("python")
def sweep(
    notebook: str | os.PathLike[str],
    params: spec.ParamSets,
    *,
    workers: int | None = None,
    cluster: str | None = None,
    max_failures: int | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    timeout: float | None = None,
    kernel: str | None = None,
    store: str | os.PathLike[str] | None = None,
    progress: bool = True,
    takeover_s: float | None = None,
) -> SweepResult:
    """Execute ``notebook`` once per parameter set, each as a resumable headless run.

    Parameters
    ----------
    notebook
        The ``.ipynb`` file; every worker must see it (and the store) at the same path.
    params
        A YAML file (a list of parameter sets, or ``grid:`` and ``runs:``), or the same structure in
        Python: a list of mappings, or a mapping with ``grid`` and/or ``runs``.
    workers
        Worker processes of the local pool (default: the number of CPUs, at most one per run).
        Refused with ``cluster``, whose workers are its own.
    cluster
        A Dask scheduler's address (``tcp://host:8786``); default: a local pool.
    max_failures
        Stop the sweep once this many runs did not complete: runs not finished yet are cancelled.
    output_dir
        Where each run's executed notebook goes, as ``RUN_ID.ipynb``; default ``NOTEBOOK.sweep/``.
    max_restarts, timeout, kernel, store
        As for :func:`resumable.execute_notebook`, for every run.
    progress
        Show a progress bar over the runs on stderr.
    takeover_s
        How long a worker waits for a run's previous owner (a dead worker's kernel) to let go;
        default: the ownership lease (``RESUMABLE_LEASE_S``) plus 10 s.

    Returns
    -------
    SweepResult
        One :class:`SweepRun` per parameter set, in order; ``ok`` when every run completed.

    Raises
    ------
    SweepFileError
        The parameter sets cannot be used (the message names the file and the entry).
    SweepClusterError
        Dask is not installed, the local cluster did not start, or the scheduler cannot be reached.
    NotebookInputError
        The notebook or an option cannot be used.

    Examples
    --------
    >>> result = resumable.sweep("train.ipynb", {"grid": {"lr": [0.1, 0.01]}}, workers=2)  # doctest: +SKIP
    >>> [r.state for r in result.runs]  # doctest: +SKIP
    ['completed', 'completed']
    """
    started = time.perf_counter()
    _check(workers, cluster, max_failures, max_restarts, timeout)
    sets = spec.load(params)
    nb_path = Path(notebook).absolute()
    pipeline = _checked_notebook(nb_path, kernel)
    location = _config.store_location(store)  # absolute: workers do not share this process's folder
    open_store(location)  # an unusable store fails here, once
    out_dir = Path(output_dir).absolute() if output_dir is not None else default_output_dir(nb_path)
    wait = takeover_s if takeover_s is not None else _config.lease_s() + 10
    members = []
    for p in sets:
        run_id = spec.run_id_for(pipeline, p)
        output = str(out_dir / f"{run_id}.ipynb")
        members.append(Member(str(nb_path), output, run_id, p, str(location), max_restarts, timeout, kernel, wait))
    n_workers = min(workers or os.cpu_count() or 1, len(members))
    with _cluster.dask_client(n_workers, cluster) as client:
        out_dir.mkdir(parents=True, exist_ok=True)  # once the cluster answers: a sweep that cannot start leaves nothing
        runs, stopped = _gather(client, members, max_failures, progress, pipeline, cluster)
    return SweepResult(
        nb_path, pipeline, out_dir, location, tuple(runs), time.perf_counter() - started, stopped, cluster
    )


def _gather(
    client: Any, members: list[Member], max_failures: int | None, progress: bool, pipeline: str, cluster: str | None
) -> tuple[list[SweepRun], bool]:
    """Submit every run, collect them as they finish, and stop early at ``max_failures``."""
    from distributed import as_completed

    futures = [client.submit(run_member, m, pure=False) for m in members]  # pure=False: never a cached result
    index = {f.key: i for i, f in enumerate(futures)}
    done: dict[int, SweepRun] = {}
    failures = 0
    stopped = False
    bar = _bar(progress, len(members), pipeline)
    try:
        for future in as_completed(futures):  # type: ignore[no-untyped-call]
            i = index[future.key]
            done[i] = _outcome(future, members[i], cluster)
            failures += not done[i].ok
            if bar is not None:
                bar.set_postfix_str(", ".join(f"{n} {s}" for s, n in _counts(done.values()).items()), refresh=False)
                bar.update(1)
                if not done[i].ok:
                    bar.write(
                        f"run {done[i].run_id} {dict(members[i].params)}: {done[i].state.replace('_', ' ')}",
                        file=sys.stderr,
                    )
            if max_failures is not None and failures >= max_failures and len(done) < len(members):
                stopped = True
                break
    finally:
        if bar is not None:
            bar.close()
    if stopped:
        left = [f for i, f in enumerate(futures) if i not in done]
        client.cancel(left)
        limit = option_words(f"max_failures={max_failures}", f"--max-failures {max_failures}")
        why = (
            f"cancelled: the sweep stopped after {failures} runs failed ({limit}). Completed steps are "
            f"checkpointed; run the same sweep again to resume it."
        )
        for i, member in enumerate(members):
            if i not in done:
                done[i] = SweepRun(member.run_id, member.params, "cancelled", output=Path(member.output), error=why)
        if progress:
            print(f"stopped after {failures} failed runs ({limit}); {len(left)} runs cancelled", file=sys.stderr)
    return [done[i] for i in range(len(members))], stopped


def _outcome(future: Any, member: Member, cluster: str | None) -> SweepRun:
    """The run's record, also when its task never returned one (its workers died, the scheduler, or a bug)."""
    try:
        found: SweepRun = future.result()
    except CancelledError as cancelled:  # Dask cancels every future of a client that lost its scheduler
        return _cancelled(member, cluster, getattr(cancelled, "reason", None) or "unknown")
    except Exception as exc:  # the task raised: run_member reports every outcome of a run, so its workers died
        if _cluster.is_killed_worker(exc):
            error = (
                f"the workers executing run '{member.run_id}' died repeatedly (Dask's allowed failures); completed "
                f"steps are checkpointed. Find the cause, then run the same sweep again to resume it."
            )
            return SweepRun(member.run_id, member.params, "worker_died", output=Path(member.output), error=error)
        error = f"{type(exc).__name__}: {exc}"
        return SweepRun(member.run_id, member.params, "failed", output=Path(member.output), error=error)
    return found


def _cancelled(member: Member, cluster: str | None, reason: str) -> SweepRun:
    """A run whose future Dask cancelled: the client lost its scheduler (or someone cancelled the task)."""
    if reason != "scheduler-connection-lost":
        error = f"Dask cancelled run '{member.run_id}' ({reason}); run the same sweep again to resume it."
        return SweepRun(member.run_id, member.params, "cancelled", output=Path(member.output), error=error)
    where = f"the Dask scheduler at {cluster}" if cluster else "the local Dask cluster's scheduler"
    error = (
        f"the connection to {where} was lost before run '{member.run_id}' reported how it ended (the "
        f"scheduler stopped, or the network to it failed); its completed steps are checkpointed, and a "
        f"worker may still be executing it. Run the same sweep again on a working cluster to resume it."
    )
    return SweepRun(member.run_id, member.params, "scheduler_lost", output=Path(member.output), error=error)


def _counts(runs: Any) -> dict[str, int]:
    found: dict[str, int] = {}
    for r in runs:
        found[r.state] = found.get(r.state, 0) + 1
    return found


def _bar(enabled: bool, total: int, pipeline: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"sweep {pipeline}", unit="run", file=sys.stderr, leave=True, dynamic_ncols=True)
