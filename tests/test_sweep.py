"""Sweeps on real kernels and a Dask LocalCluster: resume per parameter set, stop early, survive a killed worker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from notebook_files import write_nb

import resumable
from resumable._store import open_store

pytestmark = pytest.mark.timeout(240)


def cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m resumable ...`` as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESUMABLE_")}
    return subprocess.run(
        [sys.executable, "-m", "resumable", *map(str, args)],
        capture_output=True, text=True, timeout=200, check=False, cwd=cwd, env=env,
    )  # fmt: skip


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (just released by the system)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def squares_notebook(folder: Path) -> Path:
    """A parameters cell, one durable step that logs each execution to a file, and a step that may fail."""
    return write_nb(
        folder / "squares.ipynb",
        ("n = 1", ["parameters"]),
        "%load_ext resumable\nimport pathlib",
        "%%durable_step square --exclude f\nsquare = n * n\nwith open('executions', 'a') as f:\n    f.write(f'{n}\\n')",
        "%%durable_step check\nassert n != 13, 'unlucky'\nprint('square', square)",
    )


def test_a_sweep_runs_each_set_once_and_running_it_again_restores_everything(tmp_path: Path, store_path: Path) -> None:
    """Two parameter sets run in parallel; the same sweep again (from a YAML file) restores every run."""
    nb = squares_notebook(tmp_path)
    result = resumable.sweep(nb, [{"n": 2}, {"n": 3}], workers=2, store=store_path, progress=False)
    (tmp_path / "params.yaml").write_text("- {n: 2}\n- {n: 3}\n")  # the same sets, from a file
    assert result.ok, [r.error for r in result.runs]
    assert result.pipeline == "squares" and result.stopped_early is False
    assert [(r.params, r.state, r.steps_executed, r.steps_restored) for r in result.runs] == [
        ({"n": n}, "completed", ("square", "check"), ()) for n in (2, 3)
    ]
    assert sorted((tmp_path / "executions").read_text().split()) == ["2", "3"]
    out = nbformat.read(tmp_path / "squares.sweep" / f"{result.runs[1].run_id}.ipynb", as_version=4)
    assert out.metadata["resumable"]["params"] == {"n": 3}
    assert out.metadata["resumable"]["outcome"] == "completed"
    first = open_store(store_path).get_run(result.runs[0].run_id)
    assert first is not None and first.params == {"n": 2} and first.pipeline == "squares"

    again = resumable.sweep(nb, tmp_path / "params.yaml", workers=2, store=store_path, progress=False)
    assert [(r.run_id, r.state, r.steps_executed, r.steps_restored) for r in again.runs] == [
        (r.run_id, "completed", (), ("square", "check")) for r in result.runs
    ]
    assert sorted((tmp_path / "executions").read_text().split()) == ["2", "3"]  # nothing executed again
    doc = again.to_json()
    assert doc["counts"] == {"completed": 2} and doc["runs"][0]["params"] == {"n": 2}
    assert json.loads(json.dumps(doc)) == doc


def test_max_failures_stops_the_sweep_and_cancels_the_runs_not_finished(tmp_path: Path, store_path: Path) -> None:
    """--max-failures 1: the first failed run stops the sweep, the others are cancelled; a table, and exit 1."""
    nb = squares_notebook(tmp_path)
    (tmp_path / "params.yaml").write_text("grid:\n  n: [13, 5, 6]\n")
    done = cli(
        "execute", nb, "--sweep", "params.yaml", "--workers", "1", "--max-failures", "1", "--store", store_path,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    assert lines[0] == ["run", "parameters", "state", "executed", "restored", "duration"]
    assert [row[1:5] for row in lines[1:]] == [
        ["n=13", "failed", "1", "0"], ["n=5", "cancelled", "0", "0"], ["n=6", "cancelled", "0", "0"]
    ]  # fmt: skip
    assert "stopped after 1 failed runs (--max-failures 1); 2 runs cancelled" in done.stderr
    assert "sweep of 3 runs of pipeline 'squares': 1 failed, 2 cancelled" in done.stderr
    assert f"error in run '{lines[1][0]}': step 'check' (cell 4) raised AssertionError: unlucky" in done.stderr


def test_a_bad_sweep_on_the_command_line_is_a_usage_error(tmp_path: Path) -> None:
    """A bad file exits 2 with the whole message (also as JSON); single-run options are refused with --sweep."""
    nb = squares_notebook(tmp_path)
    (tmp_path / "params.yaml").write_text("- {n: 1}\n- [2]\n")
    bad = cli("execute", nb, "--sweep", "params.yaml", "--json", cwd=tmp_path)
    assert bad.returncode == 2
    message = (
        "sweep file 'params.yaml' (entry 2) is [2] (list), not a mapping of parameter names to values. "
        "Write each entry as {name: value, ...}."
    )
    assert json.loads(bad.stdout) == {"ok": False, "outcome": "usage", "error": message, "exit_code": 2}
    assert f"Error: {message}" in bad.stderr
    mixed = cli("execute", nb, "--sweep", "params.yaml", "--run-id", "r1", cwd=tmp_path)
    assert mixed.returncode == 2
    assert (
        "Error: --run-id is for a single run; with --sweep each run's id and parameters come from the sweep file."
        in mixed.stderr
    )
    (tmp_path / "params.yaml").write_text("- {n: 1}\n")
    port = closed_port()
    started = time.monotonic()
    unreachable = cli("execute", nb, "--sweep", "params.yaml", "--cluster", f"tcp://127.0.0.1:{port}", cwd=tmp_path)
    elapsed = time.monotonic() - started  # an interpreter's start included; Dask alone waited 20 s before
    assert (unreachable.returncode, elapsed < 20) == (2, True), (elapsed, unreachable.stderr)
    assert unreachable.stderr.endswith(
        f"Error: the Dask scheduler at tcp://127.0.0.1:{port}: cannot be reached: nothing listens on port {port} "
        "of 127.0.0.1 (connection refused). No run of the sweep was started. Check the address, start a "
        "scheduler there ('dask scheduler') and its workers ('dask worker ADDRESS'), or leave out --cluster to "
        "run on a local pool.\n"
    ), unreachable.stderr
    assert not (tmp_path / "squares.sweep").exists()  # nothing of the sweep was made
    both = cli(
        "execute", nb, "--sweep", "params.yaml", "--workers", "2", "--cluster", "tcp://127.0.0.1:1", cwd=tmp_path
    )
    assert both.returncode == 2
    assert (
        "Error: --workers 2 cannot be used with the cluster 'tcp://127.0.0.1:1', whose workers are its own. Start as "
        "many workers as you want on the cluster (dask worker ADDRESS) and leave this out."
    ) in both.stderr


def test_a_killed_worker_s_run_resumes_on_another_worker_and_its_effect_happens_once(
    tmp_path: Path, store_path: Path
) -> None:
    """SIGKILL the Dask worker mid-step: the scheduler hands the run on, its dead kernel lets go, the completed
    effect step restores (its effect stays single) and the interrupted step executes again."""
    from distributed import LocalCluster

    nb = write_nb(
        tmp_path / "pay.ipynb",
        ("amount = 1", ["parameters"]),
        "%load_ext resumable\nimport os, pathlib, time, resumable",
        "%%durable_step charge --exclude f\nkey = resumable.idempotency_key()\n"
        "with open('charges', 'a') as f:\n    f.write(f'{key} {amount}\\n')",
        # Written under another name and renamed whole: the test reads the worker's pid once the file exists.
        "%%durable_step wait\npathlib.Path(f'part-{os.getpid()}').write_text(str(os.getppid()))\n"
        "pathlib.Path(f'part-{os.getpid()}').replace(f'waiting-{os.getpid()}')\n"
        "while not pathlib.Path('go').exists():\n    time.sleep(0.05)",
        "%%durable_step receipt\nreceipt = f'paid {amount}'",
    )
    found: dict[str, int] = {}

    def kill_the_worker() -> None:
        deadline = time.monotonic() + 120
        while not (marks := list(tmp_path.glob("waiting-*"))):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        kernel = int(marks[0].name.removeprefix("waiting-"))
        worker = int(marks[0].read_text())
        found.update(kernel=kernel, worker=worker)
        os.kill(worker, signal.SIGKILL)
        psutil.Process(kernel).wait(timeout=30)  # ipykernel's parent poller ends the orphaned kernel
        (tmp_path / "go").write_text("")

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as cluster:
        killer = threading.Thread(target=kill_the_worker, daemon=True)
        killer.start()
        result = resumable.sweep(
            nb, [{"amount": 7}], cluster=cluster.scheduler_address, store=store_path, progress=False
        )
        killer.join(timeout=60)
    (run,) = result.runs
    assert found["worker"] != os.getpid()
    assert run.state == "completed", run.error
    assert run.steps_restored == ("charge",)
    assert run.steps_executed == ("wait", "receipt")
    charges = (tmp_path / "charges").read_text().splitlines()
    assert len(charges) == 1 and charges[0].endswith(" 7")
    assert len(list(tmp_path.glob("waiting-*"))) == 2  # the step started on two kernels, one per worker
    wait = open_store(store_path).get_step(run.run_id, "wait")
    assert wait is not None and wait.attempts == 2


def test_an_unreachable_scheduler_fails_the_sweep_at_once_and_starts_no_run(tmp_path: Path, store_path: Path) -> None:
    """resumable.sweep(cluster=...) on a port nobody listens on: SweepClusterError within seconds, nothing written."""
    nb = squares_notebook(tmp_path)
    port = closed_port()
    started = time.monotonic()
    with pytest.raises(resumable.SweepClusterError) as caught:
        resumable.sweep(nb, [{"n": 2}], cluster=f"tcp://127.0.0.1:{port}", store=store_path, progress=False)
    assert time.monotonic() - started < 10  # Dask's own connection attempts took 20 s
    assert str(caught.value) == (
        f"the Dask scheduler at tcp://127.0.0.1:{port}: cannot be reached: nothing listens on port {port} of "
        "127.0.0.1 (connection refused). No run of the sweep was started. Check the address, start a scheduler "
        "there ('dask scheduler') and its workers ('dask worker ADDRESS'), or leave out cluster to run on a "
        "local pool."
    )
    assert open_store(store_path).list_runs() == []
    assert not (tmp_path / "squares.sweep").exists()


def _scheduler_address(found: Path, scheduler: subprocess.Popen[bytes]) -> str:
    """The address in the scheduler's file, once it is whole (Dask writes it in place, after it listens)."""
    deadline = time.monotonic() + 60
    while True:
        assert scheduler.poll() is None, f"the Dask scheduler exited with code {scheduler.returncode}"
        assert time.monotonic() < deadline, "the Dask scheduler wrote no address within 60 s"
        try:
            return str(json.loads(found.read_text())["address"])
        except (OSError, ValueError, KeyError):  # not written yet, or written half
            time.sleep(0.05)


class DaskCluster:
    """A real Dask scheduler and one single-threaded worker, each its own process (what `dask scheduler` and
    `dask worker` start)."""

    def __init__(self, folder: Path) -> None:
        # The scheduler binds a port of its own choosing and writes its address to a file: a port picked
        # here and let go of could be taken by another process before the scheduler binds it.
        found = folder / f"scheduler-{time.monotonic_ns()}.json"
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
             "--scheduler-file", str(found), "--no-dashboard"], **quiet,
        )  # fmt: skip
        try:
            self.address = _scheduler_address(found, self.scheduler)
        except BaseException:
            os.killpg(self.scheduler.pid, signal.SIGKILL)
            self.scheduler.wait(timeout=30)
            raise
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", self.address, "--nthreads", "1", "--no-dashboard"],
            **quiet,
        )  # fmt: skip

    def kill(self) -> None:
        for proc in (self.scheduler, self.worker):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the worker with its nanny
            proc.wait(timeout=30)


def test_a_scheduler_killed_mid_sweep_reports_the_unfinished_run_and_a_new_cluster_resumes_it(
    tmp_path: Path, store_path: Path
) -> None:
    """SIGKILL the scheduler while the second run waits in a step: the first stays completed, the second is
    scheduler_lost; the same sweep on a new cluster restores the first, and the second's completed effect."""
    nb = write_nb(
        tmp_path / "pay.ipynb",
        ("n = 1", ["parameters"]),
        "%load_ext resumable\nimport os, pathlib, time",
        "%%durable_step charge --effect --exclude f\nwith open('charges', 'a') as f:\n    f.write(f'{n}\\n')",
        # The run that starts second (one worker thread: after the first returned) waits for 'go'; its
        # kernel's pid is written under another name and renamed whole, as the test reads it once it exists.
        "%%durable_step wait\nif pathlib.Path('first-done').exists() and not pathlib.Path('go').exists():\n"
        "    pathlib.Path('part').write_text(str(os.getpid()))\n    pathlib.Path('part').replace('waiting')\n"
        "    while not pathlib.Path('go').exists():\n        time.sleep(0.05)",
        "%%durable_step finish\npathlib.Path('first-done').touch()",
    )
    params = [{"n": 2}, {"n": 3}]
    old = DaskCluster(tmp_path)
    kernel: list[int] = []

    def kill_the_scheduler() -> None:
        deadline = time.monotonic() + 150
        while not (tmp_path / "waiting").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        kernel.append(int((tmp_path / "waiting").read_text()))
        os.kill(old.scheduler.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_the_scheduler, daemon=True)
    killer.start()
    try:
        started = time.monotonic()
        lost = resumable.sweep(nb, params, cluster=old.address, store=store_path, progress=False)
        killer.join(timeout=30)
        assert time.monotonic() - started < 150
    finally:
        old.kill()  # the old worker (and its kernel, by its parent poller) too: the whole old cluster is gone
    first, second = sorted(lost.runs, key=lambda r: r.state)  # 'completed' < 'scheduler_lost'
    assert (first.state, first.steps_executed) == ("completed", ("charge", "wait", "finish"))
    assert (second.state, second.error) == (
        "scheduler_lost",
        f"the connection to the Dask scheduler at {old.address} was lost before run '{second.run_id}' reported "
        "how it ended (the scheduler stopped, or the network to it failed); its completed steps are checkpointed, "
        "and a worker may still be executing it. Run the same sweep again on a working cluster to resume it.",
    )
    assert not lost.ok
    store = open_store(store_path)
    assert [s.state.value for s in store.list_steps(first.run_id)] == ["completed"] * 3
    assert store.get_step(second.run_id, "charge").state.value == "completed"  # type: ignore[union-attr]
    store.close()
    psutil.Process(kernel[0]).wait(timeout=30) if psutil.pid_exists(kernel[0]) else None
    (tmp_path / "go").write_text("")
    new = DaskCluster(tmp_path)
    try:
        again = resumable.sweep(nb, params, cluster=new.address, store=store_path, progress=False)
    finally:
        new.kill()
    by_id = {r.run_id: r for r in again.runs}
    assert again.ok, [r.error for r in again.runs]
    assert (by_id[first.run_id].steps_executed, by_id[first.run_id].steps_restored) == (
        (),
        ("charge", "wait", "finish"),
    )
    assert (by_id[second.run_id].steps_executed, by_id[second.run_id].steps_restored) == (
        ("wait", "finish"),
        ("charge",),
    )
    assert sorted((tmp_path / "charges").read_text().split()) == ["2", "3"]  # each effect once
