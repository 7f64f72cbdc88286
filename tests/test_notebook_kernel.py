"""The quickstart notebook in real kernels: its third step kills the kernel, the next pass resumes.

Driven three ways users run notebooks: nbclient in-process, ``jupyter nbconvert --execute`` (a
subprocess) and papermill (its Python API, what its command line calls). Every pass gets a fresh
kernel; what survives is the store.

Which tests run on a PostgreSQL server store too (``store_location``), and why only these: a server
store differs from the file in where a kernel's steps go and how they come back, so the tests that
say something about that run on both. The nbclient test restores a DataFrame, a float and a shown
table in a fresh kernel after the kernel died inside an effect step, whose retry keeps the same
idempotency key (the key generation the store keeps); the papermill test has ``%durable_run``
resume the latest run of the pipeline, which the store picks by creation time. The nbconvert test
repeats the nbclient test's store work through another driver, and the quickstart edit's held
charge is what ``resumable execute`` (a CLI start and three kernels) shows: held effects on a
server store are covered by test_runner_inputs' papermill test (a changed parameter holds the
effect) and test_front_ends_on_postgres (in a real IPython shell), so these two stay on the file,
keeping the suite inside its time budget.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from kernel_sockets import kernel_argv, kernel_config
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from resumable import StepState
from resumable._keys import idempotency_key
from resumable._store import open_store

pytestmark = pytest.mark.slow  # real kernels: seconds each, still run by default

QUICKSTART = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"
HELD_CHARGE = (
    "step 'charge' has side effects and its inputs changed ('total'); it was not run again. "
    "To do it again: %%durable_step charge --retries 2 --rerun\n"
)
CHECK = 'print("CHECK", type(orders).__name__, orders.to_json(), repr(total))'


def kernel_env(store: Path | str, run_id: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESUMABLE_", "JPY_"))}
    env["RESUMABLE_STORE"] = str(store)
    if run_id is not None:
        env["RESUMABLE_RUN_ID"] = run_id
    return env


def cell_index(nb: Any, prefix: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.source.startswith(prefix))


def text_of(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def assert_resumed(nb: Any, workdir: Path, store: Path | str, run_id: str | None = None) -> None:
    """What a user sees after the second pass: restores with their output, each effect once, under its first key."""
    load, total = nb.cells[cell_index(nb, "%%durable_step load")], nb.cells[cell_index(nb, "%%durable_step total")]
    assert "↺ restored step 'load' from checkpoint of " in text_of(load)
    assert "loaded 3 order lines" in text_of(load)
    html = [o for o in load.outputs if o.output_type == "execute_result"]
    assert len(html) == 1 and "<table" in html[0].data["text/html"]
    assert "↺ restored step 'total'" in text_of(total) and "total: 48.00" in text_of(total)
    assert "charged 48.00" in text_of(nb.cells[cell_index(nb, "%%durable_step charge")])
    effects = (workdir / "quickstart-effects.log").read_text().splitlines()
    store_ = open_store(str(store))
    run = run_id or store_.list_runs("quickstart")[0].run_id
    # Steps 1 and 2 ran once; the charge, retried after the kernel died in it, kept its first key.
    assert effects == ["load", "total", f"charge 48.00 key={idempotency_key('quickstart', run, 'charge', None)}"]
    states = {s.step: (s.state, s.attempts) for s in store_.list_steps(run)}
    assert states == {
        "load": (StepState.COMPLETED, 1),
        "total": (StepState.COMPLETED, 1),
        "charge": (StepState.COMPLETED, 2),
    }
    store_.close()


def test_nbclient_kernel_death_then_resume(tmp_path: Path, store_location: str, kernel_sockets: Path) -> None:
    """Kernel killed in step 3; a fresh kernel restores steps 1-2 (equal values, output shown) and finishes."""
    store = store_location
    nb = nbformat.read(QUICKSTART, as_version=4)
    nb.cells.insert(cell_index(nb, "%%durable_step total") + 1, nbformat.v4.new_code_cell(CHECK))
    check = cell_index(nb, CHECK)
    passes = []
    for expect_death in (True, False):
        run = copy.deepcopy(nb)
        client = NotebookClient(
            run, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
            config=kernel_config(kernel_sockets),
        )  # fmt: skip
        client.km = client.create_kernel_manager()
        if expect_death:
            with pytest.raises(DeadKernelError):
                client.execute(env=kernel_env(store, "qs-1"))
        else:
            client.execute(env=kernel_env(store, "qs-1"))
        passes.append(run)
    first, second = (text_of(p.cells[check]) for p in passes)
    assert first.startswith("CHECK DataFrame {")
    assert second == first  # the restored DataFrame and float equal what the first kernel computed
    assert_resumed(passes[1], tmp_path, store, "qs-1")


def run_cli(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False)


def test_nbconvert_execute_resumes(tmp_path: Path, kernel_sockets: Path) -> None:
    """`jupyter nbconvert --execute` fails on the crash, and the same command run again completes the run."""
    shutil.copy(QUICKSTART, tmp_path / "quickstart.ipynb")
    env = kernel_env(tmp_path / "store.duckdb", "nbc-1")
    argv = [sys.executable, "-m", "jupyter", "nbconvert", "--execute", "--to", "notebook", "--output", "out.ipynb"]
    argv += [*kernel_argv(kernel_sockets), "quickstart.ipynb"]
    crashed = run_cli(argv, tmp_path, env)
    assert crashed.returncode != 0
    assert "DeadKernelError" in crashed.stderr or "Kernel died" in crashed.stderr
    resumed = run_cli(argv, tmp_path, env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_resumed(nbformat.read(tmp_path / "out.ipynb", as_version=4), tmp_path, tmp_path / "store.duckdb", "nbc-1")


def test_papermill_resumes_latest_run(
    tmp_path: Path, store_location: str, monkeypatch: pytest.MonkeyPatch, kernel_sockets: Path
) -> None:
    """papermill twice, without RESUMABLE_RUN_ID: %durable_run resumes the latest run of the pipeline."""
    import papermill

    monkeypatch.setenv("RESUMABLE_STORE", store_location)  # the kernel papermill starts inherits it
    for name in [k for k in os.environ if k.startswith("JPY_")]:
        monkeypatch.delenv(name)
    out_path = tmp_path / "out.ipynb"
    options: dict[str, Any] = {"cwd": str(tmp_path), "progress_bar": False, "config": kernel_config(kernel_sockets)}
    with pytest.raises(DeadKernelError):
        papermill.execute_notebook(str(QUICKSTART), str(out_path), **options)
    papermill.execute_notebook(str(QUICKSTART), str(out_path), **options)
    out = nbformat.read(out_path, as_version=4)
    assert "resumed run" in text_of(out.cells[cell_index(out, "%durable_run")])
    assert_resumed(out, tmp_path, store_location)


def streams_of(cell: Any) -> tuple[str, str]:
    out = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stdout")
    return out, "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stderr")


def test_the_quickstart_edit_of_load_holds_the_charge(tmp_path: Path) -> None:
    """The quickstart's suggested edit (tea qty 2 → 3, Run All again): load and total run again and say why,
    the charge is held with the one-line message the notebook shows, and the card is charged once."""
    shutil.copy(QUICKSTART, tmp_path / "quickstart.ipynb")
    env = kernel_env(tmp_path / "store.duckdb", None)
    argv = [sys.executable, "-m", "resumable", "execute", "quickstart.ipynb", "--run-id", "qs", "--quiet"]
    first = run_cli(argv, tmp_path, env)
    assert first.returncode == 0, first.stderr[-2000:]  # the crash in step 3, then the resume
    nb = nbformat.read(tmp_path / "quickstart.ipynb", as_version=4)
    load = nb.cells[cell_index(nb, "%%durable_step load")]
    assert '"qty": [2, 6, 1]' in load.source
    load.source = load.source.replace('"qty": [2, 6, 1]', '"qty": [3, 6, 1]')
    nbformat.write(nb, tmp_path / "quickstart.ipynb")
    edited = run_cli(argv, tmp_path, env)
    assert edited.returncode == 0, edited.stderr[-2000:]
    out = nbformat.read(tmp_path / "quickstart.resumable.ipynb", as_version=4)
    load_out, _ = streams_of(out.cells[cell_index(out, "%%durable_step load")])
    assert load_out == (
        "↻ step 'load' runs again: its source changed\n"
        "resumable: step 'load' runs again, so 'total' will run again when reached (stale)\nloaded 3 order lines\n"
    )
    total_out, _ = streams_of(out.cells[cell_index(out, "%%durable_step total")])
    assert total_out.splitlines()[-1] == "total: 52.50"
    charge_out, charge_err = streams_of(out.cells[cell_index(out, "%%durable_step charge")])
    assert charge_out.startswith("↺ restored step 'charge' from checkpoint of ")
    assert charge_out.endswith("charged 48.00\n")  # the receipt of the charge that happened
    assert charge_err == HELD_CHARGE
    assert HELD_CHARGE.strip() in "".join(c.source for c in nb.cells if c.cell_type == "markdown").replace("\n", " ")
    effects = (tmp_path / "quickstart-effects.log").read_text().splitlines()
    assert [e.split()[0] for e in effects] == ["load", "total", "charge", "load", "total"]  # one charge
