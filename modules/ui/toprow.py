"""The prompt row of txt2img/img2img: prompts with token counters, Generate / Interrupt / Skip, ↙, and
the styles: the Styles dropdown (sent with the job; processing applies them), 📋 to write the chosen
styles into the prompt boxes, and 🖌️ for a small editor that saves the current prompts as a style.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from modules.ui import styles_ui, tokens
from modules.ui.common import APPLY_STYLES_SYMBOL, CLEAR_SYMBOL, EDIT_STYLES_SYMBOL, PASTE_SYMBOL
from modules.ui_components import ToolButton


@dataclass
class Toprow:
    tab: str
    prompt: Any = None
    negative_prompt: Any = None
    token_counter: Any = None
    negative_token_counter: Any = None
    generate: Any = None
    interrupt: Any = None
    skip: Any = None
    paste: Any = None
    clear: Any = None
    status: Any = None
    styles: Any = None
    apply_styles: Any = None
    edit_styles: Any = None
    style_editor: Any = None

    def build(self) -> Toprow:
        tab = self.tab
        with gr.Row(elem_id=f"{tab}_toprow", elem_classes="toprow", equal_height=False):
            with gr.Column(scale=6, elem_id=f"{tab}_prompt_container", elem_classes="prompt-container"):
                with gr.Group(elem_classes="prompt-box"):
                    self.token_counter = gr.HTML("<span class='token-counter'>0/75</span>",
                                                 elem_id=f"{tab}_token_counter", elem_classes="token-counter-box")
                    self.prompt = gr.Textbox(label="Prompt", elem_id=f"{tab}_prompt", show_label=False, lines=3,
                                             max_lines=12, placeholder="Prompt\n(Ctrl+Enter to generate)")
                with gr.Group(elem_classes="prompt-box"):
                    self.negative_token_counter = gr.HTML("<span class='token-counter'>0/75</span>",
                                                          elem_id=f"{tab}_negative_token_counter",
                                                          elem_classes="token-counter-box")
                    self.negative_prompt = gr.Textbox(label="Negative prompt", elem_id=f"{tab}_neg_prompt",
                                                      show_label=False, lines=2, max_lines=12,
                                                      placeholder="Negative prompt")
            with gr.Column(scale=1, min_width=220, elem_id=f"{tab}_actions_column", elem_classes="actions-column"):
                with gr.Row(elem_id=f"{tab}_generate_box", elem_classes="generate-box"):
                    self.generate = gr.Button("Generate", variant="primary", elem_id=f"{tab}_generate",
                                              elem_classes="generate-button")
                    self.interrupt = gr.Button("Interrupt", elem_id=f"{tab}_interrupt", visible=False,
                                               variant="stop", elem_classes="interrupt-button", min_width=60)
                    self.skip = gr.Button("Skip", elem_id=f"{tab}_skip", visible=False, elem_classes="skip-button",
                                          min_width=60)
                with gr.Row(elem_classes="tool-row"):
                    self.paste = ToolButton(PASTE_SYMBOL, elem_id=f"{tab}_paste",
                                            tooltip="Read generation parameters from prompt or last generation if "
                                                    "prompt is empty into user interface.")
                    self.clear = ToolButton(CLEAR_SYMBOL, elem_id=f"{tab}_clear_prompt", tooltip="Clear prompt")
                    self.apply_styles = ToolButton(APPLY_STYLES_SYMBOL, elem_id=f"{tab}_style_apply",
                                                   tooltip="Apply all selected styles to prompts")
                    self.edit_styles = ToolButton(EDIT_STYLES_SYMBOL, elem_id=f"{tab}_styles_edit_button",
                                                  tooltip="Edit styles")
                self.styles = gr.Dropdown(styles_ui.style_names(), value=[], multiselect=True, label="Styles",
                                          show_label=False, elem_id=f"{tab}_styles", elem_classes="styles-dropdown",
                                          allow_custom_value=False, container=False)
                self.style_editor = styles_ui.StyleEditor(tab).build()
                self.status = gr.HTML("", elem_id=f"{tab}_interrupt_status", elem_classes="interrupt-status")
        self.clear.click(fn=lambda: ("", ""), outputs=[self.prompt, self.negative_prompt], show_progress="hidden",
                         queue=False)
        self.style_editor.connect(self)
        return self

    def connect_token_counters(self, steps: Any) -> None:
        """Live "N/75" counters; they follow the text and the step count (prompt editing)."""
        for box, counter in ((self.prompt, self.token_counter), (self.negative_prompt, self.negative_token_counter)):
            for event in (box.change, steps.release):
                event(fn=tokens.token_counter_html, inputs=[box, steps], outputs=[counter],
                      show_progress="hidden", trigger_mode="always_last", concurrency_limit=None)
