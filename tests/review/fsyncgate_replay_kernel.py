# ruff: noqa
"""Kernel of fsyncgate_replay.sh: its housekeeper's fsync meets a write-back error, then it is SIGKILLed."""

import hashlib
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ipython_shell import started_shell, step

store, filler = sys.argv[1], sys.argv[2]
os.environ["RESUMABLE_STORE"] = store
ip = started_shell()
ip.run_cell("%durable_run fg --run-id r1").raise_error()
ip.user_ns["os"] = os
step(ip, "big", "b = os.urandom(40_000_000)").raise_error()
open(os.environ["FG_DIGEST"], "w").write(hashlib.sha256(ip.user_ns["b"]).hexdigest())
time.sleep(2.0)  # the group commit's fsync meets the full backing store (and retries)
os.unlink(filler)  # space comes back
os.kill(os.getpid(), signal.SIGKILL)  # before its retry: the next process replays the log
