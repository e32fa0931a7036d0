"""Prompt styles in the top row: the pure operations behind 📋 and the small 🖌️ style editor.

The styles themselves live in ``styles.csv`` (`modules.styles`); saving goes through
`StyleDatabase.set_style`, which writes the file atomically and keeps a ``.bak``.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr

from modules.ui.common import CLEAR_SYMBOL, SAVE_SYMBOL
from modules.ui_components import ToolButton

log = logging.getLogger(__name__)


def _database() -> Any:
    from modules import styles

    return styles.default_database()


def style_names() -> list[str]:
    """The selectable styles (empty when the styles file cannot be read)."""
    try:
        return _database().names()
    except Exception as e:  # the dropdown must still build without a readable styles file
        log.error("styles could not be listed: %s", e)
        return []


def apply_styles(prompt: str, negative_prompt: str, selected: list[str] | None) -> tuple[str, str, list[str]]:
    """📋: the prompts with the selected styles written into them, and an emptied selection
    (so the styles are not applied a second time by the job)."""
    selected = [s for s in (selected or []) if s]
    if not selected:
        return prompt or "", negative_prompt or "", []
    db = _database()
    return (db.apply_styles_to_prompt(prompt or "", selected),
            db.apply_negative_styles_to_prompt(negative_prompt or "", selected), [])


def save_style(name: str, prompt: str, negative_prompt: str) -> str:
    """Save the prompts as style `name` (new or replaced); returns the saved name.

    Raises ValueError for a name the styles file cannot hold.
    """
    name = (name or "").strip()
    style = _database().set_style(name, prompt or "", negative_prompt or "")
    return style.name


def delete_style(name: str) -> bool:
    return bool(name) and _database().delete_style(name.strip())


def _note(text: str, error: bool = False) -> str:
    cls = "style-note style-note-error" if error else "style-note"
    return f"<span class='{cls}'>{html.escape(text)}</span>"


@dataclass
class StyleEditor:
    """Name + 💾 save-current-prompts + 🗑️ delete, shown under the Styles dropdown by 🖌️."""

    tab: str
    group: Any = None
    name: Any = None
    save: Any = None
    delete: Any = None
    note: Any = None
    open: Any = None

    def build(self) -> StyleEditor:
        tab = self.tab
        self.open = gr.State(False)
        with gr.Group(visible=False, elem_id=f"{tab}_style_editor", elem_classes="style-editor") as self.group:
            with gr.Row(equal_height=True, elem_classes="style-editor-row"):
                self.name = gr.Dropdown(style_names(), value=None, label="Style name", show_label=False,
                                        allow_custom_value=True, elem_id=f"{tab}_edit_style_name",
                                        container=False, scale=4, min_width=100)
                self.save = ToolButton(SAVE_SYMBOL, elem_id=f"{tab}_edit_style_save",
                                       tooltip="Save the current prompt and negative prompt as this style")
                self.delete = ToolButton(CLEAR_SYMBOL, elem_id=f"{tab}_edit_style_delete",
                                         tooltip="Delete this style")
            self.note = gr.HTML("", elem_id=f"{tab}_edit_style_note", elem_classes="style-note-box")
        return self

    def connect(self, toprow: Any) -> None:
        """Wire the top row's 📋, 🖌️ and the editor to the prompts and the Styles dropdown."""
        styles = toprow.styles

        toprow.apply_styles.click(fn=apply_styles, inputs=[toprow.prompt, toprow.negative_prompt, styles],
                                  outputs=[toprow.prompt, toprow.negative_prompt, styles], show_progress="hidden",
                                  concurrency_limit=None, api_name=False)

        def toggle(is_open: bool) -> tuple[bool, Any, Any]:
            now = not is_open
            return now, gr.Group(visible=now), gr.Dropdown(choices=style_names())

        toprow.edit_styles.click(fn=toggle, inputs=[self.open], outputs=[self.open, self.group, self.name],
                                 show_progress="hidden", concurrency_limit=None, api_name=False)

        def refresh_choices(selected: list[str] | None) -> Any:
            # Another tab (or a hand edit of styles.csv) may have changed the styles.
            try:
                _database().reload()
            except Exception as e:
                log.warning("styles could not be reloaded: %s", e)
            names = style_names()
            return gr.Dropdown(choices=names, value=[s for s in (selected or []) if s in names])

        styles.focus(fn=refresh_choices, inputs=[styles], outputs=[styles], show_progress="hidden",
                     concurrency_limit=None, api_name=False)

        def on_save(name: str, prompt: str, negative: str, selected: list[str] | None) -> tuple[Any, Any, str]:
            try:
                saved = save_style(name, prompt, negative)
            except (ValueError, OSError) as e:
                return gr.skip(), gr.skip(), _note(str(e), error=True)
            names = style_names()
            return (gr.Dropdown(choices=names, value=list(selected or [])), gr.Dropdown(choices=names, value=saved),
                    _note(f"Saved style {saved!r}."))

        self.save.click(fn=on_save, inputs=[self.name, toprow.prompt, toprow.negative_prompt, styles],
                        outputs=[styles, self.name, self.note], show_progress="hidden", concurrency_limit=None,
                        api_name=False)

        def on_delete(name: str, selected: list[str] | None) -> tuple[Any, Any, str]:
            try:
                deleted = delete_style(name)
            except OSError as e:
                return gr.skip(), gr.skip(), _note(str(e), error=True)
            if not deleted:
                return gr.skip(), gr.skip(), _note(f"No style named {name!r}.", error=True)
            names = style_names()
            return (gr.Dropdown(choices=names, value=[s for s in (selected or []) if s in names]),
                    gr.Dropdown(choices=names, value=None), _note(f"Deleted style {name!r}."))

        self.delete.click(fn=on_delete, inputs=[self.name, styles], outputs=[styles, self.name, self.note],
                          show_progress="hidden", concurrency_limit=None, api_name=False)
