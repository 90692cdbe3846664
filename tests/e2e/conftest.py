"""Browser tests: a real `streamlit run` server on the tiny models, driven by Chromium.

One server serves the whole session (like a producer's box), with its own data folder.
Screenshots land in test-artifacts/screenshots/ for every test, pass or fail.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Download, Page, expect, sync_playwright

from tests.conftest import ARTIFACTS, ROOT
from tests.tiny.all import build_all

CHROMIUM = os.environ.get("ACE_STUDIO_CHROMIUM", "/usr/bin/chromium")
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
SCREENSHOTS = ARTIFACTS / "screenshots"
DOWNLOADS = ARTIFACTS / "downloads"
# Generous: a 2-core CI machine runs the tiny models on its CPU next to the browser.
JOB_TIMEOUT_MS = 120_000

pytestmark = pytest.mark.e2e

# The first visit starts the Studio (imports, the DiT preload) on a shared 2-core machine;
# Playwright's 5 s default for assertions is too tight for that, not for a broken page.
expect.set_options(timeout=30_000)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return build_all(tmp_path_factory.mktemp("e2e-models"))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-data")


@pytest.fixture(scope="session")
def app_url(tiny_models: dict[str, str], data_dir: Path) -> Iterator[str]:
    port = _free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = open(ARTIFACTS / "streamlit-server.log", "w")  # noqa: SIM115 - lives with the server
    env = {
        **os.environ,
        **tiny_models,
        "ACE_STUDIO_DATA_DIR": str(data_dir),
        "ACE_STUDIO_DEVICE": "cpu",
        "ACE_STUDIO_POLL_SECONDS": "0.5",
        "HF_HUB_OFFLINE": "1",
        # The server shares 2 cores with the browser and pytest: one torch thread per op
        # keeps the tiny models from thrashing (10x faster under load).
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }
    server = subprocess.Popen(
        [
            sys.executable, "-m", "streamlit", "run", "Home.py",
            "--server.port", str(port),
            "--server.address", "127.0.0.1",
            "--server.headless", "true",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"streamlit exited with {server.returncode}; see the log")
            try:
                if requests.get(f"{url}/_stcore/health", timeout=1).text == "ok":
                    break
            except requests.RequestException:
                pass
            if time.time() > deadline:
                raise RuntimeError("streamlit did not become healthy within 60 s")
            time.sleep(0.25)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        page.screenshot(path=str(SCREENSHOTS / f"{request.node.name}-final.png"), full_page=True)
    finally:
        context.close()


def shot(page: Page, name: str) -> None:
    """Keep a screenshot of a step as a test artefact."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def save_download(download: Download, name: str) -> Path:
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    target = DOWNLOADS / name
    download.save_as(str(target))
    return target
