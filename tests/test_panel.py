"""The status panel on a real IPython shell, a real DuckDB store and real ipywidgets objects.

Buttons are pressed with ``button.click()`` (the widgets' own API) and every row is checked against
what the store holds afterwards.
"""

from __future__ import annotations

import html
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.testing import globalipapp

import resumable
from resumable import _engine
from resumable._kernel_run import set_notebook_run
from resumable._panel import attempts as _attempts
from resumable._panel import format as fmt
from resumable._panel.widget import NO_SOURCE_TIP, StepPanel
from resumable._records import Owner
from resumable._states import StepState, can_transition
from resumable._store import StepRequest, open_store
from resumable.errors import CheckpointNotFoundError, OptionError, StepDefinitionError

FLAKY = """import pathlib
marker = pathlib.Path({marker!r})
if not marker.exists():
    marker.write_text("failed once")
    raise ConnectionError("courier timed out")
label = f"label-{{total}}"
"""


@pytest.fixture
def shell(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The global IPython shell with the extension loaded, joined to run 'r1' of pipeline 'shop'."""
    monkeypatch.setenv("RESUMABLE_STORE", str(store_path))
    globalipapp.start_ipython()  # once per process; later calls return None
    ip = globalipapp.get_ipython()
    ip.run_line_magic("load_ext", "resumable")
    ip.run_line_magic("durable_run", "shop --run-id r1")
    yield ip
    set_notebook_run(None)


@pytest.fixture
def panels() -> Iterator[Callable[..., StepPanel]]:
    """Make panels through the public function; every one is closed after the test."""
    made: list[StepPanel] = []

    def make(*args: Any, **kwargs: Any) -> StepPanel:
        kwargs.setdefault("poll_s", None)
        made.append(resumable.panel(*args, **kwargs))
        return made[-1]

    yield make
    for p in made:
        p.close()


def visible(button: Any) -> bool:
    return button.layout.display != "none"


def assert_rows_match_store(p: StepPanel, run_id: str = "r1") -> None:
    """Every row of a reached step shows the state the store holds, as the badge's text."""
    store = p.store_if_known()
    assert store is not None
    steps = store.list_steps(run_id)
    assert [name for name, row in p.rows.items() if row.reached] == [s.step for s in steps]
    for status in steps:
        row = p.rows[status.step]
        assert row.state is status.state
        assert f">{status.state.value}</span>" in row.badge.value


def note_text(p: StepPanel) -> str:
    """The panel's status line as the user reads it."""
    return html.unescape(p._note.value)


def run_steps(shell: Any, tmp_path: Path) -> None:
    """'load' completes, 'courier' fails on its first attempt."""
    shell.run_cell_magic("durable_step", "load", "total = 41 + 1")
    with pytest.raises(ConnectionError):
        shell.run_cell_magic("durable_step", "courier --retries 0", FLAKY.format(marker=str(tmp_path / "marker")))


def settled(p: StepPanel) -> bool:
    """No redraw is due or under way."""
    if p.dirty or not p._lock.acquire(blocking=False):
        return False
    p._lock.release()
    return not p.dirty


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_rows_show_what_the_store_holds(shell: Any, panels: Any, tmp_path: Path) -> None:
    """Each step's row shows its stored state, attempts, output size and error; the header names the run."""
    run_steps(shell, tmp_path)
    p = panels()
    assert_rows_match_store(p)
    header = p._header.value
    assert "shop" in header
    assert "r1" in header
    assert 'data-state="failed"' in header  # the run's overall state
    assert repr(p) == "<resumable panel: run 'r1' of pipeline 'shop' (failed): load completed, courier failed>"
    load, courier = p.rows["load"], p.rows["courier"]
    assert "1 attempt" in load.info.value
    assert " B<" in load.info.value  # stored output size
    assert "ConnectionError: courier timed out" in courier.info.value
    assert not visible(load.show_traceback)
    assert visible(courier.show_traceback)
    assert courier.traceback.layout.display == "none"
    courier.show_traceback.value = True  # one click away
    assert courier.traceback.layout.display == ""
    assert "Traceback" in courier.traceback.value
    assert "raise ConnectionError" in courier.traceback.value


def test_retry_turns_a_failed_step_completed(shell: Any, panels: Any, tmp_path: Path) -> None:
    """Retry runs the failed cell again in the kernel: the step completes and its outputs are in the namespace."""
    run_steps(shell, tmp_path)
    p = panels()
    courier = p.rows["courier"]
    assert visible(courier.retry)
    assert not courier.retry.disabled
    assert not visible(courier.rerun)
    courier.retry.click()
    status = open_store().get_step("r1", "courier")
    assert status is not None
    assert status.state is StepState.COMPLETED
    assert status.attempts == 2
    assert shell.user_ns["label"] == "label-42"
    assert_rows_match_store(p)
    assert not visible(courier.retry)
    assert visible(courier.rerun)
    assert "completed" in note_text(p)


def test_retry_that_fails_again_stays_failed_and_never_raises(shell: Any, panels: Any) -> None:
    """A Retry whose cell fails again leaves the step failed with one more attempt; the click does not raise."""
    with pytest.raises(ValueError, match="bad row"):
        shell.run_cell_magic("durable_step", "parse", "raise ValueError('bad row 7')")
    p = panels()
    p.rows["parse"].retry.click()
    status = open_store().get_step("r1", "parse")
    assert status is not None
    assert status.state is StepState.FAILED
    assert status.attempts == 2
    assert_rows_match_store(p)
    assert "failed again" in note_text(p)
    assert "2 attempts" in p.rows["parse"].info.value


def test_rerun_executes_a_completed_step_again(shell: Any, panels: Any, tmp_path: Path) -> None:
    """Rerun invalidates a completed step and runs its body again (a file records each execution)."""
    calls = tmp_path / "calls"
    shell.run_cell_magic("durable_step", "load", f"open({str(calls)!r}, 'a').write('x')\ntotal = 42")
    shell.run_cell_magic("durable_step", "load", f"open({str(calls)!r}, 'a').write('x')\ntotal = 42")
    assert calls.read_text() == "x"  # the second run restored
    p = panels()
    p.rows["load"].rerun.click()
    assert calls.read_text() == "xx"
    assert [e.transition for e in open_store().list_events("r1", "load")][-3:] == ["invalidate", "start", "ok"]
    assert_rows_match_store(p)


def test_invalidate_with_and_without_downstream(shell: Any, panels: Any) -> None:
    """Invalidate sends one step back to pending; with the checkbox ticked, the later steps too."""
    for name in ("a", "b", "c"):
        shell.run_cell_magic("durable_step", name, f"{name}_value = 1")
    p = panels()
    p.rows["b"].invalidate.click()
    assert [s.state.value for s in open_store().list_steps("r1")] == ["completed", "pending", "completed"]
    assert_rows_match_store(p)
    assert not visible(p.rows["b"].invalidate)  # pending cannot be invalidated
    assert p.rows["b"].retry.description == "Run"
    p.downstream.value = True
    p.rows["a"].invalidate.click()
    assert [s.state.value for s in open_store().list_steps("r1")] == ["pending", "pending", "pending"]
    assert_rows_match_store(p)
    assert "'a', 'c'" in note_text(p)


def test_buttons_are_offered_only_for_legal_transitions(shell: Any, panels: Any, tmp_path: Path) -> None:
    """For every state, Retry, Rerun and Invalidate are shown exactly when the transition table allows them."""
    run_steps(shell, tmp_path)
    shell.run_cell_magic("durable_step", "email", "sent = True")
    p = panels()
    p.rows["email"].invalidate.click()  # pending
    dead = _dead_owner()
    store = open_store()
    store.begin_step(StepRequest("r1", "crashed", dead, "x = 1", "d", (), {"magic_line": "crashed"}))
    p.rows["load"].invalidate.click()
    p.refresh()
    p._refresh_all()  # as the Refresh button does: the dead owner's step reads as interrupted
    shown = {name: row.state for name, row in p.rows.items()}
    assert set(shown.values()) == {StepState.PENDING, StepState.FAILED, StepState.INTERRUPTED}
    for row in p.rows.values():
        assert row.state is not None
        assert visible(row.retry) == (
            row.state is not StepState.COMPLETED and can_transition(row.state, StepState.RUNNING)
        )
        assert visible(row.rerun) == (row.state is StepState.COMPLETED)
        assert visible(row.invalidate) == can_transition(row.state, StepState.PENDING)
    p.rows["crashed"].retry.click()  # interrupted -> running -> completed
    assert_rows_match_store(p)
    assert p.rows["crashed"].state is StepState.COMPLETED


def _dead_owner() -> Owner:
    """The identity of a process that has exited (a real one, waited for)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return Owner(socket.gethostname(), int(proc.stdout), 1.0)


def test_rows_change_live_while_a_step_runs(shell: Any, panels: Any) -> None:
    """A panel shown before a cell runs shows the step running while it runs, then its outcome, with nothing pressed."""
    p = panels()
    assert p.rows == {}
    shell.user_ns["panel"] = p
    body = (
        "import time\n"
        "deadline = time.monotonic() + 10\n"
        "while not (panel.rows.get('slow') and panel.rows['slow'].state.value == 'running'):\n"
        "    assert time.monotonic() < deadline, 'the panel never showed the step running'\n"
        "    time.sleep(0.01)\n"
        "seen = 'running'\n"
    )
    shell.run_cell_magic("durable_step", "slow --outputs seen", body)  # returns once the panel showed 'running'
    wait_for(lambda: p.rows["slow"].state is StepState.COMPLETED)
    with pytest.raises(ZeroDivisionError):
        shell.run_cell_magic("durable_step", "split", "share = 1 / 0")
    wait_for(lambda: "split" in p.rows and p.rows["split"].state is StepState.FAILED)
    assert_rows_match_store(p)


def test_a_burst_of_quick_steps_does_not_wait_for_the_panel(shell: Any, panels: Any) -> None:
    """Listeners only mark the panel dirty: the step's own thread never redraws it."""
    p = panels()
    redraws: list[str] = []
    original = p._redraw

    def counting(**kwargs: Any) -> None:
        redraws.append(threading.current_thread().name)
        original(**kwargs)

    p._redraw = counting  # type: ignore[method-assign]
    for i in range(5):
        shell.run_cell_magic("durable_step", f"quick{i}", f"v{i} = {i}")
    wait_for(lambda: len(p.rows) == 5 and all(r.state is StepState.COMPLETED for r in p.rows.values()))
    assert redraws
    assert set(redraws) == {"resumable-panel-poll"}
    assert_rows_match_store(p)


def test_changes_from_another_process_appear_through_the_poll(shell: Any, panels: Any, store_path: Path) -> None:
    """A CLI invalidation in another process shows up within the poll interval, and the poll never locks it out."""
    shell.run_cell_magic("durable_step", "load", "total = 42")
    p = panels(poll_s=0.1)
    env = dict(os.environ, RESUMABLE_LOCK_TIMEOUT="3")
    out = subprocess.run(
        [sys.executable, "-m", "resumable", "invalidate", "r1", "load", "--store", str(store_path)],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    wait_for(lambda: p.rows["load"].state is StepState.PENDING)
    assert_rows_match_store(p)


def test_refresh_button_shows_changes_from_another_process(shell: Any, panels: Any, store_path: Path) -> None:
    """Without polling, the Refresh button brings a change made by another process into view."""
    shell.run_cell_magic("durable_step", "load", "total = 42")
    p = panels(poll_s=None)
    code = (
        "from resumable._store import open_store; from resumable._owner import current_owner;"
        f"open_store({str(store_path)!r}).invalidate('r1', 'load', current_owner())"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert p.rows["load"].state is StepState.COMPLETED  # nothing polled yet
    p._refresh_button.click()
    assert p.rows["load"].state is StepState.PENDING
    assert_rows_match_store(p)


def test_python_api_steps_cannot_be_run_from_the_panel(panels: Any, store_path: Path) -> None:
    """Steps defined in Python have no cell: Retry and Rerun are disabled with a tooltip; Invalidate works."""
    pipe = resumable.Pipeline("etl", store=store_path)

    @pipe.step
    def extract() -> int:
        return 1

    with pipe.run(run_id="p1"):
        extract()
    p = panels("p1", store=store_path)
    row = p.rows["extract"]
    assert visible(row.rerun)
    assert row.rerun.disabled
    assert row.rerun.tooltip == NO_SOURCE_TIP
    row.rerun.click()  # a disabled button's handler still refuses
    assert open_store(store_path).get_step("p1", "extract").state is StepState.COMPLETED  # type: ignore[union-attr]
    assert "cannot be run from the panel" in note_text(p)
    assert not row.invalidate.disabled
    row.invalidate.click()
    assert_rows_match_store(p, "p1")


def test_run_selector_shows_an_earlier_run(shell: Any, panels: Any) -> None:
    """The dropdown lists the pipeline's runs; picking an earlier one shows its steps, not runnable here."""
    shell.run_cell_magic("durable_step", "old_step", "x = 1")
    shell.run_line_magic("durable_run", "shop --run-id r2")
    shell.run_cell_magic("durable_step", "new_step", "y = 2")
    p = panels()
    assert p.run_id == "r2"
    assert {value for _, value in p._runs.options} == {"r1", "r2"}
    p._runs.value = "r1"
    assert list(p.rows) == ["old_step"]
    assert_rows_match_store(p, "r1")
    row = p.rows["old_step"]
    assert row.rerun.disabled
    assert "%durable_run shop --run-id r1" in row.rerun.tooltip
    shell.run_cell_magic("durable_step", "newer", "z = 3")  # a step of r2 does not disturb the r1 view
    assert list(p.rows) == ["old_step"]


def test_panel_follows_the_kernel_into_a_new_run(shell: Any, panels: Any) -> None:
    """A panel made with no run id switches to the run a later '%durable_run --new' starts."""
    shell.run_cell_magic("durable_step", "load", "total = 42")
    p = panels()
    shell.run_line_magic("durable_run", "shop --new")
    shell.run_cell_magic("durable_step", "fresh", "x = 1")
    wait_for(lambda: "fresh" in p.rows and p.rows["fresh"].state is StepState.COMPLETED)
    assert list(p.rows) == ["load", "fresh"]  # 'load', known from run r1, is not reached in the new run
    assert not p.rows["load"].reached
    assert p.run_id != "r1"
    assert_rows_match_store(p, p.run_id or "")


def test_close_stops_the_poll_and_the_listener(shell: Any, panels: Any) -> None:
    """Closing the panel ends its poll thread and its engine listener."""
    p = resumable.panel(poll_s=0.05)
    assert any(t.name == "resumable-panel-poll" for t in threading.enumerate())
    assert p._on_event in _engine._listeners
    p.close()
    wait_for(lambda: not any(t.name == "resumable-panel-poll" for t in threading.enumerate()))
    assert p._on_event not in _engine._listeners
    shell.run_cell_magic("durable_step", "after", "x = 1")  # no closed widget is touched
    assert p.rows == {}


def test_poll_shows_an_unreadable_store_instead_of_raising(shell: Any, panels: Any, store_path: Path) -> None:
    """When the store file becomes unreadable, the poll says so in the panel; nothing raises in the kernel."""
    shell.run_cell_magic("durable_step", "load", "total = 42")
    p = panels(poll_s=0.05)
    store = open_store()
    store.close()
    store_path.rename(store_path.with_suffix(".moved"))
    store_path.write_bytes(b"not a database at all" * 10)
    wait_for(lambda: "could not be read" in note_text(p))
    store.close()
    store_path.unlink()
    store_path.with_suffix(".moved").rename(store_path)
    assert p.rows["load"].state is StepState.COMPLETED


def test_durable_panel_magic(shell: Any) -> None:
    """'%durable_panel' returns the panel; misuse gets a one-line UsageError; an unknown run is named."""
    shell.run_cell_magic("durable_step", "load", "total = 42")
    p = shell.run_line_magic("durable_panel", "")
    try:
        assert isinstance(p, StepPanel)
        assert list(p.rows) == ["load"]
    finally:
        p.close()
    p = shell.run_line_magic("durable_panel", "r1")
    p.close()
    with pytest.raises(UsageError, match="unrecognized arguments: r2"):
        shell.run_line_magic("durable_panel", "r1 r2")
    with pytest.raises(UsageError, match="unrecognized arguments: --rerun"):
        shell.run_line_magic("durable_panel", "--rerun")
    with pytest.raises(CheckpointNotFoundError, match="run 'nope' does not exist"):
        shell.run_line_magic("durable_panel", "nope")
    with pytest.raises(UsageError, match="run name 'bad/id' is not valid"):
        shell.run_line_magic("durable_panel", "bad/id")
    magics = shell.magics_manager.registry["DurableMagics"]
    assert "run_id" in magics.durable_panel.__doc__  # a magic_arguments magic: %durable_panel? lists its argument


@pytest.mark.parametrize("poll_s", [0, -1.0, float("nan"), float("inf"), "2", True])
def test_bad_arguments_are_refused_with_our_errors(store_path: Path, poll_s: object) -> None:
    """A bad poll interval or run name says what is wrong and what to give instead."""
    with pytest.raises(OptionError) as excinfo:
        resumable.panel("r1", store=store_path, poll_s=poll_s)  # type: ignore[arg-type]
    assert str(excinfo.value) == (
        f"poll_s={poll_s!r} is not valid; give a finite number of seconds above 0, or None for no polling."
    )
    with pytest.raises(StepDefinitionError, match="run name 'a b' is not valid"):
        resumable.panel("a b", store=store_path)


def test_import_resumable_does_not_import_ipywidgets() -> None:
    """'import resumable' stays light; resumable.panel stays callable once the panel module is imported."""
    code = (
        "import sys, resumable; assert 'ipywidgets' not in sys.modules;"
        "import resumable._panel; assert callable(resumable.panel); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.stdout.strip() == "ok", out.stderr


def test_no_run_yet_shows_a_hint(panels: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before any run, the panel explains how to start one and creates no store file."""
    monkeypatch.chdir(tmp_path)
    p = panels()
    assert "%durable_run NAME" in p._header.value
    assert p.rows == {}
    assert not (tmp_path / ".resumable").exists()


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_badges_are_readable_in_light_and_dark_themes() -> None:
    """Each badge's white text has at least 4.5:1 contrast on its own background, whatever the theme."""
    for state, colour in fmt.BADGE_COLOURS.items():
        ratio = (1.0 + 0.05) / (_luminance(colour) + 0.05)
        assert ratio >= 4.5, (state, ratio)
    assert "var(--jp-ui-font-color1)" in fmt.CSS  # other text follows the theme


def test_numbers_are_formatted_for_people() -> None:
    """Durations and sizes read naturally in the rows."""
    assert [fmt.duration(s) for s in (None, 0.413, 12.34, 123, 3720)] == [
        "\u2014",
        "0.41 s",
        "12.3 s",
        "2 min 03 s",
        "1 h 02 min",
    ]
    assert [fmt.size(n) for n in (512, 1234, 3_400_000)] == ["512 B", "1.2 kB", "3.4 MB"]


def test_a_panel_nobody_sees_stops_redrawing_until_shown_again(shell: Any, panels: Any) -> None:
    """When the front end reports no views left (its cell ran again), the panel sleeps; shown again, it catches up."""
    shell.run_cell_magic("durable_step", "load", "total = 42")
    p = panels()
    p._view_count = 1  # what JupyterLab reports when it draws the panel
    wait_for(lambda: settled(p))  # its catch-up redraw is done
    p._view_count = 0  # ... and when the output holding it is cleared
    assert not p.watched
    shell.run_cell_magic("durable_step", "later", "x = 1")
    assert not p.dirty  # the listener asked for no redraw
    assert list(p.rows) == ["load"]
    p._view_count = 1
    wait_for(lambda: list(p.rows) == ["load", "later"] and p.rows["later"].state is StepState.COMPLETED)
    assert_rows_match_store(p)


def test_invalidate_is_refused_while_another_process_owns_the_run(shell: Any, panels: Any, store_path: Path) -> None:
    """While another live process owns the run, Invalidate changes nothing and the panel names that process."""
    shell.run_cell_magic("durable_step", "load", "total = 42")
    code = (
        "import sys, resumable\n"
        "with resumable.Pipeline('shop', store=sys.argv[1]).run(run_id='r1'):\n"
        "    print('owned', flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", code, str(store_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "owned"
        p = panels()
        p.rows["load"].invalidate.click()
        assert f"pid {owner.pid}" in note_text(p)
        assert "owned by another live process" in note_text(p)
        assert open_store().get_step("r1", "load").state is StepState.COMPLETED  # type: ignore[union-attr]
        assert_rows_match_store(p)
    finally:
        assert owner.stdin is not None
        owner.stdin.close()
        owner.wait(timeout=30)


def test_rerun_of_a_held_effect_step_runs_it_once_under_a_new_key_generation(
    shell: Any, panels: Any, tmp_path: Path
) -> None:
    """A completed effect step is held when its input changes; Rerun in the panel runs it again deliberately,
    with a new idempotency key (key generation 2), and running its cell afterwards restores that rerun."""
    charges = tmp_path / "charges"
    body = (
        "import resumable\nkey = resumable.idempotency_key()\n"
        f"open({str(charges)!r}, 'a').write(f'{{amount}} {{key}}\\n')"
    )
    shell.run_cell("amount = 48.0").raise_error()
    shell.run_cell(f"%%durable_step charge\n{body}").raise_error()
    first_key = shell.user_ns["key"]
    shell.run_cell("amount = 52.5").raise_error()
    shell.run_cell(f"%%durable_step charge\n{body}").raise_error()  # held: restored, not charged again
    assert charges.read_text() == f"48.0 {first_key}\n"
    p = panels()
    assert visible(p.rows["charge"].rerun)
    p.rows["charge"].rerun.click()
    amounts_and_keys = [line.split() for line in charges.read_text().splitlines()]
    assert [a for a, _ in amounts_and_keys] == ["48.0", "52.5"]
    second_key = amounts_and_keys[1][1]
    assert second_key != first_key  # a payment API sees a new request, not a replay of the first key
    status = open_store().get_step("r1", "charge")
    assert status is not None and status.state is StepState.COMPLETED
    assert status.effect and status.key_generation == 2
    assert "Ran step 'charge': completed." in note_text(p)
    assert_rows_match_store(p)
    shell.run_cell(f"%%durable_step charge\n{body}").raise_error()  # the notebook run again: restores the rerun
    assert shell.user_ns["key"] == second_key
    assert len(charges.read_text().splitlines()) == 2


def _notebook(path: Path, *cells: str) -> Path:
    """A notebook file with these code cells (what JupyterLab saves)."""
    doc = {
        "cells": [{"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None}
                  for c in cells],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
    }  # fmt: skip
    path.write_text(json.dumps(doc))
    return path


def header_text(p: StepPanel) -> str:
    """The header as the user reads it (tags dropped)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", p._header.value)).split())


def test_steps_of_the_notebook_not_reached_yet_are_listed_and_the_run_is_not_completed(
    shell: Any, panels: Any, tmp_path: Path
) -> None:
    """After a Retry, a notebook step that never ran is listed as not reached; the run is not called completed."""
    marker = tmp_path / "marker"
    nb = _notebook(
        tmp_path / "checkout.ipynb",
        "%durable_run shop --run-id r1",
        "%%durable_step load\ntotal = 41 + 1",
        "%%durable_step courier --retries 0\n" + FLAKY.format(marker=str(marker)),
        "x = 1",
        "%%durable_step email\nsent = True",
    )
    shell.user_ns["__session__"] = str(nb)
    try:
        run_steps(shell, tmp_path)
        p = panels()
        assert list(p.rows) == ["load", "courier", "email"]
        assert not p.rows["email"].reached
        assert 'data-state="not-reached"' in p.rows["email"].badge.value
        assert "known from the notebook" in p.rows["email"].info.value
        assert not any(visible(b) for b in (p.rows["email"].retry, p.rows["email"].invalidate))
        p.rows["courier"].retry.click()
        assert_rows_match_store(p)
        head = header_text(p)
        assert "3 steps: 2 completed, 1 not reached" in head
        assert 'data-state="pending"' in p._header.value  # not "completed": 'email' never ran
        assert repr(p) == (
            "<resumable panel: run 'r1' of pipeline 'shop' (pending): "
            "load completed, courier completed, email not reached>"
        )
        shell.run_cell_magic("durable_step", "email", "sent = True")
        p.refresh()
        assert "3 steps: 3 completed" in header_text(p)
        assert 'data-state="completed"' in p._header.value
    finally:
        shell.user_ns.pop("__session__", None)


def test_steps_of_earlier_runs_are_listed_when_there_is_no_notebook(panels: Any, store_path: Path) -> None:
    """A Python pipeline's new run lists the steps its earlier run recorded, in their order, until it reaches them."""
    pipe = resumable.Pipeline("etl", store=store_path)
    with pipe.run(run_id="p1") as run:
        for name in ("extract", "clean", "load"):
            run.step(name, lambda: 1)
    with pipe.run(run_id="p2") as run:
        run.step("extract", lambda: 1)
    p = panels("p2", store=store_path)
    assert list(p.rows) == ["extract", "clean", "load"]
    assert [r.reached for r in p.rows.values()] == [True, False, False]
    assert "known from an earlier run" in p.rows["clean"].info.value
    assert "3 steps: 1 completed, 2 not reached" in header_text(p)
    assert 'data-state="pending"' in p._header.value
    first = panels("p1", store=store_path)  # a later run's steps are not "known from before" for p1
    assert [r.reached for r in first.rows.values()] == [True, True, True]


def test_columns_outputs_and_attempts_timeline(shell: Any, panels: Any, tmp_path: Path) -> None:
    """Column headers name what each row shows; a row names its outputs and lists its attempts with their times."""
    run_steps(shell, tmp_path)
    p = panels()
    p.rows["courier"].retry.click()
    columns = re.sub(r"<[^>]+>", " ", p._columns.value).split()
    assert columns == ["state", "step", "attempts", "time", "stored", "outputs", "actions"]
    assert "total" in re.sub(r"<[^>]+>", " ", p.rows["load"].info.value)
    courier = html.unescape(re.sub(r"<[^>]+>", " ", p.rows["courier"].info.value))
    assert "label" in courier
    assert re.search(
        r"attempts: #1 \d\d:\d\d:\d\d failed after \d+\.\d\d s · #2 \d\d:\d\d:\d\d completed in \d+\.\d\d s", courier
    ), courier
    spans = _attempts.timelines(open_store().list_events("r1"))["courier"]
    assert [(a.number, a.outcome) for a in spans] == [(1, "failed"), (2, "completed")]
    assert all(a.duration_s is not None and a.duration_s >= 0 for a in spans)


def test_a_running_step_shows_its_elapsed_time_ticking(shell: Any, panels: Any) -> None:
    """While a step runs, its row's elapsed time advances with nothing pressed; the ticks stop when it ends."""
    p = panels()
    shell.user_ns["panel"] = p
    body = (
        "import re, time\n"
        "deadline = time.monotonic() + 15\n"
        "seen = []\n"
        "while len(seen) < 2:\n"
        "    assert time.monotonic() < deadline, f'the elapsed time never advanced: {seen}'\n"
        "    row = panel.rows.get('slow')\n"
        "    found = re.search(r'running (\\d+) s', row.info.value) if row else None\n"
        "    if found and found.group(1) not in seen:\n"
        "        seen.append(found.group(1))\n"
        "    time.sleep(0.02)\n"
    )
    shell.run_cell_magic("durable_step", "slow --outputs seen", body)
    seen = shell.user_ns["seen"]
    assert int(seen[1]) > int(seen[0])
    wait_for(lambda: p.rows["slow"].state is StepState.COMPLETED)
    assert not p.ticking
    assert "running" not in p.rows["slow"].info.value


def test_fork_from_here_calls_the_fork_and_shows_the_new_run(shell: Any, panels: Any, tmp_path: Path) -> None:
    """Fork from here hands the step to the fork it was given, then shows the new run with a line saying so."""
    run_steps(shell, tmp_path)
    assert not visible(panels().rows["load"].fork)  # no fork given: no button
    calls: list[str] = []

    def fork(step: str) -> str:  # joins a new run, as the magics' fork does once it made one
        calls.append(step)
        shell.run_line_magic("durable_run", "shop --run-id r1-fork")
        return "r1-fork"

    p = panels(fork=fork)
    courier = p.rows["courier"]
    assert visible(courier.fork)
    assert not courier.fork.disabled
    courier.fork.click()
    assert calls == ["courier"]
    assert p.run_id == "r1-fork"
    assert re.sub(r"<[^>]+>", "", note_text(p)) == (
        "Forked run 'r1' at step 'courier' as 'r1-fork': it shares the checkpoints before 'courier'. "
        "Run the cells from 'courier' on to continue it; the panel now shows 'r1-fork'."
    )
    assert "run r1-fork" in header_text(p)
    assert "2 steps: 2 not reached" in header_text(p)  # known from r1, not run in the new run yet
    shell.run_cell_magic("durable_step", "load", "total = 42")  # the new run continues; the panel follows it
    wait_for(lambda: "load" in p.rows and p.rows["load"].state is StepState.COMPLETED)
    assert list(p.rows) == ["load", "courier"]
    assert not p.rows["courier"].reached
    p._runs.value = "r1"  # another run than the kernel's: its Fork is shown but cannot fork it
    assert p.rows["load"].fork.disabled
    assert "%durable_run shop --run-id r1" in p.rows["load"].fork.tooltip


def test_plain_text_of_the_panel_says_how_to_get_a_live_one(shell: Any, panels: Any) -> None:
    """Where the widget cannot be drawn (its kernel gone, no widget support), the text says what to do."""
    shell.run_cell_magic("durable_step", "load", "total = 42")
    p = panels()
    bundle = p._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == p.model_id
    assert bundle["text/plain"] == (
        "<resumable panel: run 'r1' of pipeline 'shop' (completed): load completed>\n"
        "(This text stands in for the live panel, which needs its kernel running and a front end that shows "
        "widgets. If its kernel has stopped, run %durable_panel to show a live one.)"
    )
    assert fmt.GONE in html.unescape(p._gone.value)  # what the browser shows once the kernel stopped


def test_timeline_shows_an_attempt_cut_short_by_a_dead_process(shell: Any, panels: Any) -> None:
    """An attempt whose process died has no end in the log: the timeline says interrupted, then the retry."""
    store = open_store()
    store.begin_step(StepRequest("r1", "crashed", _dead_owner(), "x = 1", "d", (), {"magic_line": "crashed"}))
    p = panels()
    row = p.rows["crashed"]
    assert row.state is StepState.INTERRUPTED
    assert re.search(r"attempts: #1 \d\d:\d\d:\d\d interrupted</div>", row.info.value), row.info.value
    assert not p.ticking  # an interrupted step's time does not tick
    row.retry.click()
    # The retried cell's source differs from the recorded one (digest "d"), so it is a new execution.
    assert re.search(
        r"executed 2 times · attempts: execution 1 #1 \d\d:\d\d:\d\d interrupted · "
        r"execution 2 #1 \d\d:\d\d:\d\d completed in",
        html.unescape(row.info.value),
    )
