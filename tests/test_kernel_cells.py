"""A kernel's new step cells decided in memory while it holds the store's file (``_store/cells.py``).

Real IPython shells in subprocesses, killed with SIGKILL at the instants the window opens up: right
after a cell returned (its completion only in the completion log), inside a cell (its start only in
the log), while another process asks for the file mid-cell, and a full disk (a real tmpfs) at the
end of a cell. The kill-point campaign (``tests/killpoints.py kernel``) kills at every write point.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import pytest
from ipython_shell import step
from test_faults import needs_namespaces

from resumable._keys import idempotency_key
from resumable._store.duckdb import DuckDBStore

TESTS = Path(__file__).resolve().parent

KERNEL = r"""
import json, os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from ipython_shell import started_shell, step
import resumable

store, mode, folder = sys.argv[2], sys.argv[3], sys.argv[4]
os.environ["RESUMABLE_STORE"] = store
ip = started_shell()
ip.run_cell("%durable_run cells --run-id r1").raise_error()
report = {}

def cell(name, body):
    result = step(ip, name, body)
    report[name] = None if result.error_in_exec is None else [type(result.error_in_exec).__name__,
                                                            str(result.error_in_exec)]

def note(name):
    with open(os.path.join(folder, "ran"), "a") as f:
        f.write(name + "\n")

def fill_all(path):  # to the last byte: the commit of a step's start needs only a few
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):
            try:
                while os.write(fd, bytes(size)):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)

def ran(name):  # a body that says it ran
    return f"note({name!r})\n"

ip.user_ns.update(os=os, note=note, fill_all=fill_all, time=time, resumable=resumable)
ip.user_ns_hidden.update(os=os, note=note, fill_all=fill_all, time=time, resumable=resumable)
cell("first", ran("first") + "a = 1")
if mode == "returned":  # killed right after the second cell returned: its completion is only in the log
    cell("second", ran("second") + "b = a + 1")
    print(json.dumps(report), flush=True)
    if not os.environ.get("NO_KILL"):
        os.kill(os.getpid(), signal.SIGKILL)
if mode == "midcell":  # killed inside the second cell: its start is only in the log
    cell("second", ran("second") + "if os.environ.get('KILL_IN_CELL'):\n    os.kill(os.getpid(), 9)\nb = a + 1")
if mode == "handover":  # another process asks for the file while the second cell runs
    cell("second", ran("second") + f"open(os.path.join({folder!r}, 'started'), 'w').close()\n"
         f"while not os.path.exists(os.path.join({folder!r}, 'go')):\n    time.sleep(0.01)\nb = a + 1")
if mode == "token":  # a fencing token and a key handed out of a cell decided in memory
    cell("second", ran("second") + "tok = resumable.fencing_token()\nkey = resumable.idempotency_key()")
    report["tok"], report["key"] = ip.user_ns.get("tok"), ip.user_ns.get("key")
    print(json.dumps(report), flush=True)
    if not os.environ.get("NO_KILL"):
        os.kill(os.getpid(), signal.SIGKILL)
if mode == "fulldisk":  # the disk fills up inside the cell: its completion can be neither logged nor committed
    filler = os.path.join(folder, "filler")
    # Its start written first (a fence), then the disk filled to the last byte: its failure is kept in memory.
    cell("second", ran("second") + f"resumable.fencing_token()\nfill_all({filler!r})\nb = os.urandom(200_000)")
    t0 = time.monotonic()
    env = {**os.environ, "RESUMABLE_LOCK_TIMEOUT": "10"}
    cli = subprocess.run([sys.executable, "-m", "resumable", "runs", "--store", store], capture_output=True,
                         text=True, timeout=60, env=env)
    report["cli"] = [cli.returncode, round(time.monotonic() - t0, 1), cli.stdout + cli.stderr]
    report["full"] = report.pop("second")
    # The next cell cannot start either: the disk is still full. A long source, as its start's row must not fit
    # in what the store's files have spare in their last page (tmpfs allocates whole pages; how much is spare
    # depends on what was written before, so a short start fitted there in some runs).
    cell("third", ran("third") + "c = 3\n" + "# a long cell\n" * 2000)
    report["third_full"] = report.pop("third")
    os.unlink(filler)  # space again: the kept failure is written with no new cell, then the cell runs again
    deadline, shown = time.monotonic() + 10, ""  # the kernel retries every 0.5 s at most
    while "failed" not in shown and time.monotonic() < deadline:  # what another process sees meanwhile
        shown = subprocess.run([sys.executable, "-m", "resumable", "show", "r1", "--store", store],
                               capture_output=True, text=True, timeout=60).stdout.split("second")[1].splitlines()[0]
    report["caught_up"] = shown
    cell("second", ran("second") + "b = os.urandom(200_000)")
    from resumable._store.duckdb import DuckDBStore
    st = DuckDBStore(store)
    report["events"] = [[e.target, (e.detail or "")[:40]] for e in st.list_events("r1", "second")]
    report["loaded"] = len(resumable.load("r1", "second", "b", store=store))
    st.close()
if mode == "fulldisk":  # then the disk fills up inside a cell before it asks for its token, and another before its key
    filler, charges, fault = os.path.join(folder, "filler"), os.path.join(folder, "charges"), {"on": True}

    def full():  # the disk full to the last byte while fault["on"]
        if fault["on"]:
            fill_all(filler)

    ip.user_ns["full"] = ip.user_ns_hidden["full"] = full
    long = "# a long cell\n" * 2000  # its start's row needs more than what DuckDB's files have spare
    token = ran("token") + "full()\ntok = resumable.fencing_token()\n" + long
    charge = ran("charge") + f"full()\nkey = resumable.idempotency_key()\nopen({charges!r}, 'a').write(key + '\\n')\n"
    cell("warm", "w = 1")  # the kernel holds the file again: the next cells' starts are decided in memory
    for name, body in [("token", token), ("charge", charge + long)]:
        fault["on"] = True
        cell(name, body)
        report[name + "_full"] = report.pop(name)
        fault["on"] = False
        os.unlink(filler)  # space again: the user runs the same cell again
        cell(name, body)
    cell("charge", charge + long)  # completed: restored, never charged again
    report["key"], report["tok"] = ip.user_ns["key"], ip.user_ns["tok"]
    report["charges"] = open(charges).read().split()
    report["ran"] = open(os.path.join(folder, "ran")).read().split()
if mode == "heldfull":  # the disk fills up inside a cell decided in memory; others try the run meanwhile
    filler, lock = os.path.join(folder, "filler"), store + ".lock"
    OTHER = ("import json, sys, resumable\npipe = resumable.Pipeline('cells', store=sys.argv[1])\n"
             "@pipe.step()\ndef second():\n    print('other process ran second')\n    return 2\n"
             "try:\n    with pipe.run(run_id='r1') as run:\n        run.step('second', second)\n"
             "except Exception as e:\n    print(json.dumps([type(e).__name__, str(e)]))\n")

    def others():  # once the kernel's commit of the cell's start failed (it says so in the lock file)
        deadline = time.monotonic() + 5
        while open(lock).read().count("\n") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        env = {**os.environ, "RESUMABLE_LOCK_TIMEOUT": "2"}
        other = subprocess.run([sys.executable, "-c", OTHER, store], capture_output=True, text=True, timeout=60,
                               env=env)
        report["other"] = other.stdout.strip().splitlines()
        show = subprocess.run([sys.executable, "-m", "resumable", "show", "r1", "--store", store],
                              capture_output=True, text=True, timeout=60, env=env)
        report["show"] = [show.returncode, show.stdout + show.stderr]
        from resumable._store import open_store
        report["compact"] = open_store(store).compact(force=True).skipped  # this process's own handle
        os.unlink(filler)  # space is back

    ip.user_ns.update(others=others)
    ip.user_ns_hidden.update(others=others)
    # A long source: the start's row needs more than what DuckDB's files have spare when the disk is full.
    cell("second", ran("second") + f"fill_all({filler!r})\nothers()\nb = 42\n" + "# a long cell\n" * 2000)
    report["pid"] = os.getpid()
    show = subprocess.run([sys.executable, "-m", "resumable", "show", "r1", "--store", store], capture_output=True,
                          text=True, timeout=60)
    report["show_after"] = show.stdout
    from resumable._store.duckdb import DuckDBStore
    st = DuckDBStore(store)
    report["events"] = [e.target for e in st.list_events("r1", "second")]
    try:
        report["b"] = resumable.load("r1", "second", "b", store=store)
    except resumable.ResumableError as e:
        report["b"] = repr(e)
    report["ran"] = open(os.path.join(folder, "ran")).read().split()
    st.close()
print(json.dumps(report), flush=True)
"""
KERNEL = KERNEL.replace("import json, os, signal, sys, time", "import json, os, signal, subprocess, sys, time")


def _kernel(folder: Path, mode: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[str]:
    store = folder / "store.duckdb"
    full = {**os.environ, "RESUMABLE_GROUP_COMMIT_MS": "60000", **(env or {})}
    full.pop("RESUMABLE_RUN_ID", None)
    return subprocess.Popen(
        [sys.executable, "-c", KERNEL, str(TESTS), str(store), mode, str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full,
        **kw,
    )


def _cli(folder: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "resumable", *args, "--store", str(folder / "store.duckdb")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _ran(folder: Path) -> list[str]:
    path = folder / "ran"
    return path.read_text().split() if path.exists() else []


def _states(folder: Path) -> dict[str, str]:
    store = DuckDBStore(folder / "store.duckdb")
    try:
        return {s.step: s.state.value for s in store.list_steps("r1")}
    finally:
        store.close()


def _again(folder: Path, mode: str) -> dict[str, Any]:
    """A new kernel runs the same two cells (without the kill): what restores, what executes."""
    proc = _kernel(folder, mode, env={"RESUMABLE_GROUP_COMMIT_MS": "50", "NO_KILL": "1"})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return dict(json.loads(out.splitlines()[-1]))


def test_a_cell_that_returned_survives_sigkill_before_its_commit(tmp_path: Path) -> None:
    """The second cell is decided in memory and its completion only appended to the log when the kernel is
    killed: the CLI shows it completed, and a new kernel restores it without running its body."""
    proc = _kernel(tmp_path, "returned")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -9, err
    assert json.loads(out.splitlines()[-1]) == {"first": None, "second": None}
    assert list((tmp_path / "store.duckdb.journal").iterdir()), "the completion was not in the log"
    shown = _cli(tmp_path, "show", "r1")
    assert "second" in shown and "completed" in shown.split("second")[1].splitlines()[0], shown
    assert _again(tmp_path, "returned") == {"first": None, "second": None}
    assert _ran(tmp_path) == ["first", "second"], "a completed cell ran again"


def test_a_kernel_killed_inside_a_cell_decided_in_memory_leaves_it_interrupted(tmp_path: Path) -> None:
    """Its start was only in the completion log: `resumable runs` shows the run interrupted (not completed),
    and the resume executes the step again."""
    proc = _kernel(tmp_path, "midcell", env={"KILL_IN_CELL": "1"})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -9, err
    runs = _cli(tmp_path, "runs")
    assert "r1" in runs and "interrupted" in runs, runs
    assert _states(tmp_path) == {"first": "completed", "second": "interrupted"}
    assert _again(tmp_path, "midcell") == {"first": None, "second": None}
    assert _ran(tmp_path) == ["first", "second", "second"]
    assert _states(tmp_path) == {"first": "completed", "second": "completed"}


def test_another_process_asking_for_the_file_mid_cell_finds_the_step_running(tmp_path: Path) -> None:
    """The file is let go of only after the in-memory start is written: a reader sees the step running
    under the live kernel, and once the cell returned, completed."""
    proc = _kernel(tmp_path, "handover")
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.01)
        shown = _cli(tmp_path, "show", "r1")
        assert "running" in shown.split("second")[1].splitlines()[0], shown
    finally:
        (tmp_path / "go").touch()
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert _states(tmp_path) == {"first": "completed", "second": "completed"}


def test_a_token_and_a_key_handed_out_rest_on_a_written_start(tmp_path: Path) -> None:
    """fencing_token() and idempotency_key() in a cell decided in memory write its start first: the token is
    the stored one, and after a kill the step is an effect step that the resume holds, never repeats."""
    proc = _kernel(tmp_path, "token")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -9, err
    report = json.loads(out.splitlines()[-1])
    assert report["second"] is None and isinstance(report["tok"], int) and report["key"]
    store = DuckDBStore(tmp_path / "store.duckdb")
    try:
        status = store.get_step("r1", "second")
        assert status is not None and status.state.value == "completed" and status.effect
    finally:
        store.close()
    con = duckdb.connect(str(tmp_path / "store.duckdb"), read_only=True)  # the token the store holds
    try:
        stored = con.execute("SELECT owner_generation FROM steps WHERE step = 'second'").fetchall()
    finally:
        con.close()
    assert stored == [(report["tok"],)]
    assert _again(tmp_path, "token") == {"first": None, "second": None, "tok": report["tok"], "key": report["key"]}
    assert _ran(tmp_path) == ["first", "second"], "an effect step ran again"


def _in_small_tmpfs(tmp_path: Path, mode: str, env: dict[str, str]) -> dict[str, Any]:
    """The kernel script on a real 8 MB tmpfs of its own (a user and mount namespace); its report."""
    folder = tmp_path / "disk"
    folder.mkdir()
    line = f'mount -t tmpfs -o size=8m tmpfs {folder} && exec {sys.executable} -c "$0" {TESTS} ' + (
        f"{folder}/store.duckdb {mode} {folder}"
    )
    out = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", line, KERNEL],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, **env},
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout.splitlines()[-1]))


@needs_namespaces
def test_a_full_disk_at_the_end_of_a_cell_fails_it_and_lets_go_of_the_file(tmp_path: Path) -> None:
    """A real 8 MB tmpfs filled up inside the cell: the cell fails with StoreFullError before it returns,
    another process gets the file at once (not after the lock timeout), and once space is back the failure
    is recorded and the cell runs again to completion. Filled up before fencing_token() or idempotency_key():
    StoreFullError saying it was not handed out and nothing was recorded (never the bare StoreDatabaseError);
    with space back the same cell runs, the key is the step's stable one and the effect is made once."""
    report = _in_small_tmpfs(tmp_path, "fulldisk", {"RESUMABLE_GROUP_COMMIT_MS": "60000"})
    name, message = report["full"] if report["full"] else ["", ""]
    assert report["first"] is None
    assert name == "StoreFullError", report
    assert message.startswith("step 'second' (run 'r1'): its outputs could not be stored: no space left for them at ")
    rc, _, text = report["cli"]
    assert rc == 0, report["cli"]  # within its 10 s lock timeout: the idle kernel let go (a kept lock: exit 6)
    assert "r1" in text
    # The next cell cannot start on the full disk: the full-disk error, saying what is kept and what to do.
    disk = f"{tmp_path}/disk"
    start = (
        f"step 'third' (run 'r1') could not start: its start could not be stored: no space left for it at '{disk}' "
        f'(TransactionContext Error: Failed to commit: Could not write file "{disk}/store.duckdb.wal": No space '
        "left on device); "
    )
    end = (
        " are free there. Its body did not run and nothing of it was stored; completed steps and their checkpoints "
        "are intact; what this process ran before and could not store yet is kept in this process and written as "
        "soon as the store takes writes again. Make space free on that disk (or raise the quota), or point "
        "RESUMABLE_STORE at a store on a disk with room, then run the step again."
    )
    name, message = report["third_full"]
    assert name == "StoreFullError" and re.fullmatch(re.escape(start) + r"[0-9.]+ k?B" + re.escape(end), message), (
        message
    )
    # Space back and the kernel idle: another process soon sees the failure, with no new cell run.
    assert report["caught_up"].startswith("\tfailed\t"), report["caught_up"]
    # Once space was back: the failed attempt recorded with its error, then the cell ran again and completed.
    targets = [t for t, _ in report["events"]]
    assert targets[:2] == ["running", "failed"] and targets[-2:] == ["running", "completed"], report["events"]
    assert report["events"][1][1].startswith("StoreFullError: step 'second'")
    assert report["second"] is None and report["loaded"] == 200_000
    # A key or token asked for on a full disk: not handed out, and the cell runs again once there is space.
    start = (
        f"the store could not record the step first: no space left for it at '{disk}' (TransactionContext Error: "
        f'Failed to commit: Could not write file "{disk}/store.duckdb.wal": No space left on device); '
    )
    kept = (
        "; completed steps and their checkpoints are intact; what this process ran before and could not store yet "
        "is kept in this process and written as soon as the store takes writes again. Make space free on that disk "
        "(or raise the quota), or point RESUMABLE_STORE at a store on a disk with room, then run the step again."
    )
    token = (
        re.escape("step 'token' (run 'r1'): its fencing token was not handed out: " + start)
        + r"[0-9.]+ k?B"
        + re.escape(" are free there. The call raised before the fencing token existed, so no write was made with it")
        + re.escape(kept)
    )
    key = (
        re.escape("step 'charge' (run 'r1'): its idempotency key was not handed out: " + start)
        + r"[0-9.]+ k?B"
        + re.escape(
            " are free there. The call raised before the idempotency key existed, so no side effect was made with "
            "it, and the step was not recorded as having side effects"
        )
        + re.escape(kept + " It gets the same idempotency key.")
    )
    for name, pattern in (("token", token), ("charge", key)):
        kind, message = report[f"{name}_full"]
        assert kind == "StoreFullError" and re.fullmatch(pattern, message), message
        assert report[name] is None  # the same cell, run again with space back, completed
    assert report["key"] == idempotency_key("cells", "r1", "charge", None, 1)
    assert report["charges"] == [report["key"]]
    assert isinstance(report["tok"], int)
    assert report["ran"][-4:] == ["token", "token", "charge", "charge"]


@needs_namespaces
def test_a_full_disk_inside_a_cell_decided_in_memory_keeps_the_store_until_it_is_written(tmp_path: Path) -> None:
    """The disk fills up inside a cell decided in memory, so the commit of its start fails: the kernel keeps the
    store's lock (with the file closed) until the step is written. Another process trying the step and
    `resumable show` get the lock error naming the kernel and why; once space is back the cell returns and the
    step is completed once, by the kernel, with its value."""
    report = _in_small_tmpfs(tmp_path, "heldfull", {"RESUMABLE_GROUP_COMMIT_MS": "500"})
    store, pid = f"{tmp_path}/disk/store.duckdb", report["pid"]
    before = (
        f"store '{store}' stayed locked by process {pid} for 2.0 s: that process ran steps that it could not "
        "write to the store yet (its last commit failed: "
    )
    after = (
        "), and keeps the store until they are written, so that no other process runs them again. Nothing was "
        "changed here. Free space on the store's disk (that process then writes them and lets go), then try again."
    )
    locked = re.escape(before) + r"[^()]*No space left on device[^()]*" + re.escape(after)  # the disk's words
    assert len(report["other"]) == 1, report["other"]  # the other process did not run the step
    name, message = json.loads(report["other"][0])
    assert name == "StoreLockedError" and re.fullmatch(locked, message), message
    rc, shown = report["show"]
    assert rc != 0 and re.fullmatch("error: " + locked + "\n", shown), shown
    compact = (  # asked of the kernel's own store meanwhile: the true reason, not "another handle"
        re.escape("this process ran steps that it could not write to the store yet (its last commit failed: ")
        + r"[^()]*No space left on device[^()]*"
        + re.escape(
            "), and keeps the store until they are written, so the file was left as it was; free space on the "
            "store's disk (they are then written), then try again"
        )
    )
    assert re.fullmatch(compact, report["compact"]), report["compact"]
    assert report["first"] is None and report["second"] is None
    assert report["events"] == ["running", "completed"] and report["ran"] == ["first", "second"]
    assert report["b"] == 42
    assert "second" in report["show_after"], report["show_after"]
    assert "completed" in report["show_after"].split("second")[1].splitlines()[0], report["show_after"]


def _kernel_store(shell: Any) -> DuckDBStore:
    """The shell's store object (the one its magics decide with)."""
    from resumable._magics.magics import DurableMagics

    magics = next(m for m in shell.magics_manager.registry.values() if isinstance(m, DurableMagics))
    store = magics._store
    assert isinstance(store, DuckDBStore)
    return store


def test_a_second_handle_of_the_kernels_process_writes_its_pending_cells_first(
    shell: Any, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another store object of the kernel's process on the same file finds a cell decided in memory in the
    store (its first transaction writes it), and while it holds a share of the file the kernel decides by
    transactions: no two handles of one process ever start the same step."""
    from resumable._store import cells

    assert step(shell, "first", "a = 1").error_in_exec is None  # decided by a transaction: the window opens
    store = _kernel_store(shell)
    monkeypatch.setattr(store, "window_s", 60.0)  # no group commit while the test looks
    assert step(shell, "second", "b = a + 1").error_in_exec is None
    assert cells.has_pending(store._file_key), "the second cell was not decided in memory"
    other = DuckDBStore(store_path)
    try:
        status = other.get_step("r1", "second")
        assert status is not None and status.state.value == "completed"
        assert step(shell, "third", "c = b + 1").error_in_exec is None
        assert not cells.has_pending(store._file_key), "decided in memory while another handle held the file"
        third = other.get_step("r1", "third")
        assert third is not None and third.state.value == "completed"
    finally:
        other.close()


def test_a_cell_refused_when_it_is_written_never_fails_the_transaction_it_is_in(
    shell: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A cell decided in memory whose write finds the step taken meanwhile (what a failed commit followed by
    another process's start would leave) is refused: the transaction that found it goes on, and the run's next
    cell fails with StepNotStoredError naming it before its body runs (never only a log line); then it runs."""
    store = _refused_second(shell, monkeypatch)
    with caplog.at_level("WARNING", logger="resumable"):
        status = store.get_step("r1", "second")
    assert status is not None and status.state.value == "completed"
    refused = step(shell, "third", "c = b + 1\nnote_third = True").error_in_exec
    assert type(refused).__name__ == "StepNotStoredError" and "note_third" not in shell.user_ns
    assert str(refused) == _REFUSED_SECOND
    assert str(refused) in caplog.text
    assert step(shell, "third", "c = b + 1").error_in_exec is None
    third = store.get_step("r1", "third")
    assert third is not None and third.state.value == "completed"


def test_no_key_is_handed_out_after_a_returned_cell_was_refused(shell: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fence of idempotency_key() is what finds a returned cell refused: the key is not handed out, nor recorded
    as used (the step is not marked an effect step), the cell fails with StepNotStoredError; run again, it gets its
    key."""
    store = _refused_second(shell, monkeypatch)
    refused = step(shell, "third", "key = resumable.idempotency_key()").error_in_exec
    assert type(refused).__name__ == "StepNotStoredError" and "key" not in shell.user_ns
    assert str(refused) == _REFUSED_SECOND
    third = store.get_step("r1", "third")
    assert third is not None and (third.state.value, third.effect) == ("failed", False)
    assert step(shell, "third", "key = resumable.idempotency_key()").error_in_exec is None
    assert shell.user_ns["key"]


def _refused_second(shell: Any, monkeypatch: pytest.MonkeyPatch) -> DuckDBStore:
    """Cell 'second' returned in memory, then is put back as another process's (what a failed commit followed by
    another process's start would leave): its next write is refused."""
    from resumable._store import cells

    shell.run_cell("import resumable").raise_error()
    assert step(shell, "first", "a = 1").error_in_exec is None
    store = _kernel_store(shell)
    monkeypatch.setattr(store, "window_s", 60.0)
    assert step(shell, "second", "b = a + 1").error_in_exec is None
    with cells.LOCK:
        taken = cells.take(store._file_key)
    assert [c.pending.req.step for c in taken] == ["second"]
    assert step(shell, "second", "b = a + 1").error_in_exec is None  # the step, written by a transaction now
    for cell in taken:  # as another process's: checked against the store when it is written (held None)
        owner = cell.pending.req.owner
        cell.pending.req = replace(cell.pending.req, owner=replace(owner, pid=owner.pid + 1_000_000))
    cells.put_back(store._file_key, taken)
    return store


_REFUSED_SECOND = (
    "step 'second' (run 'r1') returned in this process, but the store then refused to record it: step 'second' "
    "(run 'r1') is no longer 'new' in this process: another process changed it. Nothing from this attempt was "
    "stored and the step's earlier checkpoints are intact. See what happened with: resumable show r1 --events. "
    "Its result was not stored (what the store holds for that step was kept); no idempotency key or fencing "
    "token was handed out after it, and what raised this was stopped before it ran on. Run the step again if its "
    "result is needed."
)


FENCE_SIGINT_TRIALS = int(os.environ.get("RESUMABLE_FENCE_SIGINT_TRIALS", "25"))

FENCE_SIGINT = r"""
import json, os, random, signal, statistics, sys, threading, time
sys.path.insert(0, sys.argv[1])
from ipython_shell import started_shell, step
import resumable
from resumable._store import process
from resumable._store.duckdb import DuckDBStore

store, trials = sys.argv[2], int(sys.argv[3])
os.environ["RESUMABLE_STORE"] = store
rng = random.Random(1125)
ip = started_shell()
ip.run_cell("%durable_run cells --run-id r1").raise_error()
ip.run_cell("import resumable, time").raise_error()
step(ip, "w", "x = 1")  # decided by a transaction: the window opens

def fence_span():  # how long a key's fence (the write of the cells decided in memory) takes here
    step(ip, "m0", "x = 1")
    step(ip, "m1", "t0 = time.perf_counter()\nkey = resumable.idempotency_key()\nspan = time.perf_counter() - t0")
    return ip.user_ns["span"]

span = statistics.median(fence_span() for _ in range(3))
outcomes = {"none": 0, "interrupt": 0, "outside": 0, "bad": []}
for t in range(trials):
    timer = threading.Timer(rng.uniform(0, span * 1.5), os.kill, (os.getpid(), signal.SIGINT))
    ip.user_ns["timer"] = timer
    try:
        step(ip, f"a{t}", "x = 1")  # returned in memory: the next cell's fence writes it
        error = step(ip, f"b{t}", "timer.start()\nkey = resumable.idempotency_key()").error_in_exec
        timer.join()
        for _ in range(10000):  # a signal that came after the cell is handled here
            pass
    except KeyboardInterrupt:
        outcomes["outside"] += 1
        continue
    if error is None:
        outcomes["none"] += 1
    elif type(error) is KeyboardInterrupt:
        outcomes["interrupt"] += 1
    else:
        outcomes["bad"].append(f"{type(error).__name__}: {error}")
process.shutdown()  # what exit does: everything pending is written
st = DuckDBStore(store)
outcomes["states"] = sorted({f"{s.step[0]}:{s.state.value}" for s in st.list_steps("r1") if s.step[0] in "ab"})
print(json.dumps(outcomes))
"""


def test_a_ctrl_c_during_a_fence_is_a_keyboard_interrupt_and_loses_no_cell(tmp_path: Path) -> None:
    """SIGINT at random instants of idempotency_key()'s fence, which writes the cells decided in memory: the cell
    fails with KeyboardInterrupt (never DuckDB's RuntimeError), and every cell that returned is written all the
    same."""
    env = {**os.environ, "RESUMABLE_GROUP_COMMIT_MS": "60000"}
    env.pop("RESUMABLE_RUN_ID", None)
    out = subprocess.run(
        [sys.executable, "-c", FENCE_SIGINT, str(TESTS), str(tmp_path / "store.duckdb"), str(FENCE_SIGINT_TRIALS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    outcomes = json.loads(out.stdout.splitlines()[-1])
    print(f"Ctrl-C in a fence, {FENCE_SIGINT_TRIALS} trials: {outcomes}")
    assert outcomes["bad"] == []
    assert outcomes["none"] + outcomes["interrupt"] + outcomes["outside"] == FENCE_SIGINT_TRIALS
    states = set(outcomes["states"])
    assert "a:completed" in states and states <= {"a:completed", "b:completed", "b:failed"}, states
