# ruff: noqa
"""Kernel of fsyncgate.sh (review reproduction): a cell with a 40 MB output on a disk whose write-back fails."""

import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ipython_shell import started_shell, step

store, filler = sys.argv[1], sys.argv[2]
os.environ["RESUMABLE_STORE"] = store
ip = started_shell()
ip.run_cell("%durable_run fg --run-id r1").raise_error()
ip.user_ns["os"] = os
r = step(ip, "big", "b = os.urandom(40_000_000)")
print(
    "cell error:",
    None if r.error_in_exec is None else f"{type(r.error_in_exec).__name__}: {str(r.error_in_exec)[:300]}",
    flush=True,
)
if r.error_in_exec is None:
    open(os.environ["FG_DIGEST"], "w").write(hashlib.sha256(ip.user_ns["b"]).hexdigest())
time.sleep(2.0)  # the group commit's fsync meets the full backing store (and retries)
os.unlink(filler)  # space comes back
from pathlib import Path

from resumable._store import cells, filelock

key = str(filelock.lock_path(Path(store)))
deadline = time.monotonic() + 30
while cells.has_pending(key) and time.monotonic() < deadline:
    time.sleep(0.05)
print("pending after space came back:", cells.has_pending(key), flush=True)
import resumable

resumable.close_stores() if hasattr(resumable, "close_stores") else None
