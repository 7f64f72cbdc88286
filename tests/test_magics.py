"""The notebook magics on a real IPython shell and a real store."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from ipython_shell import fresh_kernel, step

from resumable import StepFailed, StepState, StepTimeout, UnserializableOutputError, load
from resumable._kernel_run import notebook_run
from resumable._magics import load_ipython_extension
from resumable._store import open_store

RESTORED = re.compile(r"↺ restored step '(\w+)' from checkpoint of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


@pytest.fixture
def calls(tmp_path: Path) -> Path:
    """A file each executed body appends to: proof of execution that survives a 'kernel restart'."""
    return tmp_path / "calls"


def count(calls: Path) -> list[str]:
    return calls.read_text().split() if calls.exists() else []


def mark(calls: Path, what: str) -> str:
    return f"open({str(calls)!r}, 'a').write({what!r} + ' ')\n"


def test_completed_step_is_restored_not_rerun(shell: Any, calls: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second run of a completed cell restores its outputs and output without running the body."""
    body = mark(calls, "add") + "print('adding')\ntotal = 41 + 1\ntotal"
    first = step(shell, "add", body)
    assert first.error_in_exec is None
    assert first.result == 42
    capsys.readouterr()
    fresh_kernel(shell)
    second = step(shell, "add", body)
    assert second.error_in_exec is None
    assert shell.user_ns["total"] == 42
    assert count(calls) == ["add"]
    out = capsys.readouterr().out
    assert RESTORED.search(out).group(1) == "add"  # type: ignore[union-attr]
    assert out.index("↺ restored") < out.index("adding\n")
    assert second.result.data["text/plain"] == "42"  # shown again as the cell's Out[n]


def test_a_steps_value_is_formatted_once_and_shown_afresh_by_later_cells(
    shell: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A step's Out[n] is formatted once, for the notebook and the recording alike, and is the value
    itself; a later cell showing the value, changed, shows it as it is then, also after a step whose
    value nothing displayed (a silent run)."""
    shell.run_cell(
        "class Shown:\n    calls = 0\n    def __init__(self):\n        self.label = 'first'\n"
        "    def __repr__(self):\n        Shown.calls += 1\n        return f'<{self.label}>'"
    )
    capsys.readouterr()
    made = step(shell, "make", "box = Shown()\nbox")
    box = shell.user_ns["box"]
    assert made.result is box and shell.user_ns["_"] is box
    assert (shell.user_ns["Shown"].calls, re.findall(r"Out\[\d+\]: (.*)", capsys.readouterr().out)) == (1, ["<first>"])
    assert shell.run_cell("box.label = 'second'\nbox").result is box
    shell.run_cell("%%durable_step again\nbox.label = 'third'\nbox", silent=True)
    assert shell.run_cell("box.label = 'fourth'\nbox").result is box
    assert re.findall(r"Out\[\d+\]: (.*)", capsys.readouterr().out) == ["<second>", "<fourth>"]


def test_a_step_called_from_a_plain_cell_that_then_changes_its_value_shows_the_value_as_it_is(
    shell: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The formatting made for the step's recording stands for Out[n] only when the step is the cell:
    a plain cell running the magic and changing the value afterwards shows the changed value."""
    shell.run_cell(
        "class Shown:\n    def __init__(self):\n        self.label = 'a'\n"
        "    def __repr__(self):\n        return f'<{self.label}>'"
    )
    shell.run_cell("%durable_run nb --run-id r1\nbox = Shown()")
    capsys.readouterr()
    shell.run_cell("get_ipython().run_cell_magic('durable_step', 's', 'box')\nbox.label = 'z'\nbox")
    assert re.findall(r"Out\[\d+\]: (.*)", capsys.readouterr().out) == ["<z>"]


def test_outputs_are_the_names_bound_each_stored_separately(
    shell: Any, store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every top-level binding is an output of its own; --exclude drops one; --outputs narrows or adds."""
    monkeypatch.chdir(tmp_path)  # the cell opens a file 'x'
    body = "import json\na, (b, c) = 1, (2, 3)\nfor i in range(2):\n    pass\ndef f():\n    return a\n"
    body += (
        "class K:\n    pass\nwith open(__file__ if False else 'x', 'w') as fh:\n    pass\nif (w := 5):\n    pass\ndel c"
    )
    assert step(shell, "many --exclude fh", body).error_in_exec is None
    store = open_store(store_path)
    assert {r.name for r in store.checkpoint_refs("r1", "many") if r.kind == "value"} == {
        "json", "a", "b", "i", "f", "K", "w",
    }  # fmt: skip
    assert step(shell, "narrow --outputs a,b", "a = 1\nb = 2\nscratch = 3").error_in_exec is None
    assert store.get_step("r1", "narrow").outputs == ("a", "b")  # type: ignore[union-attr]
    shell.user_ns["rows"] = [1]
    assert step(shell, "plus --outputs +rows", "import random\nrandom.shuffle(rows)\nn = 1").error_in_exec is None
    assert set(store.get_step("r1", "plus").outputs) == {"random", "rows", "n"}  # type: ignore[union-attr]


def test_in_place_change_of_an_earlier_object_survives_a_restart(shell: Any, calls: Path) -> None:
    """rows.append(x) and df[...] = ... in a later step are restored after a restart, not lost."""
    setup = "import pandas as pd\nrows = [1]\ndf = pd.DataFrame({'q': [1, 2]})"
    change = mark(calls, "change") + "rows.append(2)\ndf['double'] = df.q * 2"
    assert step(shell, "make", setup).error_in_exec is None
    assert step(shell, "change", change).error_in_exec is None
    fresh_kernel(shell)
    assert step(shell, "make", setup).error_in_exec is None
    assert step(shell, "change", change).error_in_exec is None
    assert count(calls) == ["change"]
    assert shell.user_ns["rows"] == [1, 2]
    assert list(shell.user_ns["df"].double) == [2, 4]


def test_edited_cell_runs_again_and_its_readers_become_stale(
    shell: Any, calls: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Editing a step re-executes it; a later step reading its output runs again, an unrelated one restores."""
    cells = [
        ("a", mark(calls, "a") + "x = 1"),
        ("b", mark(calls, "b") + "y = x + 1"),
        ("c", mark(calls, "c") + "z = 5"),
    ]
    for name, body in cells:
        assert step(shell, name, body).error_in_exec is None
    capsys.readouterr()
    fresh_kernel(shell)
    assert step(shell, "a", mark(calls, "a") + "x = 10").error_in_exec is None
    assert "'b' will run again when reached (stale)" in capsys.readouterr().out
    for name, body in cells[1:]:
        assert step(shell, name, body).error_in_exec is None
    assert count(calls) == ["a", "b", "c", "a", "b"]
    assert (shell.user_ns["y"], shell.user_ns["z"]) == (11, 5)


def test_a_re_executed_step_restores_its_new_outputs_not_the_old_ones(
    shell: Any, calls: Path, store_path: Path
) -> None:
    """After an edit re-executes a step, a new kernel restores the new value, and only the new checkpoint is kept."""
    step(shell, "a", mark(calls, "a") + "x = 1\nshown = 'one'")
    fresh_kernel(shell)
    step(shell, "a", mark(calls, "a") + "x = 10")
    fresh_kernel(shell)
    assert step(shell, "a", mark(calls, "a") + "x = 10").error_in_exec is None
    assert count(calls) == ["a", "a"]
    assert shell.user_ns["x"] == 10
    assert "shown" not in shell.user_ns
    refs = open_store(store_path).checkpoint_refs("r1", "a")
    assert sorted((r.kind, r.name) for r in refs) == [("value", "x")]


def test_whitespace_and_retry_options_do_not_count_as_edits(shell: Any, calls: Path) -> None:
    """Trailing spaces, blank lines and a new --retries keep the checkpoint; --force executes anyway."""
    body = mark(calls, "s") + "v = 1"
    step(shell, "s", body)
    step(shell, "s --retries 2", "\n" + body + "   \n\n")
    assert count(calls) == ["s"]
    step(shell, "s --force", body)
    assert count(calls) == ["s", "s"]


def test_failing_cell_fails_the_step_and_the_notebook(shell: Any, store_path: Path) -> None:
    """The user's own exception stops the notebook; the step is failed with its traceback stored."""
    result = step(shell, "boom", "x = 1\nraise ValueError('bad input')")
    assert isinstance(result.error_in_exec, ValueError)
    status = open_store(store_path).get_step("r1", "boom")
    assert status is not None
    assert status.state is StepState.FAILED
    assert status.error == "ValueError: bad input"
    assert "raise ValueError('bad input')" in (status.traceback or "")


def test_retries_run_the_body_again_and_show_the_attempt(
    shell: Any, calls: Path, store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A flaky cell with --retries succeeds on attempt 3 and says which attempt it is on."""
    body = (
        mark(calls, "try")
        + f"if len(open({str(calls)!r}).read().split()) < 3:\n    raise ConnectionError('reset')\nok = True"
    )
    result = step(shell, "flaky --retries 3 --backoff 0 --retry-on ConnectionError", body)
    assert result.error_in_exec is None
    assert count(calls) == ["try"] * 3
    err = capsys.readouterr().err
    assert "↻ step 'flaky': attempt 2 of 4 (attempt 1 failed: ConnectionError: reset)" in err
    assert "attempt 3 of 4" in err
    status = open_store(store_path).get_step("r1", "flaky")
    assert status is not None and status.state is StepState.COMPLETED and status.attempts == 3


def test_retries_exhausted_and_retry_on_filter(shell: Any, calls: Path) -> None:
    """Exhausted retries raise StepFailed; an error outside --retry-on fails at once."""
    failed = step(shell, "always --retries 1 --backoff 0", mark(calls, "x") + "raise ConnectionError('down')")
    assert isinstance(failed.error_in_exec, StepFailed)
    assert failed.error_in_exec.attempts == 2
    assert (
        str(failed.error_in_exec)
        == "step 'always' (run 'r1') failed after 2 attempts; last error: ConnectionError: down"
    )
    other = step(shell, "picky --retries 3 --backoff 0 --retry-on ConnectionError", mark(calls, "y") + "1 / 0")
    assert isinstance(other.error_in_exec, ZeroDivisionError)
    assert count(calls) == ["x", "x", "y"]


def test_keyboard_interrupt_fails_without_retry(shell: Any, calls: Path, store_path: Path) -> None:
    """Interrupting the kernel stops the step at once, recorded as interrupted by the user."""
    result = step(shell, "long --retries 3 --backoff 0", mark(calls, "k") + "raise KeyboardInterrupt")
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert count(calls) == ["k"]
    status = open_store(store_path).get_step("r1", "long")
    assert status is not None and status.state is StepState.FAILED
    assert status.error == "KeyboardInterrupt: interrupted by the user"


def test_timeout_fails_the_attempt_with_step_timeout(shell: Any) -> None:
    """A cell running past --timeout is stopped with StepTimeout naming the step and the limit."""
    result = step(shell, "slow --timeout 0.2", "import time\ntime.sleep(30)")
    assert isinstance(result.error_in_exec, StepTimeout)
    assert str(result.error_in_exec) == "step 'slow' ran longer than its timeout of 0.2 s"


@pytest.mark.parametrize(
    ("setup", "variable", "type_name"),
    [
        ("import threading\nlock = threading.Lock()", "lock", "_thread.lock"),
        ("gen = (i for i in range(3))", "gen", "generator"),
        ("import sqlite3\nconn = sqlite3.connect(':memory:')", "conn", "sqlite3.Connection"),
    ],
)
def test_unpicklable_output_names_variable_type_and_fix(
    shell: Any, store_path: Path, setup: str, variable: str, type_name: str
) -> None:
    """The error names the variable, its type and the exact --exclude; earlier checkpoints stay."""
    assert step(shell, "first", "kept = 1").error_in_exec is None
    result = step(shell, "load --retries 1", f"{setup}\nrows = 3")
    error = result.error_in_exec
    assert isinstance(error, UnserializableOutputError)
    assert (error.variable, error.type_name) == (variable, type_name)
    assert str(error) == (
        f"output '{variable}' of step 'load' (run 'r1') is a {type_name}, which cannot be pickled ({error.reason}). "
        "Nothing from this attempt was stored and earlier checkpoints are intact. "
        f"Leave it out with '%%durable_step load --retries 1 --exclude {variable}'."
    )
    store = open_store(store_path)
    assert store.get_step("r1", "load").state is StepState.FAILED  # type: ignore[union-attr]
    assert store.get_step("r1", "first").state is StepState.COMPLETED  # type: ignore[union-attr]
    assert step(shell, f"load --retries 1 --exclude {variable}", f"{setup}\nrows = 3").error_in_exec is None


def test_rich_outputs_are_recorded_and_shown_again(shell: Any, calls: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DataFrame's HTML and a matplotlib PNG come back with the restore, without re-running."""
    formatter = shell.display_formatter  # a terminal shell formats text only; a notebook kernel formats all
    monkeypatch.setattr(formatter, "active_types", list(formatter.format_types))
    shell.run_line_magic("matplotlib", "inline")
    body = mark(calls, "plot") + (
        "import pandas as pd\nimport matplotlib.pyplot as plt\n"
        "from IPython.display import display\n"
        "frame = pd.DataFrame({'a': [1, 2, 3]})\ndisplay(frame)\nplt.plot(frame.a);"
    )
    with capture_output() as live:
        assert step(shell, "plot", body).error_in_exec is None
    fresh_kernel(shell)
    with capture_output() as again:
        assert step(shell, "plot", body).error_in_exec is None
    assert count(calls) == ["plot"]
    for shown in (live, again):
        kinds = [sorted(o.data) for o in shown.outputs]
        assert ["text/html", "text/plain"] in kinds
        assert ["image/png", "text/plain"] in kinds
    assert RESTORED.search(again.stdout)


def test_durable_run_resumes_latest_or_starts(shell: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """%durable_run joins RESUMABLE_RUN_ID, else resumes the latest run, else starts; it says which."""
    with capture_output() as out:
        shell.run_line_magic("durable_run", "shop")
    assert out.stdout == "resumable: started run 'r1' of pipeline 'shop' (RESUMABLE_RUN_ID)\n"
    monkeypatch.delenv("RESUMABLE_RUN_ID")
    step(shell, "one", "v = 1")
    with capture_output() as out:
        shell.run_line_magic("durable_run", "shop")
    assert out.stdout == "resumable: resumed run 'r1' of pipeline 'shop': 1 of 1 steps completed\n"
    with capture_output() as out:
        shell.run_line_magic("durable_run", "shop --new")
    fresh_id = notebook_run().run_id  # type: ignore[union-attr]
    assert fresh_id != "r1"
    assert out.stdout == f"resumable: started run '{fresh_id}' of pipeline 'shop'\n"
    shell.run_line_magic("durable_run", "shop --run-id order-42")
    assert notebook_run().run_id == "order-42"  # type: ignore[union-attr]
    with pytest.raises(UsageError) as excinfo:
        shell.run_line_magic("durable_run", "shop --run-id order-42 --new")
    assert str(excinfo.value) == (
        "run 'order-42' of pipeline 'shop' already exists, so it cannot start as a new run. "
        "Resume it (leave out new=True / --new), or choose another run id."
    )


def test_first_step_joins_a_pipeline_named_after_the_notebook(shell: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without %durable_run the first step joins a pipeline named after the notebook file."""
    monkeypatch.delenv("RESUMABLE_RUN_ID")
    monkeypatch.setitem(shell.user_ns, "__session__", "/home/ana/My Analysis.ipynb")
    with capture_output() as out:
        step(shell, "one", "v = 1")
    assert re.match(r"resumable: started run '[\w-]+' of pipeline 'My_Analysis'\n", out.stdout)
    assert notebook_run().pipeline == "My_Analysis"  # type: ignore[union-attr]


def test_no_notebook_name_means_pipeline_default(shell: Any) -> None:
    """A kernel that does not know its notebook uses the pipeline 'default'."""
    step(shell, "one", "v = 1")
    assert notebook_run().pipeline == "default"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "%%durable_step needs a step name, for example '%%durable_step load_data'."),
        ("-bad", "unrecognized arguments"),
        ("bad/name", "step name 'bad/name' is not valid"),
        ("s --retries -1", "step 's': retries=-1 is not valid; retries counts attempts after the first"),
        ("s --timeout 0", "step 's': timeout=0.0 is not valid"),
        ("s --timeout nan", "step 's': timeout=nan is not valid; give a finite number of seconds above 0, or None"),
        ("s --timeout inf", "step 's': timeout=inf is not valid"),
        ("s --backoff nan", "step 's': backoff=nan is not valid; it is the first delay in seconds: a finite number"),
        ("s --backoff -1", "step 's': backoff=-1.0 is not valid"),
        (
            "s --rerun",
            "step 's' of run 'r1' has never run, so there is nothing to run again; nothing ran. Remove the rerun "
            "request (--rerun, run.rerun): a step that has not completed executes anyway.",
        ),
        ("s --quiet", "unrecognized arguments: --quiet"),
        ("s --outputs 'a b'", "--outputs takes variable names separated by commas"),
        ("s --outputs a,+b", "do not mix the two forms"),
        ("s --retry-on NoSuchError", "--retry-on: 'NoSuchError' is not an exception class"),
    ],
)
def test_misuse_is_a_one_line_usage_error(shell: Any, store_path: Path, line: str, message: str) -> None:
    """Bad magic arguments raise UsageError saying what to write instead; nothing is stored."""
    result = step(shell, line, "v = 1")
    assert isinstance(result.error_in_exec, UsageError)
    assert message in str(result.error_in_exec)
    assert "v" not in shell.user_ns


def test_repeated_list_options_add_up(shell: Any, store_path: Path) -> None:
    """--exclude, --outputs and --retry-on given several times add up, as the comma form does: none is dropped
    (so nothing the user excluded is checkpointed), and the --exclude fix names the new variable only."""
    setup = "import threading, sqlite3\nlock = threading.Lock()\ngen = (i for i in range(3))\n"
    result = step(shell, "load --exclude gen --exclude lock", setup + "conn = sqlite3.connect(':memory:')\nrows = 3")
    assert str(result.error_in_exec) == (
        f"output 'conn' of step 'load' (run 'r1') is a sqlite3.Connection, which cannot be pickled "
        f"({result.error_in_exec.reason}). Nothing from this attempt was stored and earlier checkpoints are intact. "
        "Leave it out with '%%durable_step load --exclude gen,conn --exclude lock'."
    )
    assert step(shell, "load --exclude gen --exclude lock", setup + "rows = 3").error_in_exec is None
    store = open_store(store_path)
    assert set(store.get_step("r1", "load").outputs) == {"threading", "sqlite3", "rows"}  # type: ignore[union-attr]
    assert step(shell, "narrow --outputs a --outputs b", "a = 1\nb = 2\nscratch = 3").error_in_exec is None
    assert store.get_step("r1", "narrow").outputs == ("a", "b")  # type: ignore[union-attr]
    shell.user_ns["tries"] = []
    flaky = "tries.append(1)\nif len(tries) == 1:\n    raise KeyError('first')\ndone = len(tries)"
    line = "flaky --retries 1 --backoff 0 --retry-on KeyError --retry-on ValueError"
    assert step(shell, line, flaky).error_in_exec is None
    assert shell.user_ns["done"] == 2


def test_a_repeated_single_valued_option_is_refused(shell: Any, store_path: Path) -> None:
    """An option that takes one value, given twice, is refused saying which and what to write; the last one does
    not win silently, nothing runs and the completed step stays."""
    assert step(shell, "first", "kept = 1").error_in_exec is None
    for magic, line, option, given, kept in [
        ("%%durable_step", "s --retries 1 --retries 3", "--retries", "(1 and 3)", "3"),
        ("%%durable_step", "s --backoff=2 --backoff 0.5", "--backoff", "(2 and 0.5)", "0.5"),
        ("%%durable_step", "s --timeout 5 --timeout 5", "--timeout", "(both 5)", "5"),
        ("%durable_run", "shop --run-id a --run-id b", "--run-id", "(a and b)", "b"),
        ("%durable_run", "shop --fork a --from x --from y", "--from", "(x and y)", "y"),
    ]:
        result = shell.run_cell(f"{magic} {line}\nv = 1" if magic == "%%durable_step" else f"{magic} {line}")
        assert isinstance(result.error_in_exec, UsageError)
        assert str(result.error_in_exec) == (
            f"{magic} {line}: {option} was given twice {given}, but it takes one value; resumable does not pick "
            "one for you. The line was refused before anything ran: nothing was started or stored, and completed "
            f"steps and their checkpoints are intact. Give {option} once, for example '{option} {kept}'."
        )
    assert "v" not in shell.user_ns
    assert notebook_run().run_id == "r1"  # type: ignore[union-attr]
    assert [s.step for s in open_store(store_path).list_steps("r1")] == ["first"]


def test_magic_line_and_source_are_stored_for_an_exact_rerun(shell: Any, store_path: Path, calls: Path) -> None:
    """The panel can re-run a step exactly: the stored magic line and source reproduce the cell."""
    body = mark(calls, "charge") + "amount = 3"
    step(shell, "charge --retries 3 --backoff 0.5", body)
    status = open_store(store_path).get_step("r1", "charge")
    assert status is not None
    assert status.options["magic_line"] == "charge --retries 3 --backoff 0.5"
    assert status.source == body + "\n"  # the cell as IPython hands it to the magic
    assert status.reads == ()
    shell.run_cell_magic("durable_step", status.options["magic_line"], status.source)
    assert count(calls) == ["charge"]


def test_restored_function_sees_the_notebook_namespace(shell: Any) -> None:
    """A def restored from a checkpoint reads today's globals, like one defined by running the cell."""
    shell.user_ns["rate"] = 2
    body = "def scale(x):\n    return x * rate"
    step(shell, "define", body)
    fresh_kernel(shell)
    step(shell, "define", body)
    shell.user_ns["rate"] = 10
    assert shell.user_ns["scale"](3) == 30


def test_deleted_names_are_deleted_on_restore_too(shell: Any) -> None:
    """A step that deletes a scratch variable leaves it deleted when restored."""
    shell.user_ns["scratch"] = 1
    step(shell, "clean", "del scratch\nkept = 1")
    shell.user_ns["scratch"] = 1
    step(shell, "clean", "del scratch\nkept = 1")
    assert "scratch" not in shell.user_ns


def test_idempotency_key_is_stable_across_retries_and_new_after_a_rerun(
    shell: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same token on every attempt; --force never repeats the effect; --rerun repeats it once, with a new key."""
    keys = tmp_path / "keys"
    body = (
        f"import resumable\nopen({str(keys)!r}, 'a').write(resumable.idempotency_key() + ' ')\n"
        f"if len(open({str(keys)!r}).read().split()) == 1:\n    raise ConnectionError('first try')\nk = 1"
    )
    step(shell, "pay --retries 1 --backoff 0", body)
    tokens = keys.read_text().split()
    assert len(tokens) == 2 and len(set(tokens)) == 1
    capsys.readouterr()
    step(shell, "pay --retries 1 --backoff 0 --force", body)
    assert keys.read_text().split() == tokens
    assert capsys.readouterr().err.strip() == (
        "step 'pay' has side effects and --force never repeats side effects; it was not run again. "
        "To do it again: %%durable_step pay --retries 1 --backoff 0 --rerun"
    )
    step(shell, "pay --retries 1 --backoff 0 --rerun", body)
    assert capsys.readouterr().out == "↻ step 'pay' runs again: rerun asked\n"
    after = keys.read_text().split()
    assert len(after) == 3 and after[2] != tokens[0]


def test_status_table_lists_steps(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """%durable_status prints one row per step with state, attempts and last error."""
    step(shell, "good", "v = 1")
    step(shell, "bad", "raise ValueError('no')")
    capsys.readouterr()
    shell.run_line_magic("durable_status", "")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("run 'r1' of pipeline 'default' (2 steps) in ")
    rows = [[cell.strip() for cell in line.strip("│┃").split("│" if "│" in line else "┃")] for line in lines[2:]]
    rows = [row for row in rows if len(row) == 8]
    assert rows[0] == ["#", "step", "state", "attempts", "executions", "duration", "size", "last error"]
    assert rows[1][:5] == ["1", "good", "completed", "1", "1"]
    assert rows[2][:5] == ["2", "bad", "failed", "1", "1"]
    assert rows[2][7] == "ValueError: no"
    assert "\x1b" not in out  # plain text: no terminal codes in a notebook's output
    with pytest.raises(UsageError) as excinfo:  # not ignored: the table shown would not be the run asked for
        shell.run_line_magic("durable_status", "order-42")
    assert str(excinfo.value) == (
        "%durable_status order-42: %durable_status takes no arguments; it shows the kernel's current run, and nothing "
        "was read or changed. For another run use '%durable_panel RUN' or, in a terminal, 'resumable show RUN'."
    )


def test_status_without_a_run_says_how_to_start(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """%durable_status before any run explains what to do instead of failing."""
    shell.run_line_magic("durable_status", "")
    assert "no run yet" in capsys.readouterr().out


def test_load_ext_twice_keeps_one_instance(shell: Any) -> None:
    """Loading the extension again keeps the kernel's magics (and its current run) as they are."""
    before = shell.magics_manager.registry["DurableMagics"]
    load_ipython_extension(shell)
    assert shell.magics_manager.registry["DurableMagics"] is before


def test_show_restored_can_be_turned_off(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """c.DurableMagics.show_restored = False keeps restores quiet apart from the replayed output."""
    magics = shell.magics_manager.registry["DurableMagics"]
    step(shell, "q", "print('hi')\nv = 1")
    magics.show_restored = False
    capsys.readouterr()
    step(shell, "q", "print('hi')\nv = 1")
    assert capsys.readouterr().out == "hi\n"


def test_staleness_follows_a_chain_of_readers(shell: Any, calls: Path) -> None:
    """Editing the first of a -> b -> c makes b run again, and b running again makes c run again."""
    cells = [
        ("a", mark(calls, "a") + "x = 1"),
        ("b", mark(calls, "b") + "y = x + 1"),
        ("c", mark(calls, "c") + "z = y * 10"),
    ]
    for name, body in cells:
        step(shell, name, body)
    fresh_kernel(shell)
    step(shell, "a", mark(calls, "a") + "x = 2")
    for name, body in cells[1:]:
        step(shell, name, body)
    assert count(calls) == ["a", "b", "c", "a", "b", "c"]
    assert shell.user_ns["z"] == 30


def test_syntax_error_touches_nothing(shell: Any, store_path: Path) -> None:
    """A cell that does not compile raises SyntaxError and leaves no step (and no run) behind."""
    result = step(shell, "broken", "x = = 1")
    assert isinstance(result.error_in_exec, SyntaxError)
    assert not store_path.exists() or open_store(store_path).get_run("r1") is None


def test_traceback_starts_at_the_cell(shell: Any) -> None:
    """A failing step's traceback shows the user's cell and functions, not resumable's machinery."""
    shell.run_cell("def helper():\n    raise KeyError('deep')")
    error = step(shell, "boom", "x = 1\nhelper()").error_in_exec
    assert isinstance(error, KeyError)
    files = []
    tb = error.__traceback__
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert files[-2:] == ["<module>", "helper"]  # the cell, then the function it called
    assert not {"run_sync", "attempt", "_call_with_timeout"} & set(files)  # no engine frames in between


def test_notebook_function_loads_as_a_function_outside_the_notebook(shell: Any, store_path: Path) -> None:
    """resumable.load() of a def from a notebook step gives a callable function, not a wrapper."""
    step(shell, "define", "def double(x):\n    return 2 * x")
    loaded = load("r1", "define", "double", store=store_path)
    assert loaded(21) == 42
