"""Payloads written behind: a kernel cell with a large output returns before its payload file is on disk.

A real IPython shell in a subprocess (the group-commit window set to a minute, so its completion is
only in the completion log) is killed with SIGKILL right after its cells returned. The next process
replays the log: a payload the kill left intact (the page cache survives a process's death) makes a
completed step that loads equal; a payload cut short, standing in for a power cut that took the
unsynced page cache, makes the step interrupted, run again on resume, with a warning naming it. An
effect step never defers: its row is committed, payload synced, before the cell returns; nor does a
plain cell that asked for its idempotency key or fencing token (a power cut right after it returned,
simulated by removing what was only in the page cache, never runs its effect twice).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

import resumable
from resumable import _codec
from resumable._store import registry
from resumable._store.completion_log import folder_for, read_records
from resumable._store.duckdb import DuckDBStore
from resumable._store.rows import decode_quick_rows

TESTS = Path(__file__).resolve().parent
SIZE = 3_000_000  # above the inline limit: each output is a payload file
assert _codec.INLINE_LIMIT < SIZE

KERNEL = r"""
import hashlib, json, os, signal, sys
sys.path.insert(0, sys.argv[1])
from ipython_shell import shell_on_run, step

store, mode = sys.argv[2], sys.argv[3]
ip = shell_on_run(store, "wb")
report = {}
names = [("pay --effect", "p")] if mode == "effect" else [("first", "b1"), ("second", "b2")]
for line, var in names:
    step(ip, line, f"{var} = os.urandom({sys.argv[4]})").raise_error()
    report[var] = hashlib.sha256(ip.user_ns[var]).hexdigest()
if mode == "effect":
    from resumable._store import cells, filelock
    from pathlib import Path
    report["pending"] = cells.has_pending(str(filelock.lock_path(Path(store))))
print(json.dumps(report), flush=True)
if not os.environ.get("NO_KILL"):
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _kernel(folder: Path, mode: str, *, kill: bool = True) -> dict[str, Any]:
    env = {**os.environ, "RESUMABLE_GROUP_COMMIT_MS": "60000" if kill else "50"}
    env.pop("RESUMABLE_RUN_ID", None)
    if not kill:
        env["NO_KILL"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", KERNEL, str(TESTS), str(folder / "store.duckdb"), mode, str(SIZE)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == (-9 if kill else 0), proc.stderr
    return dict(json.loads(proc.stdout.splitlines()[-1]))


def _logged_unsynced(folder: Path) -> dict[str, tuple[str, str, int]]:
    """Per step, the payload file its logged completion says was not synced yet, with its digest and size."""
    found: dict[str, tuple[str, str, int]] = {}
    logs = folder_for(folder / "store.duckdb")
    for log in sorted(logs.iterdir()) if logs.exists() else []:
        for payload in read_records(log)[0]:
            rows = decode_quick_rows(payload)[1]
            sizes = {(c[1], c[9]): (c[5], int(c[7])) for c in rows.checkpoints}
            for _, step, file in rows.unsynced:
                found[step] = (file, *sizes[(step, file)])
    return found


def _states(folder: Path) -> dict[str, str]:
    store = DuckDBStore(folder / "store.duckdb")
    try:
        return {s.step: s.state.value for s in store.list_steps("r1")}
    finally:
        store.close()


def _loaded(folder: Path, step: str, name: str) -> str:
    value = resumable.load("r1", step, name, store=str(folder / "store.duckdb"))
    return hashlib.sha256(value).hexdigest()


def test_large_outputs_written_behind_survive_sigkill_before_the_group_commit(tmp_path: Path) -> None:
    """Both cells (the first started by a transaction, the second decided in memory) returned with their
    payloads unsynced and only logged; the next process syncs, checks and replays them: completed, equal."""
    ran = _kernel(tmp_path, "large")
    unsynced = _logged_unsynced(tmp_path)
    assert sorted(unsynced) == ["first", "second"], unsynced
    assert _states(tmp_path) == {"first": "completed", "second": "completed"}
    assert _loaded(tmp_path, "first", "b1") == ran["b1"]
    assert _loaded(tmp_path, "second", "b2") == ran["b2"]
    assert _kernel(tmp_path, "large", kill=False) == ran  # restored, not run again


def test_a_payload_lost_before_it_was_synced_makes_the_step_interrupted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The second cell's payload cut short (what a power cut does to bytes still in the page cache): the
    replay never makes that step completed; it reads interrupted, the resume runs it again, and loads the
    new value. The first cell, intact, stays completed."""
    ran = _kernel(tmp_path, "large")
    file, _, size = _logged_unsynced(tmp_path)["second"]
    payload = tmp_path / "store.duckdb.payloads" / file
    with open(payload, "r+b") as f:
        f.truncate(size // 2)
    process = next(folder_for(tmp_path / "store.duckdb").iterdir()).name.rsplit("_", 1)[0]
    with caplog.at_level(logging.WARNING, logger="resumable"):
        assert _states(tmp_path) == {"first": "completed", "second": "interrupted"}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [
        f"store {tmp_path / 'store.duckdb'}: completed step 'second' of run 'r1' in the completion log of dead "
        f"process {process} is not replayed as completed: its payload file {Path(file).name} holds {size // 2} "
        f"bytes, not {size}. Its payload had not reached the disk when the process stopped (a power cut or a "
        "crash of the machine loses such bytes, and so does a disk that fails to write them), so the step reads "
        "interrupted and runs again when the run resumes (a notebook: when its cell runs again)."
    ]
    again = _kernel(tmp_path, "large", kill=False)
    assert again["b1"] == ran["b1"], "the intact step ran again"
    assert again["b2"] != ran["b2"], "the step whose payload was lost was not run again"
    assert _states(tmp_path) == {"first": "completed", "second": "completed"}
    assert _loaded(tmp_path, "second", "b2") == again["b2"]


def test_an_effect_step_with_a_large_output_is_committed_before_it_returns(tmp_path: Path) -> None:
    """Never deferred: nothing of it is pending when the cell returns, no log record names it, and after a
    SIGKILL right then the step is completed from the store alone."""
    ran = _kernel(tmp_path, "effect")
    assert ran["pending"] is False
    assert _logged_unsynced(tmp_path) == {}
    assert _states(tmp_path) == {"pay": "completed"}
    assert _loaded(tmp_path, "pay", "p") == ran["p"]


KEY_KERNEL = r"""
import json, os, signal, sys
sys.path.insert(0, sys.argv[1])
from ipython_shell import started_shell, step
import resumable

store, ledger, size, mode, ask = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
os.environ["RESUMABLE_STORE"] = store
ip = started_shell()
ip.run_cell("%durable_run rv --run-id r1").raise_error()
ip.user_ns.update(os=os, resumable=resumable, LEDGER=ledger, SIZE=size)
body = f"key = resumable.{ask}()\nos.system(f'echo {{key}} >> {{LEDGER}} && sync')\nb = os.urandom(SIZE)"
step(ip, "pay", body).raise_error()
if mode == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _key_kernel(folder: Path, mode: str, ask: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RESUMABLE_GROUP_COMMIT_MS": "60000" if mode == "kill" else "50"}
    env.pop("RESUMABLE_RUN_ID", None)
    return subprocess.run(
        [sys.executable, "-c", KEY_KERNEL, str(TESTS), str(folder / "store.duckdb"), str(folder / "ledger"),
         str(SIZE), mode, ask],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip


def _committed_state(folder: Path, step: str) -> Any:
    """The state DuckDB itself committed (what a power cut leaves), read without any replay of logs."""
    con = duckdb.connect(str(folder / "store.duckdb"), read_only=True)
    try:
        row = con.execute("SELECT state FROM steps WHERE run_id = 'r1' AND step = ?", [step]).fetchone()
    finally:
        con.close()
    return None if row is None else row[0]


def _power_cut(folder: Path) -> None:
    """What a power cut takes: every completion-log record and the bytes of each payload they say are unsynced."""
    for file, _, _ in _logged_unsynced(folder).values():
        (folder / "store.duckdb.payloads" / file).write_bytes(b"")
    logs = folder_for(folder / "store.duckdb")
    for log in sorted(logs.iterdir()) if logs.exists() else []:
        log.unlink()


@pytest.mark.parametrize("ask", ["idempotency_key", "fencing_token"])
def test_a_cell_that_asked_for_its_key_runs_its_effect_once_after_a_power_cut(tmp_path: Path, ask: str) -> None:
    """A plain cell becomes an effect step when it asks ``idempotency_key()`` or ``fencing_token()`` (the
    fence writes its start). Its completion is then committed, payload synced, before it returns, as an
    ``--effect`` cell's is: a power cut right after it returned (the log and the unsynced payload gone)
    leaves it completed, and the resume restores it instead of running its effect a second time."""
    proc = _key_kernel(tmp_path, "kill", ask)
    assert proc.returncode == -9, proc.stderr
    state = _committed_state(tmp_path, "pay")
    _power_cut(tmp_path)
    again = _key_kernel(tmp_path, "resume", ask)
    assert again.returncode == 0, again.stderr
    effects = (tmp_path / "ledger").read_text().splitlines()
    assert (state, len(effects)) == ("completed", 1), (state, effects)


# A disk whose write-back fails: ext4 on a loop device whose backing store (a small tmpfs) is full.
# The payload's write succeeds (the page cache takes it), its write-back does not; Linux reports that
# error to one fsync only, and keeps the bytes in the page cache, so a later fsync returns 0 and a
# read from the cache matches. Needs root and loop devices.
BIG = 12_000_000  # above what the backing store has left

needs_loop = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/dev/loop-control").exists() or not all(
        shutil.which(tool) for tool in ("losetup", "mkfs.ext4", "mount", "umount")
    ),
    reason="a disk whose write-back fails needs root and loop devices (losetup, mkfs.ext4, mount)",
)  # fmt: skip


@pytest.fixture
def failing_disk(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A store whose payload folder is an ext4 whose backing store has a few MB left, and the filler to remove.

    Only the payloads are on it: the database file is on a healthy disk, as the failure is the payloads'.
    """
    backing, mounted = tmp_path / "backing", tmp_path / "store.duckdb.payloads"
    backing.mkdir()
    mounted.mkdir()
    run = functools.partial(subprocess.run, check=True, capture_output=True, timeout=60)
    run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(backing)])
    loop = None
    try:
        image = backing / "image"
        run(["truncate", "-s", "256M", str(image)])
        run(["mkfs.ext4", "-q", "-O", "^has_journal", str(image)])
        loop = run(["losetup", "-f", "--show", str(image)], text=True).stdout.strip()
        run(["mount", "-o", "errors=continue", loop, str(mounted)])
        mounted.chmod(0o700)
        filler = backing / "filler"
        free = shutil.disk_usage(backing).free
        with open(filler, "wb") as f:
            f.write(bytes(free - 4_000_000))  # about 4 MB left for the loop device's writes
        yield tmp_path / "store.duckdb", filler
    finally:  # lazily: the loop device lets go of its image asynchronously once detached
        subprocess.run(["umount", "-l", str(mounted)], capture_output=True, check=False)
        if loop:
            subprocess.run(["losetup", "-d", loop], capture_output=True, check=False)
        subprocess.run(["umount", "-l", str(backing)], capture_output=True, check=False)


FULL_KERNEL = r"""
import hashlib, json, os, signal, sys
sys.path.insert(0, sys.argv[1])
from ipython_shell import shell_on_run, step

store, filler, mode, size = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
ip = shell_on_run(store, "fg")
step(ip, "big", f"b = os.urandom({size})").raise_error()
if mode == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
error = step(ip, "pay --effect", "paid = True").error_in_exec
report = {"error": type(error).__name__, "message": str(error), "reason": getattr(error, "reason", None),
          "paid": "paid" in ip.user_ns}
os.unlink(filler)  # space comes back: the cell is run again
step(ip, "big", f"b = os.urandom({size})").raise_error()
report["b"] = hashlib.sha256(ip.user_ns["b"]).hexdigest()
print(json.dumps(report), flush=True)
"""


def _full_kernel(store: Path, filler: Path, mode: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RESUMABLE_GROUP_COMMIT_MS": "60000"}  # only the fence commits the cell
    env.pop("RESUMABLE_RUN_ID", None)
    return subprocess.run(
        [sys.executable, "-c", FULL_KERNEL, str(TESTS), str(store), str(filler), mode, str(BIG)],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip


def _from_the_disk(store: Path) -> None:
    """Drop the payloads' clean pages from the page cache: the next read is what a reboot would find."""
    for file in (store.parent / (store.name + ".payloads")).rglob("*.bin"):
        fd = os.open(file, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


@needs_loop
def test_a_cell_whose_output_never_reached_the_disk_fails_and_the_next_effect_cell_says_so(
    failing_disk: tuple[Path, Path],
) -> None:
    """The fence before the effect cell syncs the first cell's payload and meets the disk's write-back error.
    That step is recorded failed with StoreFullError (never completed pointing at lost bytes, whatever a
    later fsync says), and the effect cell stops before its body with our error naming that step. Once
    space is back the cell runs again, and its output loads equal from the disk."""
    store, filler = failing_disk
    proc = _full_kernel(store, filler, "effect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ran = json.loads(proc.stdout.splitlines()[-1])
    assert ran["reason"] in ("[Errno 28] No space left on device", "[Errno 5] Input/output error"), ran
    payloads = f"{store}.payloads"
    assert (ran["error"], ran["paid"]) == ("StepWriteBackError", False)
    assert ran["message"] == (
        f"step 'big' (run 'r1') returned in this process, but its outputs then failed to reach the disk at "
        f"'{payloads}' ({ran['reason']}), so the step was recorded failed with that error, not completed. "
        "Completed steps and their checkpoints are intact; no idempotency key or fencing token was handed out "
        "after it returned, and what raised this was stopped before it ran on. Fix the disk (make space free, "
        "or check the system log), then run the cell of step 'big' again: steps that read its outputs run "
        "again with them."
    )
    store_handle = DuckDBStore(store)
    try:
        failed = [e.detail for e in store_handle.list_events("r1", "big") if e.target == "failed"]
        states = {s.step: s.state.value for s in store_handle.list_steps("r1")}
    finally:
        store_handle.close()
    assert states == {"big": "completed"}
    assert len(failed) == 1 and failed[0] is not None
    kind = "StoreFullError" if "28" in ran["reason"] else "StoreWriteError"
    assert failed[0].startswith(
        f"{kind}: step 'big' (run 'r1'): its outputs could not be stored: "
        f"{'no space left for them' if kind == 'StoreFullError' else 'an error while writing them'} at "
        f"'{payloads}' ({ran['reason']})"
    ), failed
    _from_the_disk(store)
    try:
        assert hashlib.sha256(resumable.load("r1", "big", "b", store=str(store))).hexdigest() == ran["b"]
    finally:
        registry.open_store(str(store)).close()  # the file is let go of: the disk is unmounted next


@needs_loop
def test_a_replay_never_completes_a_step_whose_payload_the_disk_failed_to_write(
    failing_disk: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The kernel dies after its cell returned; its fsync of the payload had met the write-back error (done
    here for it). The replay's own fsync then returns 0 and the page cache still holds the bytes: the
    replay reads them from the disk instead, finds them wrong, and the step reads interrupted."""
    store, filler = failing_disk
    proc = _full_kernel(store, filler, "kill")
    assert proc.returncode == -9, proc.stderr[-3000:]
    file = _logged_unsynced(store.parent)["big"][0]
    with pytest.raises(OSError):  # the dead process's fsync: the one that is told
        _codec.fsync_path(store.parent / "store.duckdb.payloads" / file)
    filler.unlink()
    process = next(folder_for(store).iterdir()).name.rsplit("_", 1)[0]
    with caplog.at_level(logging.WARNING, logger="resumable"):
        assert _states(store.parent) == {"big": "interrupted"}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [
        f"store {store}: completed step 'big' of run 'r1' in the completion log of dead process {process} is not "
        f"replayed as completed: its payload file {Path(file).name} no longer matches its digest. Its payload had "
        "not reached the disk when the process stopped (a power cut or a crash of the machine loses such bytes, "
        "and so does a disk that fails to write them), so the step reads interrupted and runs again when the run "
        "resumes (a notebook: when its cell runs again)."
    ]


BLKIO = Path("/sys/fs/cgroup/blkio")
needs_throttle = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/dev/loop-control").exists() or not (BLKIO / "cgroup.procs").exists(),
    reason="a slow disk needs root, loop devices and the cgroup v1 blkio controller (to throttle one)",
)

CLOSE_KERNEL = r"""
import json, os, sys, threading, time
sys.path.insert(0, sys.argv[1])
from ipython_shell import shell_on_run, step
from resumable._store import registry

store = sys.argv[2]
ip = shell_on_run(store, "ro")
step(ip, "big", "b = bytes(12_000_000)").raise_error()
s = registry.open_store(store)
keeper = next(t for t in threading.enumerate() if t.name == "resumable-store")
deadline = time.monotonic() + 20
def syncing():  # the housekeeper is in its sync of the payload, without the connection's lock
    frame, names = sys._current_frames().get(keeper.ident), set()
    while frame is not None:
        names.add(frame.f_code.co_name)
        frame = frame.f_back
    return "sync_payloads" in names
while not syncing() and time.monotonic() < deadline:
    time.sleep(0.001)
caught = syncing()
s.close()
opens = s._conn._session
keeper.join(20)
print(json.dumps({"caught": caught, "reopened": s._conn._session - opens, "open": s._conn._con is not None}))
"""


@needs_throttle
def test_close_lets_go_of_the_file_while_the_housekeeper_syncs_a_payload(tmp_path: Path) -> None:
    """close() while the group commit syncs a payload written behind (a disk throttled to 10 MB/s): close
    writes the cell and lets go of the file; the housekeeper, done with its sync, does not open it again
    (another process would wait for it; at exit it would be inside DuckDB after shutdown gave up on it)."""
    image, payloads, group = tmp_path / "image", tmp_path / "store.duckdb.payloads", BLKIO / f"payfix-{os.getpid()}"
    payloads.mkdir()
    run = functools.partial(subprocess.run, check=True, capture_output=True, text=True, timeout=60)
    run(["truncate", "-s", "256M", str(image)])
    run(["mkfs.ext4", "-q", str(image)])
    loop = run(["losetup", "-f", "--show", str(image)]).stdout.strip()
    try:
        run(["mount", loop, str(payloads)])
        payloads.chmod(0o700)
        group.mkdir()
        device = run(["lsblk", "-no", "MAJ:MIN", loop]).stdout.strip()
        (group / "blkio.throttle.write_bps_device").write_text(f"{device} 10485760\n")
        env = {**os.environ, "RESUMABLE_GROUP_COMMIT_MS": "50"}
        env.pop("RESUMABLE_RUN_ID", None)
        script = f'echo $$ > {group}/cgroup.procs && exec "$0" "$@"'
        proc = run(["sh", "-c", script, sys.executable, "-c", CLOSE_KERNEL, str(TESTS), str(tmp_path / "store.duckdb")])
        assert json.loads(proc.stdout.splitlines()[-1]) == {"caught": True, "reopened": 0, "open": False}
    finally:
        subprocess.run(["umount", "-l", str(payloads)], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", loop], capture_output=True, check=False)
        if group.exists():
            group.rmdir()


PIPELINE = r"""
import json, os, sys
import resumable

store, filler, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
pipe = resumable.Pipeline("fg", store=store)
report = {}
with pipe.run(run_id="r1") as run:
    run.step("big", os.urandom, size)
    try:
        run.step("pay", resumable.idempotency_key)
    except resumable.StepWriteBackError as error:
        report = {"error": type(error).__name__, "step": error.step, "reason": error.reason}
report["states"] = {s.step: s.state.value for s in pipe.run(run_id="r1").steps()}
print(json.dumps(report), flush=True)
"""


@needs_loop
def test_a_pipeline_step_whose_output_never_reached_the_disk_fails_before_the_next_key(
    failing_disk: tuple[Path, Path],
) -> None:
    """An owned run's quick step is written behind too: the fence before the next step's key meets the
    write-back error; the step is recorded failed, and no key is handed out after it."""
    store, filler = failing_disk
    env = {**os.environ, "RESUMABLE_GROUP_COMMIT_MS": "60000"}
    env.pop("RESUMABLE_RUN_ID", None)
    proc = subprocess.run(
        [sys.executable, "-c", PIPELINE, str(store), str(filler), str(BIG)],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ran = json.loads(proc.stdout.splitlines()[-1])
    assert (ran.get("error"), ran.get("step")) == ("StepWriteBackError", "big"), (ran, proc.stderr[-2000:])
    assert ran["states"]["big"] == "failed" and ran["states"].get("pay") != "completed", ran
