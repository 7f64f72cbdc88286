"""Faults while a step's outputs are stored: a Ctrl-C, a full disk, a read-only store, a missing key.

Interrupts are injected at the real points (a pickling hook, ``_thread.interrupt_main`` while a
large checkpoint is written, SIGINT timers aimed at the completion and its COMMIT); full and
read-only disks are real (a small tmpfs and a read-only bind mount in a user namespace, or a file
size limit). After each fault the step is failed (or completed, when the commit happened), the
cell runs again in the same shell, and another process can use the run.
"""

from __future__ import annotations

import _thread
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ipython_shell import fresh_kernel, started_shell, step
from kernel_sockets import kernel_config

import resumable
from resumable import SigningKeyError, StepState, StoreFullError, StoreReadOnlyError
from resumable._owner import current_owner
from resumable._store import StepRequest, open_store

SIGINT_TRIALS = int(os.environ.get("RESUMABLE_SIGINT_TRIALS", "12"))
STORING = "KeyboardInterrupt: interrupted by the user (while its outputs were being stored)"

OTHER_PROCESS = """
import sys, resumable
pipe = resumable.Pipeline(sys.argv[2], store=sys.argv[1])
with pipe.run(run_id=sys.argv[3]) as run:
    print(run.step("from_elsewhere", lambda: 7))
"""


def run_elsewhere(store: Path, pipeline: str, run_id: str) -> subprocess.CompletedProcess[str]:
    """Another process runs a step of the run (it would get RunOwnedError if a step were left running)."""
    return subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS, str(store), pipeline, run_id],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def shell(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("RESUMABLE_STORE", str(store_path))
    monkeypatch.setenv("RESUMABLE_RUN_ID", "r1")
    ip = started_shell()
    ip.run_line_magic("durable_run", "nb")
    yield ip
    fresh_kernel(ip)


INTERRUPTING = '''
class Interrupting:
    """Pickling it raises KeyboardInterrupt once, as a Ctrl-C during the checkpoint write does."""
    armed = True
    def __reduce__(self):
        if Interrupting.armed:
            Interrupting.armed = False
            raise KeyboardInterrupt
        return (Interrupting, ())
'''


def test_ctrl_c_while_outputs_are_pickled_leaves_the_step_failed(shell: Any, store_path: Path) -> None:
    """A Ctrl-C while a cell's outputs are stored: the step is failed with the reason, other processes can
    use the run, and running the cell again works (no 'running' to 'running')."""
    shell.run_cell(INTERRUPTING)
    first = step(shell, "big", "value = Interrupting()")
    assert isinstance(first.error_in_exec, KeyboardInterrupt)
    store = open_store(store_path)
    status = store.get_step("r1", "big")
    assert status is not None
    assert (status.state, status.error) == (StepState.FAILED, STORING)
    assert store.list_events("r1", "big")[-1].detail == STORING
    elsewhere = run_elsewhere(store_path, "nb", "r1")
    assert (elsewhere.returncode, elsewhere.stdout, elsewhere.stderr) == (0, "7\n", "")
    again = step(shell, "big", "value = Interrupting()")
    assert again.error_in_exec is None
    status = store.get_step("r1", "big")
    assert status is not None
    assert (status.state, status.attempts) == (StepState.COMPLETED, 2)


def _interrupt_once_writing(payloads: Path) -> threading.Thread:
    """Interrupt the main thread as soon as a large payload file is being written (polls the folder)."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any((payloads / "tmp").glob("*.part")):
                _thread.interrupt_main()
                return
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


BIG_CELL = "chunks = [bytes([i]) * 2**20 for i in range(160)]  # 160 MB, written in 1 MB pieces"


def test_ctrl_c_during_a_large_checkpoint_write(shell: Any, store_path: Path) -> None:
    """A real interrupt while 160 MB are written: the step is failed, no partial file stays, another
    process can run the run, and the same cell run again completes."""
    payloads = store_path.parent / (store_path.name + ".payloads")
    watcher = _interrupt_once_writing(payloads)
    first = step(shell, "big", BIG_CELL)
    watcher.join(timeout=60)
    assert isinstance(first.error_in_exec, KeyboardInterrupt)
    store = open_store(store_path)
    status = store.get_step("r1", "big")
    assert status is not None
    assert (status.state, status.error) == (StepState.FAILED, STORING)
    assert list((payloads / "tmp").glob("*.part")) == []
    elsewhere = run_elsewhere(store_path, "nb", "r1")
    assert (elsewhere.returncode, elsewhere.stdout) == (0, "7\n"), elsewhere.stderr
    again = step(shell, "big", BIG_CELL)
    assert again.error_in_exec is None
    assert store.get_step("r1", "big").state is StepState.COMPLETED  # type: ignore[union-attr]
    chunks = resumable.load("r1", "big", "chunks", store=store_path)
    assert (len(chunks), chunks[159][:1]) == (160, bytes([159]))


SIGINT_CAMPAIGN = r"""
import json, os, random, signal, statistics, sys, threading, time
import resumable
from resumable import StepState

store, trials, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
pipe = resumable.Pipeline("p", store=store)
timers = []
ended = []

MAIN = threading.main_thread().ident

def sigint_in(delay):
    # To the main thread (where Python raises KeyboardInterrupt whoever gets a Ctrl-C): once the timer is
    # joined the signal is delivered, never still waiting for a busy thread of the store's to be scheduled.
    timer = threading.Timer(delay, signal.pthread_kill, (MAIN, signal.SIGINT))
    timers.append(timer)
    timer.start()

class CtrlCWhilePickled:
    # The first trial's output: pickling it is a real SIGINT in the middle of the completion, whatever the load.
    def __reduce__(self):
        signal.pthread_kill(MAIN, signal.SIGINT)
        for _ in range(10000):  # delivered to this thread: raised here, at the latest at the loop's jumps
            pass
        return (CtrlCWhilePickled, ())

def body(n, delay):
    value = os.urandom(n)
    if delay is not None:
        sigint_in(delay)  # aimed at the completion: encoding, the payload's fsync, the COMMIT, the read-back
    ended.append(time.perf_counter())
    return value

# How long a whole step and its completion take here: the delays are spread over them.
spans = {}
for n in (100_000, 3_000_000):
    whole, completion = [], []
    for i in range(3):
        with pipe.run(run_id="warm") as run:
            started = time.perf_counter()
            run.step(f"w{n}-{i}", body, n, None)
            whole.append(time.perf_counter() - started)
            completion.append(time.perf_counter() - ended[-1])
    spans[n] = (statistics.median(whole), statistics.median(completion))

outcomes = {"completed": 0, "failed": 0, "not_started": 0, "after": 0, "swallowed": 0, "bad": []}
for t in range(trials):
    name, n = f"s{t}", rng.choice(list(spans))
    whole, completion = spans[n]
    aim_whole = t % 2 == 1  # odd trials: anywhere in the step (its start too); even: its completion
    try:
        with pipe.run(run_id="r1") as run:
            try:
                if t == 0:  # aimed by construction: the campaign hits the completion whatever the load
                    run.step(name, CtrlCWhilePickled)
                elif aim_whole:
                    sigint_in(rng.uniform(0, whole * 1.2))
                    run.step(name, body, n, None)
                else:
                    run.step(name, body, n, rng.uniform(0, completion * 1.2))
            except KeyboardInterrupt:
                status = run.store.get_step("r1", name)
                if status is None:
                    outcomes["not_started"] += 1
                elif status.state is StepState.COMPLETED:
                    outcomes["completed"] += 1
                elif status.state is StepState.FAILED and status.error.startswith("KeyboardInterrupt"):
                    outcomes["failed"] += 1
                else:
                    outcomes["bad"].append([name, status.state.value, status.error])
                if t == 0:
                    outcomes["aimed"] = None if status is None else [status.state.value, status.error]
                continue
            if t == 0:
                outcomes["swallowed"] += 1  # the Ctrl-C while its output was pickled did not stop the program
                continue
            try:
                timers[-1].join()
                for _ in range(10000):  # pending signals are handled at the loop's backward jumps
                    pass
            except KeyboardInterrupt:
                outcomes["after"] += 1
                continue
            outcomes["swallowed"] += 1
    except KeyboardInterrupt:  # landed in the run's own start or exit
        outcomes["after"] += 1
    finally:
        # Run the step again in this process: it restores or executes, never 'running' to 'running'.
        with pipe.run(run_id="r1") as run:
            if t:
                run.step(name, body, n, None)
            else:
                run.step(name, lambda: 1)
            if run.status(name).state is not StepState.COMPLETED:
                outcomes["bad"].append([name, "not completed after a rerun", None])
print(json.dumps(outcomes))
"""


def test_sigint_aimed_at_the_completion_always_stops_and_never_leaves_a_step_running(store_path: Path) -> None:
    """SIGINT at random points of a step, half aimed at its completion (encoding, fsync, COMMIT, read-back): the
    program always stops (no Ctrl-C is swallowed), the step is completed, failed or not started (never left
    running), and it runs again in the same process."""
    out = subprocess.run(
        [sys.executable, "-c", SIGINT_CAMPAIGN, str(store_path), str(SIGINT_TRIALS), "1125"],
        capture_output=True,
        text=True,
        timeout=60 + 10 * SIGINT_TRIALS,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    outcomes = json.loads(out.stdout)
    print(f"SIGINT campaign, {SIGINT_TRIALS} trials: {outcomes}")
    assert outcomes["bad"] == []
    assert outcomes["swallowed"] == 0
    assert sum(outcomes[k] for k in ("completed", "failed", "not_started", "after")) == SIGINT_TRIALS
    # The first trial's Ctrl-C comes while its output is pickled (not at a random instant): the campaign does hit
    # the completion however loaded the machine, and the step is failed with the reason.
    assert outcomes["aimed"] == [
        "failed",
        "KeyboardInterrupt: interrupted by the user (while its outputs were being stored)",
    ]


# ------------------------------------------------------------------ full and read-only disks

NAMESPACES = shutil.which("unshare") is not None and (
    subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True, timeout=30, check=False
    ).returncode
    == 0
)
needs_namespaces = pytest.mark.skipif(
    not NAMESPACES, reason="needs 'unshare --user --mount' to mount a small tmpfs or a read-only bind mount"
)

DISK_SCRIPT = r"""
import json, os, subprocess, sys
import resumable

folder, mode = sys.argv[1], sys.argv[2]
store = os.path.join(folder, "store.duckdb")
pipe = resumable.Pipeline("p", store=store)
report = {}
with pipe.run(run_id="r1") as run:
    report["small"] = run.step("small", lambda: 41)
    try:
        run.step("big", lambda: b"x" * 20_000_000)
    except resumable.StoreError as exc:
        report["error"] = [type(exc).__name__, str(exc), exc.path, exc.needed, exc.free]
    status = run.status("big")
    report["big"] = [status.state.value, status.error]
    report["loaded"] = resumable.load("r1", "small", store=store)
    if mode == "full":
        report["retried"] = run.step("big", lambda: "small enough")  # a second call: 'big#2'
        # Fill the disk: now the COMMIT of an inline output fails, and so does writing the failure.
        filler = os.path.join(folder, "filler")
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(bytes(65536))
                    f.flush()
            except OSError:
                pass
        # Room for the step's start (a few rows in the log), not for its 200 KB output: how much
        # slack the log's last page had would otherwise decide whether the start fits.
        os.truncate(filler, max(0, os.path.getsize(filler) - 65536))
        try:
            run.step("inline", lambda: os.urandom(200_000))
        except resumable.StoreError as exc:
            report["commit_error"] = [type(exc).__name__, str(exc)]
        os.unlink(filler)  # space again: the kept failure is written before the next use of the store
        status = run.status("inline")
        report["inline"] = [status.state.value, status.error]
        report["after"] = run.step("next", lambda: "next step runs")
print(json.dumps(report))
"""

READ_ONLY_SCRIPT = r"""
import json, os, subprocess, sys
import resumable

folder = sys.argv[1]
store = os.path.join(folder, "store.duckdb")
pipe = resumable.Pipeline("p", store=store)
report = {}
with pipe.run(run_id="r1") as run:
    run.step("small", lambda: 41)
    subprocess.run(["mount", "--bind", folder, folder], check=True)
    subprocess.run(["mount", "-o", "remount,ro,bind", folder], check=True)
    try:
        run.step("big", lambda: b"x" * 20_000_000)
    except resumable.StoreError as exc:
        report["error"] = [type(exc).__name__, str(exc), exc.path]
    # The failure cannot be written either; once the file system takes writes again, it is.
    subprocess.run(["mount", "-o", "remount,rw,bind", folder], check=True)
    status = run.status("big")
    report["big"] = [status.state.value, status.error]
    report["loaded"] = resumable.load("r1", "small", store=store)
print(json.dumps(report))
"""


def _in_namespace(tmp_path: Path, script: str, *args: str, mount: str) -> dict[str, Any]:
    folder = tmp_path / "disk"
    folder.mkdir()
    shell_line = f'{mount} && exec {sys.executable} -c "$0" {folder} {" ".join(args)}'.replace("FOLDER", str(folder))
    out = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", shell_line, script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "RESUMABLE_GROUP_COMMIT_MS": "0"},
    )
    assert out.returncode == 0, out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    report["folder"] = str(folder)
    return report


@needs_namespaces
def test_full_disk_is_reported_as_a_full_disk(tmp_path: Path) -> None:
    """A 20 MB output on a disk with 8 MB: StoreFullError saying where, how much is needed and free; the step
    is failed, the completed step loads, and a smaller output then completes."""
    report = _in_namespace(tmp_path, DISK_SCRIPT, "full", mount="mount -t tmpfs -o size=8m tmpfs FOLDER")
    name, message, path, needed, free = report["error"]
    assert name == "StoreFullError"
    assert path == f"{report['folder']}/store.duckdb.payloads"
    assert 0 < needed <= 20_000_000 + 1000 and free < 8_400_000
    expected = StoreFullError("big", "r1", path, "[Errno 28] No space left on device", needed, free)
    assert message == str(expected)
    assert message.startswith(
        f"step 'big' (run 'r1'): its outputs could not be stored: no space left for them at '{path}' "
        "([Errno 28] No space left on device); they need at least "
    )
    assert message.endswith(
        "The step was marked failed; completed steps and their checkpoints are intact. "
        f"Make at least {message.split('they need at least ')[1].split(' and ')[0]} free on that disk (or raise "
        "the quota), or point RESUMABLE_STORE at a store on a disk with room, then run the step again."
    )
    assert report["big"] == ["failed", f"StoreFullError: {message}"]
    assert report["loaded"] == 41
    assert report["retried"] == "small enough"
    name, commit_message = report["commit_error"]
    assert name == "StoreFullError"
    folder = re.escape(report["folder"])
    pattern = (
        f"step 'inline' \\(run 'r1'\\): its outputs could not be stored: no space left for them at '{folder}' "
        f'\\(TransactionContext Error: Failed to commit: Could not write file "{folder}/store.duckdb.wal": '
        "No space left on device\\); [0-9.]+ k?B are free there. The step was marked failed; completed steps and "
        "their checkpoints are intact. Make space free on that disk \\(or raise the quota\\), or point "
        "RESUMABLE_STORE at a store on a disk with room, then run the step again."
    )
    assert re.fullmatch(pattern, commit_message), commit_message
    assert report["inline"] == ["failed", f"StoreFullError: {commit_message}"]
    assert report["after"] == "next step runs"


@needs_namespaces
def test_read_only_store_is_reported_as_read_only(tmp_path: Path) -> None:
    """The store's file system turns read-only under a live run: StoreReadOnlyError with the whole message,
    and the completed step still loads."""
    report = _in_namespace(tmp_path, READ_ONLY_SCRIPT, mount="true")
    name, message, path = report["error"]
    assert name == "StoreReadOnlyError"
    assert path == f"{report['folder']}/store.duckdb.payloads"
    assert message == (
        f"step 'big' (run 'r1'): its outputs could not be stored: the store is read-only at '{path}' "
        f"([Errno 30] Read-only file system: '{path}'). The step was marked failed; completed steps and their "
        "checkpoints are intact. Make that file system writable again (it may have been remounted read-only after "
        "disk errors; see the system log), or point RESUMABLE_STORE at a writable store, then run the step again."
    )
    assert report["big"] == ["failed", f"StoreReadOnlyError: {message}"]
    assert report["loaded"] == 41


FILE_SIZE_LIMIT = r"""
import json, resource, signal, sys
import resumable
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit raises EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (8_000_000, 8_000_000))
pipe = resumable.Pipeline("p", store=sys.argv[1])
with pipe.run(run_id="r1") as run:
    run.step("small", lambda: 1)
    try:
        run.step("big", lambda: bytes(20_000_000))
    except resumable.StoreFullError as exc:
        print(json.dumps([str(exc), run.status("big").state.value]))
"""


def test_file_size_limit_is_reported_as_no_space(store_path: Path) -> None:
    """A write past 'ulimit -f' (EFBIG) is a StoreFullError, not 'cannot be pickled'; the step is failed."""
    out = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMIT, str(store_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    message, state = json.loads(out.stdout)
    assert state == "failed"
    payloads = f"{store_path}.payloads"
    assert message == (
        f"step 'big' (run 'r1'): its outputs could not be stored: a file reached this process's file size limit "
        f"('ulimit -f') at '{payloads}' ([Errno 27] File too large); they need at least 20.0 MB. The step was "
        "marked failed; completed steps and their checkpoints are intact. Raise the limit above 20.0 MB "
        "('ulimit -f unlimited'), then run the step again."
    )
    assert "cannot be pickled" not in message


# ------------------------------------------------------------------ the signing key


def test_missing_signing_key_file(store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key file that is named but missing is our error naming the path, not pathlib's FileNotFoundError."""
    missing = tmp_path / "keys" / "resumable.key"
    monkeypatch.setenv("RESUMABLE_SIGNING_KEY_FILE", str(missing))
    with pytest.raises(SigningKeyError) as excinfo:
        resumable.Pipeline("p", store=store_path).runs()
    assert str(excinfo.value) == (
        f"the signing-key file '{missing}' (RESUMABLE_SIGNING_KEY_FILE) does not exist, so the store was not opened; "
        "nothing was read or written and completed steps are intact. Restore the key file at that path (the same "
        "key that signed the store's checkpoints), or unset RESUMABLE_SIGNING_KEY_FILE to use the store without "
        "signatures."
    )


def test_signing_key_that_is_a_folder(store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key path that names a folder says so."""
    monkeypatch.setenv("RESUMABLE_SIGNING_KEY_FILE", str(tmp_path))
    with pytest.raises(SigningKeyError, match=r"\(RESUMABLE_SIGNING_KEY_FILE\) is a folder, not a file, so the"):
        resumable.Pipeline("p", store=store_path).runs()


def test_cli_reports_a_missing_signing_key_with_exit_6(store_path: Path, tmp_path: Path) -> None:
    """The CLI prints our message and exits 6 (the store cannot be used), no traceback."""
    resumable.Pipeline("p", store=store_path).run(run_id="r1").__enter__().__exit__(None, None, None)
    env = {**os.environ, "RESUMABLE_SIGNING_KEY_FILE": str(tmp_path / "gone.key")}
    out = subprocess.run(
        [sys.executable, "-m", "resumable", "runs", "--store", str(store_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert out.returncode == 6
    assert out.stderr.startswith(f"error: the signing-key file '{tmp_path / 'gone.key'}' (RESUMABLE_SIGNING_KEY_FILE)")
    assert "Traceback" not in out.stderr


def test_store_errors_are_told_apart() -> None:
    """The new classes sit under StoreError (exit 6 in the CLI) and survive pickling with their attributes."""
    import pickle

    full = StoreFullError("s", "r", "/p", "[Errno 28] No space left on device", 5_000_000, 0)
    again = pickle.loads(pickle.dumps(full))
    assert (type(again), str(again), again.needed) == (StoreFullError, str(full), 5_000_000)
    assert issubclass(StoreReadOnlyError, resumable.StoreWriteError)
    assert issubclass(StoreFullError, resumable.StoreError)
    token = StoreReadOnlyError("s", "r", "/p", "[Errno 30] Read-only file system", asked="fencing token")
    assert str(token) == (
        "step 's' (run 'r'): its fencing token was not handed out: the store could not record the step first: the "
        "store is read-only at '/p' ([Errno 30] Read-only file system). The call raised before the fencing token "
        "existed, so no write was made with it; completed steps and their checkpoints are intact. Make that file "
        "system writable again (it may have been remounted read-only after disk errors; see the system log), or "
        "point RESUMABLE_STORE at a writable store, then run the step again."
    )
    assert pickle.loads(pickle.dumps(token)).asked == "fencing token"


# ------------------------------------------------------------------ a real kernel


def _reply(kc: Any, msg_id: str, timeout: float) -> dict[str, Any]:
    """The shell reply to one execute request (other replies are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") == msg_id:
            content: dict[str, Any] = msg["content"]
            return content


@pytest.mark.slow
def test_ctrl_c_in_a_real_kernel_during_a_large_checkpoint_write(
    store_path: Path, tmp_path: Path, kernel_sockets: Path
) -> None:
    """The kernel is interrupted (SIGINT from its manager, as the stop button does) while a 160 MB checkpoint is
    written: the cell reports KeyboardInterrupt, the step is failed, another process runs the run, and running
    the cell again in the same kernel completes it."""
    from jupyter_client.manager import KernelManager

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESUMABLE_", "JPY_"))}
    env["RESUMABLE_STORE"] = str(store_path)
    km = KernelManager(kernel_name="python3", config=kernel_config(kernel_sockets))
    km.start_kernel(env=env, cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        setup = kc.execute_interactive("%load_ext resumable\n%durable_run nb --run-id k1", timeout=120)
        assert setup["content"]["status"] == "ok"
        cell = f"%%durable_step big\n{BIG_CELL}"
        payloads = store_path.parent / (store_path.name + ".payloads")
        msg_id = kc.execute(cell)
        deadline = time.monotonic() + 120
        while not any((payloads / "tmp").glob("*.part")):
            assert time.monotonic() < deadline, "the checkpoint was never written"
            time.sleep(0.0005)
        km.interrupt_kernel()
        reply = _reply(kc, msg_id, 120)
        assert (reply["status"], reply.get("ename")) == ("error", "KeyboardInterrupt")
        status = open_store(store_path).get_step("k1", "big")
        assert status is not None
        assert (status.state, status.error) == (StepState.FAILED, STORING)
        elsewhere = run_elsewhere(store_path, "nb", "k1")
        assert (elsewhere.returncode, elsewhere.stdout) == (0, "7\n"), elsewhere.stderr
        again = kc.execute_interactive(cell, timeout=120)
        assert again["content"]["status"] == "ok"
        status = open_store(store_path).get_step("k1", "big")
        assert status is not None
        assert (status.state, status.attempts) == (StepState.COMPLETED, 2)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_step_this_process_left_running_starts_again_as_interrupted(store_path: Path) -> None:
    """The last guard: a step the store shows running under this process, which the process no longer runs
    (its end could not be recorded at all), is recovered as interrupted when it starts again, never
    'no transition from running to running'."""
    pipe = resumable.Pipeline("p", store=store_path)
    with pipe.run(run_id="r1") as run:
        store = run.store
        begin = store.begin_step(StepRequest("r1", "lost", current_owner(), None, None, (), {}))
        assert begin.action == "execute"
        store._ended("r1", "lost")  # type: ignore[attr-defined]  # the attempt ended; nothing was recorded
        assert run.step("lost", lambda: 5) == 5
        status = run.status("lost")
        assert (status.state, status.attempts) == (StepState.COMPLETED, 2)
        changes = [(e.source, e.target, e.detail) for e in store.list_events("r1", "lost")]
        assert changes[1:] == [
            ("running", "interrupted", "left running by this process: its last attempt ended without being recorded"),
            ("interrupted", "running", "interrupted"),
            ("running", "completed", None),
        ]


def test_a_read_back_finds_a_completion_stored_with_pseudo_outputs(store_path: Path) -> None:
    """A notebook step that changed the random state stores ``<state>`` beside its variables. When its
    commit raises but happened, the read-back must still find it completed: a step reported failed
    ("nothing was stored") while it is completed would invite a deliberate rerun of an effect."""
    from resumable._store import Completion

    store = open_store(store_path)
    me = current_owner()
    store.open_run("r1", "p")
    store.begin_step(StepRequest("r1", "draw", me))
    done = Completion("r1", "draw", me, (store.encode("x", 1), store.encode("<state>", {"random": 3})), 0.1)
    assert not done.found_in(store.get_step("r1", "draw"))  # still running: not stored
    store.complete_step(done)
    status = store.get_step("r1", "draw")
    assert status is not None and status.outputs == ("x",)
    assert done.found_in(status)
