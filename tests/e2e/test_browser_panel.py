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
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from jupyter_lab import start_lab

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


@pytest.fixture
def lab(tmp_path: Path, kernel_sockets: Path) -> Iterator[Lab]:
    """JupyterLab (``jupyter_lab.py``) with its own config folders and store."""
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
    log_path = tmp_path / "jupyterlab.log"
    server = start_lab(root, env, log_path, kernel_sockets, "--LabApp.expose_app_in_browser=True")
    try:
        yield Lab(server.url, server.token, root, store)
    finally:
        server.stop()
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(log_path, ARTIFACTS / "panel-jupyterlab.log")


# Elements of the panel that stick out of it, or whose text is cut off inside them (a clipped column).
CLIPPED = """(selector) => {
  const panel = document.querySelector(selector);
  const box = panel.getBoundingClientRect();
  const found = [];
  for (const el of panel.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0 || getComputedStyle(el).visibility === 'hidden') continue;
    if (r.right > box.right + 1 || r.left < box.left - 1) found.push('outside: ' + el.className);
  }
  for (const el of panel.querySelectorAll('.rsm-name, .rsm-num, .rsm-outs, .rsm-head, button')) {
    if (el.getClientRects().length && el.scrollWidth > el.clientWidth + 1) found.push('cut: ' + el.textContent.trim());
  }
  if (panel.scrollWidth > panel.clientWidth + 1) found.push('panel scrolls sideways');
  return found;
}"""

# The CSS content of the ::before of every disconnected widget in the panel: ipywidgets draws a
# broken-link icon there unless the panel's own CSS turns it off.
BROKEN_ICONS = """(selector) => {
  const panel = document.querySelector(selector);
  const els = [panel, ...panel.querySelectorAll('.jupyter-widgets-disconnected')];
  return els.map((el) => getComputedStyle(el, '::before').content).filter((c) => c && c !== 'none' && c !== 'normal');
}"""

# The labels a narrow panel writes before the numbers of a row (CSS ::before, not in innerText).
LABELS = """(selector) => [...document.querySelector(selector).querySelectorAll('[data-label]')]
  .map((el) => getComputedStyle(el, '::before').content)"""

GONE_TEXT = "This panel belonged to a kernel that has stopped. Run %durable_panel to show a live one."


def _text(locator: object) -> str:
    return " ".join(locator.inner_text().split())  # type: ignore[attr-defined]


def test_the_panel_in_the_browser(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    """In JupyterLab: the whole run with column headers and a step not reached, Retry, both themes at
    1200 and 600 px without clipping, a change from another process, and the notice after a kernel restart."""
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with capsys.disabled():
        print(f"\nbrowser screenshots: {ARTIFACTS}")
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        try:
            page.goto(f"{lab.url}/lab/tree/{NOTEBOOK.name}?token={lab.token}")
            page.wait_for_function(KERNEL_READY, timeout=60_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

            # Live: the rows appear and change while the cells run, with nothing pressed.
            panel = page.locator(".rsm-panel")
            load = page.locator(".rsm-row", has_text="load")
            courier = page.locator(".rsm-row", has_text="courier")
            email = page.locator(".rsm-row", has_text="email")
            load.locator(".rsm-badge", has_text="completed").wait_for(timeout=60_000)
            courier.locator(".rsm-badge", has_text="failed").wait_for(timeout=30_000)
            assert "ConnectionError: courier timed out" in courier.inner_text()
            # The notebook's last step never ran (run-all stopped at the failure): listed, not reached.
            email.locator(".rsm-badge", has_text="not reached").wait_for(timeout=10_000)
            assert "known from the notebook" in _text(email)
            header = page.locator(".rsm-head")
            assert "3 steps: 1 completed, 1 failed, 1 not reached" in _text(header)
            assert _text(page.locator(".rsm-cols")) == "state step attempts time stored outputs actions"
            assert "orders" in _text(load)  # its output's name
            assert re.search(r"attempts: #1 \d\d:\d\d:\d\d failed after", _text(courier))
            retry = courier.locator("button.rsm-retry")
            rerun = courier.locator("button.rsm-rerun")
            retry.wait_for(state="visible", timeout=10_000)
            rerun.wait_for(state="hidden", timeout=10_000)  # illegal for a failed step
            panel.screenshot(path=str(ARTIFACTS / "panel-failed.png"))
            courier.get_by_role("button", name="traceback").click()
            courier.locator("pre.rsm-tb", has_text='raise ConnectionError("courier timed out")').wait_for(
                timeout=10_000
            )
            panel.screenshot(path=str(ARTIFACTS / "panel-traceback.png"))
            courier.get_by_role("button", name="traceback").click()

            retry.click()
            courier.locator(".rsm-badge", has_text="completed").wait_for(timeout=30_000)
            retry.wait_for(state="hidden", timeout=10_000)
            rerun.wait_for(state="visible", timeout=10_000)
            # Two of three steps done is not a completed run: 'email' has still not run.
            assert "3 steps: 2 completed, 1 not reached" in _text(header)
            assert header.locator(".rsm-badge").inner_text() == "pending"
            assert re.search(r"#2 \d\d:\d\d:\d\d completed in", _text(courier))

            # What the browser shows is what the store holds.
            status = open_store(lab.store).get_step("order-42", "courier")
            assert status is not None
            assert status.state is StepState.COMPLETED
            assert status.attempts == 2

            # Both themes, wide and narrow: a table with headers at 1200 px; at 600 px the headers go,
            # the numbers say what they are and the buttons wrap; nothing is clipped at either width.
            for theme in ("light", "dark"):
                if theme == "dark":
                    page.evaluate(
                        "window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})"
                    )
                    page.wait_for_function("document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
                    page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=30_000)
                for width in (1200, 600):
                    if width == 600:  # a narrow window leaves no room for the file browser: close it
                        page.evaluate("window.jupyterapp.shell.collapseLeft()")
                    else:
                        page.evaluate("window.jupyterapp.shell.expandLeft()")
                    page.set_viewport_size({"width": width, "height": 900})
                    page.locator(".rsm-cols").wait_for(state="visible" if width == 1200 else "hidden", timeout=10_000)
                    clipped = page.evaluate(CLIPPED, ".rsm-panel")
                    assert clipped == [], f"{theme} {width}: {clipped}"
                    if width == 600:
                        labels = page.evaluate(LABELS, ".rsm-row .rsm-info")  # what replaces the column headers
                        assert labels == ['"time "', '"stored "', '"outputs: "'], labels
                    for selector in (".rsm-name", ".rsm-num", ".rsm-head"):
                        assert page.evaluate(CONTRAST, selector) >= 4.5, (theme, width, selector)
                    panel.screenshot(path=str(ARTIFACTS / f"panel-{theme}-{width}.png"))
            page.set_viewport_size({"width": 1200, "height": 900})

            # Another process changes the store: the panel's poll shows it with nothing pressed.
            cli = [sys.executable, "-m", "resumable", "invalidate", "order-42", "load", "--store", str(lab.store)]
            done = subprocess.run(cli, capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stderr
            load.locator(".rsm-badge", has_text="pending").wait_for(timeout=15_000)

            # The kernel restarts: the old panel says so and how to get a live one, with no broken icons.
            page.evaluate("window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()")
            gone = page.locator(".rsm-gone")
            gone.wait_for(state="visible", timeout=30_000)
            assert _text(gone) == GONE_TEXT
            assert load.is_hidden()
            assert page.evaluate(BROKEN_ICONS, ".rsm-panel") == []
            page.wait_for_function(KERNEL_READY, timeout=60_000)
            page.locator(".jp-OutputArea-output", has=gone).screenshot(path=str(ARTIFACTS / "panel-restarted.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "panel-failure.png"))
            raise
        finally:
            browser.close()
