"""Prompt matrix: `base | a | b` generates every combination of the optional parts (`base`,
`base, a`, `base, b`, `base, a, b`) and shows them in one labeled grid."""

from __future__ import annotations

import math
from typing import Any

import gradio as gr

from modules import images, processing, scripts, shared
from modules.processing import Processed, process_images


def combinations(prompt: str, *, put_at_start: bool = False, delimiter: str = ", ") -> tuple[list[str], list[str]]:
    """(the parts split at "|", every combination of the optional parts), in A1111's order: the
    n-th combination holds optional part k when bit k of n is set."""
    parts = prompt.split("|")
    out = []
    for n in range(2 ** (len(parts) - 1)):
        chosen = [text.strip().strip(",") for k, text in enumerate(parts[1:]) if n & (1 << k)]
        out.append(delimiter.join([*chosen, parts[0].strip()] if put_at_start else [parts[0].strip(), *chosen]))
    return parts, out


class Script(scripts.Script):
    def title(self) -> str:
        return "Prompt matrix"

    def ui(self, is_img2img: bool) -> list[Any]:
        gr.HTML("<br />")
        with gr.Row():
            with gr.Column():
                put_at_start = gr.Checkbox(label="Put variable parts at start of prompt", value=False,
                                           elem_id=self.elem_id("put_at_start"))
                different_seeds = gr.Checkbox(label="Use different seed for each picture", value=False,
                                              elem_id=self.elem_id("different_seeds"))
            with gr.Column():
                prompt_type = gr.Radio(["positive", "negative"], label="Select prompt",
                                       elem_id=self.elem_id("prompt_type"), value="positive")
                variations_delimiter = gr.Radio(["comma", "space"], label="Select joining char",
                                                elem_id=self.elem_id("variations_delimiter"), value="comma")
            with gr.Column():
                margin_size = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2,
                                        elem_id=self.elem_id("margin_size"))
        return [put_at_start, different_seeds, prompt_type, variations_delimiter, margin_size]

    def run(self, p: Any, put_at_start: bool = False, different_seeds: bool = False, prompt_type: str = "positive",
            variations_delimiter: str = "comma", margin_size: int = 0) -> Processed:
        processing.fix_seed(p)
        if prompt_type not in ("positive", "negative"):
            raise ValueError(f"Unknown prompt type {prompt_type!r}; use positive or negative")
        if variations_delimiter not in ("comma", "space"):
            raise ValueError(f"Unknown variations delimiter {variations_delimiter!r}; use comma or space")
        positive = p.prompt[0] if isinstance(p.prompt, list) else p.prompt
        negative = p.negative_prompt[0] if isinstance(p.negative_prompt, list) else p.negative_prompt
        source = positive if prompt_type == "positive" else negative
        delimiter = ", " if variations_delimiter == "comma" else " "
        parts, all_prompts = combinations(source, put_at_start=bool(put_at_start), delimiter=delimiter)

        p.n_iter = math.ceil(len(all_prompts) / p.batch_size)
        p.do_not_save_grid = True
        if prompt_type == "positive":
            p.prompt = all_prompts
            p.negative_prompt = [negative] * len(all_prompts)
        else:
            p.prompt = [positive] * len(all_prompts)
            p.negative_prompt = all_prompts
        p.seed = [int(p.seed) + (i if different_seeds else 0) for i in range(len(all_prompts))]
        p.prompt_for_display = positive
        shared.state.job_count = p.n_iter
        processed = process_images(p)
        if not processed.images:
            return processed

        first = processed.images[0]
        grid = images.image_grid(processed.images, p.batch_size, rows=1 << ((len(parts) - 1) // 2))
        grid = images.draw_prompt_matrix(grid, first.width, first.height, parts, int(margin_size))
        processed.images.insert(0, grid)
        processed.index_of_first_image = 1
        processed.infotexts.insert(0, processed.infotexts[0])
        if shared.opts.grid_save:
            outdir = p.outpath_grids or processing._resolve_output_dir(shared.opts.outdir_grids,
                                                                       f"outdir_{p.mode}_grids")
            images.save_image(grid, outdir, "prompt_matrix", processed.seed, source, shared.opts.grid_format,
                              info=processed.infotexts[0], grid=True, p=p)
        return processed
