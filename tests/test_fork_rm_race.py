"""Forks and removals racing another process's completions of the same runs: consistent whatever the order.

One process completes steps and re-executes an earlier run's step (its checkpoint rows are
replaced, minus those a fork shares); another forks those runs and removes others at the same
time. Whatever the interleaving (row locks on a server store, the file's lock on DuckDB), every
step that remains completed restores a value, a fork restores what its origin had when it was
made or later, and no completion of a run that was not removed is lost.
"""

from __future__ import annotations

import json
import subprocess
import sys

import resumable
from resumable._store import forget_all, open_store

RUNS = 8

WORKER = """
import json, sys, resumable
pipe = resumable.Pipeline("p", store=sys.argv[1])
for i in range(int(sys.argv[2])):
    with pipe.run(run_id=f"r{i}") as run:
        run.step("a", lambda: i)
        run.step("b", lambda: i * 2)
    if i:
        try:  # the previous run's 'a' executes again: its rows are replaced, except those forks share
            with pipe.run(run_id=f"r{i - 1}") as run:
                run.step("a", lambda: -i, rerun=True)
        except (resumable.CheckpointNotFoundError, resumable.RunOwnedError):
            pass  # removed meanwhile (or being removed)
    print(i, flush=True)
"""

RACER = """
import json, sys, resumable
store, runs = sys.argv[1], int(sys.argv[2])
pipe = resumable.Pipeline("p", store=store)
forks, removed, done = [], [], 0
while done < runs:
    line = sys.stdin.readline()
    if not line:
        break
    done = int(line) + 1
    try:
        pipe.fork(f"r{done - 1}", "b", run_id=f"f{done - 1}")
        forks.append(done - 1)
    except (resumable.RunOwnedError, resumable.ForkError, resumable.CheckpointNotFoundError) as exc:
        pass
    if done >= 3 and done % 2:
        removal = resumable.remove_runs(f"r{done - 3}", store=store, compact=False)
        removed += [r.run_id for r in removal.removed]
print(json.dumps({"forks": forks, "removed": removed}))
"""


def test_forks_and_removals_racing_completions_leave_every_run_whole(store_location: str) -> None:
    """Every remaining completed step restores; forks restore their origin's value; kept runs lose nothing."""
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, store_location, str(RUNS)], stdout=subprocess.PIPE, text=True
    )
    racer = subprocess.Popen(
        [sys.executable, "-c", RACER, store_location, str(RUNS)],
        stdin=worker.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, err = racer.communicate(timeout=240)
    assert worker.wait(timeout=60) == 0
    assert racer.returncode == 0, err
    raced = json.loads(out)
    assert raced["forks"] and raced["removed"]  # both happened while the worker completed steps
    forget_all()
    store = open_store(store_location)
    present = {r.run_id for r in store.list_runs(limit=1000)}
    assert present.isdisjoint(raced["removed"])
    for i in range(RUNS):
        if f"r{i}" in raced["removed"]:
            continue
        steps = {s.step: s.state.value for s in store.list_steps(f"r{i}")}
        assert steps == {"a": "completed", "b": "completed"}, (i, steps)
        assert resumable.load(f"r{i}", "b", store=store_location) == i * 2
        assert resumable.load(f"r{i}", "a", store=store_location) in (i, -(i + 1))
    for i in raced["forks"]:
        # Made before or after r{i}'s 'a' executed again: one of its two values, never missing rows.
        # Made while it executed again: 'a' was not completed then, so it was not copied and the fork
        # executes it when resumed (forks.py); a fork never lists a step it cannot restore.
        forked = [s.step for s in store.list_steps(f"f{i}")]
        assert forked in (["a"], []), (i, forked)
        if forked:
            assert resumable.load(f"f{i}", "a", store=store_location) in (i, -(i + 1))
