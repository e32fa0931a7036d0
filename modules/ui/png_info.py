"""The PNG Info tab: read the generation parameters and other text chunks of a dropped image."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image

from modules import infotext_utils

log = logging.getLogger(__name__)


@dataclass
class PngInfoTab:
    image: Any
    parameters: Any
    info_html: Any
    send_buttons: dict[str, Any]


def describe_image(path: str | None) -> tuple[str, str]:
    """(parameters text, HTML listing the parameters and every other info item) of an image file."""
    if not path:
        return "", ""
    try:
        with Image.open(path) as im:
            im.load()
            geninfo, items = infotext_utils.read_info_from_image(im)
    except (OSError, ValueError) as e:
        return "", f"<div class='easel-error'>Could not read this image: {html.escape(str(e))}</div>"
    parts = []
    if geninfo:
        parts.append(f"<div class='pnginfo-item'><p><b>parameters</b></p><p>"
                     f"{html.escape(geninfo).replace(chr(10), '<br>')}</p></div>")
    for key, value in items.items():
        text = value if isinstance(value, str) else repr(value)
        parts.append(f"<div class='pnginfo-item'><p><b>{html.escape(str(key))}</b></p><p>"
                     f"{html.escape(text).replace(chr(10), '<br>')}</p></div>")
    if not parts:
        parts.append("<div class='pnginfo-empty'>This image holds no generation parameters.</div>")
    return geninfo or "", "\n".join(parts)


def build() -> PngInfoTab:
    with gr.Row(equal_height=False, elem_id="pnginfo_row"):
        with gr.Column(variant="panel", scale=1):
            image = gr.Image(label="Source", elem_id="pnginfo_image", type="filepath", image_mode=None,
                             sources=["upload", "clipboard"], height=512)
        with gr.Column(variant="panel", scale=1):
            info_html = gr.HTML(elem_id="pnginfo_html_info", elem_classes="pnginfo-html")
            parameters = gr.Textbox(visible=False, elem_id="pnginfo_generation_info")
            buttons = {}
            with gr.Row(elem_id="pnginfo_send_buttons", elem_classes="image-buttons"):
                for target in ("txt2img", "img2img", "inpaint"):
                    buttons[target] = gr.Button(f"Send to {target}", elem_id=f"pnginfo_send_to_{target}", size="sm")
    image.change(fn=describe_image, inputs=[image], outputs=[parameters, info_html], show_progress="hidden",
                 concurrency_limit=None, api_name=False)
    for target, button in buttons.items():
        infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(
            paste_button=button, tabname=target, source_text_component=parameters,
            source_image_component=image if target != "txt2img" else None, source_tabname="pnginfo"))
    return PngInfoTab(image, parameters, info_html, buttons)
