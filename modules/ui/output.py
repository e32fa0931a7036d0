"""The result column of txt2img/img2img and the Generate handler that fills it.

The column holds the progress bar, the live preview, the gallery, the infotext of the selected image,
the hidden `generation_info` JSON (what `Processed.js()` returns, as A1111 keeps it for scripts), the
📂 / Save / Zip buttons (open_folder.py, save_files.py) and the "Send to" buttons. `run_generation`
is the generator behind Generate: it queues the processing object, streams progress, and ends with
the images or a visible error message.
"""

from __future__ import annotations

import html
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr

from modules.ui import common, open_folder, progress
from modules.ui_components import ToolButton

log = logging.getLogger(__name__)


@dataclass
class OutputPanel:
    tab: str
    gallery: Any = None
    preview: Any = None
    progress_html: Any = None
    generation_info: Any = None
    html_info: Any = None
    infotext: Any = None
    html_log: Any = None
    selected: Any = None
    send_buttons: dict[str, Any] = field(default_factory=dict)
    open_folder: Any = None
    save: Any = None
    save_zip: Any = None
    download: Any = None

    def build(self, send_targets: tuple[str, ...] = ("img2img", "inpaint")) -> OutputPanel:
        tab = self.tab
        with gr.Column(elem_id=f"{tab}_results", elem_classes="results-column"):
            self.progress_html = gr.HTML("", elem_id=f"{tab}_progress", elem_classes="progress-area", visible=False)
            self.preview = gr.Image(label="Live preview", elem_id=f"{tab}_preview", interactive=False, visible=False,
                                    height=320, type="pil", buttons=[])
            self.gallery = gr.Gallery(label="Output", show_label=False, elem_id=f"{tab}_gallery", columns=4,
                                      height=512, object_fit="contain", format="png", preview=True,
                                      interactive=False, buttons=["download", "fullscreen"])
            self.selected = gr.State(None)
            with gr.Row(elem_id=f"image_buttons_{tab}", elem_classes="image-buttons"):
                self.open_folder = ToolButton(common.FOLDER_SYMBOL, elem_id=f"{tab}_open_folder",
                                              visible=open_folder.available(), tooltip="Open images output directory")
                self.save = gr.Button("Save", elem_id=f"save_{tab}", size="sm")
                self.save_zip = gr.Button("Zip", elem_id=f"save_zip_{tab}", size="sm")
                for target in send_targets:
                    self.send_buttons[target] = gr.Button(
                        f"Send to {target}", elem_id=f"{tab}_send_to_{target}", size="sm")
            self.download = gr.File(label="Saved files", file_count="multiple", interactive=False, visible=False,
                                    elem_id=f"download_files_{tab}")
            self.generation_info = gr.Textbox(visible=False, elem_id=f"generation_info_{tab}")
            self.infotext = gr.Textbox(visible=False, elem_id=f"infotext_{tab}")
            self.html_info = gr.HTML(elem_id=f"html_info_{tab}", elem_classes="infotext")
            self.html_log = gr.HTML(elem_id=f"html_log_{tab}", elem_classes="html-log")

        self.gallery.select(fn=self._on_select, inputs=[self.generation_info], outputs=[
            self.selected, self.html_info, self.infotext], show_progress="hidden", concurrency_limit=None)
        for button, make_zip in ((self.save, False), (self.save_zip, True)):
            button.click(fn=partial(_on_save, make_zip), inputs=[self.generation_info, self.gallery, self.selected],
                         outputs=[self.download, self.html_log], show_progress="hidden", concurrency_limit=None,
                         api_name=False)
        self.open_folder.click(fn=partial(_on_open_folder, tab), show_progress="hidden", concurrency_limit=None,
                               api_name=False)
        # New pictures: the files saved from the previous ones are no longer offered.
        self.gallery.change(fn=lambda: gr.File(value=None, visible=False), outputs=[self.download],
                            show_progress="hidden", concurrency_limit=None, api_name=False)
        return self

    @staticmethod
    def _on_select(info_json: str, evt: gr.SelectData) -> tuple[Any, str, str]:
        text = infotext_for(info_json, evt.index)
        return evt.index, common.plaintext_to_html(text), text

    def outputs(self, toprow: Any) -> list[Any]:
        """The components `run_generation` yields values for, in order."""
        return [self.gallery, self.generation_info, self.html_info, self.infotext, self.selected, self.html_log,
                self.progress_html, self.preview, toprow.generate, toprow.interrupt, toprow.skip, toprow.status]


def _on_save(make_zip: bool, info_json: str, gallery: list[tuple[str, Any]] | None,
             selected: int | None) -> tuple[Any, str]:
    from modules.ui.save_files import save_files

    items = [item[0] if isinstance(item, (tuple, list)) else item for item in gallery or []]
    try:
        saved = save_files(info_json, items, selected, make_zip)
    except (ValueError, OSError) as e:
        return gr.File(value=None, visible=False), common.error_html(str(e))
    names = ", ".join(os.path.basename(f) for f in saved.files)
    return (gr.File(value=saved.downloads, visible=True),
            f"<p class='easel-note'>Saved: {html.escape(names)}</p>")


def _on_open_folder(tab: str) -> None:
    from modules.processing import samples_dir

    try:
        open_folder.open_folder(Path(samples_dir(tab)))
    except ValueError as e:
        gr.Warning(str(e))


def infotext_for(info_json: str, index: int | None) -> str:
    """The infotext of gallery item `index` (None: the first image after any grid)."""
    try:
        info = json.loads(info_json or "{}")
    except json.JSONDecodeError:
        return ""
    texts = info.get("infotexts") or []
    if not texts:
        return ""
    if index is None:
        index = int(info.get("index_of_first_image", 0))
    index = max(0, min(int(index), len(texts) - 1))
    return str(texts[index])


def seed_for(info_json: str, index: int | None, key: str = "all_seeds") -> int | None:
    """The seed (or subseed with key="all_subseeds") of the selected image, for the ♻️ button."""
    try:
        info = json.loads(info_json or "{}")
    except json.JSONDecodeError:
        return None
    seeds = info.get(key) or []
    if not seeds:
        fallback = info.get("seed" if key == "all_seeds" else "subseed")
        return int(fallback) if fallback is not None else None
    first = int(info.get("index_of_first_image", 0))
    pos = 0 if index is None else max(0, int(index) - first)
    return int(seeds[min(pos, len(seeds) - 1)])


def _labelled(images: list[Any], infotexts: list[str]) -> list[Any]:
    """Gallery items carrying their infotext, so downloads from the gallery keep the parameters."""
    out = []
    for i, im in enumerate(images):
        text = infotexts[i] if i < len(infotexts) else ""
        if text:
            im = im.copy()
            im.info["parameters"] = text
        out.append(im)
    return out


def _friendly_error(e: BaseException) -> str:
    name = type(e).__name__
    text = str(e) or name
    if "out of memory" in text.lower():
        return f"Out of memory: {text}. Try a smaller size or batch size."
    return text


def run_generation(session: str, tab: str, make_p: Callable[[], Any]) -> Iterator[tuple]:
    """The Generate handler's body: yields tuples matching `OutputPanel.outputs`."""
    from modules.jobs.generation import submit_processing
    from modules.jobs.queue import QueueFullError

    skip = gr.skip()

    def running(progress_html: str, preview: Any = None) -> tuple:
        preview_update = gr.Image(value=preview, visible=True) if preview is not None else skip
        return (skip, skip, skip, skip, skip, "", gr.HTML(progress_html, visible=True), preview_update,
                gr.Button(visible=False), gr.Button(visible=True), gr.Button(visible=True), "")

    def finished(gallery: Any, info: Any, html_info: Any, infotext: Any, html_log: str) -> tuple:
        return (gallery, info, html_info, infotext, None, html_log, gr.HTML("", visible=False),
                gr.Image(value=None, visible=False), gr.Button(visible=True), gr.Button(visible=False),
                gr.Button(visible=False), "")

    def failed(message: str) -> tuple:
        gr.Warning(message)
        return finished(skip, skip, skip, skip, common.error_html(message))

    try:
        p = make_p()
        job = submit_processing(p, owner=session)
    except QueueFullError as e:
        yield failed(str(e))
        return
    except (ValueError, RuntimeError) as e:
        yield failed(_friendly_error(e))
        return

    progress.remember(session, tab, job)
    try:
        for tick in progress.follow(job):
            yield running(tick.html, tick.preview)
    finally:
        progress.forget(session, tab, job)

    if job.exception is not None and job.result is None:
        yield failed(_friendly_error(job.exception))
        return
    processed = job.result
    if processed is None:
        yield finished([], "", "", "", common.error_html("The job was cancelled before it started."))
        return
    info_json = processed.js()
    text = infotext_for(info_json, None)
    note = ""
    if job.status == "cancelled":
        note = "<div class='easel-note'>Interrupted.</div>"
    yield finished(_labelled(list(processed.images), list(processed.infotexts)), info_json,
                   common.plaintext_to_html(text), text, note)


def connect_controls(toprow: Any, tab: str) -> None:
    """Interrupt and Skip act on the job this browser tab started."""

    def on_interrupt(request: gr.Request) -> str:
        return progress.interrupt(request.session_hash or "anonymous", tab)

    def on_skip(request: gr.Request) -> str:
        return progress.skip(request.session_hash or "anonymous", tab)

    toprow.interrupt.click(fn=on_interrupt, outputs=[toprow.status], show_progress="hidden",
                           concurrency_limit=None, api_name=False)
    toprow.skip.click(fn=on_skip, outputs=[toprow.status], show_progress="hidden", concurrency_limit=None,
                      api_name=False)
