"""A JupyterLab server for a test: its own port, token, runtime folder, and kernels on Unix sockets.

The server is given port 0 and picks a free port itself as it binds; the test reads the port from the
server's info file (``jpserver-<pid>.json`` in its runtime folder). A port the test picked and closed
would stay free only by luck during the second or two the server takes to import and bind.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kernel_sockets import kernel_argv

START_TIMEOUT_S = 90


@dataclass(frozen=True)
class LabProcess:
    proc: subprocess.Popen[bytes]
    url: str
    port: int
    token: str
    log: Path

    def stop(self) -> None:
        """Shut the server down over its API as a user's "Shut Down" does; kill it if it does not go."""
        try:
            request = urllib.request.Request(f"{self.url}/api/shutdown?token={self.token}", method="POST")
            urllib.request.urlopen(request, timeout=10).close()
            self.proc.wait(timeout=30)
        except (urllib.error.URLError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_lab(root: Path, env: dict[str, str], log: Path, sockets: Path, *options: str) -> LabProcess:
    """Start JupyterLab serving ``root`` and wait until its API answers (``env`` must set JUPYTER_RUNTIME_DIR)."""
    runtime = Path(env["JUPYTER_RUNTIME_DIR"])
    token = secrets.token_hex(16)
    argv = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", *kernel_argv(sockets), *options,
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")  # CI containers run as root
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    info = runtime / f"jpserver-{proc.pid}.json"
    deadline = time.monotonic() + START_TIMEOUT_S
    port = 0
    while True:
        assert proc.poll() is None, f"JupyterLab exited:\n{log.read_text()[-3000:]}"
        try:
            if not port:
                port = int(json.loads(info.read_text())["port"])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5):
                break
        except (FileNotFoundError, json.JSONDecodeError, urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not written yet (or half written), or not answering yet
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=10)
            raise AssertionError(f"JupyterLab did not start in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)  # polling the server's files and status until it answers
    return LabProcess(proc, f"http://127.0.0.1:{port}", port, token, log)
