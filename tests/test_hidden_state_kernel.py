"""Real kernels: a notebook SIGKILLed mid-run and resumed by `resumable execute` ends as an uninterrupted run does.

The notebook exercises every kind of hidden state at once: a setup step with `%matplotlib inline`,
`%load_ext autoreload`, `plt.style.use`, `pd.set_option`, `np.random.seed` and a class that
`eval`s notebook names; a generator advanced by method calls; figure parts drawn on in later
steps; a numpy view written through. The kernel kills itself (SIGKILL) at a chosen cell once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from notebook_files import write_nb

pytestmark = pytest.mark.timeout(240)

KILL = (
    "import os, pathlib, signal\nif not pathlib.Path('killed').exists():\n"
    "    pathlib.Path('killed').touch()\n    os.kill(os.getpid(), signal.SIGKILL)"
)
CELLS = [
    "%load_ext resumable\n%durable_run hidden\nimport random\nimport numpy as np\nimport pandas as pd",
    "%%durable_step setup\n%matplotlib inline\n%load_ext autoreload\nimport matplotlib.pyplot as plt\n"
    "plt.style.use('ggplot')\npd.set_option('display.max_rows', 5)\nnp.random.seed(1)\nrandom.seed(2)\n"
    "rng = np.random.default_rng(0)\nfig, ax = plt.subplots(1, 2)\nplt.close(fig)\nx = np.arange(6)\n"
    "class Show:\n    def __call__(self, name):\n        return eval(name)\nshow = Show()",
    "%%durable_step first\na = rng.normal()\nb = np.random.rand()\nr1 = random.random()\nx_sub = x[:3]\n"
    "ax[0].plot([1, 2, 3]);",
    "%autoreload 2",
    "%%durable_step second\nc = rng.normal()\nd = np.random.rand()\nr2 = random.random()\nx_sub[0] = 99\n"
    "im = ax[1].imshow([[1, 2], [3, 4]])\nfig.colorbar(im, ax=ax[1]);",
    "%%durable_step timed\n%%time\ntotal = 0\nfor i in range(4):\n    total += i",
    "print(a, b, r1, c, d, r2, total)\nprint(x.tolist(), x_sub.tolist(), np.shares_memory(x, x_sub))\n"
    "print(len(fig.axes), [len(k.lines) for k in fig.axes], ax[1] is fig.axes[1])\n"
    "print(pd.get_option('display.max_rows'), plt.rcParams['axes.facecolor'], show('a + 1') == a + 1)\n"
    "print(rng.normal(), np.random.rand(), random.random())",
]


def _shown(cell: nbformat.NotebookNode) -> list[str]:
    """What a cell showed, without resumable's own lines (which say whether it restored).

    Stream chunks are joined first: the kernel may split one print into several outputs.
    """
    merged: list[tuple[str, str]] = []
    for output in cell.get("outputs", []):
        kind = output["output_type"] + ":" + output.get("name", "")
        text = output.get("text") or output.get("data", {}).get("text/plain", "")
        if merged and merged[-1][0] == kind and kind.startswith("stream"):
            merged[-1] = (kind, merged[-1][1] + text)
        else:
            merged.append((kind, text))
    out = []
    for kind, text in merged:
        kept = [line for line in text.splitlines() if not line.startswith(("resumable: ", "↺ restored step"))]
        if kept and "CPU times" not in text:  # %%time's own figures differ between any two runs
            out.append(f"{kind} " + "\n".join(kept))
    return out


def execute(folder: Path, kill_before: int | None) -> tuple[list[list[str]], dict[str, object]]:
    """Run the notebook headless in ``folder``; the kernel is killed once before cell ``kill_before``.

    Returns what each cell of the notebook (not the kill cell) showed, and the run's summary.
    """
    folder.mkdir()
    cells = list(CELLS)
    if kill_before is not None:
        cells.insert(kill_before, KILL)
    nb = write_nb(folder / "hidden.ipynb", *cells)
    done = subprocess.run(
        [sys.executable, "-m", "resumable", "execute", nb.name, "--new", "--quiet", "--json"],
        cwd=folder, env={k: v for k, v in os.environ.items() if not k.startswith("RESUMABLE_")},
        capture_output=True, text=True, timeout=200, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    executed = nbformat.read(folder / "hidden.resumable.ipynb", as_version=4)
    shown = [_shown(c) for c in executed.cells if c.source != KILL]
    return shown, json.loads(done.stdout)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    """The uninterrupted run, once for every trial."""
    shown, summary = execute(tmp_path_factory.mktemp("plain") / "nb", None)
    assert summary["restarts"] == 0
    return shown


@pytest.mark.parametrize("kill_before", [2, 4, 5])
def test_a_killed_and_resumed_notebook_ends_as_an_uninterrupted_one(
    tmp_path: Path, plain: list[list[str]], kill_before: int
) -> None:
    """Killed before cell 2, 4 or 5 and resumed: the same draws, settings, figure, view and class behaviour."""
    resumed, summary = execute(tmp_path / "killed", kill_before)
    assert summary["restarts"] == 1
    assert resumed == plain
    lines = plain[-1][0].splitlines()
    assert lines[1] == "[99, 1, 2, 3, 4, 5] [99, 1, 2] True"
    assert lines[2].startswith("3 [1, 0, 0] True")
    assert lines[3] == "5 #E5E5E5 True"
