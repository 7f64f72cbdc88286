"""The kill-point harness: one SIGKILL at each store write point of a run in turn, then a resume.

A probe run counts the write points (``killpoint_hook/sitecustomize.py`` says what one is); trial
N runs the same thing from scratch and dies at point N, then runs again until it finishes. Each
trial checks what a user would notice: the run ends completed, the side effect happened under one
idempotency key with one body (a completed ``order`` that ran again after ``charge`` used it would
show as a second order id under the same key), and the final results are the ones the effect saw.

Run as a script for a full campaign: ``python tests/killpoints.py [api|kernel] [--sample K]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from notebook_files import write_nb

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
HOOK = TESTS / "killpoint_hook"
APP = TESTS / "killpoint_app.py"


@dataclass(frozen=True)
class Trial:
    """What one kill at one point ended with."""

    point: int
    killed: bool
    result: dict[str, object]
    ledger: tuple[str, ...]
    returned: tuple[str, ...]  # every order id the step ``order`` returned to its caller


def _env(folder: Path, at: int | None, kernel_only: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESUMABLE_", "KILLPOINT_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(HOOK), str(ROOT)])
    env["KILLPOINT_ONCE"] = str(folder / "killed")
    if at is None:
        env["KILLPOINT_COUNT"] = str(folder / "count")
    else:
        env["KILLPOINT_AT"] = str(at)
    if kernel_only:
        env["KILLPOINT_KERNEL_ONLY"] = "1"
    return env


def _last_json(out: str) -> dict[str, object]:
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, out
    return dict(json.loads(lines[-1]))


def api_trial(folder: Path, at: int | None) -> Trial:
    """Run the app (dying at point ``at``), then run it again until it prints its result."""
    folder.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, str(APP), str(folder / "store.duckdb"), "r1", str(folder / "ledger")]
    for attempt in range(3):
        proc = subprocess.run(args, env=_env(folder, at), capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode == 0:
            break
        assert proc.returncode == -9, f"attempt {attempt} exited {proc.returncode}:\n{proc.stderr}"
    else:
        raise AssertionError(f"point {at}: the run did not finish after 3 attempts")
    return _finish(folder, at, _last_json(proc.stdout))


def write_kernel_notebook(path: Path) -> Path:
    """The app's steps as notebook cells, with plain cells between them."""
    return write_nb(
        path,
        "%load_ext resumable\nimport json, os, uuid\nimport resumable",
        # A first step cell, so that the next ones are decided in memory within the kernel's hold of the
        # store's file (``_store/cells.py``): kills land between their log writes and their commit.
        # Outputs above the inline limit: payload files written behind, synced by the group commit (or the
        # fence before ``charge``), and kills land between their writes, renames and fsyncs too.
        "%%durable_step setup\nbase = 40\npad = os.urandom(300_000)",
        "%%durable_step order\norder_id = str(uuid.uuid4())\norder_pad = os.urandom(300_000)",
        "with open('ledger.returned', 'a') as returned:\n    returned.write(order_id + '\\n')",
        "amount = base + len(order_id)",
        "%%durable_step charge\nkey = resumable.idempotency_key()\n"
        "fd = os.open('ledger', os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)\n"
        "os.write(fd, f'{key} {order_id} {amount}\\n'.encode())\nos.close(fd)\n"
        "charged = {'key': key, 'order': order_id, 'amount': amount}",
        "%%durable_step receipt\nreceipt = f\"receipt for {charged['order']}\"",
        "print(json.dumps({'order': order_id, 'charged': charged, 'receipt': receipt}))",
    )


def kernel_trial(folder: Path, at: int | None) -> Trial:
    """``resumable execute`` the notebook; its kernel dies at point ``at`` and is restarted by it."""
    folder.mkdir(parents=True, exist_ok=True)
    notebook = write_kernel_notebook(folder / "pay.ipynb")
    out = folder / "out.ipynb"
    args = [sys.executable, "-m", "resumable", "execute", str(notebook), "-o", str(out), "--run-id", "r1"]
    args += ["--store", str(folder / "store.duckdb"), "--max-restarts", "2"]
    proc = subprocess.run(
        args,
        cwd=folder,
        env=_env(folder, at, kernel_only=True),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, f"point {at}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    cells = json.loads(out.read_text())["cells"]
    printed = "".join("".join(o.get("text", "")) for o in cells[-1]["outputs"] if o.get("name") == "stdout")
    return _finish(folder, at, _last_json(printed))


def _finish(folder: Path, at: int | None, result: dict[str, object]) -> Trial:
    def lines(path: Path) -> tuple[str, ...]:
        return tuple(path.read_text().splitlines()) if path.exists() else ()

    returned = lines(folder / "ledger.returned")
    return Trial(at or 0, (folder / "killed").exists(), result, lines(folder / "ledger"), returned)


def count_points(trial: Callable[[Path, int | None], Trial], folder: Path) -> int:
    """The probe: run once without a kill and read how many write points it passed."""
    trial(folder, None)
    return int((folder / "count").read_text())


def check(trial: Trial) -> None:
    """What a user would notice, asserted for one trial."""
    assert trial.ledger, f"point {trial.point}: the charge never happened"
    keys = {line.split()[0] for line in trial.ledger}
    bodies = {tuple(line.split()[1:]) for line in trial.ledger}
    assert len(keys) == 1, f"point {trial.point}: charged under {len(keys)} keys: {trial.ledger}"
    assert len(bodies) == 1, f"point {trial.point}: one key, different charges: {trial.ledger}"
    charged = trial.result["charged"]
    assert isinstance(charged, dict)
    assert (charged["order"], str(charged["amount"])) == next(iter(bodies)), (trial.point, trial.result, trial.ledger)
    assert trial.result["order"] == charged["order"], (
        f"point {trial.point}: the order the run ended with was not charged"
    )
    assert trial.result["receipt"] == f"receipt for {charged['order']}"
    assert set(trial.returned) == {charged["order"]}, (
        f"point {trial.point}: a completed step ran again: {trial.returned}"
    )


def campaign(kind: str, root: Path, sample: int | None = None, workers: int = 2) -> tuple[int, list[Trial]]:
    """Probe, then one trial per point: every point, or ``sample`` of them spread over the run.

    Returns the number of points the probe found and the trials.
    """
    run = api_trial if kind == "api" else kernel_trial
    total = count_points(run, root / "probe")
    chosen = list(range(1, total + 1)) if sample is None else spread(total, sample)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        trials = list(pool.map(lambda p: run(root / f"point-{p}", p), chosen))
    return total, trials


def spread(total: int, count: int) -> list[int]:
    """``count`` points spread evenly over 1..total, first and last included."""
    if count >= total:
        return list(range(1, total + 1))
    return sorted({1 + round(i * (total - 1) / (count - 1)) for i in range(count)})


if __name__ == "__main__":
    import tempfile

    kind = sys.argv[1] if len(sys.argv) > 1 else "api"
    sample = int(sys.argv[sys.argv.index("--sample") + 1]) if "--sample" in sys.argv else None
    with tempfile.TemporaryDirectory() as tmp:
        n, trials = campaign(kind, Path(tmp), sample)
        for t in trials:
            check(t)
        print(
            f"{kind}: {n} write points, {len(trials)} kills, {sum(t.killed for t in trials)} landed, all checks passed"
        )
