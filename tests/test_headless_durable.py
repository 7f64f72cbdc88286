"""Headless runs of durable notebooks: SIGKILLed kernels resume without repeating an effect; failures resume."""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from notebook_files import write_nb

from resumable._demo.shop import SERVICES, ShopServer

pytestmark = pytest.mark.timeout(150)

TRIALS = int(os.environ.get("RESUMABLE_HEADLESS_KILL_TRIALS", "3"))
SEED = int(os.environ.get("RESUMABLE_HEADLESS_KILL_SEED", "4"))


def command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "resumable", *map(str, args)]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RESUMABLE_")}


def checkout_nb(path: Path) -> Path:
    """Four durable steps against the shop, each pausing after its effect: the window a crash can hit."""
    steps = [
        f'%%durable_step {service}\n{service}_reply = call(shop_url, "{service}", "o1", resumable.idempotency_key())\n'
        f"time.sleep(pause)"
        for service in SERVICES
    ]
    return write_nb(
        path,
        ('shop_url = ""\npause = 0.15', ["parameters"]),
        "%load_ext resumable\n%durable_run shop\nimport os, time\nimport resumable\n"
        "from resumable._demo.shop import call\n"
        "with open('kernel-pids.txt', 'a') as pids:\n    pids.write(f'{os.getpid()}\\n')",
        *steps,
        "print('done', charge_reply['id'], email_reply['id'])",
    )


def first_pid(path: Path, deadline_s: float) -> int:
    """Poll until the first kernel has written its pid."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.endswith("\n"):
            return int(text.split()[0])
        time.sleep(0.01)
    raise AssertionError(f"no kernel pid in {path} after {deadline_s} s")


def test_sigkill_of_the_kernel_at_random_moments_repeats_no_effect(tmp_path: Path) -> None:
    """Killing the kernel (SIGKILL, from another process) at a random moment: execute still exits 0 and the
    shop performed every effect exactly once."""
    rng = random.Random(SEED)
    restarts = []
    for trial in range(TRIALS):
        folder = tmp_path / f"trial-{trial}"
        folder.mkdir()
        nb = checkout_nb(folder / "checkout.ipynb")
        with ShopServer() as shop:
            proc = subprocess.Popen(
                command("execute", nb.name, "-p", "shop_url", shop.url, "--new", "--quiet", "--json"),
                cwd=folder, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            pid = first_pid(folder / "kernel-pids.txt", 60)
            time.sleep(rng.uniform(0.0, 1.6))  # the random moment of the crash, not a synchronisation
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # the pass had already finished
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"trial {trial} (seed {SEED}): {err}"
            for service in SERVICES:
                assert shop.ledger.count(service, "o1") == 1, f"trial {trial} (seed {SEED}): {service}"
        summary = json.loads(out)
        restarts.append(summary["restarts"])
        assert sorted(summary["steps_executed"] + summary["steps_restored"]) == sorted(SERVICES)
        done = nbformat.read(folder / "checkout.resumable.ipynb", as_version=4)
        printed = "".join(o.get("text", "") for o in done.cells[-1].outputs if o.get("name") == "stdout")
        assert printed.startswith("done charge-"), done.cells[-1].outputs
    assert any(n >= 1 for n in restarts), f"no kill landed mid-run in {TRIALS} trials (seed {SEED})"


def test_a_failing_step_stops_the_run_and_its_resume_command_finishes_it(tmp_path: Path) -> None:
    """A step that raises exits 1 naming the step; after the fix, the printed command restores the steps
    before it and executes the rest."""
    nb = write_nb(
        tmp_path / "etl.ipynb",
        "%load_ext resumable\n%durable_run etl\nimport pathlib",
        "%%durable_step extract\nrows = [1, 2, 3]\nprint('extracted', len(rows))",
        "%%durable_step load --retries 0\nif not pathlib.Path('db-up').exists():\n"
        "    raise ConnectionError('database is down')\nloaded = sum(rows)",
        "print('loaded', loaded, flush=True)\nprint('in one output')",
    )
    failed = subprocess.run(
        command("execute", nb.name, "--run-id", "nightly", "--quiet"),
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert failed.returncode == 1
    assert "step 'load' (cell 2) raised ConnectionError: database is down" in failed.stderr
    assert "%%durable_step load --retries 0" in failed.stderr  # the cell's preview
    resume = "resumable execute etl.ipynb --run-id nightly"
    assert resume in failed.stderr
    marked = nbformat.read(tmp_path / "etl.resumable.ipynb", as_version=4)
    by_start = {c.source.split("\n", 1)[0]: c for c in marked.cells}
    assert by_start["%%durable_step extract"].metadata["resumable"] == {"steps": {"extract": "executed"}}
    assert by_start["%%durable_step load --retries 0"].metadata["resumable"] == {"steps": {"load": "failed"}}

    (tmp_path / "db-up").write_text("")
    resumed = subprocess.run(
        command(*shlex.split(resume)[1:], "--json"),
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["steps_restored"] == ["extract"]
    assert summary["steps_executed"] == ["load"]
    done = nbformat.read(tmp_path / "etl.resumable.ipynb", as_version=4)
    extract_out = "".join(o.get("text", "") for o in done.cells[1].outputs)
    assert "restored step 'extract'" in extract_out
    assert "extracted 3" in extract_out  # the restored step's own output is in the executed notebook
    # the kernel sent two pieces of stdout (a flush between them); the executed notebook has them as one output
    assert [(o.output_type, o.name, o.text) for o in done.cells[3].outputs] == [
        ("stream", "stdout", "loaded 6\nin one output\n")
    ]
