"""Picture-size sliders that follow the demo model.

The demo model Easel ships draws pictures of its own small size (64x64). At A1111's 512x512 default
it would spread its shapes over a latent 64 times larger than it was trained on, and take far
longer. So while the demo model is the checkpoint in use, the width and height sliders of txt2img
and img2img start at its size; choosing another checkpoint puts back the configured size.
ui-config.json still records the built-in defaults: the demo's size never becomes a saved default.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import gradio as gr

from modules import shared
from modules.model_manager.registry import DEMO_CHECKPOINT, CheckpointInfo, is_demo_checkpoint

log = logging.getLogger(__name__)


def demo_resolution(info: CheckpointInfo | None) -> int | None:
    """The picture side the demo model was trained at (from its config folder); None for any other
    checkpoint, or when the config folder does not say."""
    if info is None or not is_demo_checkpoint(info):
        return None
    config = Path(info.filename).with_suffix(".config") / "vae" / "config.json"
    try:
        size = json.loads(config.read_text(encoding="utf-8")).get("sample_size")
    except (OSError, json.JSONDecodeError) as e:
        log.warning("the demo model's size could not be read from %s: %s", config, e)
        return None
    return int(size) if isinstance(size, int) and size > 0 else None


def _checkpoint(title: str | None) -> CheckpointInfo | None:
    mm = shared.model_manager
    if mm is None:
        return None
    if title:
        return mm.get_checkpoint(title)
    return mm.current_info or mm.default_checkpoint()


def sizes_on_load(count: int) -> list[Any]:
    """Slider updates for a page (re)load: the demo's size while it is the checkpoint in use."""
    size = demo_resolution(_checkpoint(None))
    return [gr.update(value=size) if size else gr.update() for _ in range(count)]


def sizes_on_switch(title: str, configured: list[int], current: list[float]) -> list[Any]:
    """Slider updates after choosing checkpoint `title`: the demo's size for the demo model; the
    configured size back for any other, where a slider still shows a size only the demo uses."""
    info = _checkpoint(title)
    size = demo_resolution(info)
    if size:
        return [gr.update(value=size) for _ in current]
    demo = demo_resolution(_checkpoint(DEMO_CHECKPOINT))
    return [gr.update(value=default) if demo and value == demo != default else gr.update()
            for default, value in zip(configured, current, strict=True)]


def connect(page: gr.Blocks, checkpoint: gr.Dropdown, sliders: list[gr.Slider]) -> None:
    """Wire the sliders (their `value` already holds the configured default) to the page load and the
    checkpoint dropdown."""
    configured = [int(s.value) for s in sliders]
    page.load(fn=lambda: sizes_on_load(len(sliders)), outputs=sliders, show_progress="hidden", api_name=False)
    checkpoint.input(fn=lambda title, *values: sizes_on_switch(title, configured, list(values)),
                     inputs=[checkpoint, *sliders], outputs=sliders, show_progress="hidden", api_name=False)
