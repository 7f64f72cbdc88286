"""The status panel in a real browser: JupyterLab on 127.0.0.1, headless Chromium driven by Playwright.

The notebook ``panel_retry.ipynb`` shows the panel, then runs a step that fails on its first
attempt. The test clicks Retry in the panel and waits for the badge to say ``completed``, then
checks the store agrees, that a change made by another process (the CLI) shows up through the
panel's poll, and that the rows stay readable in the dark theme. Screenshots go to
``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from resumable._states import StepState
from resumable._store import open_store

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NOTEBOOK = Path(__file__).with_name("panel_retry.ipynb")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.timeout(150),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Chromium is not installed (Debian package 'chromium'; .ci/run installs it)",
    ),
]

# The kernel of the open notebook is connected (JupyterLab exposes its app with expose_app_in_browser).
KERNEL_READY = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
}"""

# WCAG contrast of an element's text colour against the page's background colour.
CONTRAST = """(selector) => {
  const lum = (rgb) => {
    const c = rgb.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number).map((v) => v / 255)
      .map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const fg = getComputedStyle(document.querySelector(selector)).color;
  const bg = getComputedStyle(document.body).getPropertyValue('--jp-layout-color0').trim();
  const probe = document.createElement('div');
  probe.style.color = bg;
  document.body.appendChild(probe);
  const bgRgb = getComputedStyle(probe).color;
  probe.remove();
  const [a, b] = [lum(fg), lum(bgRgb)].sort((x, y) => y - x);
  return (a + 0.05) / (b + 0.05);
}"""


@dataclass
class Lab:
    """A running JupyterLab server."""

    url: str
    token: str
    root: Path
    store: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 with a random port and token, its own config folders and store."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    store = tmp_path / "store" / "store.duckdb"
    settings = tmp_path / "lab-settings"
    notification = settings / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    # No news or update check: there is no internet here, and the toast would cover the page.
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = dict(
        os.environ,
        RESUMABLE_STORE=str(store),
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
        IPYTHONDIR=str(tmp_path / "ipython"),
    )
    port, token = _free_port(), secrets.token_hex(16)
    argv = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")  # CI containers run as root
    log_path = tmp_path / "jupyterlab.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"JupyterLab exited:\n{log_path.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert time.monotonic() < deadline, f"JupyterLab did not start:\n{log_path.read_text()[-3000:]}"
                time.sleep(0.1)
        yield Lab(url, token, root, store)
    finally:
        try:
            request = urllib.request.Request(f"{url}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(request, timeout=5).close()
            server.wait(timeout=20)
        except (urllib.error.URLError, OSError, subprocess.TimeoutExpired):
            server.kill()
            server.wait(timeout=10)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(log_path, ARTIFACTS / "panel-jupyterlab.log")


def test_retry_in_the_browser_turns_a_failed_step_completed(lab: Lab) -> None:
    """In JupyterLab, the panel shows the failed step live; clicking Retry turns it completed."""
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        try:
            page.goto(f"{lab.url}/lab/tree/{NOTEBOOK.name}?token={lab.token}")
            page.wait_for_function(KERNEL_READY, timeout=60_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

            # Live: the rows appear and change while the cells run, with nothing pressed.
            load = page.locator(".rsm-row", has_text="load")
            courier = page.locator(".rsm-row", has_text="courier")
            load.locator(".rsm-badge", has_text="completed").wait_for(timeout=60_000)
            courier.locator(".rsm-badge", has_text="failed").wait_for(timeout=30_000)
            assert "ConnectionError: courier timed out" in courier.inner_text()
            retry = courier.locator("button.rsm-retry")
            rerun = courier.locator("button.rsm-rerun")
            retry.wait_for(state="visible", timeout=10_000)
            rerun.wait_for(state="hidden", timeout=10_000)  # illegal for a failed step
            panel = page.locator(".rsm-panel")
            panel.screenshot(path=str(ARTIFACTS / "panel-failed.png"))  # the one in docs/panel.png
            courier.get_by_role("button", name="traceback").click()
            courier.locator("pre.rsm-tb", has_text='raise ConnectionError("courier timed out")').wait_for(
                timeout=10_000
            )
            panel.screenshot(path=str(ARTIFACTS / "panel-traceback.png"))

            retry.click()
            courier.locator(".rsm-badge", has_text="completed").wait_for(timeout=30_000)
            retry.wait_for(state="hidden", timeout=10_000)
            rerun.wait_for(state="visible", timeout=10_000)
            panel.screenshot(path=str(ARTIFACTS / "panel.png"))
            page.screenshot(path=str(ARTIFACTS / "panel-page.png"))

            # What the browser shows is what the store holds.
            status = open_store(lab.store).get_step("order-42", "courier")
            assert status is not None
            assert status.state is StepState.COMPLETED
            assert status.attempts == 2

            # Another process changes the store: the panel's poll shows it with nothing pressed.
            cli = [sys.executable, "-m", "resumable", "invalidate", "order-42", "load", "--store", str(lab.store)]
            done = subprocess.run(cli, capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stderr
            load.locator(".rsm-badge", has_text="pending").wait_for(timeout=15_000)

            # Dark theme: the step names and numbers stay readable on the dark background.
            page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
            page.wait_for_function("document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
            page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=30_000)
            for selector in (".rsm-name", ".rsm-num", ".rsm-head"):
                assert page.evaluate(CONTRAST, selector) >= 4.5, selector
            panel.screenshot(path=str(ARTIFACTS / "panel-dark.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "panel-failure.png"))
            raise
        finally:
            browser.close()
