"""Payloads written behind that the disk lost: cells that ran on them run again, and a Ctrl-C never hides the loss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_write_behind import (
    BIG,
    BLKIO,
    TESTS,
    _from_the_disk,
    failing_disk,  # noqa: F401  (the fixture, shared)
    needs_loop,
    needs_throttle,
)

from resumable._store.duckdb import DuckDBStore

LATER_KERNEL = r"""
import hashlib, json, os, sys
sys.path.insert(0, sys.argv[1])
from ipython_shell import shell_on_run, step

store, filler, size = sys.argv[2], sys.argv[3], int(sys.argv[4])
ip = shell_on_run(store, "fg")
ip.user_ns["hashlib"] = hashlib
ip.user_ns_hidden["hashlib"] = hashlib
step(ip, "big", f"b = os.urandom({size})").raise_error()
step(ip, "digest", "h = hashlib.sha256(b).hexdigest()").raise_error()  # uses big's output, ran before the sync
error = step(ip, "pay --effect", "paid = True").error_in_exec
report = {"error": type(error).__name__, "message": str(error), "h1": ip.user_ns["h"]}
os.unlink(filler)  # space comes back: the user does what the message says, runs the cell of 'big' again
step(ip, "big", f"b = os.urandom({size})").raise_error()
step(ip, "digest", "h = hashlib.sha256(b).hexdigest()").raise_error()
report["b"] = hashlib.sha256(ip.user_ns["b"]).hexdigest()
report["h2"] = ip.user_ns["h"]
print(json.dumps(report), flush=True)
"""


@needs_loop
def test_a_cell_that_ran_on_an_output_that_never_reached_the_disk_runs_again_with_it(
    failing_disk: tuple[Path, Path],  # noqa: F811
) -> None:
    store, filler = failing_disk
    env = {**os.environ, "RESUMABLE_GROUP_COMMIT_MS": "60000"}
    env.pop("RESUMABLE_RUN_ID", None)
    proc = subprocess.run(
        [sys.executable, "-c", LATER_KERNEL, str(TESTS), str(store), str(filler), str(BIG)],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ran = json.loads(proc.stdout.splitlines()[-1])
    handle = DuckDBStore(store)
    try:
        events = {s: [e.target for e in handle.list_events("r1", s)] for s in ("big", "digest")}
    finally:
        handle.close()
    assert ran["error"] == "StepWriteBackError"
    # 'digest' ran (and was committed) on the lost output before the sync failed; running 'big' again
    # invalidates it, so it runs again on the new value instead of restoring the stale one.
    assert events["digest"] == ["running", "completed", "pending", "running", "completed"], events
    assert ran["h2"] == ran["b"] != ran["h1"], (ran, events)


INTERRUPT_KERNEL = r"""
import hashlib, inspect, json, os, sys, threading, time, _thread
sys.path.insert(0, sys.argv[1])
from ipython_shell import shell_on_run, step
from resumable import _codec

store, size = sys.argv[2], int(sys.argv[3])
ip = shell_on_run(store, "fg")
step(ip, "big", f"b = os.urandom({size})").raise_error()
lines, first = inspect.getsourcelines(_codec.fsync_path)
at = first + next(i for i, line in enumerate(lines) if "os.fsync(" in line)
main, caught = threading.main_thread().ident, []
def in_fsync():
    frame = sys._current_frames().get(main)
    while frame is not None:
        if frame.f_code is _codec.fsync_path.__code__ and frame.f_lineno == at:
            return frame.f_locals["path"].name
        frame = frame.f_back
    return None
def ctrl_c():  # the user presses Ctrl-C while the fence waits for the disk
    deadline = time.monotonic() + 30
    while not caught and time.monotonic() < deadline:
        name = in_fsync()
        if name is None:
            time.sleep(0.0005)
            continue
        caught.append(name)
        _thread.interrupt_main()
        while in_fsync() is not None and time.monotonic() < deadline:
            time.sleep(0.0005)
threading.Thread(target=ctrl_c, daemon=True).start()
first = step(ip, "pay --effect", "paid = True").error_in_exec
from resumable._store import duckdb as _duckdb_store
remembered = [str(e) for e in _duckdb_store._SYNC_FAILED.values()]
second = step(ip, "pay --effect", "paid = True").error_in_exec
print(json.dumps({"caught": caught, "first": repr(first), "context": repr(first.__context__),
                  "consumed": str(first.__context__),
                  "remembered": remembered, "second": repr(second), "paid": "paid" in ip.user_ns,
                  "b": hashlib.sha256(ip.user_ns["b"]).hexdigest()}), flush=True)
"""


@needs_throttle
def test_a_ctrl_c_during_the_failing_sync_never_completes_the_step(failing_disk: tuple[Path, Path]) -> None:  # noqa: F811
    """The fence's fsync of a payload written behind meets the disk's write-back error while the user presses
    Ctrl-C (the disk is slow, throttled to 10 MB/s): the KeyboardInterrupt raised as fsync returns must not
    make the error forgotten (``_SYNC_FAILED``), or a next fence whose fsync returns 0 commits 'big' completed
    on lost bytes. (This ext4 happens to report a second error, EIO from converting unwritten extents, so the
    second fence still fails the step here; a file system that reports the error once would not.)"""
    store, _filler = failing_disk
    loop = subprocess.run(["findmnt", "-no", "SOURCE", f"{store}.payloads"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    group = BLKIO / f"review2-{os.getpid()}"
    group.mkdir()
    try:
        device = subprocess.run(["lsblk", "-no", "MAJ:MIN", loop], capture_output=True, text=True,
                                check=True).stdout.strip()  # fmt: skip
        (group / "blkio.throttle.write_bps_device").write_text(f"{device} 10485760\n")
        env = {**os.environ, "RESUMABLE_GROUP_COMMIT_MS": "60000"}
        env.pop("RESUMABLE_RUN_ID", None)
        script = f'echo $$ > {group}/cgroup.procs && exec "$0" "$@"'
        command = ["sh", "-c", script, sys.executable, "-c", INTERRUPT_KERNEL, str(TESTS), str(store), str(BIG)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)
    finally:
        group.rmdir()
    assert proc.returncode == 0, proc.stderr[-3000:]
    ran = json.loads(proc.stdout.splitlines()[-1])
    _from_the_disk(store)
    handle = DuckDBStore(store)
    try:
        state = {s.step: s.state.value for s in handle.list_steps("r1")}
    finally:
        handle.close()
    assert ran["caught"] and "OSError" in ran["context"], ran  # the fsync failed, and the Ctrl-C came with it
    # The error that interrupted fsync consumed must be remembered (a later fsync may return 0). On this ext4 a
    # second, different error (EIO) is sometimes reported and remembered by a later sync: that does not count.
    assert ran["consumed"] in ran["remembered"], ran
    assert state["big"] == "failed", (state, ran)  # never completed on bytes the disk did not take
