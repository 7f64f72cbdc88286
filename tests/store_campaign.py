"""Several processes on one store, under CPU load: writers through the Python API, a reader through the CLI.

Each writer process runs ``steps`` quick steps in its own run and prints which it completed; a
reader calls ``resumable runs --json`` and ``resumable show RUN --json`` in a loop while they work;
busy-loop processes load the CPU as a laptop doing other work would. Then every step a writer
reported completed must be ``completed`` in the store with a checkpoint that loads its value, and
no process may have seen a raw DuckDB error, a traceback, or a corrupt store.

Run by hand (one JSON line per trial)::

    python tests/store_campaign.py STORE_DIR --trials 50 --writers 4 --steps 200 --busy 3

``tests/test_multiprocess.py`` runs it (3 trials by default, ``--campaign-runs N`` for more).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

WRITER = """
import json, sys, resumable
store, run_id, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
done, errors = [], []
try:
    pipe = resumable.Pipeline("campaign", store=store)
    with pipe.run(run_id=run_id) as run:
        for i in range(steps):
            value = run.step(f"s{i}", lambda i=i: i * 7)
            assert value == i * 7
            done.append(i)
except Exception as exc:
    errors.append(f"{type(exc).__module__}.{type(exc).__name__}: {exc}")
print(json.dumps({"run": run_id, "done": done, "errors": errors}), flush=True)
"""

READER = """
import json, sys, time, resumable
from resumable._store import open_store
store, stop_file = sys.argv[1], sys.argv[2]
import pathlib
calls, errors = 0, []
opened = open_store(store)
while not pathlib.Path(stop_file).exists():
    try:
        opened.list_runs()
        opened.list_steps("w1")
        calls += 1
    except Exception as exc:
        errors.append(f"{type(exc).__module__}.{type(exc).__name__}: {exc}")
    time.sleep(0.02)
print(json.dumps({"calls": calls, "errors": errors}), flush=True)
"""

BUSY = "import time, sys\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end: pass\n"


@dataclass
class Trial:
    """What one trial found."""

    completed: int = 0  # steps the writers reported completed
    lost: list[str] = field(default_factory=list)  # reported completed, not completed with its value in the store
    errors: list[str] = field(default_factory=list)  # any error a writer or the reader saw
    raw: list[str] = field(default_factory=list)  # tracebacks or raw DuckDB errors that reached a user
    corrupt: int = 0
    reader_calls: int = 0
    seconds: float = 0.0


def _cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resumable", *args, "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _judge_cli(trial: Trial, result: subprocess.CompletedProcess[str]) -> None:
    trial.reader_calls += 1
    text = result.stderr
    if "Traceback" in text or "_duckdb" in text or "duckdb." in text:
        trial.raw.append(text.strip()[-800:])
    if result.returncode == 0:
        json.loads(result.stdout)  # whole JSON, or the harness fails loudly
        return
    if result.returncode == 6 and ("does not exist" in text or "there is no store at" in text):
        return  # asked before the first writer created the store, or its run
    trial.errors.append(f"CLI exit {result.returncode}: {text.strip()[-500:]}")


def run_trial(folder: Path, writers: int, steps: int, busy: int) -> Trial:
    """One trial in a fresh store under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    store = folder / "store.duckdb"
    trial = Trial()
    started = time.monotonic()
    burners = [subprocess.Popen([sys.executable, "-c", BUSY, "600"]) for _ in range(busy)]
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, str(store), f"w{k}", str(steps)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for k in range(writers)
        ]
        stop = folder / "stop"
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(store), str(stop)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        while any(p.poll() is None for p in procs):
            _judge_cli(trial, _cli(store, "runs", "--json"))
            _judge_cli(trial, _cli(store, "show", "w0", "--json"))
        stop.touch()
        out, err = reader.communicate(timeout=120)
        if reader.returncode != 0:
            trial.errors.append(f"reader exited {reader.returncode}: {err.strip()[-500:]}")
        else:
            seen = json.loads(out.strip().splitlines()[-1])
            trial.reader_calls += seen["calls"]
            trial.errors.extend(seen["errors"])
            trial.raw.extend(e for e in seen["errors"] if "duckdb" in e.split(":")[0])
        reports = []
        for p in procs:
            out, err = p.communicate(timeout=60)
            if "Traceback" in err:
                trial.raw.append(err.strip()[-800:])
            lines = out.strip().splitlines()
            if p.returncode != 0 or not lines:
                trial.errors.append(f"writer exited {p.returncode}: {err.strip()[-500:]}")
                continue
            reports.append(json.loads(lines[-1]))
    finally:
        for b in burners:
            b.kill()
            b.wait()
    _check_store(trial, store, reports)
    trial.seconds = round(time.monotonic() - started, 1)
    return trial


def _check_store(trial: Trial, store: Path, reports: list[dict[str, object]]) -> None:
    import resumable
    from resumable._store import forget_all, open_store

    for report in reports:
        errors = report["errors"]
        assert isinstance(errors, list)
        trial.errors.extend(errors)
        trial.raw.extend(e for e in errors if e.startswith("_duckdb") or e.startswith("duckdb"))
        trial.corrupt += sum("corrupt" in e.lower() or "checksum" in e.lower() for e in errors)
    try:
        opened = open_store(store)
        for report in reports:
            run_id, done = report["run"], report["done"]
            assert isinstance(run_id, str) and isinstance(done, list)
            states = {s.step: s.state.value for s in opened.list_steps(run_id)}
            trial.completed += len(done)
            for i in done:
                step = f"s{i}"
                if states.get(step) != "completed":
                    trial.lost.append(f"{run_id}/{step} is {states.get(step)}")
                elif resumable.load(run_id, step, store=store) != i * 7:
                    trial.lost.append(f"{run_id}/{step} loads a wrong value")
    except resumable.StoreError as exc:
        trial.errors.append(f"{type(exc).__name__}: {exc}")
        trial.corrupt += isinstance(exc, getattr(resumable, "StoreCorruptError", ()))
    finally:
        forget_all()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--busy", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("RESUMABLE_LOCK_TIMEOUT", "60")
    totals = Trial()
    for n in range(args.trials):
        trial = run_trial(args.folder / f"trial{n}", args.writers, args.steps, args.busy)
        print(json.dumps({"trial": n, **asdict(trial)}), flush=True)
        totals.completed += trial.completed
        totals.lost += trial.lost
        totals.errors += trial.errors
        totals.raw += trial.raw
        totals.corrupt += trial.corrupt
        totals.reader_calls += trial.reader_calls
        totals.seconds += trial.seconds
    summary = {
        "trials": args.trials,
        "completed": totals.completed,
        "lost": len(totals.lost),
        "errors": len(totals.errors),
        "raw": len(totals.raw),
        "corrupt": totals.corrupt,
        "reader_calls": totals.reader_calls,
        "seconds": round(totals.seconds, 1),
    }
    print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
    main()
