"""The ui_tab_order and hidden_tabs settings: the top-level tabs' order and visibility."""

from __future__ import annotations

import pytest

from modules import cmd_args, shared
from modules.ui import tab_order
from modules.ui.tab_order import PageTab

TITLES = ["txt2img", "img2img", "PNG Info", "UI tab ext", "Extensions", "Settings"]


def _tabs() -> list[PageTab]:
    return [PageTab(title, title.lower().replace(" ", "_"), lambda: None) for title in TITLES]


def test_named_tabs_come_first_and_the_rest_keep_their_order(instance):
    shared.opts.set("ui_tab_order", ["PNG Info", "img2img", "no such tab"])
    arranged = tab_order.arrange(_tabs())
    assert [t.title for t in arranged] == ["PNG Info", "img2img", "txt2img", "UI tab ext", "Extensions", "Settings"]
    assert all(t.shown for t in arranged)
    assert shared.tab_names == TITLES


def test_hidden_tabs_are_hidden_except_settings(instance):
    shared.opts.set("hidden_tabs", ["txt2img", "UI tab ext", "Settings"])
    shown = {t.title: t.shown for t in tab_order.arrange(_tabs())}
    assert shown == {"txt2img": False, "img2img": True, "PNG Info": True, "UI tab ext": False,
                     "Extensions": True, "Settings": True}


def test_choices_are_the_page_tabs_and_keep_a_saved_name_it_lacks(instance):
    tab_order.arrange(_tabs())
    shared.opts.set("hidden_tabs", ["Gone extension tab"])
    assert tab_order.choices("ui_tab_order")["choices"] == TITLES
    # Settings cannot be hidden, so it is not offered; a saved title of a tab no longer there stays.
    assert tab_order.choices("hidden_tabs", hideable=True)["choices"] == [*TITLES[:-1], "Gone extension tab"]


@pytest.mark.slow
def test_built_page_follows_the_settings(instance):
    from modules.ui import ui

    shared.opts.set("ui_tab_order", ["Settings", "PNG Info"])
    shared.opts.set("hidden_tabs", ["img2img", "Settings"])
    demo = ui.create_ui(cmd_args.parse_args(["--data-dir", str(instance)]))
    config = demo.get_config_file()
    tabitems = [c["props"] for c in config["components"] if c["type"] == "tabitem"
                and str(c["props"].get("elem_id", "")).startswith("tab_")]
    assert [t["elem_id"] for t in tabitems] == ["tab_settings", "tab_pnginfo", "tab_txt2img", "tab_img2img",
                                                "tab_extensions"]
    assert [t["elem_id"] for t in tabitems if t.get("visible") is False] == ["tab_img2img"]
    tabs = next(c for c in config["components"] if c["props"].get("elem_id") == "tabs")
    assert tabs["props"]["selected"] == "settings"  # the first tab shown is the one open
    # The settings offer the page's tabs as choices.
    order = next(c for c in config["components"] if c["props"].get("elem_id") == "setting_ui_tab_order")
    assert [c[0] for c in order["props"]["choices"]] == ["txt2img", "img2img", "PNG Info", "Extensions", "Settings"]
