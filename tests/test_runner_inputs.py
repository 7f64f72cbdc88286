"""A changed parameter under every notebook runner: its readers execute again and say why, a completed
effect is held, and an unchanged parameter restores everything. Real kernels, started by papermill (its
Python API), and by `jupyter nbconvert --execute` and a JupyterLab server as subprocesses (`resumable
execute` is covered in test_headless.py). The papermill test runs on a PostgreSQL server store too: it
is the one of these where the store decides (a reader executed again, an effect held, across kernels);
the other two drive the same decisions through other front ends."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_lab import start_lab
from kernel_sockets import kernel_argv, kernel_config
from notebook_files import write_nb

from resumable._store import open_store

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


def test_papermill_with_a_changed_parameter_reruns_its_reader_and_holds_the_effect(
    tmp_path: Path, store_location: str, monkeypatch: pytest.MonkeyPatch, kernel_sockets: Path
) -> None:
    """papermill with `region` 'eu', then 'us' on the same run: no "published eu" restored as current.

    On both stores: the decision to execute the reader again and to hold the effect is the store's
    (the inputs it recorded, its effect marks and key generations).
    Driven through papermill's Python API (what its command line calls), which spares two
    interpreters per pass; the kernels are real and new each pass.
    """
    import papermill

    nb = write_nb(tmp_path / "report.ipynb", PARAMETERS, *CELLS)
    for name, value in env_for(tmp_path).items():
        if name.startswith("RESUMABLE_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("RESUMABLE_STORE", store_location)  # the kernels papermill starts inherit it
    for name in [k for k in os.environ if k.startswith("JPY_")]:
        monkeypatch.delenv(name)

    def run_with(region: str) -> Any:
        out = tmp_path / "out.ipynb"
        papermill.execute_notebook(
            str(nb), str(out), parameters={"region": region}, cwd=str(tmp_path), progress_bar=False,
            config=kernel_config(kernel_sockets),
        )  # fmt: skip
        return nbformat.read(out, as_version=4)

    run_with("eu")
    assert_second_pass(run_with("us"), tmp_path, "eu", "us")
    again = run_with("us")
    out, _ = streams(by_source(again, "%%durable_step summary"))
    assert out.startswith("↺ restored step 'summary' from checkpoint of ") and out.endswith("published us\n")
    assert streams(by_source(again, "%%durable_step publish"))[1] == HELD  # still held: it read 'eu'
    store = open_store(store_location)
    assert [(s.step, s.state.value, s.executions) for s in store.list_steps("nightly")] == [
        ("summary", "completed", 2),
        ("publish", "completed", 1),
    ]
    # papermill's cell ran before `%load_ext resumable`; the parameters are recorded all the same.
    run = store.get_run("nightly")
    assert run is not None and run.params == {"region": "us"}
    store.close()


def test_nbconvert_after_an_edited_parameters_cell_reruns_its_reader_and_holds_the_effect(
    tmp_path: Path, kernel_sockets: Path
) -> None:
    """The parameters cell edited by hand between two `jupyter nbconvert --execute` runs of one run id."""
    nb_path = write_nb(tmp_path / "report.ipynb", PARAMETERS, *CELLS)
    argv = [sys.executable, "-m", "jupyter", "nbconvert", "--execute", "--to", "notebook", "--output", "out.ipynb"]
    argv += kernel_argv(kernel_sockets)
    run([*argv, nb_path.name], tmp_path)
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells[0].source = 'region = "us"'
    nbformat.write(nb, nb_path)
    run([*argv, nb_path.name], tmp_path)
    assert_second_pass(nbformat.read(tmp_path / "out.ipynb", as_version=4), tmp_path, "eu", "us")


class LabServer:
    """JupyterLab's server (``jupyter_lab.py``), driven as its front end drives it:
    a session made over REST, cells sent as ``execute_request`` messages on the kernel's websocket."""

    def __init__(self, root: Path, env: dict[str, str], sockets: Path) -> None:
        self.lab = start_lab(root, env, root.parent / "jupyterlab.log", sockets)
        self.port, self.token, self.url = self.lab.port, self.lab.token, self.lab.url

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}{path}", data=data, method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as reply:
            text = reply.read()
        return json.loads(text) if text else None

    def run_notebook(self, nb_path: Path) -> list[tuple[str, str]]:
        """Open a session on the notebook (a new kernel), run every code cell in order, close the session.

        Returns each cell's (stdout, stderr); a cell that raises stops the run, as Run All does.
        """
        import websocket

        nb = nbformat.read(nb_path, as_version=4)
        session = self.api("POST", "/api/sessions", {
            "path": nb_path.name, "name": nb_path.name, "type": "notebook", "kernel": {"name": "python3"},
        })  # fmt: skip
        kernel_id = session["kernel"]["id"]
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels?session_id={session['id']}",
            header=[f"Authorization: token {self.token}"], timeout=120,
        )  # fmt: skip
        outputs = []
        try:
            for cell in nb.cells:
                if cell.cell_type != "code":
                    continue
                out, err, status = self._execute(ws, session["id"], cell)
                outputs.append((out, err))
                assert status == "ok", f"cell {cell.source[:40]!r} failed: {err}"
        finally:
            ws.close()
            self.api("DELETE", f"/api/sessions/{session['id']}")
        return outputs

    @staticmethod
    def _execute(ws: Any, session: str, cell: Any) -> tuple[str, str, str]:
        msg_id = secrets.token_hex(8)
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": session, "username": "lab",
                       "version": "5.3", "date": ""},
            "parent_header": {}, "channel": "shell", "buffers": [],
            "metadata": {"cellId": cell.get("id", msg_id), "deletedCells": [], "recordTiming": False},
            "content": {"code": cell.source, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))  # fmt: skip
        streams = {"stdout": "", "stderr": ""}
        status, idle = None, False
        while status is None or not idle:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                streams[msg["content"]["name"]] += msg["content"]["text"]
            elif kind == "error":
                streams["stderr"] += f"{msg['content']['ename']}: {msg['content']['evalue']}"
            elif kind == "execute_reply":
                status = msg["content"]["status"]
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
        return streams["stdout"], streams["stderr"], status

    def close(self) -> None:
        self.lab.stop()


def test_jupyterlab_with_a_changed_parameter_reruns_its_reader_and_holds_the_effect(
    tmp_path: Path, kernel_sockets: Path
) -> None:
    """Run All in JupyterLab (a real server, a new kernel each time) on one run: the same parameter restores
    every step; the parameters cell edited from 'eu' to 'us' re-runs the reader and holds the effect."""
    root = tmp_path / "root"
    root.mkdir()
    nb_path = write_nb(root / "report.ipynb", PARAMETERS, *CELLS)
    env = env_for(tmp_path)
    env.update(JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"), IPYTHONDIR=str(tmp_path / "ipython"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"))  # fmt: skip
    lab = LabServer(root, env, kernel_sockets)
    try:
        first = lab.run_notebook(nb_path)
        assert first[2] == ("published eu\n", "")
        same = lab.run_notebook(nb_path)
        for out, err in same[2:4]:
            assert out.startswith("↺ restored step '") and err == ""
        assert same[2][0].endswith("published eu\n") and same[4] == ("sent: published eu\n", "")
        nb = nbformat.read(nb_path, as_version=4)
        nb.cells[0].source = 'region = "us"'
        nbformat.write(nb, nb_path)
        changed = lab.run_notebook(nb_path)
    finally:
        lab.close()
    assert changed[2] == ("↻ step 'summary' runs again: 'region' changed ('eu' → 'us')\npublished us\n", "")
    assert changed[3][0].startswith("↺ restored step 'publish' from checkpoint of ")
    assert changed[3][1] == HELD
    assert changed[4] == ("sent: published eu\n", "")
    assert (root / "published.log").read_text() == "published eu\n"  # the effect happened once
