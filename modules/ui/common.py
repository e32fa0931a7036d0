"""Helpers shared by the UI tabs: symbols, HTML snippets, value casting, sampler lists, auth."""

from __future__ import annotations

import html
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Tool-button symbols, as A1111 users know them.
RANDOM_SYMBOL = "\U0001f3b2\ufe0f"  # 🎲️
REUSE_SYMBOL = "\u267b\ufe0f"  # ♻️
PASTE_SYMBOL = "\u2199\ufe0f"  # ↙️
REFRESH_SYMBOL = "\U0001f504"  # 🔄
SWITCH_SYMBOL = "\u21c5"  # ⇅
CLEAR_SYMBOL = "\U0001f5d1\ufe0f"  # 🗑️
FOLDER_SYMBOL = "\U0001f4c2"  # 📂
APPLY_STYLES_SYMBOL = "\U0001f4cb"  # 📋
EDIT_STYLES_SYMBOL = "\U0001f58c\ufe0f"  # 🖌️
SAVE_SYMBOL = "\U0001f4be"  # 💾

RESIZE_MODES = ["Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"]
MASK_MODES = ["Inpaint masked", "Inpaint not masked"]
MASKED_CONTENT = ["fill", "original", "latent noise", "latent nothing"]
INPAINT_AREAS = ["Whole picture", "Only masked"]


def plaintext_to_html(text: str, classname: str | None = None) -> str:
    """Text shown as HTML paragraphs, escaped, one line per line (infotext under the gallery)."""
    content = "<br>\n".join(html.escape(line) for line in (text or "").split("\n"))
    cls = f' class="{html.escape(classname)}"' if classname else ""
    return f"<p{cls}>{content}</p>"


def error_html(message: str) -> str:
    """A visible error box for the output area."""
    return f'<div class="easel-error" role="alert"><strong>Error:</strong> {html.escape(message)}</div>'


def sampler_names() -> list[str]:
    from modules import sd_samplers

    return sd_samplers.visible_sampler_names()


def schedule_labels() -> list[str]:
    from modules.engine import samplers

    return samplers.schedule_labels()


def default_sampler() -> str:
    from modules.engine import samplers

    names = sampler_names()
    return samplers.DEFAULT_SAMPLER if samplers.DEFAULT_SAMPLER in names else (names[0] if names else "")


def cast_like(kind: str, value: Any, *, integer: bool = False) -> Any:
    """Convert a pasted or stored value to what a component of `kind` holds.

    kind is one of "number", "checkbox", "text", "choice", "multichoice". Values that cannot be
    converted raise ValueError so the caller can leave the field alone.
    """
    if kind == "number":
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a number")
        number = float(value)
        return round(number) if integer else number
    if kind == "checkbox":
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes", "on")
        return bool(value)
    if kind == "multichoice":
        if isinstance(value, str):
            try:
                decoded = json.loads(value)
            except json.JSONDecodeError:
                decoded = [v.strip() for v in value.split(",") if v.strip()]
            value = decoded
        return [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    return "" if value is None else str(value)


def component_kind(component: Any) -> tuple[str, bool]:
    """(kind for `cast_like`, whether it holds whole numbers) of a Gradio component."""
    import gradio as gr

    if isinstance(component, (gr.Slider, gr.Number)):
        step = getattr(component, "step", None)
        precision = getattr(component, "precision", None)
        integer = (precision == 0) or (step is not None and float(step).is_integer()
                                       and isinstance(component.value, int))
        return "number", integer
    if isinstance(component, gr.Checkbox):
        return "checkbox", False
    if isinstance(component, (gr.Dropdown, gr.CheckboxGroup)) and getattr(component, "multiselect", False):
        return "multichoice", False
    if isinstance(component, gr.CheckboxGroup):
        return "multichoice", False
    if isinstance(component, (gr.Dropdown, gr.Radio)):
        return "choice", False
    return "text", False


def parse_auth_pairs(text: str) -> list[tuple[str, str]]:
    """"user:pass,user2:pass2" (or one per line) -> [(user, pass), ...]; the password may hold ':'."""
    pairs = []
    for chunk in text.replace("\n", ",").split(","):
        chunk = chunk.strip()
        if not chunk:
            continue
        user, sep, password = chunk.partition(":")
        if not sep or not user:
            raise ValueError(f"credentials {chunk.split(':')[0]!r}... must be written user:password")
        pairs.append((user, password))
    return pairs


def gradio_auth(args: Any) -> list[tuple[str, str]] | None:
    """Credentials from --gradio-auth and --gradio-auth-path; None when the UI is open to all."""
    pairs: list[tuple[str, str]] = []
    if getattr(args, "gradio_auth", None):
        pairs += parse_auth_pairs(args.gradio_auth)
    path = getattr(args, "gradio_auth_path", None)
    if path:
        pairs += parse_auth_pairs(Path(os.path.expanduser(path)).read_text(encoding="utf8"))
    return pairs or None
