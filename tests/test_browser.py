"""Notebook 08 in a real browser: JupyterLab + headless Chromium (Debian's) driven by Python playwright.

Runs every cell, drags the "Smiling" slider and checks that the preview image is
re-rendered by the kernel, then screenshots the editor into the test's temporary folder
(tests never write ``figures/``; ``STYTR_BROWSER_SCREENSHOT=figures/editor_in_browser.png``
copies it there when asked). Needs ``/usr/bin/chromium`` (``apt-get install chromium``,
which ``.ci/run`` does) and the ``playwright`` package (in the test extra); playwright's own
browser download is never used. Outside CI a missing one skips the test; in CI it fails.
All waits share one deadline, and the server and its kernel are shut down at the end.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "08_interactive_editing.ipynb"
BUDGET_S = 480   # the whole test, server start to screenshot (about 60 s on an idle 2-core machine)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

if not os.environ.get("CI"):   # in CI the test must run: a missing browser is an error there
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)
    pytest.importorskip("playwright.sync_api", reason="needs the playwright package")


class Deadline:
    """One time budget for all the test's waits: ``left(cap)`` is the time left in seconds (at most
    ``cap``), ``ms(cap)`` the same in milliseconds; once the budget is spent, either fails the test."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self, cap: float = float("inf")) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            pytest.fail(f"the browser test ran out of its {BUDGET_S} s budget")
        return min(left, cap)

    def ms(self, cap: float = float("inf")) -> float:
        return 1000 * self.left(cap)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc; the kernels the server started)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _get(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


@pytest.fixture
def deadline():
    return Deadline(BUDGET_S)


@pytest.fixture
def lab(tmp_path, deadline):
    """A JupyterLab server on a free port with a token, serving a copy of notebook 08."""
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                          "checkForUpdates": False}))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, OMP_NUM_THREADS="1", JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"), PYTHONPATH=str(REPO))
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
         "--ServerApp.open_browser=False", "--LabApp.extension_manager=readonly"]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=lambda: os.nice(10))
    base = f"http://127.0.0.1:{port}"
    try:
        start_by = time.monotonic() + deadline.left(150)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({proc.returncode}): {(tmp_path / 'lab.log').read_text()}")
            try:
                if _get(f"{base}/api/status?token={token}", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > start_by:
                raise TimeoutError(f"jupyter lab did not answer in time: {(tmp_path / 'lab.log').read_text()}")
            time.sleep(0.5)
        yield {"base": base, "token": token, "root": root, "log": tmp_path / "lab.log"}
    finally:
        kernels = _children(proc.pid)
        try:   # a clean shutdown stops the kernels too
            req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(req, timeout=10).close()
            proc.wait(timeout=20)
        except Exception:
            pass
        for pid in kernels + ([proc.pid] if proc.poll() is None else []):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.wait(timeout=10)
        log.close()


KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!(k && k.status === 'idle' && document.querySelector('.jp-Notebook .jp-Cell'));
}"""


def test_notebook_08_in_chromium(lab, deadline, tmp_path):
    from playwright.sync_api import sync_playwright

    screenshot = tmp_path / "editor_in_browser.png"
    url = f"{lab['base']}/lab/tree/{NOTEBOOK.name}?token={lab['token']}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                                    timeout=deadline.ms(60))
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.set_default_timeout(deadline.ms(60))
            page.goto(url, timeout=deadline.ms(120))
            page.wait_for_function(KERNEL_IDLE, timeout=deadline.ms(180), polling=500)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            # all cells done: the checks cell prints its summary; an error output fails at once
            while True:
                if page.locator("text=preview changed: True").count():
                    break
                errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
                if errors.count():
                    pytest.fail(f"a notebook cell failed: {errors.first.inner_text()[-2000:]}")
                deadline.left()  # fails the test once the budget is spent
                page.wait_for_timeout(500)
            page.wait_for_function(KERNEL_IDLE, timeout=deadline.ms(60), polling=250)

            app = page.locator(".jp-OutputArea-output", has=page.locator(".widget-hslider")).first
            app.scroll_into_view_if_needed()
            assert page.locator(".widget-hslider").count() >= 5
            slider = page.locator(".widget-hslider", has_text="Smiling").first
            readout = slider.locator(".widget-readout")
            old_value = readout.inner_text()
            images = app.locator(".widget-image")
            old_srcs = images.evaluate_all("els => els.map(e => e.src)")
            handle = slider.locator(".noUi-handle")
            track = slider.locator(".noUi-base")
            handle.scroll_into_view_if_needed()
            hb, tb = handle.bounding_box(), track.bounding_box()
            page.mouse.move(hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2)
            page.mouse.down()
            for frac in (0.6, 0.4, 0.25, 0.15):                 # a drag in several steps
                page.mouse.move(tb["x"] + frac * tb["width"], tb["y"] + tb["height"] / 2, steps=4)
            page.mouse.up()
            assert readout.inner_text() != old_value
            # the debounced render in the kernel sends a new preview image
            page.wait_for_function(
                "([els, old]) => els.some((e, i) => e.src !== old[i])",
                arg=[images.element_handles(), old_srcs], timeout=deadline.ms(30), polling=250)
            page.wait_for_timeout(800)
            app.screenshot(path=str(screenshot), timeout=deadline.ms(30))
        finally:
            browser.close()
    assert screenshot.is_file() and screenshot.stat().st_size > 5_000
    if os.environ.get("STYTR_BROWSER_SCREENSHOT"):   # refreshing the README's figure is an explicit ask
        shutil.copy(screenshot, os.environ["STYTR_BROWSER_SCREENSHOT"])
