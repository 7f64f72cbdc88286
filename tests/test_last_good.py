"""A completed step whose re-execution fails keeps its last good checkpoint until an attempt completes.

``load`` and ``export`` return it with a warning naming the attempt, ``resumable show`` lists it,
gc keeps it, the panel's Restore loads it into the kernel, and a new kernel still finds it.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ipython_shell import fresh_kernel, started_shell, step

import resumable
from resumable import LastGoodCheckpointWarning, StepState, UnserializableOutputError
from resumable._owner import current_owner
from resumable._store import open_store

KEPT = (
    "step 'hold' (run 'r1') is failed (execution 2, attempt 1); output 'x' was loaded from its last good "
    "checkpoint, written by execution 1. It is kept until an attempt completes."
)


@pytest.fixture
def shell(store_location: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("RESUMABLE_STORE", store_location)
    monkeypatch.setenv("RESUMABLE_RUN_ID", "r1")
    ip = started_shell()
    ip.run_line_magic("durable_run", "nb")
    yield ip
    fresh_kernel(ip)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resumable", *args], capture_output=True, text=True, timeout=120, check=False
    )


def load_kept(store_location: str, name: str = "x") -> Any:
    with pytest.warns(LastGoodCheckpointWarning) as caught:
        value = resumable.load("r1", "hold", name, store=store_location)
    assert [str(w.message) for w in caught] == [KEPT.replace("'x'", f"'{name}'")]
    return value


def test_an_edited_cell_that_raises_keeps_the_last_good_checkpoint(
    shell: Any, store_location: str, tmp_path: Path
) -> None:
    """Edit a completed cell to raise and run it: the step is failed, yet load, export, show, gc and a new
    kernel all still have attempt 1's checkpoint, until a fixed cell completes and replaces it."""
    assert step(shell, "hold", "x = 21 * 2").error_in_exec is None
    failed = step(shell, "hold", "x = 21 * 2\nraise ValueError('edited')")
    assert isinstance(failed.error_in_exec, ValueError)
    status = open_store(store_location).get_step("r1", "hold")
    assert status is not None
    assert (status.state, status.executions, status.attempts) == (StepState.FAILED, 2, 1)
    assert (status.kept_execution, status.kept_attempt) == (1, 1)
    assert load_kept(store_location) == 42

    report = open_store(store_location).gc()
    assert report.checkpoints_removed == 0
    assert load_kept(store_location) == 42

    shown = cli("show", "r1", "--store", str(store_location))
    assert shown.returncode == 0, shown.stderr
    assert "failed (last good checkpoint from execution 1 kept)" in shown.stdout
    as_json = json.loads(cli("show", "r1", "--json", "--store", str(store_location)).stdout)
    assert [(s["step"], s["state"], s["kept_execution"], s["kept_attempt"]) for s in as_json["steps"]] == [
        ("hold", "failed", 1, 1)
    ]

    out = tmp_path / "x.json"
    exported = cli("export", "r1", "hold", "x", "-o", str(out), "--store", str(store_location))
    assert (exported.returncode, exported.stdout, exported.stderr) == (0, f"wrote {out}\n", f"note: {KEPT}\n")
    assert json.loads(out.read_text()) == 42

    fresh_kernel(shell)  # a new kernel: the checkpoint is in the store, not in the kernel
    assert load_kept(store_location) == 42
    shell.run_line_magic("durable_run", "nb")
    assert step(shell, "hold", "x = 43").error_in_exec is None
    status = open_store(store_location).get_step("r1", "hold")
    assert status is not None
    assert (status.state, status.executions, status.attempts, status.kept_execution) == (
        StepState.COMPLETED,
        3,
        1,
        None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resumable.load("r1", "hold", "x", store=store_location) == 43


def test_a_new_output_that_cannot_be_pickled_keeps_the_last_good_checkpoint(shell: Any, store_location: str) -> None:
    """'earlier checkpoints are intact', as the error says: the previous value still loads."""
    assert step(shell, "hold", "x = 42").error_in_exec is None
    failed = step(shell, "hold", "import threading\nx = threading.Lock()")
    assert isinstance(failed.error_in_exec, UnserializableOutputError)
    assert "earlier checkpoints are intact" in str(failed.error_in_exec)
    assert load_kept(store_location) == 42


def test_python_api_step_whose_rerun_fails(store_location: str) -> None:
    """A Python-API step called with a new argument that raises: the value of attempt 1 still loads."""
    pipe = resumable.Pipeline("p", store=store_location)

    @pipe.step
    def hold(n: int) -> int:
        if n < 0:
            raise ValueError("negative")
        return n * 2

    with pipe.run(run_id="r1"):
        assert hold(21) == 42
    with pytest.raises(ValueError, match="negative"), pipe.run(run_id="r1"):
        hold(-1)
    with pytest.warns(LastGoodCheckpointWarning) as caught:
        assert resumable.load("r1", "hold", store=store_location) == 42
    assert str(caught[0].message) == KEPT.replace("output 'x'", "output 'return'")


def test_a_step_that_never_completed_has_nothing_to_load(shell: Any, store_location: str) -> None:
    """Only a completed attempt's checkpoint is kept: a step whose first attempt failed still refuses."""
    assert isinstance(step(shell, "never", "raise ValueError('first')").error_in_exec, ValueError)
    with pytest.raises(resumable.CheckpointNotFoundError, match="is failed, not completed"):
        resumable.load("r1", "never", store=store_location)


def test_invalidated_step_gives_its_checkpoint_to_gc(shell: Any, store_location: str) -> None:
    """A step the user sent back to pending is no longer kept: gc removes its checkpoint (as before)."""
    assert step(shell, "hold", "x = 42").error_in_exec is None
    store = open_store(store_location)
    store.invalidate("r1", "hold", current_owner())
    assert store.gc().checkpoints_removed == 1


def test_panel_restore_loads_the_last_good_checkpoint_into_the_kernel(shell: Any, store_location: str) -> None:
    """Restore appears on a failed step that keeps a checkpoint, loads its outputs into the namespace, and
    leaves the step failed; a step without one offers no Restore."""
    assert step(shell, "hold", "x = 21 * 2\ny = 'kept'").error_in_exec is None
    assert isinstance(step(shell, "hold", "x = 0\nraise ValueError('edited')").error_in_exec, ValueError)
    assert isinstance(step(shell, "never", "raise ValueError('first')").error_in_exec, ValueError)
    p = resumable.panel(poll_s=None)
    try:
        row = p.rows["hold"]
        assert row.restore.layout.display != "none" and not row.restore.disabled
        assert p.rows["never"].restore.layout.display == "none"
        assert shell.user_ns["x"] == 0  # what the failed attempt left bound
        row.restore.click()
        assert (shell.user_ns["x"], shell.user_ns["y"]) == (42, "kept")
        assert (
            "Restored 'x', 'y' of step 'hold' from its last good checkpoint (execution 1); the step is still failed."
            in html.unescape(p._note.value)
        )
        assert open_store(store_location).get_step("r1", "hold").state is StepState.FAILED  # type: ignore[union-attr]
    finally:
        p.close()
