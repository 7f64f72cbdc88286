"""The first hour's notebook edges in a real Jupyter kernel (issue 12 §8): what ipykernel shows.

DuckDB only, on purpose: what this module checks (a step awaiting on the kernel's own event loop,
the traceback a failing step shows from its cell) is the kernel's and the magics', and the store
only records a completion and a failure, which the store-level tests and test_front_ends_on_postgres
(a real IPython shell on a server store) check on PostgreSQL. The kernel tests where a server store
could behave differently run on both: test_notebook_kernel (restore after a kernel death, the
effect's key kept, the latest run resumed) and test_runner_inputs (papermill's parameters, a held effect).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from kernel_sockets import kernel_config
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # a real kernel: seconds

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_await_on_the_kernel_s_loop_and_a_failure_shown_from_the_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_sockets: Path
) -> None:
    """A step awaits a future an earlier cell made on the kernel's loop; a failing step shows its own cell."""
    monkeypatch.setenv("RESUMABLE_STORE", str(tmp_path / "store.duckdb"))
    monkeypatch.setenv("RESUMABLE_RUN_ID", "k1")
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    cells = [
        "%load_ext resumable",
        "import asyncio\nloop = asyncio.get_running_loop()\nfut = loop.create_future()",
        "%%durable_step fetch\nloop.call_soon(fut.set_result, 5)\nv = await fut\nprint('got', v)\nv * 2",
        "%%durable_step boom\nawait asyncio.sleep(0)\nx = 1\n1 / 0",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(
        nb, timeout=60, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(tmp_path)}},
        config=kernel_config(kernel_sockets),
    ).execute()  # fmt: skip
    fetch, boom = nb.cells[2], nb.cells[3]
    # Joined: a plain nbclient keeps each piece the kernel flushed as an output of its own.
    assert "".join(o.text for o in fetch.outputs if o.output_type == "stream" and o.name == "stdout") == (
        "resumable: started run 'k1' of pipeline 'default' (RESUMABLE_RUN_ID)\ngot 5\n"
    )
    assert [o.data["text/plain"] for o in fetch.outputs if o.output_type == "execute_result"] == ["10"]
    (error,) = [o for o in boom.outputs if o.output_type == "error"]
    assert ANSI.sub("", "\n".join(error.traceback)) == (
        "---------------------------------------------------------------------------\n"
        "ZeroDivisionError                         Traceback (most recent call last)\n"
        f"Cell In[{boom.execution_count}], line 3\n"
        "      1 await asyncio.sleep(0)\n"
        "      2 x = 1\n"
        "----> 3 1 / 0\n"
        "\n"
        "ZeroDivisionError: division by zero"
    )
