"""One SIGKILL at each store write point in turn, for the Python API and for a notebook kernel.

The harness (``killpoints.py``) counts the write points of a three-step run with a side effect in
the middle, then kills a fresh run at each one and resumes it. Every trial must end completed, with
the effect made once under one key and one body, and with the results the effect saw.

``RESUMABLE_KILLPOINTS=all`` kills at every point of both; by default the Python API is killed at
``RESUMABLE_KILLPOINTS_API`` points (24) and the kernel at ``RESUMABLE_KILLPOINTS_KERNEL`` (5),
spread evenly over the run, first and last included.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from killpoints import campaign, check

ALL = os.environ.get("RESUMABLE_KILLPOINTS") == "all"


def _points(kind: str, default: int) -> int | None:
    return None if ALL else int(os.environ.get(f"RESUMABLE_KILLPOINTS_{kind.upper()}", str(default)))


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(("kind", "default"), [("api", 24), ("kernel", 5)])
def test_a_kill_at_each_store_write_point_resumes_with_the_effect_made_once(
    tmp_path: Path, kind: str, default: int, capsys: pytest.CaptureFixture[str]
) -> None:
    wanted = _points(kind, default)
    total, trials = campaign(kind, tmp_path, sample=wanted)
    with capsys.disabled():
        landed = sum(t.killed for t in trials)
        print(f"\n{kind}: {total} store write points, {len(trials)} kills in turn, {landed} landed")
    assert total >= 10, f"only {total} write points were seen: the hook no longer finds the store's writes"
    # A background thread's writes (the group commit) vary a little from run to run: the probe counted
    # 167 and 170 in two loaded runs of the kernel's. A point among the last few may not be reached by
    # a trial (no kill, and the trial is checked all the same); every point before them must be.
    tail = max(3, total // 20)
    missed = [t.point for t in trials if not t.killed]
    assert all(point > total - tail for point in missed), f"kills that never landed before the last {tail}: {missed}"
    for trial in trials:
        check(trial)
