"""A changed parameter under every notebook runner: its readers execute again and say why, a completed
effect is held, and an unchanged parameter restores everything. Real kernels, started by papermill and
`jupyter nbconvert --execute` as subprocesses (`resumable execute` is covered in test_headless.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from notebook_files import write_nb

pytestmark = pytest.mark.slow  # real kernels: seconds each, still run by default

PARAMETERS = ('region = "eu"', ["parameters"])
CELLS = [
    "%load_ext resumable\n%durable_run report",
    "%%durable_step summary\nline = f'published {region}'\nprint(line)",
    "%%durable_step publish --effect\nopen('published.log', 'a').write(line + '\\n')\nsent = line",
    "print('sent:', sent)",
]


def env_for(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESUMABLE_", "JPY_"))}
    env["RESUMABLE_STORE"] = str(tmp_path / "store.duckdb")
    env["RESUMABLE_RUN_ID"] = "nightly"
    return env


def run(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def streams(cell: Any) -> tuple[str, str]:
    """A cell's stdout and stderr text."""
    out = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")
    err = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stderr")
    return out, err


def by_source(nb: Any, prefix: str) -> Any:
    return next(c for c in nb.cells if c.source.startswith(prefix))


HELD = (
    "step 'publish' has side effects and its inputs changed ('line'); it was not run again. "
    "To do it again: %%durable_step publish --effect --rerun\n"
)


def assert_second_pass(nb: Any, tmp_path: Path, old: str, new: str) -> None:
    out, _ = streams(by_source(nb, "%%durable_step summary"))
    assert out == f"↻ step 'summary' runs again: 'region' changed ('{old}' → '{new}')\npublished {new}\n"
    publish_out, publish_err = streams(by_source(nb, "%%durable_step publish"))
    assert publish_out.startswith("↺ restored step 'publish' from checkpoint of ")
    assert publish_err == HELD
    assert streams(by_source(nb, "print('sent:'"))[0] == f"sent: published {old}\n"
    assert (tmp_path / "published.log").read_text() == f"published {old}\n"  # the effect happened once


def test_papermill_with_a_changed_parameter_reruns_its_reader_and_holds_the_effect(tmp_path: Path) -> None:
    """`papermill -p region eu`, then `-p region us` on the same run: no "published eu" restored as current."""
    nb = write_nb(tmp_path / "report.ipynb", PARAMETERS, *CELLS)
    argv = [sys.executable, "-m", "papermill", str(nb), str(tmp_path / "out.ipynb"), "--cwd", str(tmp_path)]
    run([*argv, "-p", "region", "eu"], tmp_path)
    run([*argv, "-p", "region", "us"], tmp_path)
    assert_second_pass(nbformat.read(tmp_path / "out.ipynb", as_version=4), tmp_path, "eu", "us")
    run([*argv, "-p", "region", "us"], tmp_path)
    again = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    out, _ = streams(by_source(again, "%%durable_step summary"))
    assert out.startswith("↺ restored step 'summary' from checkpoint of ") and out.endswith("published us\n")
    assert streams(by_source(again, "%%durable_step publish"))[1] == HELD  # still held: it read 'eu'


def test_nbconvert_after_an_edited_parameters_cell_reruns_its_reader_and_holds_the_effect(tmp_path: Path) -> None:
    """The parameters cell edited by hand between two `jupyter nbconvert --execute` runs of one run id."""
    nb_path = write_nb(tmp_path / "report.ipynb", PARAMETERS, *CELLS)
    argv = [sys.executable, "-m", "jupyter", "nbconvert", "--execute", "--to", "notebook", "--output", "out.ipynb"]
    run([*argv, nb_path.name], tmp_path)
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells[0].source = 'region = "us"'
    nbformat.write(nb, nb_path)
    run([*argv, nb_path.name], tmp_path)
    assert_second_pass(nbformat.read(tmp_path / "out.ipynb", as_version=4), tmp_path, "eu", "us")
