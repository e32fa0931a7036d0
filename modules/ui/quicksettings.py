"""The bar above the tabs: checkpoint, VAE and Clip skip (the `quicksettings_list` settings), and the
model's state ("loading ...", "ready", or what went wrong, including where to put a first checkpoint).

A change here is saved to config.json at once and takes effect at the next job; when nothing is
generating, the newly chosen checkpoint also starts loading in the background so the next Generate
does not wait for it.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from modules import shared
from modules.ui.common import REFRESH_SYMBOL
from modules.ui_components import ToolButton

log = logging.getLogger(__name__)

STATUS_POLL_SECONDS = 2.0


def checkpoint_titles() -> list[str]:
    mm = shared.model_manager
    return [c.title for c in mm.checkpoints()] if mm is not None else []


def current_checkpoint_title() -> str | None:
    """The title of the checkpoint in service, else the one the settings name, as listed now."""
    mm = shared.model_manager
    if mm is None:
        return None
    info = mm.current_info or mm.get_checkpoint(shared.opts.sd_model_checkpoint)
    if info is None:
        titles = checkpoint_titles()
        return titles[0] if titles else None
    return info.title


def vae_choices() -> list[str]:
    mm = shared.model_manager
    return mm.vae_choices() if mm is not None else ["Automatic", "None"]


def status_html() -> str:
    """The model state line; with no checkpoint at all, where to put one."""
    mm = shared.model_manager
    if mm is None:
        return "<span class='model-status model-status-error'>The model manager is not running.</span>"
    if not mm.checkpoints():
        where = html.escape(str(shared.paths.sd_models_dir))
        return ("<div class='model-status model-status-error no-checkpoint'>No Stable Diffusion checkpoint found. "
                f"Put a <code>.safetensors</code> (or <code>.ckpt</code>) model file into <code>{where}</code> "
                f"and press {REFRESH_SYMBOL}.</div>")
    status = mm.status or "idle"
    if status.startswith("loading"):
        return f"<span class='model-status model-status-loading'>{html.escape(status)}…</span>"
    if status.startswith("error"):
        return f"<span class='model-status model-status-error'>{html.escape(status)}</span>"
    if status == "ready" or mm.current_info is not None:
        return "<span class='model-status model-status-ready'>ready</span>"
    return "<span class='model-status'>no model loaded yet</span>"


def _queue_idle() -> bool:
    from modules.jobs.queue import get_queue

    queue = get_queue()
    return queue.running is None and not queue.pending()


def _save_setting(key: str, value: Any) -> None:
    if getattr(shared.cmd_opts, "freeze_settings", False):
        raise gr.Error("Settings are frozen (--freeze-settings); the change was not saved.")
    shared.opts.set(key, value)
    shared.opts.save(shared.paths.config_file)


def select_checkpoint(title: str) -> str:
    mm = shared.model_manager
    if mm is None or not title:
        return status_html()
    info = mm.get_checkpoint(title)
    if info is None:
        gr.Warning(f"Checkpoint {title!r} not found; press {REFRESH_SYMBOL} to rescan the model folder.")
        return status_html()
    _save_setting("sd_model_checkpoint", info.title)
    if _queue_idle() and mm.current_info is not info:
        mm.load_in_background()
    return status_html()


def select_vae(name: str) -> str:
    if name:
        _save_setting("sd_vae", name)
    return status_html()


def select_clip_skip(value: float) -> None:
    _save_setting("CLIP_stop_at_last_layers", int(value))


def refresh() -> tuple[Any, Any, str]:
    mm = shared.model_manager
    if mm is not None:
        mm.refresh()
    titles = checkpoint_titles()
    return (gr.Dropdown(choices=titles, value=current_checkpoint_title()),
            gr.Dropdown(choices=vae_choices(), value=shared.opts.sd_vae), status_html())


@dataclass
class Quicksettings:
    checkpoint: Any = None
    vae: Any = None
    clip_skip: Any = None
    status: Any = None
    components: dict[str, Any] = field(default_factory=dict)
    # The events that change an option, for the page's copy of the options to follow.
    changes: list[Any] = field(default_factory=list)

    def build(self) -> Quicksettings:
        wanted = list(getattr(shared.opts, "quicksettings_list", None) or ["sd_model_checkpoint"])
        with gr.Row(elem_id="quicksettings", equal_height=True, elem_classes="quicksettings"):
            with gr.Row(elem_id="quicksettings_checkpoint_row", scale=3, equal_height=True):
                titles = checkpoint_titles()
                self.checkpoint = gr.Dropdown(
                    titles, value=current_checkpoint_title(), label="Stable Diffusion checkpoint",
                    elem_id="setting_sd_model_checkpoint", allow_custom_value=True, scale=5, min_width=260)
                refresh_button = ToolButton(REFRESH_SYMBOL, elem_id="refresh_sd_model_checkpoint",
                                            tooltip="Rescan the model folders")
            if "sd_vae" in wanted:
                self.vae = gr.Dropdown(vae_choices(), value=shared.opts.sd_vae, label="SD VAE",
                                       elem_id="setting_sd_vae", allow_custom_value=True, scale=2, min_width=180)
            if "CLIP_stop_at_last_layers" in wanted:
                self.clip_skip = gr.Slider(minimum=1, maximum=12, step=1, label="Clip skip",
                                           value=int(shared.opts.CLIP_stop_at_last_layers or 1),
                                           elem_id="setting_CLIP_stop_at_last_layers", scale=2, min_width=180)
            self.status = gr.HTML(status_html(), elem_id="model_status", elem_classes="model-status-box",
                                  scale=2, min_width=200)
        self.components = {"sd_model_checkpoint": self.checkpoint}
        self.changes = [self.checkpoint.input(fn=select_checkpoint, inputs=[self.checkpoint], outputs=[self.status],
                                              show_progress="hidden", concurrency_limit=None, api_name=False)]
        if self.vae is not None:
            self.components["sd_vae"] = self.vae
            self.changes.append(self.vae.input(fn=select_vae, inputs=[self.vae], outputs=[self.status],
                                               show_progress="hidden", concurrency_limit=None, api_name=False))
        if self.clip_skip is not None:
            self.components["CLIP_stop_at_last_layers"] = self.clip_skip
            self.changes.append(self.clip_skip.release(fn=select_clip_skip, inputs=[self.clip_skip],
                                                       show_progress="hidden", concurrency_limit=None,
                                                       api_name=False))
        vae_out = self.vae if self.vae is not None else gr.State()
        refresh_button.click(fn=refresh, outputs=[self.checkpoint, vae_out, self.status], show_progress="hidden",
                             concurrency_limit=None, api_name=False)
        timer = gr.Timer(STATUS_POLL_SECONDS)
        timer.tick(fn=status_html, outputs=[self.status], show_progress="hidden", concurrency_limit=None,
                   api_name=False, queue=False)
        return self

    def current_values(self) -> list[Any]:
        """Fresh values for a page (re)load, in `components` order."""
        out: list[Any] = []
        for key in self.components:
            if key == "sd_model_checkpoint":
                out.append(gr.Dropdown(choices=checkpoint_titles(), value=current_checkpoint_title()))
            elif key == "sd_vae":
                out.append(gr.Dropdown(choices=vae_choices(), value=shared.opts.sd_vae))
            else:
                out.append(getattr(shared.opts, key))
        return out
