"""The page's copy of the options: the global `opts` that page scripts read (javascript/page-api.js).

A textbox in the page but never shown (elem_id "settings_json", as in A1111) holds
`opts.dumpjson()`. The page load fills it, and so does every event that changes an option (Apply
settings, the quicksettings, a checkpoint card). Each time its value changes, its change event hands
the value to the page script, which updates `opts` and runs the onOptionsChanged callbacks. The
change event, not a step chained after the fill, is what reads the value: it fires once the page
holds the new value, where a chained step could still read the old one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import gradio as gr

from modules import shared

ELEM_ID = "settings_json"
LOADED_JS = "() => { window.easelPage.loaded(); }"
CHANGED_JS = "(options) => { window.easelPage.setOptions(options); }"


def options_json() -> str:
    return shared.opts.dumpjson()


def build() -> gr.Textbox:
    """The textbox; its value comes with the page load (config.json may change after the build)."""
    box = gr.Textbox(elem_id=ELEM_ID, visible="hidden", label="Options as JSON")
    box.change(fn=None, inputs=[box], js=CHANGED_JS, show_progress="hidden", api_name=False)
    return box


def on_load(event: Any) -> None:
    """After the page's load event (which must list the textbox among its outputs): the page is ready."""
    event.then(fn=None, js=LOADED_JS, api_name=False)


def follow(events: Iterable[Any], box: gr.Textbox) -> None:
    """After each of `events` answers, the textbox gets the options as they are now."""
    for event in events:
        event.then(fn=options_json, outputs=[box], show_progress="hidden", queue=False, api_name=False)
