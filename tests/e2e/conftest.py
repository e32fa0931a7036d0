"""Browser tests: a real Easel server per test module, driven by headless Chromium through Playwright.

Chromium is Debian's (/usr/bin/chromium); no browser is ever downloaded. Every page records the
requests it makes, and a test fails if the page reached anything but the local server.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server import REPO, EaselServer, write_models

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
ARTIFACTS = REPO / "test-artifacts"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    missing = not os.path.exists(CHROMIUM)
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)
            if missing:
                item.add_marker(pytest.mark.skip(reason=f"{CHROMIUM} is not installed (apt-get install chromium)"))


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def make_data_dir(root: Path, *, inpaint: bool = False, settings: dict | None = None) -> Path:
    """A data folder with the tiny checkpoint(s), tiny-sd1 selected, and small UI defaults."""
    root.mkdir(parents=True, exist_ok=True)
    write_models(root / "models", inpaint=inpaint)
    config = {"sd_model_checkpoint": "tiny-sd1.safetensors", **(settings or {})}
    (root / "config.json").write_text(json.dumps(config, indent=4))
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[EaselServer]:
    """One server per test module; a module may set `SERVER_ARGS` (extra flags) and `SERVER_ENV`."""
    data = make_data_dir(tmp_path_factory.mktemp("easel-e2e"))
    srv = EaselServer(data, extra_args=list(getattr(request.module, "SERVER_ARGS", [])),
                      env=getattr(request.module, "SERVER_ENV", None))
    srv.write_ui_config()
    srv.start()
    yield srv
    srv.stop()
    log = srv.read_log()
    if "Traceback" in log:
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(srv.log_path, ARTIFACTS / f"{request.module.__name__}-server.log")


class PageRecorder:
    """A page plus what it requested outside the local server and the script errors it raised."""

    def __init__(self, page: object, base_url: str) -> None:
        self.page = page
        self.external: list[str] = []
        self.errors: list[str] = []
        local = ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "about:")
        page.on("request", lambda r: self.external.append(r.url) if not r.url.startswith(local) else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.base_url = base_url

    def open(self, path: str = "/") -> object:
        self.page.goto(self.base_url + path)
        self.page.wait_for_selector("#txt2img_generate", timeout=60_000)
        # The page's load event fills the settings' controls; what a test types before it answers is
        # overwritten. (The status poll keeps the network busy, so "network idle" never comes.)
        self.page.wait_for_selector("html[data-ui-loaded=true]", state="attached", timeout=60_000)
        self.page.wait_for_selector("#model_status", timeout=30_000)
        return self.page

    def check_clean(self) -> None:
        assert self.external == [], f"the page fetched from outside the server: {self.external}"
        assert self.errors == [], f"script errors in the page: {self.errors}"


@pytest.fixture
def open_page(browser: object, server: EaselServer) -> Iterator:
    """open_page() -> PageRecorder with a fresh browser context (its own session) at the server's page."""
    contexts = []

    def make(viewport: tuple[int, int] = (1400, 1000)) -> PageRecorder:
        ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        contexts.append(ctx)
        rec = PageRecorder(ctx.new_page(), server.url)
        rec.open()
        return rec

    yield make
    for ctx in contexts:
        ctx.close()


def screenshot(page: object, name: str, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
