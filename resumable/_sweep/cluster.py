"""Where a sweep's runs execute: a local Dask cluster of worker processes, or a Dask scheduler given by address.

Both are Dask's, so the local pool and a cluster behave alike: each worker process runs one run at
a time (one thread), a worker that dies has its run handed to another by the scheduler, and a run
whose workers died ``distributed.scheduler.allowed-failures`` times (3 by default) is reported
with ``KilledWorker``. Dask is imported here only, and only when a sweep starts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from resumable.errors import SweepClusterError

CONNECT_TIMEOUT_S = 20


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        fix = "Install it with: pip install 'resumable[dask]'"
        raise SweepClusterError(None, "a sweep needs Dask, which is not installed", fix) from None
    return distributed


@contextmanager
def dask_client(workers: int, address: str | None) -> Iterator[Any]:
    """A Dask client on ``address``, or on a local cluster of ``workers`` single-threaded processes."""
    distributed = _distributed()
    if address is None:
        try:
            cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address="127.0.0.1:0",  # its HTTP server on a free port, never a taken 8787
                memory_limit=0,  # the memory a run uses is its kernel's, a separate process
                silence_logs=logging.CRITICAL,  # a closing cluster logs heartbeat errors; runs report their own
            )
        except (OSError, RuntimeError) as exc:
            fix = "Check the temporary folder and the number of processes allowed, or pass a cluster address."
            raise SweepClusterError(None, f"could not be started ({exc})", fix) from None
        try:
            with distributed.Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        problem = f"cannot be reached ({type(exc).__name__}: {' '.join(str(exc).split())})"
        fix = "Start one with 'dask scheduler' and workers with 'dask worker ADDRESS', or leave out the address."
        raise SweepClusterError(address, problem, fix) from None
    with client:
        yield client


def is_killed_worker(exc: BaseException) -> bool:
    """Whether a task's error is Dask's verdict that its workers kept dying."""
    from distributed.scheduler import KilledWorker

    return isinstance(exc, KilledWorker)
