"""Fencing by lease generation: an owner whose lease ran out and whose run was taken over writes nothing late.

Real processes that pretend to be on two hosts share one store (a DuckDB file, a PostgreSQL
database). The old owner is frozen with SIGSTOP, as a network partition or a long pause would
freeze it: it cannot renew its lease, so after the (short) lease another worker takes the run over
and completes it. Woken up, the old owner finishes its step: its completion is refused with
LeaseLostError, the new owner's checkpoint is what restores, and a downstream ledger that keeps
the highest fencing token per key performs the effect once.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import resumable
from resumable._store import forget_all, open_store
from resumable._store.filelock import lock_path

# argv: host, store, folder. The step 'long' asks for its key and token, says so, waits for 'go'
# (host-a only), then sends its effect to a ledger that refuses a token lower than one it has seen.
WORKER = """
import socket, sys
socket.gethostname = lambda: sys.argv[1]
import fcntl, json, pathlib, time, resumable
host, store, folder = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
pipe = resumable.Pipeline("p", store=store)

def send(key, token):
    with open(folder / "ledger.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ledger = folder / "ledger.json"
        seen = json.loads(ledger.read_text()) if ledger.exists() else {"tokens": {}, "effects": []}
        if token < seen["tokens"].get(key, 0):
            return "refused"
        seen["tokens"][key] = token
        if key not in [k for k, _ in seen["effects"]]:
            seen["effects"].append([key, host])
        ledger.write_text(json.dumps(seen))
        return "done"

def long():
    key, token = resumable.idempotency_key(), resumable.fencing_token()
    (folder / f"{host}.started").write_text(json.dumps({"token": token}))
    while host == "host-a" and not (folder / "go").exists():
        time.sleep(0.01)
    (folder / f"{host}.sent").write_text(send(key, token))
    return "from-" + host

deadline = time.monotonic() + 90
while True:
    try:
        with pipe.run(run_id="r1") as run:
            run.step("quick", lambda: host)
            try:
                print(json.dumps({"long": run.step("long", long)}), flush=True)
            except resumable.LeaseLostError as exc:
                refused = {"refused": str(exc), "generation": exc.generation}
                try:  # its claim is lost too: the next step is refused (an effect, or with 'quick' a quick step)
                    run.step("after", lambda: 1, effect=sys.argv[4:] != ["quick"])
                except resumable.LeaseLostError as exc:
                    refused["next"] = str(exc)
                print(json.dumps(refused), flush=True)
        break
    except resumable.RunOwnedError:
        assert time.monotonic() < deadline
        time.sleep(0.05)
"""


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)


def _stop_outside_the_store_lock(proc: subprocess.Popen[str], store: str) -> None:
    """SIGSTOP the process at a moment it does not hold the store file's lock (a DuckDB store)."""
    deadline = time.monotonic() + 30
    while True:
        os.kill(proc.pid, signal.SIGSTOP)
        if store.startswith("postgresql://"):
            return
        with open(lock_path(Path(store)), "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.kill(proc.pid, signal.SIGCONT)  # caught inside a transaction: let it finish, stop it again
                assert time.monotonic() < deadline
                continue
            fcntl.flock(lock, fcntl.LOCK_UN)
            return


def test_a_taken_over_owners_late_completion_is_refused(
    store_location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """host-a is frozen past its lease; host-b takes the run over and completes it; host-a's late write is refused."""
    env = {**os.environ, "RESUMABLE_LEASE_S": "2"}
    command = [sys.executable, "-c", WORKER]
    a = subprocess.Popen(
        [*command, "host-a", store_location, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        _wait_for(tmp_path / "host-a.started", a)
        _stop_outside_the_store_lock(a, store_location)
        b = subprocess.run(
            [*command, "host-b", store_location, str(tmp_path)],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert (b.returncode, b.stdout) == (0, '{"long": "from-host-b"}\n'), b.stderr
        (tmp_path / "go").touch()
    finally:
        os.kill(a.pid, signal.SIGCONT)
    out, _ = a.communicate(timeout=60)
    old = json.loads((tmp_path / "host-a.started").read_text())["token"]
    new = json.loads((tmp_path / "host-b.started").read_text())["token"]
    assert new > old
    claim = old  # the step ran under its run's claim; host-b's step under its own claim, which it then released
    b_pid = open_store(store_location).list_events("r1", "long")[-1].pid
    assert json.loads(out) == {
        "refused": (
            f"step 'long' of run 'r1' was taken over by pid {b_pid} on host 'host-b' under lease generation {new} "
            f"after this process's lease (generation {old}) ran out, so this process's late write was refused: "
            "nothing of it was stored, and the other owner's work is kept. This process no longer owns the run: "
            "stop it, and start the run again to resume it from the store (what the other owner completed is "
            "restored, not run again)."
        ),
        "generation": old,
        "next": (
            f"run 'r1' was taken over by another owner under lease generation {new} after this process's lease "
            f"(generation {claim}) ran out, so this process's late write was refused: nothing of it was stored, "
            "and the other owner's work is kept. This process no longer owns the run: stop it, and start the run "
            "again to resume it from the store (what the other owner completed is restored, not run again)."
        ),
    }
    # The effect went out once, under host-b's token; host-a's late send was refused by the ledger too.
    ledger = json.loads((tmp_path / "ledger.json").read_text())
    assert [host for _, host in ledger["effects"]] == ["host-b"]
    assert ((tmp_path / "host-a.sent").read_text(), (tmp_path / "host-b.sent").read_text()) == ("refused", "done")
    forget_all()
    monkeypatch.setenv("RESUMABLE_STORE", store_location)
    assert resumable.load("r1", "long") == "from-host-b"
    assert resumable.load("r1", "quick") == "host-a"  # completed by host-a before it lost the lease: kept
    events = [(e.source, e.target, e.host) for e in open_store(store_location).list_events("r1", "long")]
    assert events == [
        ("pending", "running", "host-a"),
        ("running", "interrupted", "host-b"),
        ("interrupted", "running", "host-b"),
        ("running", "completed", "host-b"),
    ]


# What both subprocess scripts below start with; argv[1] is the host name they pretend to run on.
PRELUDE = """
import socket, sys
socket.gethostname = lambda: sys.argv[1]
import fcntl, json, pathlib, time, resumable
from resumable._store.filelock import lock_path


def wait_until_let_go(store):
    # Until this process lets go of the store's file: its next steps are decided and deferred in memory.
    while True:
        with open(lock_path(pathlib.Path(store)), "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            fcntl.flock(lock, fcntl.LOCK_UN)
            return


def tell_returned(folder, host, text):
    # Written under another name and renamed whole: the test reads it once it exists.
    (folder / f"{host}.part").write_text(text)
    (folder / f"{host}.part").replace(folder / f"{host}.returned")
"""


# argv: host, store, folder. A quick step completes (deferred: no group commit for a minute), then
# host-a waits for 'go' inside its run; host-b takes the run over meanwhile.
DEFERRED = (
    PRELUDE
    + """
host, store, folder = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
pipe = resumable.Pipeline("p", store=store, durability="deferred")  # no completion log to replay
deadline = time.monotonic() + 90
while True:
    try:
        with pipe.run(run_id="r1") as run:
            if host == "host-a":
                wait_until_let_go(store)
            value = run.step("quick", lambda: host)
            tell_returned(folder, host, value)
            while host == "host-a" and not (folder / "go").exists():
                time.sleep(0.01)
        print(json.dumps({"quick": value}), flush=True)
        break
    except resumable.RunOwnedError:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    except resumable.LeaseLostError as exc:
        print(json.dumps({"refused": str(exc)}), flush=True)
        break
"""
)


def test_a_deferred_completion_dropped_by_a_lost_claim_is_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """host-a's quick step returned but was not written when host-b took the run over: host-a is told as it ends."""
    store = str(tmp_path / "s.duckdb")
    env = {**os.environ, "RESUMABLE_LEASE_S": "2", "RESUMABLE_GROUP_COMMIT_MS": "60000"}
    command = [sys.executable, "-c", DEFERRED]
    a = subprocess.Popen([*command, "host-a", store, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        _wait_for(tmp_path / "host-a.returned", a)
        _stop_outside_the_store_lock(a, store)
        b = subprocess.run(
            [*command, "host-b", store, str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert (b.returncode, b.stdout) == (0, '{"quick": "host-b"}\n'), b.stderr
        (tmp_path / "go").touch()
    finally:
        os.kill(a.pid, signal.SIGCONT)
    out, _ = a.communicate(timeout=60)
    # Not a silent success: host-a's 'quick' returned but is not in the store, and host-a is told so.
    refused = json.loads(out)["refused"]
    assert refused.startswith("run 'r1' was taken over by another owner under lease generation "), refused
    assert refused.endswith(
        "so this process's late write was refused: nothing of it was stored, and the other owner's work is kept. "
        "This process no longer owns the run: stop it, and start the run again to resume it from the store (what "
        "the other owner completed is restored, not run again)."
    ), refused
    forget_all()
    monkeypatch.setenv("RESUMABLE_STORE", store)
    assert resumable.load("r1", "quick") == "host-b"


def test_a_quick_step_after_a_refused_completion_is_refused_too(tmp_path: Path) -> None:
    """A DuckDB owner told its completion was refused cannot go on with a quick step decided in memory."""
    store = str(tmp_path / "s.duckdb")
    env = {**os.environ, "RESUMABLE_LEASE_S": "2"}
    command = [sys.executable, "-c", WORKER]
    a = subprocess.Popen(
        [*command, "host-a", store, str(tmp_path), "quick"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        _wait_for(tmp_path / "host-a.started", a)
        _stop_outside_the_store_lock(a, store)
        b = subprocess.run(
            [*command, "host-b", store, str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert (b.returncode, b.stdout) == (0, '{"long": "from-host-b"}\n'), b.stderr
        (tmp_path / "go").touch()
    finally:
        os.kill(a.pid, signal.SIGCONT)
    out, _ = a.communicate(timeout=60)
    told = json.loads(out)
    # Refused, not started in memory (and dropped unwritten at the next group commit).
    assert told.get("next", "").startswith("run 'r1' was taken over by another owner under lease generation "), out


# argv: host, store, folder, steps. Quick steps 'a' then 'b', each deferred and
# appended to the completion log (durability 'durable'; no group commit for a minute); host-a then
# waits inside its run (argv[4] holds 'wait'). Step 'b' runs when argv[4] holds 'b'.
LOGGED = (
    PRELUDE
    + """
host, store, folder, names = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), sys.argv[4]
pipe = resumable.Pipeline("p", store=store)
deadline = time.monotonic() + 90
while True:
    try:
        with pipe.run(run_id="r1") as run:
            if "wait" in names:
                wait_until_let_go(store)
            out = {"a": run.step("a", lambda: f"a from {host} under {resumable.fencing_token()}")}
            if "b" in names:
                out["b"] = run.step("b", lambda: f"b from {host} ({names})")
            tell_returned(folder, host, json.dumps(out))
            while "wait" in names:  # frozen and killed here
                time.sleep(0.01)
        print(json.dumps(out), flush=True)
        break
    except resumable.RunOwnedError:
        assert time.monotonic() < deadline
        time.sleep(0.05)
"""
)


def test_a_dead_stale_owners_logged_completions_are_not_replayed_over_the_new_owners_run(tmp_path: Path) -> None:
    """host-a logged 'a' and 'b', froze, lost r1 to host-b (which did 'a' only), and died: its log is not replayed.

    A replay would put host-a's late 'b' into a run host-a no longer owned, on top of host-b's 'a'
    (which replaced host-a's): a later resume would restore that 'b' instead of executing it.
    """
    store = str(tmp_path / "s.duckdb")
    env = {**os.environ, "RESUMABLE_LEASE_S": "2", "RESUMABLE_GROUP_COMMIT_MS": "60000"}
    command = [sys.executable, "-c", LOGGED]

    def run(host: str, names: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, host, store, str(tmp_path), names],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    a = subprocess.Popen(
        [*command, "host-a", store, str(tmp_path), "ab-wait"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        _wait_for(tmp_path / "host-a.returned", a)
        returned = json.loads((tmp_path / "host-a.returned").read_text())
        old = int(returned["a"].rsplit(" ", 1)[1])
        assert returned == {"a": f"a from host-a under {old}", "b": "b from host-a (ab-wait)"}
        _stop_outside_the_store_lock(a, store)
        b = run("host-b", "a")  # takes r1 over once host-a's lease ran out; does 'a' only
        new = int(json.loads(b.stdout)["a"].rsplit(" ", 1)[1])
        assert (b.returncode, b.stdout, new > old) == (0, f'{{"a": "a from host-b under {new}"}}\n', True), b.stderr
    finally:
        os.kill(a.pid, signal.SIGKILL)  # host-a dies without waking: its log stays behind
        a.wait(timeout=30)
    (log,) = (tmp_path / "s.duckdb.journal").iterdir()
    process = log.name.rsplit("_", 1)[0]
    assert process.startswith(f"host-a_{a.pid}_")
    # A later process on host-a finds the dead process's log: its 'b' is refused, not replayed.
    again = run("host-a", "ab")
    assert (again.returncode, again.stdout) == (
        0, f'{{"a": "a from host-b under {new}", "b": "b from host-a (ab)"}}\n'
    ), again.stderr  # fmt: skip
    assert again.stderr == (
        f"store {store}: completed step(s) 'b' of run 'r1' in the completion log of dead process {process} were "
        f"not replayed: they ran under lease generation {old}, and the run has since been taken over by another "
        f"owner under lease generation {new} (its lease ran out, or the run was unlocked), so these late writes "
        "are refused and the other owner's work is kept. They execute again when the run resumes.\n"
    )
    assert list((tmp_path / "s.duckdb.journal").iterdir()) == []
    events = [(e.step, e.source, e.target, e.host) for e in open_store(store).list_events("r1")]
    assert events == [
        ("a", "pending", "running", "host-b"),
        ("a", "running", "completed", "host-b"),
        ("b", "pending", "running", "host-a"),
        ("b", "running", "completed", "host-a"),
    ]
