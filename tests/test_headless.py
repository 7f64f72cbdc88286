"""Headless runs on plain notebooks: kernel death and restarts, parameters, exit codes, progress, output."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
from notebook_files import write_nb

import resumable
from resumable import _headless
from resumable._headless import params as _headless_params
from resumable._owner import current_owner
from resumable._store import open_store
from resumable._store.base import StepRequest

pytestmark = pytest.mark.timeout(120)


def cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m resumable ...`` as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESUMABLE_")}
    return subprocess.run(
        [sys.executable, "-m", "resumable", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
        cwd=cwd,
        env=env,
    )


def outputs_text(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []))


def test_dead_kernel_is_replaced_and_the_notebook_runs_again_from_the_top(tmp_path: Path, store_path: Path) -> None:
    """A kernel killed by os._exit mid-notebook is restarted with the same run id and the notebook finishes;
    the kernel's channels are Unix sockets, not TCP ports. The last kernel is shut down gracefully (its exit
    handlers run), and its store open imports no widgets (DuckDB is imported as in a script) and leaves no
    ``__file__`` in the notebook's namespace."""
    nb = write_nb(
        tmp_path / "crashy.ipynb",
        "import os, pathlib, psutil, json, ipykernel\nprint('run', os.environ['RESUMABLE_RUN_ID'])\n"
        "print('transport', json.load(open(ipykernel.get_connection_file()))['transport'])\n"
        "ports = {c.laddr.port for c in psutil.Process().net_connections('inet') if c.status == 'LISTEN'}\n"
        "print('other tcp listeners', ports - {get_ipython().kernel.iopub_thread._pipe_port})",
        "marker = pathlib.Path('died-once')\nif not marker.exists():\n    marker.write_text('x')\n    os._exit(1)",
        "print('after the crash')",
        "%load_ext resumable\nimport atexit, sys\n"
        "atexit.register(pathlib.Path('exited').write_text, 'exit handlers ran')",
        "%%durable_step s\nx = 1",
        "print('ipywidgets' in sys.modules, '__file__' in globals(), hasattr(sys.modules['__main__'], '__file__'))",
    )
    result = resumable.execute_notebook(nb, run_id="r1", store=store_path, progress=False)
    assert result.ok
    assert result.outcome == "completed"
    assert result.restarts == 1
    assert [p.outcome for p in result.passes] == ["kernel_died", "completed"]
    assert result.passes[0].cell_index == 1
    assert result.steps_executed == ("s",)
    assert (tmp_path / "died-once").exists()  # the kernel ran in the notebook's folder
    assert (tmp_path / "exited").read_text() == "exit handlers ran"
    out = nbformat.read(tmp_path / "crashy.resumable.ipynb", as_version=4)
    # The kernel's channels are Unix sockets; the one TCP listener left is ipykernel's loopback pipe for the
    # output of forked subprocesses, which drops any message without its random token.
    assert outputs_text(out.cells[0]) == "run r1\ntransport ipc\nother tcp listeners set()\n"
    assert outputs_text(out.cells[2]) == "after the crash\n"
    assert outputs_text(out.cells[5]) == "False False False\n"
    assert out.metadata["resumable"]["restarts"] == 1


def test_parameters_are_injected_recorded_and_a_changed_value_reruns_its_readers(tmp_path: Path) -> None:
    """-p and -f values land in an injected cell after the parameters cell, the run records them, and resuming
    with another value records it and re-executes the step that reads it, saying why."""
    nb = write_nb(
        tmp_path / "report.ipynb",
        ("region = 'us'\nlimit = 10\nrate = 0.1", ["parameters"]),
        "%load_ext resumable\nprint(region, limit * 2, rate, type(rate).__name__)",
        "%%durable_step double\ndoubled = limit * 2\nprint('doubled', doubled)",
        "%%durable_step label\nlabel = region.upper()",
    )
    (tmp_path / "params.yaml").write_text("limit: 21\nrate: 0.5\n")
    done = cli(
        "execute",
        nb.name,
        "--run-id",
        "r1",
        "-f",
        "params.yaml",
        "-p",
        "region",
        "eu-west",
        "-p",
        "rate",
        "1e-3",
        "--quiet",
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["params"] == {"limit": 21, "rate": 0.001, "region": "eu-west"}
    assert summary["ok"] is True
    assert summary["exit_code"] == 0
    assert summary["output"] == "report.resumable.ipynb"
    assert done.stderr == ""  # --quiet: no progress bar, no summary lines
    out = nbformat.read(tmp_path / "report.resumable.ipynb", as_version=4)
    assert out.cells[1].metadata["tags"] == ["injected-parameters"]
    assert "region = 'eu-west'" in out.cells[1].source
    assert outputs_text(out.cells[2]) == "eu-west 42 0.001 float\n"
    store = open_store(tmp_path / ".resumable" / "store.duckdb")
    run = store.get_run("r1")
    assert run is not None
    assert run.pipeline == "report"
    assert run.params == {"limit": 21, "rate": 0.001, "region": "eu-west"}
    store.close()

    changed = cli("execute", nb.name, "--run-id", "r1", "-p", "limit", "22", "--quiet", cwd=tmp_path)
    assert changed.returncode == 0, changed.stderr
    out = nbformat.read(tmp_path / "report.resumable.ipynb", as_version=4)
    assert outputs_text(out.cells[3]) == (
        "resumable: resumed run 'r1' of pipeline 'report' (RESUMABLE_RUN_ID): 2 of 2 steps completed\n"
        "↻ step 'double' runs again: 'limit' changed (21 → 22)\ndoubled 44\n"
    )
    assert outputs_text(out.cells[4]).startswith("↺ restored step 'label' from checkpoint of ")
    store = open_store(tmp_path / ".resumable" / "store.duckdb")
    run = store.get_run("r1")
    assert run is not None and run.params == {"limit": 22, "rate": 0.001, "region": "eu-west"}
    store.close()


def test_a_raising_cell_exits_1_with_the_resume_command_and_a_marked_notebook(tmp_path: Path) -> None:
    """A cell that raises is not a kernel death: exit 1, the error, the exact resume command, a banner cell."""
    nb = write_nb(
        tmp_path / "broken.ipynb",
        "x = 1",
        "raise ValueError('bad input row 7')",
        "print('never')",
    )
    done = cli("execute", nb.name, "-o", "out/broken-run.ipynb", "--run-id", "night-1", "--quiet", cwd=tmp_path)
    assert done.returncode == 1
    assert "cell 1 raised ValueError: bad input row 7" in done.stderr
    assert "resumable execute broken.ipynb -o out/broken-run.ipynb --run-id night-1" in done.stderr
    out = nbformat.read(tmp_path / "out" / "broken-run.ipynb", as_version=4)
    assert "resumable-error" in out.cells[0].metadata["tags"]
    assert "resumable execute broken.ipynb -o out/broken-run.ipynb --run-id night-1" in out.cells[0].source
    assert 'id="resumable-error-cell"' in out.cells[2].source  # the anchor sits right above the failing cell
    assert out.cells[3].source.startswith("raise ValueError")
    assert out.cells[3].outputs[0]["ename"] == "ValueError"
    assert out.cells[4].outputs == []


def test_exhausted_restarts_exit_3_and_python_raises_kernel_died(tmp_path: Path, store_path: Path) -> None:
    """A kernel that dies on every pass stops after --max-restarts with exit 3 (KernelDiedError in Python)."""
    nb = write_nb(tmp_path / "doomed.ipynb", "print('start')", "import os\nos._exit(9)")
    done = cli("execute", nb.name, "--max-restarts", "1", "--new", "--quiet", "--json", cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    summary = json.loads(done.stdout)
    assert summary["outcome"] == "kernel_died"
    assert summary["restarts"] == 1
    assert summary["failed_cell"] == 1
    assert "died in cell 1 and was restarted 1 times" in done.stderr
    assert "--max-restarts 1" in summary["resume_command"]
    with pytest.raises(resumable.KernelDiedError) as excinfo:
        resumable.execute_notebook(nb, store=store_path, max_restarts=0, progress=False)
    assert excinfo.value.restarts == 0
    assert excinfo.value.cell_index == 1
    run_id = excinfo.value.run_id
    resume = f"resumable execute {nb} --run-id {run_id} --store {store_path} --max-restarts 0"
    assert excinfo.value.resume_command == resume
    assert str(excinfo.value) == (
        f"the kernel of run '{run_id}' died in cell 1 and was restarted 0 times without finishing (out of memory? "
        f"os._exit? killed?). Completed steps are checkpointed. The executed notebook is at "
        f"{tmp_path / 'doomed.resumable.ipynb'}. Find the cause, then resume the run with:\n  {resume}"
    )


def test_a_run_whose_step_runs_in_another_live_process_exits_4(tmp_path: Path) -> None:
    """While another live process runs a step of the run, execute refuses with exit 4 and names the owner;
    the parameters it was given are not recorded (a later resume would take them for the run's)."""
    nb = write_nb(tmp_path / "busy.ipynb", "print('hi')")
    store = open_store(tmp_path / ".resumable" / "store.duckdb")
    store.open_run("r1", "busy", {"n": 1})
    store.begin_step(StepRequest("r1", "load", current_owner()))  # this test process is the live owner
    store.close()
    done = cli("execute", nb.name, "--run-id", "r1", "-p", "n", "5", cwd=tmp_path)
    assert done.returncode == 4
    store = open_store(tmp_path / ".resumable" / "store.duckdb")
    assert store.get_run("r1").params == {"n": 1}  # type: ignore[union-attr]
    store.close()
    assert f"pid {os.getpid()}" in done.stderr
    assert not (tmp_path / "busy.resumable.ipynb").exists()
    # The kernel started while the run was being claimed was killed with the refusal: an orphaned one would
    # have kept the command's stderr open until it noticed its parent gone, and said so there.
    assert "Parent appears to have exited" not in done.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["missing.ipynb"], "notebook 'missing.ipynb' does not exist"),
        (
            ["ok.ipynb", "-p", "2fast", "1", "--max-restarts", "2"],
            "parameter name '2fast' is not a Python variable name",
        ),
        (["ok.ipynb", "--max-restarts", "-1"], "-1 is not in the range x>=0"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(tmp_path: Path, args: list[str], expected: str) -> None:
    """Bad arguments exit 2 before any kernel starts, saying what was wrong."""
    write_nb(tmp_path / "ok.ipynb", "print(1)")
    done = cli("execute", *args, cwd=tmp_path)
    assert done.returncode == 2
    assert expected in " ".join(done.stderr.split())


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {"params": {"fn": print}},
            "parameter 'fn' = <built-in function print> (builtin_function_or_method) cannot be written into the "
            "notebook as a Python literal (its repr is not a Python literal (SyntaxError)). Use strings, numbers, "
            "booleans, None, and lists, tuples, sets or dicts of them.",
        ),
        (
            {"run_id": "r1", "new": True},
            "run id 'r1' was given together with new=True. Pass a run id to resume or name a run, "
            "or new=True to start one, not both.",
        ),
        (
            {"run_id": "-bad"},
            "run id '-bad' is not valid. Use 1 to 128 letters, digits, '_', '-' or '.', not starting with '-' or '.'.",
        ),
        (
            {"output": "ok.ipynb"},
            "output '{tmp}/ok.ipynb' is the input notebook. Pick another path so the input stays as written.",
        ),
        (
            {"max_restarts": -1},
            "max_restarts -1 is not valid. It counts kernel restarts: give a whole number, 0 or more.",
        ),
        *[
            (
                {"timeout": bad},
                f"timeout {bad!r} is not valid. It is the longest a cell may run: give a finite number of seconds "
                "above 0, or None for no limit.",
            )
            for bad in (0, -1.0, float("nan"), float("inf"))
        ],
    ],
)
def test_bad_python_arguments_raise_notebook_input_error(
    tmp_path: Path, store_path: Path, options: dict[str, Any], expected: str
) -> None:
    """execute_notebook() refuses bad input with NotebookInputError before starting a kernel (nan and
    infinite timeouts too, which used to fail later inside nbclient)."""
    nb = write_nb(tmp_path / "ok.ipynb", "print(1)")
    if "output" in options:
        options["output"] = tmp_path / options["output"]
    with pytest.raises(resumable.NotebookInputError) as excinfo:
        resumable.execute_notebook(nb, store=store_path, progress=False, **options)
    assert str(excinfo.value) == expected.format(tmp=tmp_path)
    assert not (tmp_path / "ok.resumable.ipynb").exists()


def test_an_unknown_kernel_is_named_with_the_installed_ones(tmp_path: Path, store_path: Path) -> None:
    """--kernel with a kernel that is not installed lists the ones that are."""
    from jupyter_client.kernelspec import KernelSpecManager

    nb = write_nb(tmp_path / "ok.ipynb", "print(1)")
    with pytest.raises(resumable.NotebookInputError) as excinfo:
        resumable.execute_notebook(nb, store=store_path, progress=False, kernel="no-such-kernel")
    known = ", ".join(sorted(KernelSpecManager().find_kernel_specs()))
    assert str(excinfo.value) == (
        f"Jupyter kernel 'no-such-kernel' is not installed (installed: {known}). Pass one of them with --kernel."
    )


@pytest.mark.parametrize(
    ("cell", "problem"),
    [
        ("%%durable_step load --quiet\nx = 1", "unrecognized arguments: --quiet"),
        ("%%durable_step load --retries many\nx = 1", "argument --retries: invalid int value: 'many'"),
        ("%load_ext resumable\n%durable_run shop --rerun", "unrecognized arguments: --rerun"),
    ],
)
def test_a_magic_line_the_magic_would_refuse_is_refused_before_a_kernel_starts(
    tmp_path: Path, store_path: Path, cell: str, problem: str
) -> None:
    """Step and pipeline names are read with the magics' own parser: no flag the magics lack is accepted."""
    nb = write_nb(tmp_path / "bad.ipynb", "print(1)", cell)
    line = next(line for line in cell.splitlines() if "durable_" in line)
    with pytest.raises(resumable.NotebookInputError) as excinfo:
        resumable.execute_notebook(nb, store=store_path, progress=False)
    assert str(excinfo.value) == (
        f"magic line {line!r} in cell 1 cannot be parsed ({problem}). The magic would refuse it too: fix the line."
    )
    assert not (tmp_path / "bad.resumable.ipynb").exists()


def test_a_step_name_two_cells_share_is_refused_before_a_kernel_starts(tmp_path: Path) -> None:
    """A copied cell that kept its step name would overwrite the first cell's checkpoint on every pass:
    execute names both cells and exits 2 before anything runs (issue 12 §8)."""
    nb = write_nb(
        tmp_path / "dup.ipynb", "%load_ext resumable", "%%durable_step load\nx = 1", "%%durable_step load\nx = 2"
    )
    refused = cli("execute", nb.name, "--quiet", cwd=tmp_path)
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr.splitlines()[-1] == (
        "Error: step name 'load' is used by cell 1 and cell 2; they would overwrite each other's checkpoint, so "
        "nothing was run. Give each cell its own step name, e.g. '%%durable_step load_2' in cell 2."
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dup.ipynb"]  # no output notebook, no store


def test_a_missing_notebook_is_named(tmp_path: Path, store_path: Path) -> None:
    """A notebook path that does not exist says so and what to pass."""
    with pytest.raises(resumable.NotebookInputError) as excinfo:
        resumable.execute_notebook(tmp_path / "missing.ipynb", store=store_path, progress=False)
    assert str(excinfo.value) == (
        f"notebook '{tmp_path / 'missing.ipynb'}' does not exist or is not a file. Pass the path of an .ipynb file."
    )


def test_a_parameter_file_must_hold_a_mapping(tmp_path: Path) -> None:
    """-f with a YAML list or broken JSON is refused with what was found and what to write instead."""
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(resumable.NotebookInputError) as excinfo:
        _headless_params.collect([], tmp_path / "list.yaml")
    assert str(excinfo.value) == (
        f"parameter file '{tmp_path / 'list.yaml'}' holds a list, not a mapping. Write one 'name: value' per line, "
        "for example:\n  order_id: 42\n  region: eu"
    )
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(resumable.NotebookInputError) as excinfo:
        _headless_params.load_file(tmp_path / "bad.json")
    assert str(excinfo.value) == (
        f"parameter file '{tmp_path / 'bad.json'}' is not valid JSON "
        "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))."
    )
    with pytest.raises(resumable.NotebookInputError) as excinfo:
        _headless_params.load_file(tmp_path / "absent.yaml")
    assert str(excinfo.value) == (
        f"parameter file '{tmp_path / 'absent.yaml'}' cannot be read (No such file or directory). "
        "Pass a YAML or JSON file with -f."
    )


def test_help_documents_the_exit_codes(tmp_path: Path) -> None:
    """`resumable execute --help` lists every exit code a script may see."""
    done = cli("execute", "--help", cwd=tmp_path)
    assert done.returncode == 0
    for line in (
        "0  success",
        "1  a step or cell failed",
        "2  usage error",
        "3  kernel restarts exhausted",
        "4  the run is owned by another live process",
        "5  the run was started with other parameters",
    ):
        assert line in done.stdout


def test_progress_bar_and_summary_by_default(tmp_path: Path) -> None:
    """Without --quiet stderr shows a per-cell progress bar and a one-line summary; stdout stays clean."""
    nb = write_nb(tmp_path / "two.ipynb", "a = 1", "b = a + 1")
    done = cli("execute", nb.name, "--run-id", "r1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2/2" in done.stderr
    assert "run 'r1' of pipeline 'two': completed after 0 kernel restarts" in done.stderr
    assert "executed notebook: two.resumable.ipynb" in done.stderr
    assert done.stdout == ""


def test_parameter_values_parse_as_literals_else_strings(tmp_path: Path) -> None:
    """-p 3 is an int, -p "[1, 2]" a list, -p eu-west a string; a JSON file works like YAML."""
    (tmp_path / "p.json").write_text('{"n": 1, "tags": ["a"]}')
    params = _headless_params.collect(
        [("n", "3"), ("xs", "[1, 2]"), ("region", "eu-west"), ("flag", "True")], tmp_path / "p.json"
    )
    assert params == {"n": 3, "tags": ["a"], "xs": [1, 2], "region": "eu-west", "flag": True}


def test_a_second_execution_replaces_the_injected_cell(tmp_path: Path) -> None:
    """Executing an already executed notebook again keeps one injected-parameters cell, not two."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell("x")]
    _headless_params.inject(nb, {"x": 2})
    _headless_params.inject(nb, {"x": 3})
    assert [c.source.splitlines()[-1] for c in nb.cells] == ["x = 1", "x = 3", "x"]
    plain = nbformat.v4.new_notebook()
    plain.cells = [nbformat.v4.new_code_cell("print(x)")]
    assert _headless_params.inject(plain, {"x": 1}) == 0  # no parameters cell: injected at the top


def test_step_and_pipeline_names_are_read_from_the_magics(tmp_path: Path) -> None:
    """The pipeline comes from %durable_run NAME (else the file stem) and a cell's step from %%durable_step."""
    assert _headless.step_of("%%durable_step charge --retries 3\nx = 1") == "charge"
    assert _headless.step_of("%%durable_step --retries 3 --outputs a,b load\nx = 1") == "load"
    assert _headless.step_of("x = 1") is None
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext resumable\n%durable_run checkout --new")]
    assert _headless.pipeline_of(nb, Path("any.ipynb")) == "checkout"
    assert _headless.pipeline_of(nbformat.v4.new_notebook(), Path("my report.v2.ipynb")) == "my_report.v2"
    assert _headless.pipeline_of(nbformat.v4.new_notebook(), Path("sales.resumable.ipynb")) == "sales"
    assert _headless.pipeline_of(nbformat.v4.new_notebook(), Path(".ipynb")) == "ipynb"
    assert _headless.default_output(Path("a/b.ipynb")) == Path("a/b.resumable.ipynb")


def test_a_cell_past_the_timeout_fails_the_run_with_a_timeout_error(tmp_path: Path, store_path: Path) -> None:
    """--timeout stops a cell that runs too long and reports the timeout, not the interrupt it caused."""
    nb = write_nb(tmp_path / "slow.ipynb", "import time", "time.sleep(60)", "print('never')")
    with pytest.raises(resumable.NotebookExecutionError) as excinfo:
        resumable.execute_notebook(nb, store=store_path, timeout=1, progress=False)
    assert excinfo.value.ename == "CellTimeoutError"
    assert excinfo.value.cell_index == 1
    (run,) = open_store(store_path).list_runs()
    resume = f"resumable execute {nb} --run-id {run.run_id} --store {store_path} --timeout 1"
    assert excinfo.value.resume_command == resume
    assert str(excinfo.value) == (
        "cell 1 raised CellTimeoutError: the cell ran longer than --timeout 1 s and was stopped\n"
        "  cell 1:\n    time.sleep(60)\n"
        f"The executed notebook, with the error marked, is at {tmp_path / 'slow.resumable.ipynb'}.\n"
        f"Completed steps are checkpointed. Fix the cell, then resume with:\n  {resume}"
    )


def test_a_notebook_that_pins_its_run_id_cannot_run_as_another(tmp_path: Path, store_path: Path) -> None:
    """'%durable_run p --run-id fixed' wins in the kernel, so execute refuses a different --run-id or --new."""
    nb = write_nb(tmp_path / "pinned.ipynb", "%load_ext resumable\n%durable_run p --run-id fixed")
    for options in ({"run_id": "other"}, {"new": True}):
        with pytest.raises(resumable.NotebookInputError, match="pins its run with '%durable_run p --run-id fixed'"):
            resumable.execute_notebook(nb, store=store_path, progress=False, **options)
    assert _headless.pinned_run_id(nbformat.read(nb, as_version=4)) == "fixed"


def wait_for_pid(pid_file: Path) -> int:
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text().endswith("\n")):
        assert time.monotonic() < deadline, "the kernel never started"
        time.sleep(0.02)
    return int(pid_file.read_text())


def test_one_executor_per_run_and_ctrl_c_stops_without_a_restart(tmp_path: Path) -> None:
    """While `resumable execute` runs a run, a second one of that run exits 4 naming the first; Ctrl-C then
    stops the first with exit 130 and the resume command, without restarting its kernel."""
    nb = write_nb(
        tmp_path / "long.ipynb", "import os, time\nopen('kernel.pid', 'w').write(f'{os.getpid()}\\n')", "time.sleep(60)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESUMABLE_")}
    first = subprocess.Popen(
        [sys.executable, "-m", "resumable", "execute", nb.name, "--run-id", "r1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        kernel = wait_for_pid(tmp_path / "kernel.pid")
        second = cli("execute", nb.name, "--run-id", "r1", "--quiet", cwd=tmp_path)
        assert second.returncode == 4
        assert f"run 'r1' of pipeline 'long' is owned by another live process (pid {first.pid} " in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=60)
    assert first.returncode == 130
    assert "pass 2" not in err  # no restart
    assert "interrupted; completed steps are checkpointed. Resume the run with:" in err
    assert "resumable execute long.ipynb --run-id r1" in err
    assert not psutil.pid_exists(kernel) or psutil.Process(kernel).status() == psutil.STATUS_ZOMBIE


def test_a_headless_run_resumes_the_interactive_run_of_a_dotted_notebook(
    tmp_path: Path, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both front ends name the pipeline after the file the same way: 'sales.v2.ipynb' is 'sales.v2', so
    `resumable execute sales.v2.ipynb` resumes the run the notebook started interactively."""
    from IPython.testing import globalipapp

    from resumable._kernel_run import set_notebook_run
    from resumable._magics.magics import DurableMagics
    from resumable._store import close_all

    calls = tmp_path / "calls"
    body = f"open({str(calls)!r}, 'a').write('x')\ntotal = 42"
    nb = write_nb(tmp_path / "sales.v2.ipynb", "%load_ext resumable", f"%%durable_step load\n{body}", "print(total)")
    monkeypatch.setenv("RESUMABLE_STORE", str(store_path))
    globalipapp.start_ipython()
    ip = globalipapp.get_ipython()
    ip.run_line_magic("load_ext", "resumable")
    ip.register_magics(DurableMagics(ip, make_panel=resumable.panel))  # a fresh kernel's magics
    set_notebook_run(None)
    monkeypatch.setitem(ip.user_ns, "__session__", str(nb))
    try:
        ip.run_cell(f"%%durable_step load\n{body}").raise_error()
    finally:
        set_notebook_run(None)
    (interactive,) = open_store(store_path).list_runs()
    assert interactive.pipeline == "sales.v2"
    close_all()  # the kernel is another process: let go of the file
    result = resumable.execute_notebook(nb, store=store_path, progress=False)
    assert (result.pipeline, result.run_id) == ("sales.v2", interactive.run_id)
    assert result.steps_restored == ("load",)
    assert calls.read_text() == "x"  # the body ran once, interactively


def test_a_step_refused_in_the_kernel_because_another_process_owns_the_run_is_owned(tmp_path: Path) -> None:
    """RunOwnedError raised inside the kernel is recognised by its class: outcome 'owned', exit 4.

    The holder keeps its step running until the test creates 'release' (however long a loaded
    machine makes the run), not for a fixed time that could run out before the kernel's step.
    """
    hold = (
        "import os, sys, time; from resumable._store import open_store; from resumable._store.base import StepRequest; "
        "from resumable._owner import current_owner; s = open_store(sys.argv[1]); "
        "s.begin_step(StepRequest(sys.argv[2], 'other', current_owner())); s.close(); "
        "open('holder.pid', 'w').write(str(current_owner().pid)); print('holding', flush=True); "
        "deadline = time.monotonic() + 600\n"
        "while not os.path.exists('release') and time.monotonic() < deadline: time.sleep(0.01)"
    )
    start_holder = (
        "import os, subprocess, sys\n"
        f"p = subprocess.Popen([sys.executable, '-c', {hold!r}, os.environ['RESUMABLE_STORE'], "
        "os.environ['RESUMABLE_RUN_ID']], stdout=subprocess.PIPE, text=True)\n"
        "assert p.stdout.readline().strip() == 'holding'"
    )
    nb = write_nb(tmp_path / "contended.ipynb", start_holder, "%load_ext resumable", "%%durable_step load\nx = 1")
    try:
        done = cli("execute", nb.name, "--run-id", "r1", "--json", "--quiet", cwd=tmp_path)
        assert done.returncode == 4, done.stderr
        summary = json.loads(done.stdout)
        assert summary["outcome"] == "owned"
        assert "RunOwnedError: run 'r1' of pipeline 'contended' is owned by another live process" in summary["error"]
    finally:
        pid_file = tmp_path / "holder.pid"
        if pid_file.exists():  # still holding: it waits for 'release', created only now
            # unless the kernel's shutdown outran its grace and killed the kernel's process group with it
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
        (tmp_path / "release").touch()


def test_a_cell_failing_with_a_usage_error_reports_that_error_not_a_timeout(tmp_path: Path) -> None:
    """IPython reports an unknown magic only in the execute reply, with no error output: the run still names it."""
    nb = write_nb(tmp_path / "magic.ipynb", "x = 1", "%nosuchmagic", "print('never')")
    done = cli("execute", nb.name, "--run-id", "m1", "--quiet", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == (
        "error: cell 1 raised UsageError: Line magic function `%nosuchmagic` not found.\n"
        "  cell 1:\n"
        "    %nosuchmagic\n"
        "The executed notebook, with the error marked, is at magic.resumable.ipynb.\n"
        "Completed steps are checkpointed. Fix the cell, then resume with:\n"
        "  resumable execute magic.ipynb --run-id m1\n"
    )
    out = nbformat.read(tmp_path / "magic.resumable.ipynb", as_version=4)
    assert "UsageError: Line magic function `%nosuchmagic` not found." in out.cells[0].source


def test_a_failure_caused_by_a_parameter_gives_a_resume_command_that_corrects_it(tmp_path: Path) -> None:
    """After '-p limit abc' fails a step, the message offers the resume command with '-p limit VALUE'; run with a
    good value, it completes the run (a resume without -p would reuse 'abc' and fail the same way)."""
    nb = write_nb(
        tmp_path / "limits.ipynb",
        ("limit = 10", ["parameters"]),
        "%load_ext resumable",
        "%%durable_step parse\nn = int(limit)\nprint('n', n)",
    )
    failed = cli("execute", nb.name, "--run-id", "bad-1", "-p", "limit", "abc", "--quiet", cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stderr == (
        "error: step 'parse' (cell 3) raised ValueError: invalid literal for int() with base 10: 'abc'\n"
        "  cell 3:\n"
        "    %%durable_step parse\n"
        "    n = int(limit)\n"
        "    print('n', n)\n"
        "The executed notebook, with the error marked, is at limits.resumable.ipynb.\n"
        "Completed steps are checkpointed. Fix the cell, then resume with:\n"
        "  resumable execute limits.ipynb --run-id bad-1\n"
        "If a parameter caused the error, resume with it corrected (the run keeps limit='abc' until then; the steps "
        "that read a changed parameter run again):\n"
        "  resumable execute limits.ipynb --run-id bad-1 -p limit VALUE\n"
    )
    hinted = failed.stderr.splitlines()[-1].split()
    assert hinted[-1] == "VALUE"
    fixed = cli(*hinted[1:-1], "12", "--quiet", cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    out = nbformat.read(tmp_path / "limits.resumable.ipynb", as_version=4)
    assert outputs_text(out.cells[3]).endswith("n 12\n")
    store = open_store(tmp_path / ".resumable" / "store.duckdb")
    run = store.get_run("bad-1")
    assert run is not None and run.params == {"limit": 12}
    store.close()


def test_a_run_that_stops_early_names_the_steps_it_did_not_reach(tmp_path: Path) -> None:
    """The summary never reads as done while a step of the notebook has not run: it lists the steps not reached."""
    nb = write_nb(
        tmp_path / "three.ipynb",
        "%load_ext resumable",
        "%%durable_step load\nrows = 3",
        "%%durable_step parse\nraise ValueError('bad row')",
        "%%durable_step email\nsent = True",
    )
    done = cli("execute", nb.name, "--run-id", "r1", cwd=tmp_path)
    assert done.returncode == 1
    assert "steps executed: load; restored: none; not reached: email" in done.stderr  # 'parse' failed
    recorded = nbformat.read(tmp_path / "three.resumable.ipynb", as_version=4).metadata["resumable"]
    assert recorded["steps_not_reached"] == ["email"]  # as --json prints it (ExecutionResult.steps_not_reached)
