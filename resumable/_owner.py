"""This process's identity, and whether a recorded owner is still alive."""

from __future__ import annotations

import functools
import os
import socket

from resumable._records import Owner


@functools.cache
def _process_started(pid: int) -> float:
    import psutil  # here: importing it costs more than the rest of ``import resumable``

    return round(float(psutil.Process(pid).create_time()), 2)


def current_owner(kernel_id: str | None = None) -> Owner:
    """The owner record for this process."""
    pid = os.getpid()
    return Owner(socket.gethostname(), pid, _process_started(pid), kernel_id)


def is_local(owner: Owner) -> bool:
    """Whether ``owner`` was recorded on this host, where its process can be checked directly."""
    return owner.host == socket.gethostname()


def is_alive(owner: Owner) -> bool:
    """Whether the recorded process still runs; a reused pid does not count.

    An owner on another host cannot be checked from here and counts as alive; the store then asks
    its lease (``_store/lease.py``), which a live owner renews.
    """
    if owner.host != socket.gethostname():
        return True
    import psutil

    try:
        started = round(psutil.Process(owner.pid).create_time(), 2)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True
    return bool(abs(started - owner.started) < 1.0 and psutil.Process(owner.pid).status() != psutil.STATUS_ZOMBIE)
