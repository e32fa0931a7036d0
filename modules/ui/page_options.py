"""The page's copy of the options: the global `opts` that page scripts read (javascript/page-api.js).

A hidden textbox (elem_id "settings_json", as in A1111) holds `opts.dumpjson()`. The page load
fills it and then tells the page script that the page is ready; every event that changes an
option (Apply settings, the quicksettings, a checkpoint card) refills it and hands the new values
to the script, which updates `opts` and runs the onOptionsChanged callbacks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import gradio as gr

from modules import shared

ELEM_ID = "settings_json"
LOADED_JS = "(options) => { window.easelPage.loaded(options); }"
CHANGED_JS = "(options) => { window.easelPage.setOptions(options); }"


def options_json() -> str:
    return shared.opts.dumpjson()


def build() -> gr.Textbox:
    """The hidden textbox; its value comes with the page load (config.json may change after the build)."""
    return gr.Textbox(elem_id=ELEM_ID, visible=False, label="Options as JSON")


def on_load(event: Any, box: gr.Textbox) -> None:
    """After the page's load event (which must list `box` among its outputs): the page is ready."""
    event.then(fn=None, inputs=[box], js=LOADED_JS, api_name=False)


def follow(events: Iterable[Any], box: gr.Textbox) -> None:
    """After each of `events` answers, the page's `opts` get the options as they are now."""
    for event in events:
        event.then(fn=options_json, outputs=[box], show_progress="hidden", queue=False, api_name=False).then(
            fn=None, inputs=[box], js=CHANGED_JS, api_name=False)
