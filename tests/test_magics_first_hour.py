"""The first hour's rough edges of the notebook magics, each met as a new user would (issue 12 §8).

Every test runs cells in a real IPython shell against a real store and asserts the whole message
the user reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from ipython_shell import fresh_kernel, step

from resumable import StepTimeout
from resumable._store import open_store


@pytest.mark.parametrize(
    ("magic", "line", "message"),
    [
        (
            "durable_step",
            "my step",
            "%%durable_step my step: a step name cannot contain spaces. "
            "Join the words, for example '%%durable_step my_step'.",
        ),
        (
            "durable_step",
            "load the  data --retries 2",
            "%%durable_step load the  data --retries 2: a step name cannot contain spaces. "
            "Join the words, for example '%%durable_step load_the_data --retries 2'.",
        ),
        (
            "durable_run",
            "my pipeline",
            "%durable_run my pipeline: a pipeline name cannot contain spaces. "
            "Join the words, for example '%durable_run my_pipeline'.",
        ),
    ],
)
def test_a_name_with_spaces_is_told_to_join_its_words(
    shell: Any, store_path: Path, magic: str, line: str, message: str
) -> None:
    """``%%durable_step my step`` names the mistake and the fix, not argparse's 'unrecognized arguments'."""
    cell = f"%%{magic} {line}\nv = 1" if magic == "durable_step" else f"%{magic} {line}"
    result = shell.run_cell(cell)
    assert isinstance(result.error_in_exec, UsageError)
    assert str(result.error_in_exec) == message
    assert "v" not in shell.user_ns
    assert not store_path.exists() or open_store(store_path).list_steps("r1") == []


def test_an_extra_word_after_the_options_is_still_argparse_s_message(shell: Any) -> None:
    """Only words before the first option read as a name: a stray word later is just unrecognized."""
    result = step(shell, "s --retries 2 extra", "v = 1")
    assert isinstance(result.error_in_exec, UsageError)
    assert str(result.error_in_exec) == "unrecognized arguments: extra"


def test_a_copied_cell_with_the_same_step_name_is_refused_before_it_runs(
    shell: Any, store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A copy that kept its step name does not run, and the first cell's checkpoint is kept.

    A pass over the notebook refuses the copy every time; running the copy again at once moves
    the step to it; a panel's Retry (not from a cell) is never refused.
    """
    ran = tmp_path / "ran"
    copy = f"%%durable_step load\nopen({str(ran)!r}, 'a').write('copy ')\nx = 2"
    shell.run_cell("%%durable_step load\nx = 1", cell_id="cell-a").raise_error()
    capsys.readouterr()
    refused = shell.run_cell(copy, cell_id="cell-b")
    assert isinstance(refused.error_in_exec, UsageError)
    assert str(refused.error_in_exec) == (
        "step 'load' of run 'r1' belongs to another cell of this notebook, which ran it in this kernel. This cell "
        "did not run, and that cell's checkpoint is kept. Two cells sharing a step name overwrite each other's "
        "checkpoint: give this cell its own name ('%%durable_step load_2'). If you moved the step here from that "
        "cell, run this cell again."
    )
    captured = capsys.readouterr()
    assert "_magics" not in captured.out + captured.err  # a plain line: no source location of ours
    assert not ran.exists()
    assert shell.user_ns["x"] == 1
    status = open_store(store_path).get_step("r1", "load")
    assert status is not None and status.source == "x = 1\n"
    # A pass over the notebook: the first cell runs in between, so the copy is refused again.
    shell.run_cell("%%durable_step load\nx = 1", cell_id="cell-a").raise_error()
    assert isinstance(shell.run_cell(copy, cell_id="cell-b").error_in_exec, UsageError)
    assert not ran.exists()
    # Asked twice in a row: the step moved to the copy's cell, and the first cell is now the other one.
    shell.run_cell(copy, cell_id="cell-b").raise_error()
    assert ran.read_text() == "copy "
    assert isinstance(shell.run_cell("%%durable_step load\nx = 1", cell_id="cell-a").error_in_exec, UsageError)
    shell.run_cell_magic("durable_step", "load", "x = 3")  # not from a cell (a panel's Retry): never refused
    assert shell.user_ns["x"] == 3


def test_top_level_await_in_a_step_cell_runs_on_the_shell_s_loop_and_restores(
    shell: Any, store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``await`` at the top of a step cell works as in a plain cell: on the loop the shell awaits cells on.

    A future made on that loop by an earlier cell is awaited (on another loop it would fail), the
    last expression is the cell's value, and the step restores without awaiting anything again.
    """
    ran = tmp_path / "ran"
    shell.run_cell(
        "import asyncio\nawait asyncio.sleep(0)\nloop = asyncio.get_running_loop()\nfut = loop.create_future()"
    ).raise_error()
    body = f"open({str(ran)!r}, 'a').write('ran ')\nloop.call_soon(fut.set_result, 5)\n"
    body += "v = await fut\nprint('got', v)\nv * 2"
    first = step(shell, "fetch", body)
    first.raise_error()
    assert first.result == 10
    assert "got 5\n" in capsys.readouterr().out
    assert open_store(store_path).get_step("r1", "fetch").outputs == ("v",)  # type: ignore[union-attr]
    slow = f"import asyncio\nopen({str(ran)!r}, 'a').write('slow ')\nawait asyncio.sleep(0)\nw = 3\nw + 1"
    step(shell, "slow", slow).raise_error()
    fresh_kernel(shell)
    again = step(shell, "slow", slow)
    again.raise_error()
    assert shell.user_ns["w"] == 3
    assert again.result.data["text/plain"] == "4"
    assert ran.read_text() == "ran slow "


def test_an_awaiting_step_that_fails_shows_the_cell_s_line_and_no_syntax_error(shell: Any) -> None:
    """A failure after an ``await`` is the user's own error at the cell's own line."""
    result = step(shell, "boom", "import asyncio\nawait asyncio.sleep(0)\n1 / 0")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    tb = result.error_in_exec.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    assert tb is not None and tb.tb_lineno == 3


def test_an_awaiting_step_run_without_a_cell_runs_to_completion(shell: Any) -> None:
    """A panel's Retry calls the magic directly, with nothing awaiting it: the step still runs, once."""
    value = shell.run_cell_magic("durable_step", "direct", "import asyncio\nawait asyncio.sleep(0)\nw = 7\nw")
    assert value == 7
    assert shell.user_ns["w"] == 7


def test_an_awaiting_step_past_its_timeout_is_cancelled(shell: Any) -> None:
    """``--timeout`` cancels an awaiting cell on the shell's loop: StepTimeout, nothing bound."""
    result = step(shell, "slow --timeout 0.2", "import asyncio\nawait asyncio.sleep(30)\nlate = 1")
    assert isinstance(result.error_in_exec, StepTimeout)
    assert str(result.error_in_exec) == str(StepTimeout("slow", 0.2))
    assert "late" not in shell.user_ns


@pytest.fixture
def plain_colors(shell: Any) -> Iterator[None]:
    """Tracebacks without terminal colors, so the test reads the text the user reads."""
    before = shell.colors
    shell.run_line_magic("colors", "nocolor")
    yield
    shell.run_line_magic("colors", before)


@pytest.mark.parametrize("await_first", [False, True])
def test_a_failing_step_shows_the_user_s_cell_with_its_number_and_line(
    shell: Any, plain_colors: None, capsys: pytest.CaptureFixture[str], await_first: bool
) -> None:
    """The traceback starts at the cell's own line under the cell's own number, as a plain cell's does.

    Not at ``get_ipython().run_cell_magic(...)`` nor IPython's frame that calls the magic.
    """
    shell.run_cell("def helper():\n    raise KeyError('deep')", store_history=True).raise_error()
    helper_number = shell.execution_count - 1
    head = "import asyncio\nawait asyncio.sleep(0)\n" if await_first else ""
    step(shell, "first", "w = 0").raise_error()  # the run is joined: its line is not part of what is checked
    number = shell.execution_count  # the label the front end shows on the cell: In [number]
    capsys.readouterr()
    result = shell.run_cell(f"%%durable_step boom\n{head}x = 1\nhelper()", store_history=True)
    assert isinstance(result.error_in_exec, KeyError)
    shown = capsys.readouterr().out
    line = 4 if await_first else 2
    context = "      2 await asyncio.sleep(0)\n      3 x = 1\n" if await_first else "      1 x = 1\n"
    assert shown.strip("\n") == (
        "---------------------------------------------------------------------------\n"
        "KeyError                                  Traceback (most recent call last)\n"
        f"Cell In[{number}], line {line}\n"
        f"{context}"
        f"----> {line} helper()\n"
        "\n"
        f"Cell In[{helper_number}], line 2, in helper()\n"
        "      1 def helper():\n"
        "----> 2     raise KeyError('deep')\n"
        "\n"
        "KeyError: 'deep'"
    )


def test_an_edited_step_says_why_it_runs_again_before_its_output(
    shell: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The edited cell itself says why it executes instead of restoring (then its readers' line).

    Also after a kernel restart, and for a changed input of a plain cell it reads.
    """
    shell.run_cell("threshold = 0.5").raise_error()
    step(shell, "a", "x = 1").raise_error()
    step(shell, "b", "y = x + 1").raise_error()
    step(shell, "c", "keep = threshold").raise_error()
    capsys.readouterr()
    fresh_kernel(shell)
    step(shell, "a", "x = 2\nprint('a ran')").raise_error()
    assert capsys.readouterr().out == (
        "resumable: resumed run 'r1' of pipeline 'default' (RESUMABLE_RUN_ID): 3 of 3 steps completed\n"
        "↻ step 'a' runs again: its source changed\n"
        "resumable: step 'a' runs again, so 'b' will run again when reached (stale)\n"
        "a ran\n"
    )
    shell.run_cell("threshold = 0.7").raise_error()
    step(shell, "c", "keep = threshold").raise_error()
    assert capsys.readouterr().out == "↻ step 'c' runs again: 'threshold' changed (0.5 → 0.7)\n"


def test_with_autoawait_off_an_awaiting_step_runs_on_a_loop_of_its_own(shell: Any) -> None:
    """``%autoawait off``: IPython awaits no cell, so the step runs to completion on its own loop."""
    shell.run_line_magic("autoawait", "off")
    try:
        result = step(shell, "own", "import asyncio\nawait asyncio.sleep(0)\nz = 4\nz")
    finally:
        shell.run_line_magic("autoawait", "on")
    result.raise_error()
    assert (result.result, shell.user_ns["z"]) == (4, 4)


def test_the_stored_traceback_names_the_cell_not_a_temporary_file(shell: Any, store_path: Path) -> None:
    """``resumable show`` and the panel read ``Cell In[N], line L``, as the notebook showed it."""
    shell.run_cell("def helper():\n    raise KeyError('deep')", store_history=True).raise_error()
    helper_number = shell.execution_count - 1
    number = shell.execution_count
    result = shell.run_cell("%%durable_step boom\nx = 1\nhelper()", store_history=True)
    assert isinstance(result.error_in_exec, KeyError)
    status = open_store(store_path).get_step("r1", "boom")
    assert status is not None
    assert status.traceback == (
        "Traceback (most recent call last):\n"
        f"  Cell In[{number}], line 2, in <module>\n"
        "    helper()\n"
        f"  Cell In[{helper_number}], line 2, in helper\n"
        "    raise KeyError('deep')\n"
        "KeyError: 'deep'\n"
    )
