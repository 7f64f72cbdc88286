# ruff: noqa
"""A kernel's store closed while its housekeeper fsyncs a payload written behind (without the connection's
lock): close() commits and lets go of the file, then the housekeeper takes the lock back and opens the file
again, holding it until its idle close. Run by reopen_after_close.sh (a slow disk: a throttled loop device)."""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ipython_shell import started_shell, step

store = sys.argv[1]
os.environ["RESUMABLE_STORE"] = store
ip = started_shell()
ip.run_cell("%durable_run ro --run-id r1").raise_error()
step(ip, "big", "b = bytes(120_000_000)").raise_error()
from resumable._store import registry

s = registry.open_store(store)
time.sleep(0.1)  # the housekeeper is in its fsync, without the connection's lock
t0 = time.monotonic()
s.close()
print(f"close() returned after {time.monotonic() - t0:.2f}s; file open: {s._conn._con is not None}", flush=True)
reopened = None
end = time.monotonic() + 5
while time.monotonic() < end and reopened is None:
    if s._conn._con is not None:
        reopened = time.monotonic()
    time.sleep(0.01)
if reopened is not None:
    while s._conn._con is not None:
        time.sleep(0.01)
    print(f"reopened by the housekeeper after close(), held {time.monotonic() - reopened:.2f}s", flush=True)
else:
    print("not reopened", flush=True)
