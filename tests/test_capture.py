"""Recording what a step shows while it still streams live, and showing it again."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from IPython.testing import globalipapp
from IPython.utils.capture import capture_output

from resumable._capture import Recording, replay, tee


@pytest.fixture
def shell() -> Any:
    globalipapp.start_ipython()
    return globalipapp.get_ipython()


def test_streams_merge_and_progress_bars_collapse() -> None:
    """Consecutive writes form one stream output; carriage-return overwrites keep only the last state."""
    rec = Recording()
    rec.stream("stdout", "a")
    rec.stream("stdout", "b\n")
    rec.stream("stderr", " 10%\r 50%\r100%\n")
    rec.stream("stdout", "c\n")
    assert rec.outputs() == [
        {"output_type": "stream", "name": "stdout", "text": "ab\n"},
        {"output_type": "stream", "name": "stderr", "text": "100%\n"},
        {"output_type": "stream", "name": "stdout", "text": "c\n"},
    ]


def test_display_update_and_clear_output() -> None:
    """An updated display keeps its last state; clear_output forgets what came before, as a frontend does."""
    rec = Recording()
    rec.stream("stdout", "old\n")
    rec.clear(wait=True)
    rec.display({"text/plain": "1"}, None, "bar", update=False)
    rec.display({"text/plain": "2"}, None, "bar", update=True)
    rec.display({"image/png": b"\x89PNG"}, {"image/png": {"width": 1}}, None, update=False)
    assert rec.outputs() == [
        {"output_type": "display_data", "data": {"text/plain": "2"}, "metadata": {}},
        {"output_type": "display_data", "data": {"image/png": "iVBORw=="}, "metadata": {"image/png": {"width": 1}}},
    ]


def test_tee_records_and_still_streams(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Output reaches the real stream while the block runs, and the recording has it too."""
    with capture_output(stdout=False, stderr=False) as shown, tee(shell) as rec:
        print("first")
        seen_live = capsys.readouterr().out  # read before the block ends: nothing is buffered
        print("oops", file=sys.stderr)
        shell.display_pub.publish(data={"text/html": "<b>hi</b>", "text/plain": "hi"}, metadata={})
    assert seen_live == "first\n"
    assert capsys.readouterr().err == "oops\n"
    assert [o.data["text/html"] for o in shown.outputs] == ["<b>hi</b>"]
    assert [o["output_type"] for o in rec.outputs()] == ["stream", "stream", "display_data"]
    assert sys.stdout is not None and type(sys.stdout).__name__ != "_TeeStream"


def test_replay_shows_streams_and_displays_and_returns_result(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """A replay writes streams, publishes displays and hands back the cell result for Out[n]."""
    outputs = [
        {"output_type": "stream", "name": "stdout", "text": "hello\n"},
        {"output_type": "display_data", "data": {"text/plain": "table", "text/html": "<table/>"}, "metadata": {}},
        {"output_type": "execute_result", "data": {"text/plain": "42"}, "metadata": {}},
    ]
    with capture_output(stdout=False, stderr=False) as shown:
        result = replay(shell, outputs)
    assert capsys.readouterr().out == "hello\n"
    assert [o.data for o in shown.outputs] == [{"text/plain": "table", "text/html": "<table/>"}]
    assert result == outputs[2]


def test_widget_views_keep_only_their_text_fallback() -> None:
    """A widget's live view is not replayed (its model died with the kernel); its text is."""
    rec = Recording()
    rec.display(
        {"application/vnd.jupyter.widget-view+json": {"model_id": "m1"}, "text/plain": "IntSlider()"},
        {},
        None,
        update=False,
    )
    rec.display({"application/vnd.jupyter.widget-view+json": {"model_id": "m2"}}, {}, None, update=False)
    assert rec.outputs() == [{"output_type": "display_data", "data": {"text/plain": "IntSlider()"}, "metadata": {}}]
