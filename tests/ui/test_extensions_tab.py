"""The Extensions tab's actions and HTML, the page side of extensions (scripts, styles, tabs, paste
hook) and the restart machinery, without a browser."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from modules import cmd_args, errors, extensions, restart, script_callbacks, script_loading, shared
from modules.ui import extensions_tab, paste, ui

DATA = Path(__file__).resolve().parents[1] / "extensions" / "data"
GIT = ["git", "-c", "user.name=Easel Test", "-c", "user.email=test@example.invalid", "-c", "init.defaultBranch=main"]


def _start(root: Path, *flags: str, exts: tuple[str, ...] = ("ext_demo", "ext_broken", "ext_ui_tab"),
           settings: dict | None = None) -> Path:
    data = root / "data"
    (data / "extensions").mkdir(parents=True, exist_ok=True)
    for name in exts:
        if not (data / "extensions" / name).exists():
            shutil.copytree(DATA / name, data / "extensions" / name)
    if settings is not None:
        (data / "config.json").write_text(json.dumps(settings))
    args, _parser = script_loading.parse_args_with_extensions(
        ["--data-dir", str(data), "--models-dir", str(root / "models"), *flags])
    shared.initialize(args)
    extensions.clear_errors()
    script_loading.load_extensions()
    return data


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    yield
    script_callbacks.clear_callbacks()
    extensions.extensions.clear()
    extensions.clear_errors()
    restart.detach()
    if shared.model_manager is not None:
        shared.model_manager.close()
    shared.initialize(cmd_args.defaults(), load_settings=False)


def _repo(root: Path, name: str = "ext_remote") -> tuple[Path, Path]:
    """(work tree, bare repository) holding ext_installable."""
    work = root / f"{name}-work"
    shutil.copytree(DATA / "ext_installable", work)
    subprocess.run([*GIT, "init", "-q", str(work)], check=True)
    subprocess.run([*GIT, "-C", str(work), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(work), "commit", "-qm", "first"], check=True)
    bare = root / f"{name}.git"
    subprocess.run([*GIT, "clone", "-q", "--bare", str(work), str(bare)], check=True)
    subprocess.run([*GIT, "-C", str(work), "remote", "add", "origin", str(bare)], check=True)
    return work, bare


def _row(table: str, name: str) -> str:
    start = table.index(f"data-extension='{name}'>")  # the row's own attribute ends its <tr> tag
    return table[start:table.index("</tr>", start)]


# --- page integration ----------------------------------------------------------------------------------

def test_page_serves_enabled_extensions_scripts_and_styles_after_easels(tmp_path: Path) -> None:
    _start(tmp_path, settings={"disabled_extensions": ["ext_demo"]})
    args = shared.cmd_opts
    head = ui.page_head(args)
    css = ui.page_css()
    assert "document.documentElement.dataset.extUiTab" in head
    assert head.index("extUiTab") > head.index("Ctrl+Enter")  # after Easel's own javascript/
    assert "#ext_ui_tab_styled" in css and css.index("#ext_ui_tab_styled") > css.index(".gradio-container")
    assert 'console.log("demo extension")' not in head and ".demo-ext" not in css  # disabled


def test_script_tag_keeps_a_closing_tag_inside_the_code(tmp_path: Path) -> None:
    js = tmp_path / "x.js"
    js.write_text('var s = "</script><b>";')
    mjs = tmp_path / "y.mjs"
    mjs.write_text("export const a = 1;")
    assert ui._script_tag(js) == '<script>\nvar s = "<\\/script><b>";\n</script>'
    assert ui._script_tag(mjs).startswith('<script type="module">')


def test_extension_tabs_after_before_ui_and_bad_tabs_reported_with_the_extension(tmp_path: Path) -> None:
    _start(tmp_path)
    script_callbacks.before_ui_callback()
    tabs = ui._extension_tabs()
    assert [(t.owner, t.title, t.elem_id) for t in tabs] == [("ext_ui_tab", "UI tab ext", "ext_ui_tab")]
    # ext_demo returns (None, "Demo tab", "demo_tab"): reported under its name and left out.
    demo_errors = extensions.find_extension("ext_demo").errors
    assert demo_errors and demo_errors[-1].what == "on_ui_tabs" and "Demo tab" in demo_errors[-1].exception

    def raising() -> list:
        raise RuntimeError("tab callback exploded")

    script_callbacks.on_ui_tabs(raising)
    script_callbacks.on_ui_tabs(lambda: ("not", "a list"))
    tabs = ui._extension_tabs()
    assert [t.elem_id for t in tabs] == ["ext_ui_tab"]
    messages = [e["message"] for e in errors.get_exceptions()]
    assert any("callbacks_ui_tabs" in m for m in messages)
    assert any("not (blocks, title, elem_id)" in m for m in messages)


def test_paste_runs_infotext_pasted_callbacks_before_fields_are_filled(tmp_path: Path) -> None:
    _start(tmp_path)
    text = "a fox\nSteps: 9, Seed: 77, Size: 64x64, Ext tag: zz9"
    params = paste.parse_for_paste(text)
    assert params["Prompt"] == "a fox, tagged zz9"  # ext_ui_tab's on_infotext_pasted

    seen = []

    def failing(infotext: str, p: dict) -> None:
        raise ValueError("paste hook failed")

    script_callbacks.on_infotext_pasted(failing)
    script_callbacks.on_infotext_pasted(lambda infotext, p: seen.append((infotext, dict(p))))
    params = paste.parse_for_paste(text)
    assert params["Steps"] == "9" and seen and seen[0][0] == text  # a failing hook does not stop the paste


def test_extension_settings_are_in_the_settings_sections(tmp_path: Path) -> None:
    from modules.ui import settings

    _start(tmp_path)
    sections = settings.visible_options(set())
    keys = [k for k, _ in sections[("ext_ui_tab", "UI tab extension")]]
    assert keys == ["ext_ui_tab_greeting"]
    _message, changed = settings.apply_settings(["ext_ui_tab_greeting"], ["howdy"])
    assert changed == ["ext_ui_tab_greeting"]
    assert json.loads(shared.paths.config_file.read_text())["ext_ui_tab_greeting"] == "howdy"
    assert shared.opts.as_dict()["ext_ui_tab_greeting"] == "howdy"


# --- Installed -----------------------------------------------------------------------------------------

def test_installed_table_lists_every_extension_with_its_state_and_errors(tmp_path: Path) -> None:
    _start(tmp_path, settings={"disabled_extensions": ["ext_demo"]})
    table = extensions_tab.installed_table()
    for name in ("ext_broken", "ext_demo", "ext_ui_tab"):
        assert f"data-extension='{name}'>" in table
    assert " checked" not in _row(table, "ext_demo").split("</td>")[0]
    assert " checked" in _row(table, "ext_ui_tab").split("</td>")[0]
    assert "broken on purpose" in _row(table, "ext_broken")
    # A re-render keeps what the user unticked but did not apply yet.
    assert " checked" not in _row(extensions_tab.installed_table(["ext_ui_tab"]), "ext_ui_tab").split("</td>")[0]


def test_apply_saves_disabled_list_and_says_when_it_takes_effect(tmp_path: Path) -> None:
    data = _start(tmp_path)
    result = extensions_tab.apply_changes('["ext_demo"]', "[]", "extra")
    saved = json.loads((data / "config.json").read_text())
    assert saved["disabled_extensions"] == ["ext_demo"] and saved["disable_all_extensions"] == "extra"
    assert not result.restarting and "next start" in result.message
    assert " checked" not in _row(result.table, "ext_demo").split("</td>")[0]

    for bad, why in (('["nope"]', "no extension named nope"), ("{", "not valid JSON"), ('[1]', "JSON list of names")):
        result = extensions_tab.apply_changes(bad, "[]", "none")
        assert why in result.message and "easel-error" in result.message
    result = extensions_tab.apply_changes("[]", "[]", "some")
    assert "must be one of none, extra, all" in result.message
    assert json.loads((data / "config.json").read_text())["disabled_extensions"] == ["ext_demo"]


def test_apply_restarts_a_restartable_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _start(tmp_path)
    server = SimpleNamespace(should_exit=False, config=SimpleNamespace(timeout_graceful_shutdown=None))
    restart.attach(server)
    monkeypatch.setattr(restart.os, "name", "posix")
    result = extensions_tab.apply_changes("[]", "[]", "none")
    assert result.restarting and extensions_tab.RESTART_MARKER in result.message
    assert restart.restart_requested()
    deadline = time.time() + 5
    while not server.should_exit and time.time() < deadline:
        time.sleep(0.05)
    assert server.should_exit and server.config.timeout_graceful_shutdown == restart.GRACEFUL_SHUTDOWN_S


def test_restart_needs_an_attached_server_and_reuses_the_command_line() -> None:
    assert not restart.is_restartable()
    with pytest.raises(RuntimeError, match="cannot restart itself"):
        restart.request_restart()
    cmd = restart.command()
    assert cmd[0] == restart.sys.executable and cmd[1:] == restart.sys.orig_argv[1:]


def test_management_is_refused_but_listed_when_reachable_from_other_hosts(tmp_path: Path) -> None:
    data = _start(tmp_path, "--listen")
    assert "enable-insecure-extension-access" in extensions_tab.access_note()
    table = extensions_tab.installed_table()
    assert "data-extension='ext_demo'>" in table and " disabled" in _row(table, "ext_demo")
    result = extensions_tab.apply_changes('["ext_demo"]', "[]", "none")
    assert "enable-insecure-extension-access" in result.message
    assert "disabled_extensions" not in (json.loads((data / "config.json").read_text())
                                         if (data / "config.json").exists() else {})
    ok, message = extensions_tab.install("file:///nowhere.git")
    assert not ok and "enable-insecure-extension-access" in message
    message, _table = extensions_tab.check_for_updates("[]")
    assert "enable-insecure-extension-access" in message


def test_install_check_for_updates_and_update_through_apply(tmp_path: Path) -> None:
    data = _start(tmp_path, exts=())
    work, bare = _repo(tmp_path)
    assert extensions_tab.install("")[1].count("Enter the URL") == 1
    ok, message = extensions_tab.install(bare.as_uri(), "", "mine")
    assert ok and "Installed mine" in message
    assert (data / "extensions" / "mine" / "installed.txt").read_text() == "ok"  # install.py ran
    ok, message = extensions_tab.install(bare.as_uri(), "", "mine")
    assert not ok and "exists already" in message
    ok, message = extensions_tab.install((tmp_path / "missing.git").as_uri())
    assert not ok and "Could not install" in message

    message, table = extensions_tab.check_for_updates("[]")
    assert "none has new commits" in message and "latest" in _row(table, "mine")
    (work / "NEW.txt").write_text("new")
    subprocess.run([*GIT, "-C", str(work), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(work), "commit", "-qm", "second"], check=True)
    subprocess.run([*GIT, "-C", str(work), "push", "-q", "origin", "HEAD:main"], check=True)
    message, table = extensions_tab.check_for_updates("[]")
    assert "1 can be updated (mine)" in message
    assert "class='extension-update'" in _row(table, "mine") and "behind HEAD" in _row(table, "mine")

    result = extensions_tab.apply_changes("[]", '["mine"]', "none")
    assert "1 updated" in result.message
    assert (data / "extensions" / "mine" / "NEW.txt").read_text() == "new"


# --- Available -----------------------------------------------------------------------------------------

def test_available_index_unreachable_invalid_and_loaded(tmp_path: Path) -> None:
    _start(tmp_path, exts=("ext_demo",))
    message, items, table = extensions_tab.load_available((tmp_path / "missing.json").as_uri())
    assert "could not read the extension index" in message and items == [] and table == ""
    message, items, _table = extensions_tab.load_available("ftp://example.invalid/index.json")
    assert "not an http(s):// or file:// URL" in message and items == []

    index = tmp_path / "index.json"
    index.write_text(json.dumps({"extensions": [
        {"name": "Zeta <tool>", "url": "https://example.invalid/a/zeta.git", "description": "upscaling helper",
         "tags": ["script"], "added": "2023-05-01"},
        {"name": "alpha", "url": "https://example.invalid/b/ext_demo", "description": "prompt things",
         "tags": ["tab"], "added": "2024-01-01"}]}))
    message, items, table = extensions_tab.load_available(index.as_uri())
    assert "Loaded 2 extensions" in message and len(items) == 2
    assert "Zeta &lt;tool&gt;" in table and "<tool>" not in table
    assert table.index("alpha") < table.index("Zeta")  # newest first
    assert "data-url='https://example.invalid/a/zeta.git'" in table
    assert ">Installed</button>" in table  # ext_demo's folder exists

    assert [i["name"] for i in extensions_tab.filter_and_sort(items, "", "a-z")] == ["alpha", "Zeta <tool>"]
    assert [i["name"] for i in extensions_tab.filter_and_sort(items, "", "oldest first")] == ["Zeta <tool>", "alpha"]
    assert [i["name"] for i in extensions_tab.filter_and_sort(items, "SCRIPT upscal")] == ["Zeta <tool>"]
    assert "No extension in the index matches" in extensions_tab.available_table(items, "nothing-like-this")


@pytest.mark.slow
def test_page_places_extension_tabs_and_the_extensions_tab_before_settings(tmp_path: Path) -> None:
    _start(tmp_path)
    announced: list[str] = []
    script_callbacks.on_after_component(lambda component, **kw: announced.append(kw.get("elem_id") or ""))
    demo = ui.create_ui(shared.cmd_opts)
    config = demo.get_config_file()
    by_id = {c["id"]: c for c in config["components"]}
    top = next(c for c in config["components"] if c["props"].get("elem_id") == "tabs")

    def children(node: dict) -> list[dict]:
        return node.get("children", [])

    def find(node: dict, wanted: int) -> dict | None:
        if node["id"] == wanted:
            return node
        return next((hit for child in children(node) if (hit := find(child, wanted)) is not None), None)

    layout = find(config["layout"], top["id"])
    labels = [by_id[c["id"]]["props"]["label"] for c in children(layout)]
    assert labels == ["txt2img", "img2img", "PNG Info", "UI tab ext", "Extensions", "Settings"]
    assert "ext_ui_tab_text" in announced  # an extension tab's components reach the component hooks
    ids = {c["props"].get("elem_id") for c in config["components"]}
    for wanted in ("tab_extensions", "tabs_extensions", "extensions_installed_top", "extensions_apply",
                   "extensions_check", "extensions_disable_all", "extensions_installed_html", "extensions_disabled_list",
                   "extensions_update_list", "extension_to_install", "install_extension_button",
                   "extension_install_result", "tab_ext_ui_tab"):
        assert wanted in ids, wanted
