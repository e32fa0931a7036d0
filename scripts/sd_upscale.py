"""SD upscale (img2img): enlarge the image with an upscaler, then redraw it tile by tile with
img2img (tiles of the Width x Height set on the tab, overlapping and blended)."""

from __future__ import annotations

import math
from typing import Any

import gradio as gr
from PIL import Image

from modules import images, processing, scripts, shared, upscaler
from modules.processing import Processed


def find_upscaler(choice: Any) -> upscaler.UpscalerData:
    """An upscaler by index (the UI's radio) or by name (API clients send either)."""
    available = upscaler.sd_upscalers()
    if isinstance(choice, str) and not choice.strip().lstrip("-").isdigit():
        found = upscaler.find(choice)
        if found is None:
            raise ValueError(f"SD upscale: upscaler {choice!r} not found; available: {', '.join(upscaler.names())}")
        return found
    index = int(choice or 0)
    if not 0 <= index < len(available):
        raise ValueError(f"SD upscale: upscaler index {index} out of range 0..{len(available) - 1}")
    return available[index]


class Script(scripts.Script):
    def title(self) -> str:
        return "SD upscale"

    def show(self, is_img2img: bool) -> bool:
        return is_img2img

    def ui(self, is_img2img: bool) -> list[Any]:
        info = gr.HTML("<p style=\"margin-bottom:0.75em\">Will upscale the image by the selected scale factor; "
                       "use width and height sliders to set tile size</p>")
        overlap = gr.Slider(minimum=0, maximum=256, step=16, label="Tile overlap", value=64, elem_id=self.elem_id("overlap"))
        scale_factor = gr.Slider(minimum=1.0, maximum=4.0, step=0.05, label="Scale Factor", value=2.0,
                                 elem_id=self.elem_id("scale_factor"))
        upscaler_index = gr.Radio(label="Upscaler", choices=upscaler.names(), value=upscaler.names()[0], type="index",
                                  elem_id=self.elem_id("upscaler_index"))
        return [info, overlap, upscaler_index, scale_factor]

    def run(self, p: Any, _info: Any = None, overlap: int = 64, upscaler_index: Any = 0,
            scale_factor: float = 2.0) -> Processed:
        chosen = find_upscaler(upscaler_index)
        overlap = int(overlap)
        if overlap >= min(p.width, p.height):
            raise ValueError(f"SD upscale: tile overlap {overlap} must be smaller than the tile size {p.width}x{p.height}")
        processing.fix_seed(p)
        init_img = images.flatten(p.init_images[0], shared.opts.img2img_background_color)
        img = chosen.scaler.upscale(init_img, float(scale_factor), chosen.data_path)
        if img.width < p.width or img.height < p.height:
            img = images.resize_image(2, img, max(img.width, p.width), max(img.height, p.height))
        p.extra_generation_params["SD upscale overlap"] = overlap
        p.extra_generation_params["SD upscale upscaler"] = chosen.name

        grid = images.split_grid(img, tile_w=p.width, tile_h=p.height, overlap=overlap)
        batch_size = p.batch_size
        upscale_count = p.n_iter
        p.n_iter = 1
        p.do_not_save_grid = True
        p.do_not_save_samples = True
        work = [tile[2] for _y, _h, row in grid.tiles for tile in row]
        batch_count = math.ceil(len(work) / batch_size)
        state = shared.state
        state.job_count = batch_count * upscale_count

        seed = int(p.seed)
        initial_info: str | None = None
        result_images = []
        infotexts = []
        for n in range(upscale_count):
            p.seed = seed + n
            start_seed = p.seed
            results: list[Image.Image] = []
            for i in range(batch_count):
                chunk = work[i * batch_size:(i + 1) * batch_size]
                p.batch_size = len(chunk)
                p.init_images = chunk
                state.job = f"Batch {i + 1 + n * batch_count} out of {state.job_count}"
                processed = processing.process_images(p)
                if initial_info is None:
                    initial_info = processed.info
                p.seed = processed.seed + 1
                results += processed.images[processed.index_of_first_image:][:len(chunk)]
                if state.interrupted:
                    break
            index = 0
            for _y, _h, row in grid.tiles:
                for tile in row:
                    tile[2] = results[index] if index < len(results) else Image.new("RGB", (p.width, p.height))
                    index += 1
            combined = images.combine_grid(grid)
            result_images.append(combined)
            infotexts.append(initial_info or "")
            if shared.opts.samples_save:
                outdir = p.outpath_samples or processing._resolve_output_dir(None, "outdir_img2img_samples")
                images.save_image(combined, outdir, "", start_seed, p.prompt, shared.opts.samples_format,
                                  info=initial_info, p=p)
            if state.interrupted:
                break
        p.batch_size = batch_size
        return Processed(p, result_images, seed, initial_info or "", infotexts=infotexts)
