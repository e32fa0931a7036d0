"""Localization files: where they are found, which one wins a name clash, broken files, the setting,
and the mapping placed safely in the page head."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from modules import cmd_args, extensions, localization, shared
from modules.options import Options
from modules.paths import Paths
from modules.shared_options import options_templates
from modules.ui import ui


def _write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf8")
    return path


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A data folder with its own localizations and three extensions (ext_c disabled), made current."""
    data = tmp_path / "data"
    _write(data / "localizations" / "de.json", {"Generate": "Erzeugen"})
    _write(data / "localizations" / "xx.json", {"Generate": "from the data folder"})
    _write(data / "extensions" / "ext_a" / "localizations" / "xx.json", {"Generate": "from ext_a"})
    _write(data / "extensions" / "ext_a" / "localizations" / "yy.json", {"Generate": "yy of ext_a"})
    _write(data / "extensions" / "ext_b" / "localizations" / "yy.json", {"Generate": "yy of ext_b"})
    _write(data / "extensions" / "ext_b" / "localizations" / "notes.txt", "not a localization")
    _write(data / "extensions" / "ext_c" / "localizations" / "zz.json", {"Generate": "disabled"})
    args = cmd_args.parse_args(["--data-dir", str(data)])
    opts = Options(options_templates)
    opts.set("disabled_extensions", ["ext_c"], run_callbacks=False)
    monkeypatch.setattr(shared, "cmd_opts", args)
    monkeypatch.setattr(shared, "paths", Paths.from_args(args))
    monkeypatch.setattr(shared, "opts", opts)
    monkeypatch.setattr(localization, "_listeners", {})
    extensions.list_extensions()
    yield data
    extensions.extensions.clear()


def test_data_folder_and_enabled_extensions_are_listed_later_ones_winning(instance: Path) -> None:
    found = localization.available()
    assert sorted(found) == ["de", "xx", "yy"]  # ext_c is disabled; notes.txt is no localization
    assert found["de"] == instance / "localizations" / "de.json"
    # Extensions come after the data folder, and a later extension after an earlier one.
    assert found["xx"] == instance / "extensions" / "ext_a" / "localizations" / "xx.json"
    assert found["yy"] == instance / "extensions" / "ext_b" / "localizations" / "yy.json"
    assert localization.names() == ["None", "de", "xx", "yy"]
    assert localization.load("xx") == {"Generate": "from ext_a"}
    assert localization.load("None") == {}


def test_localizations_dir_flag_replaces_the_data_folder(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    _write(other / "fr.json", {"Generate": "Générer"})
    args = cmd_args.parse_args(["--data-dir", str(tmp_path / "data"), "--localizations-dir", str(other)])
    paths = Paths.from_args(args)
    assert paths.localizations_dir == other.resolve()
    assert Paths.from_args(cmd_args.parse_args(["--data-dir", str(tmp_path)])).localizations_dir == \
        tmp_path.resolve() / "localizations"
    assert localization.collect(localization.files_in(paths.localizations_dir)) == {"fr": other.resolve() / "fr.json"}


def test_broken_files_are_logged_by_name_and_count_as_empty(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = _write(tmp_path / "bad.json", '{"Generate": "Erzeugen",')
    listing = _write(tmp_path / "list.json", ["Generate", "Erzeugen"])
    mixed = _write(tmp_path / "mixed.json", {"Generate": "Erzeugen", "Steps": 5, "Seed": None})
    with caplog.at_level(logging.WARNING, logger="modules.localization"):
        assert localization.read_mapping(bad) == {}
        assert localization.read_mapping(listing) == {}
        assert localization.read_mapping(mixed) == {"Generate": "Erzeugen"}
        assert localization.read_mapping(tmp_path / "missing.json") == {}
    text = caplog.text
    for name in ("bad.json", "list.json", "mixed.json", "missing.json"):
        assert name in text


def test_unknown_choice_leaves_the_page_in_english(instance: Path, caplog: pytest.LogCaptureFixture) -> None:
    shared.opts.set("localization", "qq", run_callbacks=False)
    with caplog.at_level(logging.WARNING, logger="modules.localization"):
        assert localization.current() == {}
        assert localization.head_script() == ""
    assert "'qq' is not installed" in caplog.text and "de, xx, yy" in caplog.text


def test_mapping_cannot_break_out_of_its_script_element() -> None:
    mapping = {"Generate": "</script><script>alert(1)</script>", "a & b": "<!-- c -->", "line": "x\u2028y"}
    text = localization.script_json(mapping)
    for unsafe in ("<", ">", "&", "\u2028"):
        assert unsafe not in text
    assert json.loads(text) == mapping  # the escapes are still the same strings
    tag = localization.head_script(mapping)
    assert tag.startswith("<script>window.localization = {") and tag.endswith("};</script>")
    assert tag.count("</script>") == 1
    assert localization.head_script({}) == ""


def test_setting_offers_the_files_and_is_listed_with_the_options(instance: Path) -> None:
    info = shared.opts.data_labels["localization"]
    assert info.default == "None"
    assert info.section == ("user-interface", "User interface")
    assert info.reload_ui
    assert info.component_args()["choices"] == ["None", "de", "xx", "yy"]
    assert shared.opts.as_dict()["localization"] == "None"


def test_page_head_carries_the_chosen_mapping_before_the_page_script(instance: Path) -> None:
    assert "window.localization = " not in ui.page_head(shared.cmd_opts)
    shared.opts.set("localization", "de", run_callbacks=False)
    head = ui.page_head(shared.cmd_opts)
    mapping_at = head.index('<script>window.localization = {"Generate": "Erzeugen"};</script>')
    assert mapping_at < head.index("window.getTranslation")  # javascript/localization.js comes later


def test_changing_the_setting_tells_the_page(instance: Path) -> None:
    heads: list[str] = []
    localization.on_change("page", lambda: heads.append(localization.head_script()))
    localization.on_change("failing", lambda: 1 / 0)  # a failing listener does not stop the others
    assert shared.opts.set("localization", "xx")
    assert heads == ['<script>window.localization = {"Generate": "from ext_a"};</script>']
    localization.on_change("page", lambda: heads.append("replaced"))
    shared.opts.set("localization", "None")
    assert heads[-1] == "replaced" and len(heads) == 2
