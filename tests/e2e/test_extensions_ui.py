"""The page side of extensions and the Extensions tab, in a real server driven by Chromium.

One server carries the test extensions ext_demo, ext_broken (fails to import) and ext_ui_tab (a tab,
a script, a style sheet, a setting and an infotext-paste hook); a second one is started with
--listen, where extension management must be refused. The restart test runs last: it disables
ext_demo and the server re-executes itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PageRecorder, make_data_dir, screenshot
from helpers import field_value, set_text
from server import EaselServer, free_port

DATA = Path(__file__).resolve().parents[1] / "extensions" / "data"
EXTENSIONS = ("ext_demo", "ext_broken", "ext_ui_tab")
TIMEOUT = 30_000


def _prepare(root: Path, *flags: str, models: bool = True) -> EaselServer:
    data = make_data_dir(root) if models else root  # mktemp made root
    for name in EXTENSIONS:
        shutil.copytree(DATA / name, data / "extensions" / name)
    srv = EaselServer(data, extra_args=list(flags))
    srv.write_ui_config()
    return srv


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EaselServer, EaselServer]]:
    """(the main server, one started with --listen); both start at once to save time."""
    main = _prepare(tmp_path_factory.mktemp("easel-ext-ui"), "--api")
    # No checkpoint: this one only shows the Extensions tab.
    listen = _prepare(tmp_path_factory.mktemp("easel-ext-listen"), "--listen", models=False)
    # This one also has its tabs rearranged by the settings.
    (listen.data_dir / "config.json").write_text(json.dumps({"ui_tab_order": ["txt2img", "UI tab ext"],
                                                             "hidden_tabs": ["PNG Info", "Settings"]}))
    failures: list[BaseException] = []

    def start(srv: EaselServer) -> None:
        try:
            srv.start()
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=start, args=(srv,)) for srv in (main, listen)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        if failures:
            raise failures[0]
        yield main, listen
    finally:
        main.stop()
        listen.stop()


@pytest.fixture(scope="module")
def server(servers: tuple[EaselServer, EaselServer]) -> EaselServer:
    return servers[0]


def _bare_repo(root: Path, name: str) -> Path:
    """A bare git repository `name`.git holding ext_installable (its install.py writes installed.txt)."""
    work = root / f"{name}-work"
    shutil.copytree(DATA / "ext_installable", work)
    git = ["git", "-c", "user.name=Easel Test", "-c", "user.email=test@example.invalid", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "first"], check=True)
    bare = root / f"{name}.git"
    subprocess.run([*git, "init", "-q", "--bare", str(bare)], check=True)
    subprocess.run([*git, "-C", str(work), "push", "-q", str(bare), "HEAD:refs/heads/main"], check=True)
    subprocess.run(["git", "--git-dir", str(bare), "symbolic-ref", "HEAD", "refs/heads/main"], check=True)
    return bare


@pytest.fixture(scope="module")
def bare_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bare_repo(tmp_path_factory.mktemp("ext-repo"), "ext_remote")


def _extensions_tab(page: object, sub: str = "installed") -> None:
    page.locator("#tab_extensions-button").click()
    page.locator(f"#extensions_{sub}_tab-button").click()


def _settings_sections(page: object) -> set[str]:
    """The titles of the Settings sections shown as tabs."""
    return set(page.evaluate("Array.from(document.querySelectorAll('#settings_sections button[role=tab]'))"
                             ".map(b => b.textContent.trim())"))


def _open_settings_section(page: object, title: str) -> None:
    page.locator("#tab_settings-button").click()
    page.locator("#settings_sections button[role=tab]", has_text=title).click()


def _wait_text(page: object, elem_id: str, text: str, timeout: int = TIMEOUT) -> str:
    page.wait_for_function("([id, text]) => (document.getElementById(id) || {innerText: ''}).innerText.includes(text)",
                           arg=[elem_id, text], timeout=timeout)
    return page.locator(f"#{elem_id}").inner_text()


def test_extension_tab_script_style_setting_and_paste_hook(server: EaselServer, open_page) -> None:
    rec = open_page()
    page = rec.page
    # on_ui_tabs: between the built-in tabs and Extensions / Settings.
    xs = [page.locator(f"#{t}-button").bounding_box()["x"]
          for t in ("tab_pnginfo", "tab_ext_ui_tab", "tab_extensions", "tab_settings")]
    assert xs == sorted(xs), xs
    page.locator("#tab_ext_ui_tab-button").click()
    # on_before_ui ran before the tab was built.
    assert field_value(page, "ext_ui_tab_text") == "ext_ui_tab ready; events: before_ui"
    # javascript/*.js ran and style.css applies.
    assert page.evaluate("document.documentElement.dataset.extUiTab") == "loaded"
    styled = page.locator("#ext_ui_tab_styled")
    styled.wait_for(timeout=TIMEOUT)
    assert styled.evaluate("e => getComputedStyle(e).color") == "rgb(12, 34, 56)"

    # on_ui_settings: the option has its section in Settings, Apply saves it, the API lists it.
    options = json.loads(urllib.request.urlopen(server.url + "/sdapi/v1/options").read())
    assert options["ext_ui_tab_greeting"] == "hello"
    page.locator("#tab_settings-button").click()
    # Every section is a tab in sight, extension sections too; none is kept behind a menu.
    assert {"Saving images/grids", "System", "Demo extension", "UI tab extension"} <= _settings_sections(page)
    _open_settings_section(page, "UI tab extension")
    set_text(page, "setting_ext_ui_tab_greeting", "howdy")
    page.locator("#settings_submit").click()
    _wait_text(page, "settings_result", "ext_ui_tab_greeting")
    assert json.loads((server.data_dir / "config.json").read_text())["ext_ui_tab_greeting"] == "howdy"
    # The page script's `opts` follow, and the extension's onOptionsChanged callback saw both values.
    page.wait_for_function("opts.ext_ui_tab_greeting === 'howdy'", timeout=TIMEOUT)
    assert page.evaluate("window.extPageApi.greetings") == ["hello", "howdy"]
    options = json.loads(urllib.request.urlopen(server.url + "/sdapi/v1/options").read())
    assert options["ext_ui_tab_greeting"] == "howdy"

    # on_infotext_pasted edits the parameters before the fields are filled.
    page.locator("#tab_txt2img-button").click()
    set_text(page, "txt2img_prompt", "a fox in snow\nSteps: 9, Sampler: Euler, Seed: 77, Size: 64x64, Ext tag: zz9")
    page.locator("#txt2img_paste").click()
    page.wait_for_function("(document.querySelector('#txt2img_seed input')||{}).value === '77'", timeout=TIMEOUT)
    assert field_value(page, "txt2img_prompt") == "a fox in snow, tagged zz9"
    rec.check_clean()


def test_page_script_api_for_extension_scripts(server: EaselServer, open_page) -> None:
    """ext_ui_tab's javascript/page_api.js registers A1111's page hooks; each runs when it should."""
    rec = open_page()
    page = rec.page
    seen = page.evaluate("window.extPageApi")
    # onUiLoaded ran once, after the page was built and the options were known, though the
    # callback registered before it threw.
    assert seen["loaded"] == 1 and seen["available"] == 1, seen
    assert seen["promptAtLoad"] and seen["byIdAtLoad"] and seen["generateVisible"], seen
    greeting = json.loads(urllib.request.urlopen(server.url + "/sdapi/v1/options").read())["ext_ui_tab_greeting"]
    assert (seen["greetingAtLoad"], seen["tabAtLoad"], seen["contentAtLoad"]) == (greeting, "txt2img", "tab_txt2img")
    assert seen["greetings"] == [greeting] and seen["tabs"] == []
    assert page.evaluate("opts.sd_model_checkpoint") == "tiny-sd1.safetensors"
    page.wait_for_function("window.extPageApi.afterUpdates > 0", timeout=TIMEOUT)
    assert seen["updates"] > 0 and seen["mutationsGiven"]
    # updateInput: a value a script sets reaches Gradio (the prompt's token counter counts it).
    page.evaluate("() => { const box = gradioApp().querySelector('#txt2img_prompt textarea');"
                  " box.value = 'a red fox'; updateInput(box); }")
    page.wait_for_function("document.querySelector('#txt2img_token_counter').innerText.trim() !== '0/75'",
                           timeout=TIMEOUT)

    # onUiTabChange, for a click and for the switch_to_* helpers; A1111's mode numbers pick the mode tab.
    page.locator("#tab_img2img-button").click()
    page.wait_for_function("window.extPageApi.tabs.length === 1", timeout=TIMEOUT)
    assert page.evaluate("switch_to_txt2img(1, 'a')") == [1, "a"]
    page.wait_for_function("window.extPageApi.tabs.length === 2", timeout=TIMEOUT)
    page.evaluate("switch_to_inpaint()")
    page.wait_for_function("get_tab_index('mode_img2img') === 1", timeout=TIMEOUT)
    assert page.evaluate("window.extPageApi.tabs") == ["tab_img2img", "tab_txt2img", "tab_img2img"]
    assert page.evaluate("[get_tab_index('tabs'), get_uiCurrentTab().textContent.trim()]") == [1, "img2img"]
    assert page.evaluate("uiElementInSight(document.getElementById('img2maskimg'))")
    assert not page.evaluate("uiElementIsVisible(document.getElementById('txt2img_generate'))")
    page.evaluate("switch_to_img2img_tab(5)")  # A1111's Batch: Easel has none, img2img is chosen
    page.wait_for_function("get_tab_index('mode_img2img') === 0", timeout=TIMEOUT)
    # A callback registered after the page has loaded still runs, once.
    page.evaluate("onUiLoaded(() => { window.lateLoaded = (window.lateLoaded || 0) + 1; })")
    page.wait_for_function("window.lateLoaded === 1", timeout=TIMEOUT)
    # The failing callback was reported in the console, not raised as a page error.
    rec.check_clean()


def test_installed_list_and_install_from_url(server: EaselServer, open_page, bare_repo: Path) -> None:
    rec = open_page()
    page = rec.page
    _extensions_tab(page)
    table = page.locator("#extensions_installed_html")
    for name in EXTENSIONS:
        assert table.locator(f"tr[data-extension='{name}'] input.extension-enable").is_checked()
    # Failures are shown with the extension: an import error, a tab that could not be shown.
    assert "broken on purpose" in table.locator("tr[data-extension='ext_broken']").inner_text()
    assert "has no gr.Blocks" in table.locator("tr[data-extension='ext_demo']").inner_text()
    assert page.locator("#extensions_apply").inner_text() == "Apply and restart UI"

    page.locator("#extensions_install_from_url_tab-button").click()
    set_text(page, "extension_install_url", bare_repo.as_uri())
    set_text(page, "extension_install_dirname", "from-url")
    page.locator("#extension_install_button").click()
    message = _wait_text(page, "extension_install_result", "Installed from-url", timeout=60_000)
    assert "Apply and restart UI" in message
    assert (server.data_dir / "extensions" / "from-url" / "installed.txt").read_text() == "ok"  # install.py ran
    row = page.locator("#extensions_installed_html tr[data-extension='from-url']")
    assert bare_repo.as_uri() in row.inner_text()  # its git remote, with branch, version and date
    assert "main" in row.inner_text()

    # Check for updates: git fetch per extension, a status per row.
    page.locator("#extensions_installed_tab-button").click()
    page.locator("#extensions_check").click()
    _wait_text(page, "extensions_installed_info", "none has new commits")
    assert row.locator(".extension-update-cell").inner_text() == "latest"
    screenshot(page, "extensions-installed")
    page.locator("#extensions_install_from_url_tab-button").click()

    set_text(page, "extension_install_url", bare_repo.as_uri())
    set_text(page, "extension_install_dirname", "from-url")
    page.locator("#extension_install_button").click()
    _wait_text(page, "extension_install_result", "exists already")
    set_text(page, "extension_install_dirname", "")
    set_text(page, "extension_install_url", (bare_repo.parent / "no-such-repo.git").as_uri())
    page.locator("#extension_install_button").click()
    _wait_text(page, "extension_install_result", "Could not install")
    rec.check_clean()


def test_available_index_unreachable_then_install_from_it(server: EaselServer, open_page, tmp_path: Path) -> None:
    rec = open_page()
    page = rec.page
    _extensions_tab(page, "available")
    set_text(page, "extensions_index_url", f"http://127.0.0.1:{free_port()}/index.json")
    page.locator("#extensions_index_load").click()
    message = _wait_text(page, "extensions_available_result", "could not read the extension index")
    assert "Traceback" not in message

    indexed = _bare_repo(tmp_path, "ext_indexed")
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"extensions": [
        {"name": "Remote test extension", "url": indexed.as_uri(), "description": "installs from the index",
         "tags": ["script"], "added": "2024-01-02"},
        {"name": "Already here", "url": "https://example.invalid/someone/ext_demo.git", "description": "installed",
         "added": "2023-01-01"}]}))
    set_text(page, "extensions_index_url", index.as_uri())
    page.locator("#extensions_index_load").click()
    _wait_text(page, "extensions_available_result", "Loaded 2 extensions")
    rows = page.locator("#available_extensions tbody tr")
    assert rows.count() == 2
    assert rows.nth(1).locator("button").inner_text() == "Installed"  # ext_demo's folder exists
    screenshot(page, "extensions-available")
    rows.nth(0).locator("button").click()
    _wait_text(page, "extensions_available_result", "Installed ext_indexed", timeout=60_000)
    assert (server.data_dir / "extensions" / "ext_indexed" / "installed.txt").is_file()
    page.locator("#available_extensions tbody tr").first.locator("button:text('Installed')").wait_for(timeout=TIMEOUT)
    rec.check_clean()


def test_listen_server_refuses_management(browser, servers: tuple[EaselServer, EaselServer], bare_repo: Path) -> None:
    srv = servers[1]
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        rec = PageRecorder(ctx.new_page(), srv.url)
        page = rec.open()
        # ui_tab_order put the extension's tab second; hidden_tabs hid PNG Info but not Settings.
        titles = page.evaluate("Array.from(document.querySelectorAll('#tabs > .tab-wrapper [role=tablist] > button'))"
                               ".map(b => b.textContent.trim())")
        assert titles == ["txt2img", "UI tab ext", "img2img", "Extensions", "Settings"], titles
        # 📂 would open a folder on the server's machine, not the visitor's: not offered.
        assert page.locator("#txt2img_open_folder").count() == 0 or not page.locator("#txt2img_open_folder").is_visible()
        _extensions_tab(page)
        assert "enable-insecure-extension-access" in page.locator("#extensions_installed_info").inner_text()
        box = page.locator("#extensions_installed_html tr[data-extension='ext_demo'] input.extension-enable")
        assert box.is_disabled() and box.is_checked()  # still listed
        page.locator("#extensions_install_from_url_tab-button").click()
        set_text(page, "extension_install_url", bare_repo.as_uri())
        page.locator("#extension_install_button").click()
        message = _wait_text(page, "extension_install_result", "enable-insecure-extension-access")
        assert "Could not install" in message
        assert not (srv.data_dir / "extensions" / "ext_remote").exists()
        rec.check_clean()
    finally:
        ctx.close()


def test_disable_apply_and_restart(server: EaselServer, open_page) -> None:
    rec = open_page()
    page = rec.page
    assert "demo extension" in page.evaluate("document.head.innerHTML")  # ext_demo's script is on the page
    pid = server.proc.pid
    _extensions_tab(page)
    page.locator("#extensions_installed_html tr[data-extension='ext_demo'] input.extension-enable").uncheck()
    page.evaluate("window.easelBeforeRestart = true")
    page.locator("#extensions_apply").click()
    _wait_text(page, "extensions_installed_info", "Restarting")
    config = json.loads((server.data_dir / "config.json").read_text())
    assert config["disabled_extensions"] == ["ext_demo"]
    # The page waits for the restarted server and reloads itself.
    page.wait_for_function("window.easelBeforeRestart === undefined && !!document.querySelector('#txt2img_generate')",
                           timeout=120_000, polling=500)
    page.wait_for_selector("#tab_extensions-button", timeout=60_000)
    assert server.proc.pid == pid and server.proc.poll() is None  # the same process, re-executed
    assert "Restarting:" in server.read_log()
    assert "demo extension" not in page.evaluate("document.head.innerHTML")
    assert page.evaluate("document.documentElement.dataset.extUiTab") == "loaded"
    _extensions_tab(page)
    assert not page.locator("#extensions_installed_html tr[data-extension='ext_demo'] input.extension-enable").is_checked()
    assert page.locator("#extensions_installed_html tr[data-extension='ext_ui_tab'] input.extension-enable").is_checked()
    page.locator("#tab_settings-button").click()
    sections = _settings_sections(page)
    assert "UI tab extension" in sections and "Demo extension" not in sections  # ext_demo's setting is gone
    rec.check_clean()
