"""Forks: a new run that shares another run's checkpoints before a step, by reference, and executes the rest.

Real stores, real subprocesses (``resumable fork``, a live worker, a process holding the file) and a
real IPython shell. What matters most: a fork restores exactly the bytes it forked from, whatever
its origin does later (and the reverse), and gc never takes a checkpoint a fork still shares.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
import store_sql
from click.testing import CliRunner
from history_store import kill, start_worker
from ipython_shell import fresh_kernel, started_shell, step

import resumable
from resumable._kernel_run import notebook_run
from resumable._magics import fork_from_here
from resumable._owner import current_owner
from resumable._store import forget_all, open_store
from resumable.cli import main

MB = 1024 * 1024


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resumable", *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def store_bytes(store_path: Path) -> int:
    """What the store holds: the database's used blocks (and its log) plus the payload folder's files.

    The database file's own size swings by megabytes between checkpoints (DuckDB keeps free blocks
    and truncates the file only now and then), so its used blocks are what is compared.
    """
    forget_all()
    with duckdb.connect(str(store_path), read_only=True) as con:
        row = con.execute("SELECT block_size * used_blocks FROM pragma_database_size()").fetchone()
    assert row is not None
    payloads = [p for p in store_path.parent.glob("*.payloads/**/*") if p.is_file()]
    wal = store_path.with_name(store_path.name + ".wal")
    return int(row[0]) + sum(p.stat().st_size for p in payloads) + (wal.stat().st_size if wal.exists() else 0)


class Calls:
    """Which step functions ran, in order."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def load(self, n: int) -> np.ndarray:
        self.ran.append("load")
        return np.arange(n, dtype=np.float64)

    def clean(self, values: np.ndarray, scale: float) -> np.ndarray:
        self.ran.append("clean")
        return values * scale

    def train(self, values: np.ndarray) -> float:
        self.ran.append("train")
        return float(values.sum())

    def report(self, total: float) -> str:
        self.ran.append("report")
        return f"total {total:.0f}"


def run_pipeline(store: Path | str, run: resumable.Run, calls: Calls, n: int = 1000, scale: float = 1.0) -> str:
    with run:
        values = run.step("load", calls.load, n)
        cleaned = run.step("clean", calls.clean, values, scale)
        total = run.step("train", calls.train, cleaned)
        return run.step("report", calls.report, total)


def checkpoint_rows(store_location: str | Path) -> list[tuple[Any, ...]]:
    forget_all()
    return store_sql.execute(
        store_location, "SELECT run_id, step, name, generation, file FROM checkpoints ORDER BY 1, 2, 3, 4, 5"
    )


def payload_folder(store_location: str) -> Path:
    """Where the store keeps large checkpoints (a file's own folder; the shared folder of a server store)."""
    folder = open_store(store_location).payload_dir
    forget_all()
    assert folder is not None
    return folder


def checkpoint_totals(store_path: Path) -> tuple[Any, ...]:
    """How many checkpoint rows there are, the bytes they stand for, and the bytes kept inline."""
    forget_all()
    with duckdb.connect(str(store_path), read_only=True) as con:
        row = con.execute("SELECT count(*), sum(size), sum(octet_length(data)) FROM checkpoints").fetchone()
    assert row is not None
    return tuple(row)


# ---------------------------------------------------------------- the Python API


def test_a_fork_restores_the_steps_before_its_step_and_executes_the_rest(store_location: str) -> None:
    """Steps before --from restore from the origin's checkpoints without running; the rest run; show says so."""
    pipe = resumable.Pipeline("etl", store=store_location)
    calls = Calls()
    assert run_pipeline(store_location, pipe.run(run_id="origin"), calls, n=10) == "total 45"
    fork = pipe.fork("origin", "train", run_id="tuned", params={"lr": 0.5})
    assert isinstance(fork, resumable.Run) and fork.run_id == "tuned"
    calls.ran.clear()
    assert run_pipeline(store_location, fork, calls, n=10) == "total 45"
    assert calls.ran == ["train", "report"]
    info = pipe.store.get_run("tuned")
    assert info is not None
    assert (info.forked_from, info.forked_at, info.params) == ("origin", "train", {"lr": 0.5})
    assert [(s.step, s.state.value) for s in pipe.store.list_steps("tuned")] == [
        ("load", "completed"), ("clean", "completed"), ("train", "completed"), ("report", "completed"),
    ]  # fmt: skip
    assert resumable.load("tuned", "clean", store=store_location).tolist() == list(map(float, range(10)))
    # No checkpoint row was copied: the fork's two shared steps point at the origin's rows.
    rows = checkpoint_rows(store_location)
    assert [r[:2] for r in rows if r[0] == "tuned"] == [("tuned", "report"), ("tuned", "train")]
    assert sum(1 for r in rows if r[0] == "origin") == 4


def test_forking_a_run_with_a_large_checkpoint_copies_no_bytes(store_path: Path) -> None:
    """Two 4 MB arrays checkpointed: the fork adds no payload file, no checkpoint row, at most one database block.

    DuckDB only: it measures the file's blocks.

    DuckDB allocates its file in 256 KiB blocks, so the fork's few run, step and event rows may take
    one more block: that is the bound, whatever the size of the checkpoints.
    """
    pipe = resumable.Pipeline("etl", store=store_path)
    calls = Calls()
    run_pipeline(store_path, pipe.run(run_id="origin"), calls, n=4 * MB // 8, scale=2.0)
    forget_all()
    payloads = sorted(p.name for p in store_path.parent.rglob("*.payloads/**/*") if p.is_file())
    totals = checkpoint_totals(store_path)
    before = store_bytes(store_path)
    assert before > 8 * MB
    pipe = resumable.Pipeline("etl", store=store_path)
    pipe.fork("origin", "report", run_id="copy")
    forget_all()
    grown = store_bytes(store_path) - before
    assert grown <= 256 * 1024, f"the store grew by {grown} bytes"
    assert checkpoint_totals(store_path) == totals
    assert sorted(p.name for p in store_path.parent.rglob("*.payloads/**/*") if p.is_file()) == payloads
    calls.ran.clear()
    copy = resumable.Pipeline("etl", store=store_path).run(run_id="copy")
    assert run_pipeline(store_path, copy, calls, n=4 * MB // 8, scale=2.0)
    assert calls.ran == ["report"]


def test_the_fork_keeps_its_bytes_when_the_origin_re_executes_the_shared_step(store_location: str) -> None:
    """The origin's new result for a shared step never reaches the fork, before or after gc; and the reverse."""
    pipe = resumable.Pipeline("etl", store=store_location)
    calls = Calls()
    run_pipeline(store_location, pipe.run(run_id="origin"), calls, n=10, scale=1.0)
    pipe.fork("origin", "train", run_id="fork")
    # The origin re-executes 'clean' with another scale: a new result, written at a new generation.
    calls.ran.clear()
    assert run_pipeline(store_location, pipe.run(run_id="origin"), calls, n=10, scale=2.0) == "total 90"
    assert calls.ran == ["clean", "train", "report"]
    for collect in (False, True):
        if collect:
            assert pipe.store.gc().checkpoints_removed == 0  # the fork still shares the old 'clean': kept
        calls.ran.clear()
        assert run_pipeline(store_location, pipe.run(run_id="fork"), calls, n=10, scale=1.0) == "total 45"
        assert calls.ran == ([] if collect else ["train", "report"])
        assert resumable.load("fork", "clean", store=store_location).tolist()[:3] == [0.0, 1.0, 2.0]
        assert resumable.load("origin", "clean", store=store_location).tolist()[:3] == [0.0, 2.0, 4.0]
    # The reverse: the fork re-executes the step it shares, and the origin keeps its own result.
    calls.ran.clear()
    assert run_pipeline(store_location, pipe.run(run_id="fork"), calls, n=10, scale=3.0) == "total 135"
    assert calls.ran == ["clean", "train", "report"]
    pipe.store.gc()
    calls.ran.clear()
    assert run_pipeline(store_location, pipe.run(run_id="origin"), calls, n=10, scale=2.0) == "total 90"
    assert calls.ran == []
    assert resumable.load("origin", "clean", store=store_location).tolist()[:3] == [0.0, 2.0, 4.0]
    assert resumable.load("fork", "clean", store=store_location).tolist()[:3] == [0.0, 3.0, 6.0]


def test_gc_after_the_origin_is_invalidated_keeps_what_the_fork_shares(store_location: str) -> None:
    """Invalidating every step of the origin and collecting keeps the shared rows and files; the fork restores."""
    pipe = resumable.Pipeline("etl", store=store_location)
    calls = Calls()
    run_pipeline(store_location, pipe.run(run_id="origin"), calls, n=MB // 8)  # 'load' and 'clean' are payload files
    pipe.fork("origin", "train", run_id="fork")
    forget_all()
    done = cli("invalidate", "origin", "load", "--downstream", "--store", store_location)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "invalidated in run 'origin': load, clean, train, report\n"
    collected = cli("gc", "--store", store_location)
    assert collected.returncode == 0, collected.stderr
    rows = checkpoint_rows(store_location)
    assert [(r[0], r[1]) for r in rows if r[0] == "origin"] == [("origin", "clean"), ("origin", "load")]
    assert all((payload_folder(store_location) / r[4]).is_file() for r in rows if r[4])
    calls.ran.clear()
    run_pipeline(store_location, resumable.Pipeline("etl", store=store_location).run(run_id="fork"), calls, n=MB // 8)
    assert calls.ran == ["train", "report"]  # 'load' and 'clean' restored from the rows gc kept
    # Once the fork lets go of them too, they are collected.
    store = open_store(store_location)
    assert store.invalidate("fork", "load", current_owner(), downstream=True) == ["load", "clean", "train", "report"]
    assert store.gc().checkpoints_removed == 4  # the origin's load and clean, the fork's train and report
    assert checkpoint_rows(store_location) == []


def test_removing_the_origin_and_compacting_keeps_the_fork_restorable(store_location: str) -> None:
    """`resumable rm` of the origin (compacting the file) leaves what the fork shares; removing the fork frees it."""
    pipe = resumable.Pipeline("etl", store=store_location)
    calls = Calls()
    run_pipeline(store_location, pipe.run(run_id="origin"), calls, n=MB // 8)  # 'load' and 'clean' are payload files
    pipe.fork("origin", "train", run_id="fork")
    run_pipeline(store_location, pipe.run(run_id="fork"), calls, n=MB // 8)
    shared = [r for r in checkpoint_rows(store_location) if r[0] == "origin" and r[1] in ("load", "clean")]
    forget_all()
    removed = cli("rm", "origin", "--compact", "--store", store_location)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert [r for r in checkpoint_rows(store_location) if r[0] == "origin"] == shared
    assert resumable.load("fork", "clean", store=store_location).tolist()[:3] == [0.0, 1.0, 2.0]
    calls.ran.clear()
    run_pipeline(store_location, resumable.Pipeline("etl", store=store_location).run(run_id="fork"), calls, n=MB // 8)
    assert calls.ran == []  # every step restored, 'load' and 'clean' from the deleted origin's rows
    forget_all()
    removed = cli("rm", "fork", "--store", store_location)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert checkpoint_rows(store_location) == []
    assert [p for p in (payload_folder(store_location)).rglob("*") if p.is_file()] == []


def test_a_deleted_runs_id_stays_taken_while_a_forks_pending_step_points_at_it(store_location: str) -> None:
    """A fork's step sent back to pending still points at the deleted origin: a new run under that id is refused."""
    pipe = resumable.Pipeline("etl", store=store_location)
    run_pipeline(store_location, pipe.run(run_id="origin"), Calls(), n=10)
    pipe.fork("origin", "train", run_id="fork")
    store = open_store(store_location)
    store.invalidate("fork", "load", current_owner(), downstream=False)
    assert store.remove_runs(("origin",), current_owner()).refused == ()
    with pytest.raises(resumable.ForkError) as excinfo:
        pipe.run(run_id="origin").__enter__()
    assert str(excinfo.value) == (
        "run id 'origin' still names checkpoints of a deleted run that other runs (forks of it) share, so a new "
        "run cannot start under it; nothing was written. Choose another run id."
    )


def test_a_fork_past_an_effect_step_whose_last_execution_failed_is_refused(store_location: str) -> None:
    """Its effect may have happened under the origin's key: the fork would make it again under a new one."""
    pipe = resumable.Pipeline("shop", store=store_location)
    charged: list[str] = []

    def charge(fail: bool) -> str:
        charged.append(resumable.idempotency_key())
        if fail:
            raise RuntimeError("card network down")
        return "ok"

    with pipe.run(run_id="order") as run:
        run.step("charge", charge, False)  # asks for a key: an effect step
        run.step("email", lambda: "sent")
    with pytest.raises(RuntimeError), pipe.run(run_id="order") as run:
        run.rerun("charge")
        run.step("charge", charge, True)
    with pytest.raises(resumable.ForkError) as excinfo:
        pipe.fork("order", "email", run_id="again")
    assert str(excinfo.value) == (
        "cannot fork run 'order' from step 'email': step 'charge' before it has side effects and its last execution "
        "did not complete (failed), so its effect may have happened; the fork would execute it again under a new "
        "key; nothing was written. Finish 'charge' in run 'order' first (resume that run), or fork from 'charge' "
        "to do it again deliberately."
    )
    assert len(charged) == 2 and pipe.store.get_run("again") is None


def test_a_fork_of_a_fork_shares_the_first_runs_rows(store_location: str) -> None:
    pipe = resumable.Pipeline("etl", store=store_location)
    calls = Calls()
    run_pipeline(store_location, pipe.run(run_id="a"), calls, n=10)
    pipe.fork("a", "report", run_id="b")
    pipe.fork("b", "train", run_id="c")
    calls.ran.clear()
    run_pipeline(store_location, pipe.run(run_id="c"), calls, n=10)
    assert calls.ran == ["train", "report"]
    assert [r[:2] for r in checkpoint_rows(store_location) if r[1] in ("load", "clean")] == [
        ("a", "clean"), ("a", "load"),
    ]  # fmt: skip


def test_a_signed_store_verifies_a_forks_shared_checkpoints(
    store_location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signatures bind the run and step a row was written under; a fork restores those rows and they verify."""
    monkeypatch.setenv("RESUMABLE_SIGNING_KEY", "k" * 32)
    pipe = resumable.Pipeline("etl", store=store_location)
    calls = Calls()
    run_pipeline(store_location, pipe.run(run_id="origin"), calls, n=MB // 8)
    pipe.fork("origin", "report", run_id="fork")
    forget_all()
    calls.ran.clear()
    assert run_pipeline(
        store_location, resumable.Pipeline("etl", store=store_location).run(run_id="fork"), calls, n=MB // 8
    )
    assert calls.ran == ["report"]
    assert resumable.load("fork", "train", store=store_location) == float(sum(range(MB // 8)))


def test_an_effect_step_before_the_fork_point_is_not_repeated(store_location: str) -> None:
    """A charged card stays charged: the fork holds the effect step even when its argument changed; the effect
    step at the fork point executes under the new run's key."""
    pipe = resumable.Pipeline("shop", store=store_location)
    charged: list[str] = []

    def charge(amount: int) -> str:
        charged.append(resumable.idempotency_key())
        return f"charged {amount}"

    def email(receipt: str) -> str:
        return f"sent: {receipt} ({resumable.idempotency_key()})"

    with pipe.run(run_id="order") as run:
        run.step("charge", charge, 10)
        first_email = run.step("email", email, "charged 10")
    with pipe.fork("order", "email", run_id="order-again") as run:
        with pytest.warns(resumable.EffectHeldWarning) as held:
            assert run.step("charge", charge, 99) == "charged 10"
        again = run.step("email", email, "charged 10")
    assert str(held[0].message).startswith("step 'charge' has side effects and its inputs changed ('amount')")
    assert len(charged) == 1
    assert again != first_email and again.startswith("sent: charged 10 (rsm_")


def test_fork_errors_name_what_to_do(store_location: str) -> None:
    pipe = resumable.Pipeline("etl", store=store_location)
    run_pipeline(store_location, pipe.run(run_id="origin"), Calls(), n=10)
    with pytest.raises(resumable.ForkError) as excinfo:
        pipe.fork("origin", "nope")
    assert str(excinfo.value) == (
        "cannot fork run 'origin' from step 'nope': the run has no step 'nope' (its steps: 'load', 'clean', "
        "'train', 'report'); nothing was written. Name one of its steps; see them with: resumable show origin"
    )
    with pytest.raises(resumable.ForkError) as excinfo:
        pipe.fork("origin", "train", run_id="origin")
    assert str(excinfo.value) == (
        "cannot fork run 'origin' into run 'origin': run 'origin' (pipeline 'etl') already exists; nothing was "
        "written. Choose another id with run_id=, or leave it out to get a new one."
    )
    with pytest.raises(resumable.CheckpointNotFoundError) as missing:
        pipe.fork("ghost", "train")
    assert (
        str(missing.value)
        == f"run 'ghost' does not exist in store '{store_location}'. List the runs with: resumable runs"
    )
    with pytest.raises(resumable.PipelineMismatchError) as other:
        resumable.Pipeline("other", store=store_location).fork("origin", "train")
    assert str(other.value) == (
        "run 'origin' belongs to pipeline 'etl', not 'other'; nothing was changed. Use another run id, or open it "
        "with pipeline 'etl'."
    )
    assert [r.run_id for r in pipe.runs()] == ["origin"]


# ---------------------------------------------------------------- the command line


def test_resumable_fork_show_why_and_sql(store_location: str) -> None:
    pipe = resumable.Pipeline("etl", store=store_location)
    run_pipeline(store_location, pipe.run(run_id="origin", params={"lr": 0.1, "tag": "a"}), Calls(), n=10)
    forget_all()
    done = cli("fork", "origin", "--from", "train", "--run-id", "tuned", "-p", "lr", "0.5", "--store", store_location)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "forked run 'tuned' from run 'origin' at step 'train': 2 steps share its checkpoints (load, clean); "
        "'train' and later steps execute when you run it: resumable execute NOTEBOOK --run-id tuned\n"
    )
    shown = cli("show", "tuned", "--store", store_location)
    assert shown.stdout.splitlines()[:2] == [
        "run tuned of pipeline etl: completed (parameters: lr=0.5, tag='a')",
        "forked from origin at train",
    ]
    doc = json.loads(cli("show", "tuned", "--json", "--store", store_location).stdout)
    assert (doc["forked_from"], doc["forked_at"], doc["params"]) == ("origin", "train", {"lr": 0.5, "tag": "a"})
    assert [s["step"] for s in doc["steps"]] == ["load", "clean"]
    why = cli("why", "tuned", "clean", "--store", store_location)
    assert why.stdout == (
        "step 'clean': restored from the fork of run 'origin': it shares that run's checkpoint "
        "(not executed in this run)\n"
    )
    rows = cli(
        "sql", "SELECT run_id, forked_from, forked_at FROM runs ORDER BY run_id", "--csv", "--store", store_location
    )
    assert rows.stdout == "run_id,forked_from,forked_at\norigin,,\ntuned,origin,train\n"
    taken = cli("fork", "origin", "--from", "train", "--run-id", "tuned", "--store", store_location)
    assert taken.returncode == 6
    assert taken.stderr == (
        "error: cannot fork run 'origin' into run 'tuned': run 'tuned' (pipeline 'etl') already exists; nothing "
        "was written. Choose another id with --run-id, or leave it out to get a new one.\n"
    )
    # Usage errors, in process (nothing reaches the store):
    bad = CliRunner().invoke(
        main, ["fork", "origin", "--from", "train", "-p", "1x", "2", "--store", str(store_location)]
    )
    assert bad.exit_code == 2
    assert bad.output.endswith(
        "Error: parameter name '1x' is not a Python variable name. The notebook receives each parameter as "
        "'NAME = VALUE', so use letters, digits and '_', for example -p order_id 42.\n"
    )
    no_id = CliRunner().invoke(
        main, ["fork", "origin", "--from", "train", "--run-id", "a b", "--store", str(store_location)]
    )
    assert no_id.exit_code == 2
    assert no_id.output.endswith(
        "Error: --run-id 'a b' cannot name a run: use 1 to 128 letters, digits, '_', '-' or '.', not starting with "
        "'-' or '.', for example 'order-43'.\n"
    )


def test_a_run_a_live_process_executes_can_be_forked(store_location: str, tmp_path: Path) -> None:
    """The worker owns its run and sits in its long step; the fork only reads, so it succeeds and changes nothing."""
    worker = start_worker(store_location, "live", tmp_path / "marker")
    try:
        done = cli("fork", "live", "--from", "crunch", "--run-id", "copy", "--store", store_location)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(
            "forked run 'copy' from run 'live' at step 'crunch': 1 step shares its checkpoints (fetch); "
        )
        shown = json.loads(cli("show", "live", "--json", "--store", store_location).stdout)
        assert [(s["step"], s["state"]) for s in shown["steps"]] == [("fetch", "completed"), ("crunch", "running")]
        assert worker.poll() is None
    finally:
        kill(worker)
    assert resumable.load("copy", "fetch", store=store_location) == list(range(10))


def test_a_fork_waits_for_a_process_that_holds_the_file_then_names_it(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resumable.Pipeline("etl", store=store_path).runs()
    run_pipeline(store_path, resumable.Pipeline("etl", store=store_path).run(run_id="origin"), Calls(), n=10)
    forget_all()
    hold = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('open', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(store_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        env_timeout = {**os.environ, "RESUMABLE_LOCK_TIMEOUT": "0.5"}
        done = subprocess.run(
            [sys.executable, "-m", "resumable", "fork", "origin", "--from", "train", "--store", str(store_path)],
            capture_output=True, text=True, timeout=120, check=False, env=env_timeout,
        )  # fmt: skip
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert done.returncode == 6
    assert done.stderr.startswith(f"error: store '{store_path}' stayed locked by process {holder.pid} for ")
    assert [r.run_id for r in resumable.Pipeline("etl", store=store_path).runs()] == ["origin"]


# ---------------------------------------------------------------- notebooks


def _notebook_origin(ip: Any) -> None:
    ip.run_line_magic("durable_run", "nb --run-id origin")
    ip.run_cell("# Parameters\nlimit = 3")
    assert step(ip, "load", "rows = list(range(limit))\nprint('loaded', len(rows))").success
    assert step(ip, "charge", "key = resumable.idempotency_key()\ncharged = len(rows)").success
    assert step(ip, "report", "total = sum(rows)\nprint('total', total)").success


def test_durable_run_fork_restores_before_the_step_and_executes_from_it(
    store_location: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RESUMABLE_STORE", str(store_location))
    ip = started_shell()
    ip.run_cell("import resumable")
    _notebook_origin(ip)
    origin_key = ip.user_ns["key"]
    fresh_kernel(ip)
    ip.run_cell("import resumable")
    capsys.readouterr()
    ip.run_line_magic("durable_run", "nb --fork origin --from report --run-id again")
    assert capsys.readouterr().out == (
        "resumable: started run 'again' of pipeline 'nb', forked from run 'origin' at step 'report': 2 steps "
        "restore from its checkpoints (load, charge); 'report' and later steps execute\n"
    )
    ip.run_cell("# Parameters\nlimit = 3")
    assert step(ip, "load", "rows = list(range(limit))\nprint('loaded', len(rows))").success
    assert step(ip, "charge", "key = resumable.idempotency_key()\ncharged = len(rows)").success
    assert step(ip, "report", "total = sum(rows)\nprint('total', total)").success
    out = capsys.readouterr().out
    assert "restored" in out.split("total 3")[0]
    assert ip.user_ns["key"] == origin_key  # the effect step was restored, not repeated
    store = open_store(store_location)
    assert [e.transition for e in store.list_events("again", "report")] == ["start", "ok"]
    assert [e.transition for e in store.list_events("again", "load")] == ["forked"]


def test_a_changed_parameter_re_executes_a_step_before_the_fork_point_and_holds_an_effect(
    store_location: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """limit 3 -> 5: 'load' reads it, so it executes again with a why line; 'charge' has effects, so it is held."""
    monkeypatch.setenv("RESUMABLE_STORE", str(store_location))
    ip = started_shell()
    ip.run_cell("import resumable")
    _notebook_origin(ip)
    fresh_kernel(ip)
    ip.run_cell("import resumable")
    ip.run_line_magic("durable_run", "nb --fork origin --from report --run-id bigger")
    ip.run_cell("# Parameters\nlimit = 5")
    capsys.readouterr()
    assert step(ip, "load", "rows = list(range(limit))\nprint('loaded', len(rows))").success
    out = capsys.readouterr().out
    assert "↻ step 'load' runs again: 'limit' changed (3 → 5)" in out
    assert "loaded 5" in out
    assert step(ip, "charge", "key = resumable.idempotency_key()\ncharged = len(rows)").success
    assert ip.user_ns["charged"] == 3  # held: restored, never repeated implicitly
    assert capsys.readouterr().err == (
        "step 'charge' has side effects and its inputs changed ('rows'); it was not run again. To do it again: "
        "%%durable_step charge --rerun\n"
    )
    assert step(ip, "report", "total = sum(rows)").success
    assert ip.user_ns["total"] == 10
    store = open_store(store_location)
    info = store.get_run("bigger")
    assert info is not None and info.params == {"limit": 5}
    origin = store.get_run("origin")
    assert origin is not None and origin.params == {"limit": 3}


def test_fork_from_here_forks_the_current_run_and_makes_it_current(
    store_location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The panel's "Fork from here": the same as %durable_run NAME --fork CURRENT --from STEP."""
    monkeypatch.setenv("RESUMABLE_STORE", str(store_location))
    ip = started_shell()
    ip.run_cell("import resumable")
    _notebook_origin(ip)
    new_id = fork_from_here(ip, "charge")
    current = notebook_run()
    assert current is not None and current.run_id == new_id != "origin"
    store = open_store(store_location)
    info = store.get_run(new_id)
    assert info is not None and (info.forked_from, info.forked_at) == ("origin", "charge")
    assert [s.step for s in store.list_steps(new_id)] == ["load"]
    assert step(ip, "charge", "key = resumable.idempotency_key()\ncharged = len(rows)").success
    assert step(ip, "report", "total = sum(rows)").success
    assert [(s.step, s.state.value) for s in store.list_steps(new_id)] == [
        ("load", "completed"), ("charge", "completed"), ("report", "completed"),
    ]  # fmt: skip


def test_the_panels_fork_from_here_button_forks_the_kernels_run(
    store_location: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """%durable_panel's real button: the kernel joins the fork, whose cells before the step restore."""
    monkeypatch.setenv("RESUMABLE_STORE", str(store_location))
    ip = started_shell()
    ip.run_cell("import resumable")
    _notebook_origin(ip)
    panel = ip.run_line_magic("durable_panel", "")
    try:
        button = panel.rows["report"].fork
        assert button.layout.display != "none" and not button.disabled
        button.click()
        current = notebook_run()
        assert current is not None and current.run_id != "origin"
        assert panel.run_id == current.run_id
        capsys.readouterr()
        assert step(ip, "load", "rows = list(range(limit))\nprint('loaded', len(rows))").success
        assert step(ip, "charge", "key = resumable.idempotency_key()\ncharged = len(rows)").success
        assert step(ip, "report", "total = sum(rows)\nprint('total', total)").success
        out = capsys.readouterr().out
        assert (
            "↺ restored step 'load'" in out
            and "↺ restored step 'charge'" in out
            and "restored step 'report'" not in out
        )
        store = open_store(store_location)
        assert [(s.step, s.state.value) for s in store.list_steps(current.run_id)] == [
            ("load", "completed"), ("charge", "completed"), ("report", "completed"),
        ]  # fmt: skip
        assert [e.transition for e in store.list_events(current.run_id, "report")] == ["start", "ok"]
        assert [e.transition for e in store.list_events(current.run_id, "load")] == ["forked"]
    finally:
        panel.close()


def test_durable_run_fork_refusals_are_usage_errors(
    store_location: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RESUMABLE_STORE", str(store_location))
    ip = started_shell()
    ip.run_cell("import resumable")
    _notebook_origin(ip)
    capsys.readouterr()
    ip.run_cell("%durable_run nb --fork origin")
    assert (
        "UsageError: %durable_run nb: --fork and --from go together; add --from STEP, for example "
        "'%durable_run nb --fork order-42 --from charge'." in capsys.readouterr().err
    )
    ip.run_cell("%durable_run nb --fork origin --from nope")
    assert (
        "UsageError: cannot fork run 'origin' from step 'nope': the run has no step 'nope' (its steps: 'load', "
        "'charge', 'report'); nothing was written. Name one of its steps; see them with: resumable show origin"
        in capsys.readouterr().err
    )
    current = notebook_run()
    assert current is not None and current.run_id == "origin"
