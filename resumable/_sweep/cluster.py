"""Where a sweep's runs execute: a local Dask cluster of worker processes, or a Dask scheduler given by address.

Both are Dask's, so the local pool and a cluster behave alike: each worker process runs one run at
a time (one thread), a worker that dies has its run handed to another by the scheduler, and a run
whose workers died ``distributed.scheduler.allowed-failures`` times (3 by default) is reported
with ``KilledWorker``. Dask is imported here only, and only when a sweep starts.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from resumable.errors import SweepClusterError, option_words

# A scheduler address is tried with a plain TCP connection first, for at most this long: a port
# nobody listens on, a host name that does not resolve or a host that does not answer is reported
# at once, instead of after Dask's connection retries.
PROBE_S = 5.0
# Then Dask's own handshake: something that listens but is not a Dask scheduler answers within this.
CONNECT_TIMEOUT_S = 10
DEFAULT_PORT = 8786  # Dask's, for an address given without one


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
    fix = (
        "Check the address, start a scheduler there ('dask scheduler') and its workers ('dask worker ADDRESS'), "
        f"or leave out {option_words('cluster', '--cluster')} to run on a local pool."
    )
    problem = _unreachable(address)
    if problem is not None:
        raise SweepClusterError(address, problem, fix)
    try:
        client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        problem = f"cannot be reached ({type(exc).__name__}: {' '.join(str(exc).split())})"
        raise SweepClusterError(address, problem, fix) from None
    with client:
        yield client


def _unreachable(address: str) -> str | None:
    """Why a TCP connection to the scheduler's host and port fails (None: it opens, or the address is not TCP)."""
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        host, port = parse_host_port(location, DEFAULT_PORT)
    except ValueError as exc:
        return f"is not an address Dask understands ({' '.join(str(exc).split())})"
    if scheme not in ("tcp", "tls"):
        return None  # another transport: Dask's own connection says
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_S):
            return None
    except OSError as exc:
        return f"cannot be reached: {_why_not(exc, host, port)}"


def _why_not(exc: OSError, host: str, port: object) -> str:
    """The failed connection, in words."""
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing listens on port {port} of {host} (connection refused)"
    if isinstance(exc, socket.gaierror):
        return f"the host name {host!r} does not resolve"
    if isinstance(exc, TimeoutError):
        return f"{host} port {port} did not answer within {PROBE_S:g} s"
    return f"{host} port {port}: {exc.strerror or exc}"


def is_killed_worker(exc: BaseException) -> bool:
    """Whether a task's error is Dask's verdict that its workers kept dying."""
    from distributed.scheduler import KilledWorker

    return isinstance(exc, KilledWorker)
