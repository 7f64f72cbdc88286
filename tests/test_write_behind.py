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

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

import resumable
from resumable import _codec
from resumable._store.completion_log import folder_for, read_records
from resumable._store.duckdb import DuckDBStore
from resumable._store.rows import decode_quick_rows

TESTS = Path(__file__).resolve().parent
SIZE = 3_000_000  # above the inline limit: each output is a payload file
assert _codec.INLINE_LIMIT < SIZE

KERNEL = r"""
import hashlib, json, os, signal, sys
sys.path.insert(0, sys.argv[1])
from ipython_shell import started_shell, step

store, mode = sys.argv[2], sys.argv[3]
os.environ["RESUMABLE_STORE"] = store
ip = started_shell()
ip.run_cell("%durable_run wb --run-id r1").raise_error()
ip.user_ns["os"] = os
ip.user_ns_hidden["os"] = os
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
        f"bytes, not {size}. Its payload had not reached the disk yet when the process stopped (a power cut or a "
        "crash of the machine loses such bytes), so the step reads interrupted and executes again when the run "
        "resumes."
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
