"""Restores you can trust: a step executes again when something it read changed, and says why;
a completed side effect is held, never repeated implicitly. A real IPython shell and a real store;
"a new kernel" is a fresh namespace and fresh magics running the same cells again."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from ipython_shell import fresh_kernel, started_shell

import resumable
from resumable._store import forget_all

JOINED = re.compile(r"^resumable: (started|resumed) run ")
RESTORED = re.compile(r"^↺ restored step '(\w+)' from checkpoint of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


@pytest.fixture
def shell(store_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    monkeypatch.setenv("RESUMABLE_STORE", str(store_path))
    monkeypatch.setenv("RESUMABLE_RUN_ID", "r1")
    monkeypatch.chdir(tmp_path)
    ip = started_shell()
    yield ip
    fresh_kernel(ip)


def run_cells(ip: Any, cells: list[str], capsys: pytest.CaptureFixture[str]) -> list[tuple[str, str]]:
    """Run the cells as a notebook does; return each cell's (stdout, stderr), failing on any error."""
    seen = []
    capsys.readouterr()
    for cell in cells:
        result = ip.run_cell(cell)
        captured = capsys.readouterr()
        assert result.success, (cell, result.error_before_exec or result.error_in_exec, captured)
        out = "".join(
            line for line in captured.out.splitlines(keepends=True) if not JOINED.match(line)
        )  # the run joined by the first step: not what these tests look at
        seen.append((out, captured.err))
    return seen


def restored(out: str) -> bool:
    return bool(RESTORED.match(out.splitlines()[0])) if out else False


def executions(tmp_path: Path) -> list[str]:
    log = tmp_path / "executed.log"
    return log.read_text().split() if log.exists() else []


def mark(name: str) -> str:
    return f"open('executed.log', 'a').write('{name} ')\n"


def test_a_changed_plain_value_makes_its_reader_execute_again_and_says_why(
    shell: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`threshold = 0.5` edited to 0.7: the step reading it is not restored with the 0.5 result."""
    step = "%%durable_step filt\n" + mark("filt") + "kept = [x for x in data if x > threshold]"

    def notebook(threshold: str) -> list[str]:
        return ["data = [0.1, 0.6, 0.8]", f"threshold = {threshold}", step, "print(kept)"]

    run_cells(shell, notebook("0.5"), capsys)
    fresh_kernel(shell)
    outs = run_cells(shell, notebook("0.7"), capsys)
    assert outs[2][0] == "↻ step 'filt' runs again: 'threshold' changed (0.5 → 0.7)\n"
    assert outs[3][0] == "[0.8]\n"
    fresh_kernel(shell)
    outs = run_cells(shell, notebook("0.7"), capsys)
    assert restored(outs[2][0]) and outs[3][0] == "[0.8]\n"
    fresh_kernel(shell)
    outs = run_cells(shell, notebook("7 / 10"), capsys)  # another cell binding an equal value agrees
    assert restored(outs[2][0])
    assert executions(tmp_path) == ["filt", "filt"]


def test_a_new_kernel_running_the_same_cells_restores_every_step(
    shell: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Objects that differ between kernels (a connection, a timestamp, a generator, a figure) made by unchanged
    cells, helpers defined in cells, in-place changes in plain cells: no spurious re-run after a restart."""
    cells = [
        "import sqlite3, time\nimport numpy as np\nimport pandas as pd\nfrom matplotlib.figure import Figure",
        "conn = sqlite3.connect(':memory:')\nstarted = time.time()\nrng = np.random.default_rng(0)",
        "def scale(frame):\n    return frame * factor",
        "factor = 3",
        "%%durable_step load\n" + mark("load") + "df = pd.DataFrame({'a': rng.normal(size=5)})\nitems = []",
        "df['b'] = df['a'] * 2\nitems.append(len(df))",
        "%%durable_step model\n"
        + mark("model")
        + "scaled = scale(df)\nfig = Figure()\nax = fig.subplots()\nax.plot(scaled['a'])\n"
        + "total = float(scaled['b'].sum())",
        "print(round(total, 6), items)",
    ]
    first = run_cells(shell, cells, capsys)
    fresh_kernel(shell)
    second = run_cells(shell, cells, capsys)
    assert restored(second[4][0]) and restored(second[6][0])
    assert second[7] == first[7]
    assert executions(tmp_path) == ["load", "model"]
    fresh_kernel(shell)
    cells[3] = "factor = 4"  # a global the helper reads: the step calling the helper sees it
    third = run_cells(shell, cells, capsys)
    assert restored(third[4][0])
    assert third[6][0] == "↻ step 'model' runs again: 'factor' changed (3 → 4)\n"
    fresh_kernel(shell)
    cells[5] = "df['b'] = df['a'] * 5\nitems.append(len(df))"  # a plain cell changing a step's output in place
    fourth = run_cells(shell, cells, capsys)
    assert fourth[6][0] == "↻ step 'model' runs again: 'df' changed\n"  # it reads df, not items
    assert executions(tmp_path) == ["load", "model", "model", "model"]


def test_a_module_is_code_not_data_an_edited_import_cell_changes_no_step_after_a_restart(
    shell: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Steps reading ``resumable`` (a plain one and an effect step) restore after a restart whose import cell
    gained an import; before, 'resumable' counted as changed: the plain step ran again, the effect step was held.

    A module is still fingerprinted as the module it is: ``codec`` made to name another module, or a
    plain cell changing a module's attribute, makes its reader run again.
    """
    cells = [
        "import resumable\nimport json as codec\nimport types\ncfg = types.ModuleType('cfg')",
        "cfg.threshold = 0.5",
        "n = 3",
        "%%durable_step plain\n" + mark("plain") + "k = n + 1\nkind = resumable.__name__",
        "%%durable_step pay\n" + mark("pay") + "key = resumable.idempotency_key()",
        "%%durable_step encode\n" + mark("encode") + "text = str(codec.dumps([n, cfg.threshold]))",
    ]
    run_cells(shell, cells, capsys)
    key = shell.user_ns["key"]
    fresh_kernel(shell)
    cells[0] = "import os\n" + cells[0]
    outs = run_cells(shell, cells, capsys)
    assert all(restored(out) and err == "" for out, err in outs[3:]), outs[3:]
    assert shell.user_ns["key"] == key
    fresh_kernel(shell)
    cells[0] = cells[0].replace("import json as codec", "import pickle as codec")
    cells[1] = "cfg.threshold = 0.7"
    outs = run_cells(shell, cells, capsys)
    assert restored(outs[3][0]) and restored(outs[4][0]) and outs[4][1] == ""  # they read neither
    assert outs[5][0] == "↻ step 'encode' runs again: 'codec' changed (json → pickle), 'cfg' changed\n"
    assert executions(tmp_path) == ["plain", "pay", "encode", "encode"]


QUICKSTART_LOAD = "%%durable_step load\n" + mark("load") + "qty = {qty}\nprice = 16.0"
CHARGE = (
    "%%durable_step charge{flags}\nimport resumable\n"
    + mark("charge")
    + "key = resumable.idempotency_key()\namount = qty * price\nprint(f'charged {{amount:.2f}}')"
)


def test_an_effect_step_is_held_when_its_inputs_change_and_runs_again_only_when_asked(
    shell: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The quickstart edit (qty 2 → 3): `charge` is not charged again under the same key with another amount."""

    def notebook(qty: int, flags: str = "") -> list[str]:
        return [QUICKSTART_LOAD.format(qty=qty), CHARGE.format(flags=flags), "print(amount, key[:4])"]

    first = run_cells(shell, notebook(2), capsys)
    key = shell.user_ns["key"]
    assert first[2][0] == "32.0 rsm_\n"
    fresh_kernel(shell)
    held = run_cells(shell, notebook(3), capsys)
    assert held[0][0] == "↻ step 'load' runs again: its source changed\n"
    assert restored(held[1][0]) and "charged 32.00" in held[1][0]
    assert held[1][1] == (
        "step 'charge' has side effects and its inputs changed ('qty'); it was not run again. "
        "To do it again: %%durable_step charge --rerun\n"
    )
    assert shell.user_ns["key"] == key and shell.user_ns["amount"] == 32.0
    fresh_kernel(shell)
    rerun = run_cells(shell, notebook(3, " --rerun"), capsys)
    assert rerun[1] == ("↻ step 'charge' runs again: rerun asked; 'qty' changed (2 → 3)\ncharged 48.00\n", "")
    assert shell.user_ns["key"] != key and shell.user_ns["amount"] == 48.0
    status = resumable.Pipeline("default").store.get_step("r1", "charge")
    assert status is not None and status.effect and status.key_generation == 2
    fresh_kernel(shell)
    again = run_cells(shell, notebook(3, " --rerun"), capsys)  # --rerun left in the line: made once
    assert restored(again[1][0])
    assert again[1][1] == (
        "step 'charge' has side effects and was already run again for this source and these inputs "
        "(key generation 2); it was not run a third time. Remove the rerun request; to do it yet again: "
        "resumable invalidate r1 charge, then run the cell\n"
    )
    assert executions(tmp_path) == ["load", "charge", "load", "charge"]


def test_a_declared_effect_is_held_when_its_source_changes_and_force_does_not_repeat_it(
    shell: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--effect` marks a step that calls no key; an edit or --force restores it with one line saying so."""
    run_cells(shell, ["%%durable_step mail --effect\n" + mark("mail") + "sent = 1"], capsys)
    edited = run_cells(shell, ["%%durable_step mail --effect\n" + mark("mail") + "sent = 2"], capsys)
    assert edited[0][1] == (
        "step 'mail' has side effects and its source changed; it was not run again. "
        "To do it again: %%durable_step mail --effect --rerun\n"
    )
    forced = run_cells(shell, ["%%durable_step mail --effect --force\n" + mark("mail") + "sent = 1"], capsys)
    assert forced[0][1] == (
        "step 'mail' has side effects and --force never repeats side effects; it was not run again. "
        "To do it again: %%durable_step mail --effect --rerun\n"
    )
    assert shell.user_ns["sent"] == 1 and executions(tmp_path) == ["mail"]


def test_upstream_reruns_do_not_make_an_effect_step_stale(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """A re-executed upstream step sends its plain readers back to pending, never a completed effect."""
    run_cells(
        shell,
        ["%%durable_step up\nn = 1", "%%durable_step pay --effect\npaid = n", "%%durable_step show\nm = n"],
        capsys,
    )
    run_cells(shell, ["%%durable_step up --force\nn = 1"], capsys)
    store = resumable.Pipeline("default").store
    states = {s.step: s.state.value for s in store.list_steps("r1")}
    assert states == {"up": "completed", "pay": "completed", "show": "pending"}


def test_rerun_of_a_step_that_never_completed_is_refused(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """--rerun on a failed step: a usage error, nothing ran, the failure is kept."""
    shell.run_cell("%%durable_step flaky\nraise ValueError('down')")
    result = shell.run_cell("%%durable_step flaky --rerun\nx = 1")
    assert isinstance(result.error_in_exec, UsageError)
    assert str(result.error_in_exec) == (
        "step 'flaky' of run 'r1' is failed and has never completed, so there is nothing to run again; nothing "
        "ran. Remove the rerun request (--rerun, run.rerun): a step that has not completed executes anyway."
    )
    assert "x" not in shell.user_ns


def test_depends_on_a_file_reruns_when_its_content_changes(
    shell: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--depends-on: new content executes again; the same content rewritten (a new mtime) restores."""
    data = tmp_path / "prices.csv"
    data.write_text("a,1\n")
    cell = "%%durable_step read --depends-on prices.csv\n" + mark("read") + "text = open('prices.csv').read()"
    run_cells(shell, [cell], capsys)
    data.write_text("a,2\n")
    out = run_cells(shell, [cell], capsys)[0][0]
    assert out.startswith("↻ step 'read' runs again: file 'prices.csv' changed (4 bytes, modified ")
    data.write_text("a,2\n")
    os.utime(data, (1, 1))
    assert restored(run_cells(shell, [cell], capsys)[0][0])
    assert shell.user_ns["text"] == "a,2\n" and executions(tmp_path) == ["read", "read"]


@pytest.mark.parametrize(
    ("path", "problem"),
    [("missing.csv", "does not exist"), ("folder", "is a folder; name the files inside it the step reads")],
)
def test_depends_on_what_cannot_be_fingerprinted_is_a_usage_error(
    shell: Any, tmp_path: Path, path: str, problem: str
) -> None:
    """A missing file or a folder: one clear error naming the path, nothing ran, nothing stored."""
    (tmp_path / "folder").mkdir()
    result = shell.run_cell(f"%%durable_step read --depends-on {path}\nx = 1")
    assert isinstance(result.error_in_exec, UsageError)
    assert str(result.error_in_exec) == (
        f"step 'read' depends on '{path}' ('{tmp_path / path}'), which {problem}. Nothing ran and every "
        "checkpoint is kept; fix the path or the file, or drop it from --depends-on."
    )
    assert "x" not in shell.user_ns


# ---------------------------------------------------------------------- the Python API


def test_a_step_called_with_other_arguments_executes_again_and_logs_why(
    store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A resumed run restores a call only with the same arguments; repeated calls in another order get theirs."""
    pipe = resumable.Pipeline("p", store=store_path)
    seen: list[str] = []

    @pipe.step
    def process(item: str) -> str:
        seen.append(item)
        return item.upper()

    with pipe.run(run_id="r1"):
        assert [process(i) for i in ["a", "b"]] == ["A", "B"]
    with caplog.at_level(logging.INFO, logger="resumable"), pipe.run(run_id="r1"):
        assert [process(i) for i in ["b", "a"]] == ["B", "A"]
    assert seen == ["a", "b", "b", "a"]
    assert caplog.messages == [
        "↻ step 'process' runs again: 'item' changed ('a' → 'b')",
        "↻ step 'process#2' runs again: 'item' changed ('b' → 'a')",
    ]
    with pipe.run(run_id="r1"):
        assert [process(i) for i in ["b", "a"]] == ["B", "A"]
    assert seen == ["a", "b", "b", "a"]


def test_python_effect_steps_are_held_and_rerun_once_when_asked(store_path: Path) -> None:
    """An argument that changed does not repeat a completed effect; run.rerun does, once, with a new key."""
    pipe = resumable.Pipeline("shop", store=store_path)
    charged: list[tuple[float, str]] = []

    @pipe.step
    def total(qty: int) -> float:
        return qty * 16.0

    @pipe.step
    def charge(amount: float) -> str:
        key = resumable.idempotency_key()
        charged.append((amount, key))
        return key

    with pipe.run(run_id="o1"):
        first = charge(total(2))
    with pytest.warns(resumable.EffectHeldWarning) as held, pipe.run(run_id="o1"):
        assert charge(total(3)) == first
    assert [str(w.message) for w in held] == [
        "step 'charge' has side effects and its inputs changed ('amount'); it was not run again. "
        "To do it again: run.rerun('charge') before calling it"
    ]
    with pipe.run(run_id="o1") as run:
        run.rerun("charge")
        second = charge(total(3))
    assert second != first and charged == [(32.0, first), (48.0, second)]
    with pytest.warns(resumable.EffectHeldWarning) as again, pipe.run(run_id="o1") as run:
        run.rerun("charge")
        assert charge(total(3)) == second
    assert again[0].message.rerun_generation == 2  # type: ignore[union-attr]
    assert len(charged) == 2
    with pipe.run(run_id="o2") as run, pytest.raises(resumable.RerunError) as refused:
        run.step("charge", lambda: None, rerun=True)
    assert str(refused.value) == (
        "step 'charge' of run 'o2' has never run, so there is nothing to run again; nothing ran. "
        "Remove the rerun request (--rerun, run.rerun): a step that has not completed executes anyway."
    )


def test_python_depends_on_and_effect_declared(store_path: Path, tmp_path: Path) -> None:
    """depends_on= re-executes a plain step when the file changes; effect=True holds a step that asks no key."""
    pipe = resumable.Pipeline("p", store=store_path)
    source = tmp_path / "in.txt"
    source.write_text("1")
    calls: list[str] = []

    @pipe.step(depends_on=[source])
    def read() -> str:
        calls.append("read")
        return source.read_text()

    @pipe.step(effect=True)
    def notify(text: str) -> None:
        calls.append("notify")

    with pipe.run(run_id="r1"):
        notify(read())
    source.write_text("2")
    with pytest.warns(resumable.EffectHeldWarning), pipe.run(run_id="r1"):
        notify(read())
    assert calls == ["read", "notify", "read"]


def test_a_step_result_changed_in_place_before_the_next_call_is_seen(store_path: Path) -> None:
    """`rows = produce(); rows.append(x); consume(rows)`: the appended value counts, not the identity of rows."""
    pipe = resumable.Pipeline("p", store=store_path)
    consumed: list[list[int]] = []

    @pipe.step
    def produce() -> list[int]:
        return [1, 2]

    @pipe.step
    def consume(rows: list[int]) -> int:
        consumed.append(list(rows))
        return sum(rows)

    for extra, expected in ((3, 6), (4, 7)):
        with pipe.run(run_id="r1"):
            rows = produce()
            rows.append(extra)
            assert consume(rows) == expected
    assert consumed == [[1, 2, 3], [1, 2, 4]]


RERUN_SCRIPT = """
import os, signal, sys
import resumable
pipe = resumable.Pipeline("shop", store=sys.argv[1])

@pipe.step
def charge(amount):
    key = resumable.idempotency_key()
    with open(sys.argv[2], "a") as log:
        log.write(f"{amount} {key}\\n")
    if sys.argv[3] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return key

with pipe.run(run_id="o1") as run:
    if sys.argv[4] == "rerun":
        run.rerun("charge")
    charge(48)
"""


def test_a_rerun_interrupted_by_a_crash_is_resumed_with_its_key_and_then_counts_as_made(
    store_path: Path, tmp_path: Path
) -> None:
    """SIGKILL inside a rerun: its resume keeps the new key, and the rerun left in the script is not made again."""
    script, log = tmp_path / "charge.py", tmp_path / "effects.log"
    script.write_text(RERUN_SCRIPT)

    def attempt(crash: str, rerun: str) -> int:
        argv = [sys.executable, str(script), str(store_path), str(log), crash, rerun]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).returncode

    assert attempt("live", "plain") == 0
    assert attempt("die", "rerun") == -signal.SIGKILL
    assert attempt("live", "rerun") == 0  # resumes the interrupted rerun
    assert attempt("live", "rerun") == 0  # the rerun was made: restored, not charged a third time
    keys = [line.split()[1] for line in log.read_text().splitlines()]
    assert len(keys) == 3 and keys[0] != keys[1] and keys[1] == keys[2]
    forget_all()
    status = resumable.Pipeline("shop", store=store_path).store.get_step("o1", "charge")
    assert status is not None and status.state.value == "completed" and status.key_generation == 2
