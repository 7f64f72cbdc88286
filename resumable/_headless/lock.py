"""One executor per run: an advisory lock held for the whole headless execution.

The store already refuses a second owner of a running step, but between steps two executors of
one run would both go on, each re-running the notebook's plain cells. The lock makes the second
one stop at once with :class:`RunOwnedError`. It is a ``flock`` on a file in a private folder of
the temporary directory, keyed by the store's path and the run id, so the user's folders get no
lock files and a crashed executor leaves nothing held (the kernel releases ``flock`` locks of a
dead process).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from resumable._owner import current_owner
from resumable._units import human_time
from resumable.errors import RunOwnedError


def _folder() -> Path | None:
    """``$TMPDIR/resumable-<uid>``, private to this user; None where that cannot be trusted."""
    folder = Path(tempfile.gettempdir()) / f"resumable-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.stat()
    except OSError:
        return None
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None  # made by someone else, or readable by others: do not use it
    return folder


@contextmanager
def executor_lock(store_path: Path | str, run_id: str, pipeline: str) -> Iterator[None]:
    """Hold the run's executor lock for the block; RunOwnedError when another executor holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: the store's per-step ownership is the only guard
        yield
        return
    folder = _folder()
    if folder is None:
        yield
        return
    key = hashlib.sha256(f"{store_path}\0{run_id}".encode()).hexdigest()[:32]
    fd = os.open(folder / f"execute-{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            started = human_time(holder.get("started", 0))
            raise RunOwnedError(
                run_id, pipeline, holder.get("host", "?"), holder.get("pid", 0), started, None
            ) from None
        me = current_owner()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"host": me.host, "pid": me.pid, "started": me.started}).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
