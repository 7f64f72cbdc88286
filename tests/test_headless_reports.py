"""What `resumable execute` says each step did, whether the kernel reports it or only the store knows."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from notebook_files import write_nb

import resumable
from resumable import _step_report

pytestmark = pytest.mark.timeout(120)

# A cell that makes the kernel's reports go nowhere, as in a kernel whose resumable does not report.
SILENCED = "import resumable._step_report as _r\n_r.send = lambda *args, **kwargs: None"
FORGED = (
    "from IPython.display import display\n"
    f"display({{{_step_report.MIME!r}: {{'token': 'forged', 'run': 'r1', 'step': 'made', 'status': 'restored'}}}}, "
    "raw=True)\nprint('plain cell')"
)
STEPS = (
    "%load_ext resumable",
    "%%durable_step made\nx = 41\nprint('made x')",
    FORGED,
    # A step of the Python API called from a plain cell, and a step cell that fails once, then retries.
    "pipe = resumable.Pipeline('reports')\nwith pipe.run() as run:\n    y = run.step('api_step', lambda: x + 1)",
    "%%durable_step flaky --retries 1 --backoff 0\n"
    "import pathlib\nif not pathlib.Path('tried').exists():\n    pathlib.Path('tried').write_text('x')\n"
    "    raise ConnectionError('first attempt')\nz = y",
)


def _no_report_anywhere(path: Path) -> None:
    """Reports are messages to the executor: none is an output of the executed notebook."""
    outputs = [o for c in nbformat.read(path, as_version=4).cells for o in c.get("outputs", [])]
    assert outputs
    assert _step_report.MIME not in json.dumps(outputs)


@pytest.mark.parametrize("reporting", [True, False], ids=["kernel reports", "store only"])
def test_executed_and_restored_steps_are_named_alike_with_or_without_the_kernels_reports(
    tmp_path: Path, store_path: Path, reporting: bool
) -> None:
    """Executed (a retried step and a Python-API step from a plain cell included), then restored: the same
    summary and cell metadata whether the kernel reports or the executor reads the store; a forged report
    (another token) changes nothing, and no report reaches the executed notebook."""
    cells = ("import resumable", *STEPS) if reporting else (f"import resumable\n{SILENCED}", *STEPS)
    nb = write_nb(tmp_path / "reports.ipynb", *cells)
    out = tmp_path / "reports.resumable.ipynb"
    first = resumable.execute_notebook(nb, run_id="r1", store=store_path, progress=False)
    assert (first.steps_executed, first.steps_restored) == (("made", "api_step", "flaky"), ())
    executed = nbformat.read(out, as_version=4)
    found = [c.metadata.get("resumable", {}).get("steps") for c in executed.cells]
    # The API step's run is released at the end of its cell, which writes what the group commit held back,
    # so the store shows it in its own cell as the kernel's report does.
    assert found == [None, None, {"made": "executed"}, None, {"api_step": "executed"}, {"flaky": "executed"}]
    assert executed.cells[3].outputs == [{"output_type": "stream", "name": "stdout", "text": "plain cell\n"}]
    _no_report_anywhere(out)
    again = resumable.execute_notebook(nb, run_id="r1", store=store_path, progress=False)
    assert (again.steps_executed, again.steps_restored) == ((), ("made", "flaky"))  # the API step restores unlisted
    restored = nbformat.read(out, as_version=4)
    assert restored.cells[2].metadata["resumable"] == {"steps": {"made": "restored"}}
    assert "made x" in "".join(o.get("text", "") for o in restored.cells[2].outputs)  # the recorded output
    _no_report_anywhere(out)
    assert json.loads(json.dumps(again.to_json()))["steps_restored"] == ["made", "flaky"]


def test_the_store_knows_a_headless_kernel_by_the_report_token() -> None:
    """The store's package, below the reports in the layers, names the reports' variable itself: the same one."""
    from resumable._store import script_import

    assert script_import.HEADLESS_ENV == _step_report.ENV
