"""Durability of returned steps: SIGKILLs one instruction after a step returns, around effects, mid-write.

Every test runs the pipeline in a real subprocess that is killed with SIGKILL (by itself, at an
aimed point, or by the test at a random instant), then resumes it in a fresh process and checks
what a user would notice: a step that had returned is restored with the value it returned (never
executed again), and the fake payment ledger never sees one idempotency key with two different
orders. ``RESUMABLE_DURABILITY_TRIALS`` sets the size of the random campaign (default small).
"""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

import resumable

ROOT = Path(__file__).resolve().parent.parent
TRIALS = int(os.environ.get("RESUMABLE_DURABILITY_TRIALS", "4"))

APP = """
import os, signal, sys, uuid
from pathlib import Path
import resumable

store, run_id, mode, kill, ledger, orders, effects = sys.argv[1:8]
pipe = resumable.Pipeline("durable", store=store, durability=mode)


def die(point):
    marker = Path(ledger + "." + point + ".killed")
    if kill == point and not marker.exists():  # an aimed kill happens once, not again on resume
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)


def make():
    return str(uuid.uuid4())


def pay(order_id, i):
    key = resumable.idempotency_key()
    die(f"in-pay{i}")
    with open(ledger, "a") as f:  # the payment service: it records each key with its order
        f.write(f"{key} {order_id}\\n")
    return key


with pipe.run(run_id=run_id) as run:
    print("ready", flush=True)
    for i in range(int(orders)):
        order_id = run.step(f"make{i}", make)
        print(f"make{i} {order_id}", flush=True)
        die(f"after-make{i}")
        if kill == f"step-after-make{i}":  # the next step kills its own process
            run.step(f"boom{i}", die, kill)
        if effects == "1":
            # Declared an effect (fenced as it starts), or made one by asking for a key (fenced then).
            run.step(f"pay{i}", pay, order_id, i, effect=i % 2 == 0)
            print(f"paid{i}", flush=True)
            die(f"after-pay{i}")
print("done", flush=True)
"""


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def _start(tmp: Path, mode: str, kill: str, orders: int, effects: bool, **env: str) -> subprocess.Popen[str]:
    args = [str(tmp / "s" / "store.duckdb"), "r", mode, kill, str(tmp / "ledger"), str(orders), "1" if effects else "0"]
    return subprocess.Popen(
        [sys.executable, "-c", APP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(**env)
    )


def _made(out: str) -> dict[str, str]:
    """The order ids the process printed, by step: each printed only after its step had returned."""
    return dict(line.split() for line in out.splitlines() if line.startswith("make"))


def _resume(tmp: Path, mode: str, orders: int, effects: bool) -> dict[str, str]:
    proc = _start(tmp, mode, "none", orders, effects)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.splitlines()[-1] == "done"
    return _made(out)


def _ledger(tmp: Path) -> dict[str, set[str]]:
    """Orders charged per idempotency key (a service that honours keys charges each key once)."""
    found: dict[str, set[str]] = {}
    path = tmp / "ledger"
    for line in path.read_text().splitlines() if path.exists() else []:
        key, order = line.split()
        found.setdefault(key, set()).add(order)
    return found


def _killed(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    return out


def test_a_step_that_returned_is_restored_after_the_process_kills_itself_right_after(tmp_path: Path) -> None:
    """The default: a fresh uuid4 returned by a step comes back the same after a SIGKILL one instruction later."""
    before = _made(_killed(_start(tmp_path, "durable", "step-after-make0", 1, effects=False)))
    assert list(before) == ["make0"]
    first = _resume(tmp_path, "durable", 2, effects=False)
    assert first["make0"] == before["make0"]
    # Killed again after a step of the resumed run: both returned steps come back as they were.
    killed_again = _made(_killed(_start(tmp_path, "durable", "after-make2", 3, effects=False)))
    assert killed_again == {"make0": first["make0"], "make1": first["make1"], "make2": killed_again["make2"]}
    again = _resume(tmp_path, "durable", 3, effects=False)
    assert again == killed_again


def test_the_uuid_survives_an_aimed_kill_in_both_modes(tmp_path: Path) -> None:
    """Durable: returned steps survive any kill. Deferred: the fence before an effect makes them survive it."""
    aimed = [
        ("durable", "after-make1"),
        ("durable", "step-after-make1"),
        ("deferred", "in-pay1"),
        ("durable", "in-pay1"),
    ]
    for mode, point in aimed:
        tmp = tmp_path / f"{mode}-{point}"
        tmp.mkdir()
        out = _killed(_start(tmp, mode, point, 3, effects=True))
        before = _made(out)
        after = _resume(tmp, mode, 3, effects=True)
        for step, order in before.items():
            assert after[step] == order, f"{mode}: {step} was executed again after it had returned"
        charged = _ledger(tmp)
        assert all(len(orders) == 1 for orders in charged.values()), charged
        assert sorted(o for orders in charged.values() for o in orders) == sorted(after.values())


@pytest.mark.parametrize("mode", ["durable", "deferred"])
def test_random_kills_between_quick_steps_and_effects_never_charge_a_key_twice(tmp_path: Path, mode: str) -> None:
    """A campaign of SIGKILLs, aimed and random: one order per key, and (durable) no returned step re-executed."""
    rng = random.Random(f"durability-{mode}")
    orders = 4
    points = [f"{p}{i}" for i in range(orders) for p in ("after-make", "step-after-make", "in-pay", "after-pay")]
    for trial in range(TRIALS):
        tmp = tmp_path / f"trial-{trial}"
        tmp.mkdir()
        aimed = rng.choice([*points, "random"])
        proc = _start(tmp, mode, aimed, orders, effects=True)
        assert proc.stdout is not None
        if aimed == "random":
            assert proc.stdout.readline() == "ready\n"
            time.sleep(rng.uniform(0.0, 0.08))  # the random instant of the crash
            proc.send_signal(signal.SIGKILL)
            rest, _ = proc.communicate(timeout=120)
            out = "ready\n" + rest
        else:
            out = _killed(proc)
        before = _made(out)
        after = _resume(tmp, mode, orders, effects=True)
        # Under 'durable' every printed order had returned and must come back; under 'deferred' only
        # those the fence committed: up to the last payment that started.
        paid = [int(line[4:]) for line in out.splitlines() if line.startswith("paid")]
        fenced = max([*paid, int(aimed[-1]) if aimed.startswith("in-pay") else -1])
        for step, order in before.items():
            if mode == "durable" or int(step[4:]) <= fenced:
                assert after[step] == order, f"trial {trial} ({aimed}): {step} executed again"
        charged = _ledger(tmp)
        assert all(len(o) == 1 for o in charged.values()), f"trial {trial} ({aimed}): a key charged twice"
        assert {o for found in charged.values() for o in found} == set(after.values())


def _store_files(tmp: Path) -> tuple[Path, list[Path]]:
    folder = tmp / "s" / "store.duckdb.journal"
    return folder, sorted(folder.glob("*.log")) if folder.exists() else []


def test_another_process_replays_a_dead_log_with_a_torn_last_record(tmp_path: Path) -> None:
    """Steps only in a dead process's log (the group commit never ran) reach the CLI; a torn tail is dropped."""
    slow = {"RESUMABLE_GROUP_COMMIT_MS": "60000"}  # no group commit before the kill: only the log holds them
    out = _killed(_start(tmp_path, "durable", "after-make2", 3, effects=False, **slow))
    before = _made(out)
    assert set(before) == {"make0", "make1", "make2"}
    with duckdb.connect(str(tmp_path / "s" / "store.duckdb")) as con:  # the table alone: nothing yet
        assert con.execute("SELECT count(*) FROM steps").fetchone() == (0,)
    folder, logs = _store_files(tmp_path)
    assert len(logs) == 1
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(logs[0].stat().st_mode) == 0o600
    data = logs[0].read_bytes()
    with open(logs[0], "ab") as f:  # a crash in the middle of a write leaves half a record
        f.write(data[: len(data) // 5])
    shown = subprocess.run(
        [sys.executable, "-m", "resumable", "show", "r", "--json", "--store", str(tmp_path / "s" / "store.duckdb")],
        capture_output=True, text=True, timeout=120, env=_env(), check=True,
    )  # fmt: skip
    steps = {s["step"]: s["state"] for s in json.loads(shown.stdout)["steps"]}
    assert steps == {"make0": "completed", "make1": "completed", "make2": "completed"}
    assert _store_files(tmp_path)[1] == []  # replayed, then removed
    after = _resume(tmp_path, "durable", 3, effects=False)
    for step, order in before.items():
        assert after[step] == order


def test_a_clean_run_leaves_no_log_and_deferred_writes_none(tmp_path: Path) -> None:
    """The log is scaffolding: gone after a clean exit; the 'deferred' mode never writes one."""
    slow = {"RESUMABLE_GROUP_COMMIT_MS": "60000"}
    proc = _start(tmp_path, "durable", "none", 3, effects=False, **slow)
    assert proc.communicate(timeout=120)[0].splitlines()[-1] == "done"
    assert _store_files(tmp_path)[1] == []
    (tmp_path / "d").mkdir()
    _killed(_start(tmp_path / "d", "deferred", "after-make2", 3, effects=False, **slow))
    assert _store_files(tmp_path / "d")[1] == []


def test_a_bad_durability_is_refused_with_the_choices(tmp_path: Path) -> None:
    import resumable

    with pytest.raises(resumable.OptionError) as excinfo:
        resumable.Pipeline("p", store=tmp_path / "s.duckdb", durability="fast")
    assert str(excinfo.value) == "durability='fast' is not valid; expected 'durable' (the default) or 'deferred'."


def test_a_process_that_had_the_store_open_sees_a_dead_writers_steps_before_it_decides(tmp_path: Path) -> None:
    """A long-lived process (a kernel, a panel) replays a dead process's log at its next transaction."""
    import resumable
    from resumable._store import forget_all

    store = resumable.Pipeline("durable", store=tmp_path / "s" / "store.duckdb").store
    try:
        assert store.list_runs() == []
        slow = {"RESUMABLE_GROUP_COMMIT_MS": "60000"}
        before = _made(_killed(_start(tmp_path, "durable", "after-make1", 2, effects=False, **slow)))
        assert [(s.step, s.state.value) for s in store.list_steps("r")] == [
            ("make0", "completed"),
            ("make1", "completed"),
        ]
        assert resumable.load("r", "make1", store=tmp_path / "s" / "store.duckdb") == before["make1"]
    finally:
        forget_all()


def test_a_dead_log_of_a_removed_store_does_not_leak_into_its_replacement(tmp_path: Path) -> None:
    """The store removed after the crash: a new store at the path gets none of the old store's steps."""
    import resumable
    from resumable._store import forget_all

    slow = {"RESUMABLE_GROUP_COMMIT_MS": "60000"}
    _killed(_start(tmp_path, "durable", "after-make1", 2, effects=False, **slow))
    assert len(_store_files(tmp_path)[1]) == 1
    for leftover in (tmp_path / "s").glob("store.duckdb*"):
        if leftover.is_file():
            leftover.unlink()
    assert resumable.Pipeline("durable", store=tmp_path / "s" / "store.duckdb").runs() == []
    forget_all()
    with duckdb.connect(str(tmp_path / "s" / "store.duckdb")) as con:
        assert con.execute("SELECT count(*) FROM steps").fetchone() == (0,)
    assert _store_files(tmp_path)[1] == []


def test_a_record_whose_checksum_fails_is_dropped_and_the_ones_before_it_kept(tmp_path: Path) -> None:
    """Damaged bytes in the last record are never applied: its step executes again, the earlier ones restore."""
    slow = {"RESUMABLE_GROUP_COMMIT_MS": "60000"}
    before = _made(_killed(_start(tmp_path, "durable", "after-make2", 3, effects=False, **slow)))
    (log,) = _store_files(tmp_path)[1]
    data = bytearray(log.read_bytes())
    data[-3] ^= 0xFF  # inside the last record's payload
    log.write_bytes(bytes(data))
    after = _resume(tmp_path, "durable", 3, effects=False)
    assert after["make0"] == before["make0"] and after["make1"] == before["make1"]
    assert after["make2"] != before["make2"]
    assert _store_files(tmp_path)[1] == []


FAILED_CALL = """
import os, sys
import resumable
from resumable._owner import current_owner
from resumable.errors import ResumableError

pipe = resumable.Pipeline("p", store=sys.argv[1])
with pipe.run(run_id="r1") as run:
    print("made", run.step("a", lambda: 42), flush=True)  # deferred: logged, not yet in DuckDB
    try:
        pipe.store.invalidate("r1", "no-such-step", current_owner())  # a write that raises, rolls back
    except ResumableError as exc:
        print("refused", type(exc).__name__, flush=True)
    os._exit(9)  # dies before the next group commit
"""


def test_a_step_that_returned_survives_a_refused_write_and_a_crash_right_after(tmp_path: Path) -> None:
    """A refused write rolls back the quick steps it was carrying; reading the state back must not mark
    their log records applied, or the replay after the crash would skip a step that had returned."""
    store = tmp_path / "store.duckdb"
    args = [sys.executable, "-c", FAILED_CALL, str(store)]
    proc = subprocess.run(args, check=False, capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 9, proc.stderr
    assert proc.stdout.splitlines()[:2] == ["made 42", "refused CheckpointNotFoundError"]
    assert resumable.load("r1", "a", store=store) == 42
