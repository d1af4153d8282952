import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from studio.inference.models import embedded_folder

ROOT = Path(__file__).resolve().parents[2]
# Every wait is for a state the page must reach; how long it takes depends on how busy the machine is (two cores shared
# with the app and its model). Playwright's expect() waits 5 s unless told: a generous bound instead, so that a busy
# machine is slower, not failing.
WAIT_MS = 60_000
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_server(tmp_path):
    yield from run_app(tmp_path)


def run_app(tmp_path, *extra_args, env_extra: dict | None = None):
    """`python app.py` on a free port with its own STUDIO_HOME (sharing the converted embedded model); `env_extra`:
    more environment (an AWS stand-in's address and made-up credentials)."""
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    shared = embedded_folder()  # converted once per test run, under the session's STUDIO_HOME
    (home / "models" / shared.name).symlink_to(shared)
    port = _free_port()
    log = open(tmp_path / "app.log", "w")
    # No Hub login inside tests: a push must meet the no-token message, never a real account.
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN" and not k.startswith("AWS_")}
    env.update(
        STUDIO_HOME=str(home),
        PYTHONUNBUFFERED="1",
        HF_HOME=str(tmp_path / "hf"),
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,  # no AWS account, ever
        AWS_EC2_METADATA_DISABLED="true",
        **(env_extra or {}),
    )
    process = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), "--no-browser", *extra_args],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("app.py did not start:\n" + (tmp_path / "app.log").read_text())
            time.sleep(0.3)
    yield {"url": url, "home": home, "log": tmp_path / "app.log"}
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()
    # Training jobs run in their own process groups and outlive the app by design; a test leaves none behind.
    with sqlite3.connect(home / "studio.db") as db:
        for (pid,) in db.execute("SELECT pid FROM jobs WHERE pid IS NOT NULL"):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("STUDIO_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium to run the browser tests")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    yield page
