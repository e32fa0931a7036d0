"""X/Y/Z plot: one generation per combination of up to three axes of values (seed, steps, CFG
scale, sampler, prompt search/replace, ...), assembled into a labeled grid (one sub-grid per Z
value). The grid's infotext records `Script`, `X Type`, `X Values`, ... as A1111 writes them.

Values are written as A1111 accepts them: comma lists (quotes for values with commas), integer
ranges `1-5`, ranges with a step `1-10 (+2)`, and ranges with a count `1-10 [4]`.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np

from modules import images, processing, scripts, shared
from modules.processing import Processed, process_images

RE_RANGE = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
RE_RANGE_FLOAT = re.compile(r"\s*([+-]?\s*\d+(?:\.\d*)?)\s*-\s*([+-]?\s*\d+(?:\.\d*)?)(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*")
RE_RANGE_COUNT = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)\s*\[(\d+)\s*\]\s*")
RE_RANGE_COUNT_FLOAT = re.compile(r"\s*([+-]?\s*\d+(?:\.\d*)?)\s*-\s*([+-]?\s*\d+(?:\.\d*)?)\s*\[(\d+(?:\.\d*)?)\s*\]\s*")


def split_values(text: str) -> list[str]:
    """Comma-separated values; double quotes protect commas inside a value."""
    text = (text or "").strip()
    if not text:
        return []
    return [v.strip() for v in next(csv.reader(io.StringIO(text), skipinitialspace=True)) if v.strip()]


def _num(s: str) -> str:
    return s.replace(" ", "")


def expand_int(values: list[str]) -> list[int]:
    out: list[int] = []
    for v in values:
        m, mc = RE_RANGE.fullmatch(v), RE_RANGE_COUNT.fullmatch(v)
        if m is not None:
            start, end = int(_num(m.group(1))), int(_num(m.group(2)))
            step = int(m.group(3)) if m.group(3) else 1
            if step == 0:
                raise ValueError(f"range {v!r} has a step of 0")
            out += list(range(start, end + (1 if step > 0 else -1), step))
        elif mc is not None:
            start, end, count = int(_num(mc.group(1))), int(_num(mc.group(2))), int(mc.group(3))
            out += [int(x) for x in np.linspace(start, end, count)]
        else:
            out.append(int(v))
    return out


def expand_float(values: list[str]) -> list[float]:
    out: list[float] = []
    for v in values:
        m, mc = RE_RANGE_FLOAT.fullmatch(v), RE_RANGE_COUNT_FLOAT.fullmatch(v)
        if mc is not None:
            start, end, count = float(_num(mc.group(1))), float(_num(mc.group(2))), int(float(mc.group(3)))
            out += [float(x) for x in np.linspace(start, end, count)]
        elif m is not None:
            start, end = float(_num(m.group(1))), float(_num(m.group(2)))
            step = float(m.group(3)) if m.group(3) else 1.0
            if step == 0:
                raise ValueError(f"range {v!r} has a step of 0")
            out += [float(x) for x in np.arange(start, end + step / 2, step)]
        else:
            out.append(float(v))
    return out


# --- what each axis does to a cell's processing object ---------------------------------------------

def apply_field(name: str) -> Callable[[Any, Any, list[Any]], None]:
    def fun(p: Any, x: Any, xs: list[Any]) -> None:
        setattr(p, name, x)
    return fun


def apply_override(key: str) -> Callable[[Any, Any, list[Any]], None]:
    def fun(p: Any, x: Any, xs: list[Any]) -> None:
        p.override_settings[key] = x
    return fun


def apply_prompt_sr(p: Any, x: str, xs: list[str]) -> None:
    """Replace the first value (the search text) by this value in the prompt and negative prompt."""
    p.prompt = p.prompt.replace(xs[0], x)
    p.negative_prompt = p.negative_prompt.replace(xs[0], x)


def apply_prompt_order(p: Any, x: tuple[str, ...], xs: list[Any]) -> None:
    """Put the given words of the prompt in this order, keeping the text around them."""
    token_order = sorted(((p.prompt.find(token), token) for token in x), key=lambda t: t[0])
    pieces = []
    prompt_tmp = p.prompt
    for _idx, token in reversed(token_order):
        n = prompt_tmp.rfind(token)
        pieces.append(prompt_tmp[n + len(token):])
        prompt_tmp = prompt_tmp[:n]
    pieces.append(prompt_tmp)
    pieces.reverse()
    prompt = pieces[0]
    for i, token in enumerate(x):
        prompt += token + pieces[i + 1]
    p.prompt = prompt


def apply_size(p: Any, x: str, xs: list[Any]) -> None:
    try:
        w, h = (int(v) for v in x.lower().split("x"))
    except ValueError:
        raise ValueError(f"Invalid size in XYZ plot: {x!r} (write WIDTHxHEIGHT)") from None
    p.width, p.height = w, h


def apply_styles(p: Any, x: str, xs: list[Any]) -> None:
    p.styles.extend(s.strip() for s in x.split(",") if s.strip())


def apply_vae(p: Any, x: str, xs: list[Any]) -> None:
    p.override_settings["sd_vae"] = x


def apply_checkpoint(p: Any, x: str, xs: list[Any]) -> None:
    info = shared.require_model_manager().require_checkpoint(x)
    p.override_settings["sd_model_checkpoint"] = info.title


def confirm_samplers(p: Any, xs: list[str]) -> None:
    from modules.engine import samplers

    for x in xs:
        samplers.resolve(x, None)  # UnknownSamplerError names the known samplers


def confirm_schedulers(p: Any, xs: list[str]) -> None:
    from modules.engine import samplers

    for x in xs:
        samplers.resolve(samplers.DEFAULT_SAMPLER, x)


def confirm_checkpoints(p: Any, xs: list[str]) -> None:
    manager = shared.require_model_manager()
    for x in xs:
        manager.require_checkpoint(x)


def confirm_vaes(p: Any, xs: list[str]) -> None:
    manager = shared.require_model_manager()
    for x in xs:
        if x not in ("Automatic", "None"):
            manager.find_vae(x)


def confirm_prompt_sr(p: Any, xs: list[str]) -> None:
    if not xs:
        return
    if xs[0] not in p.prompt and xs[0] not in p.negative_prompt:
        raise ValueError(f"Prompt S/R did not find {xs[0]!r} in prompt or negative prompt.")


def format_value(p: Any, opt: AxisOption, x: Any) -> str:
    if isinstance(x, float):
        x = round(x, 8)
    return f"{opt.label}: {x}"


def format_value_join_list(p: Any, opt: AxisOption, x: Any) -> str:
    return ", ".join(x)


def format_nothing(p: Any, opt: AxisOption, x: Any) -> str:
    return ""


def format_as_is(p: Any, opt: AxisOption, x: Any) -> str:
    return str(x)


def _sampler_names() -> list[str]:
    from modules import sd_samplers

    return sd_samplers.visible_sampler_names()


def _scheduler_labels() -> list[str]:
    from modules import sd_schedulers

    return [s.label for s in sd_schedulers.schedulers]


def _checkpoint_titles() -> list[str]:
    return shared.list_checkpoint_tiles()


def _vae_choices() -> list[str]:
    manager = shared.model_manager
    return manager.vae_choices() if manager is not None else ["Automatic", "None"]


def _style_names() -> list[str]:
    return shared.prompt_styles.names()


@dataclass
class AxisOption:
    label: str
    type: Callable[[str], Any]
    apply: Callable[[Any, Any, list[Any]], None]
    format_value: Callable[[Any, AxisOption, Any], str] = format_value
    confirm: Callable[[Any, list[Any]], None] | None = None
    cost: float = 0.0
    choices: Callable[[], list[str]] | None = None
    is_img2img: bool | None = None
    """None: both tabs; True/False: only img2img / only txt2img"""


AXIS_OPTIONS = [
    AxisOption("Nothing", str, lambda p, x, xs: None, format_value=format_nothing),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Var. seed", int, apply_field("subseed")),
    AxisOption("Var. strength", float, apply_field("subseed_strength")),
    AxisOption("Steps", int, apply_field("steps")),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
    AxisOption("Prompt S/R", str, apply_prompt_sr, format_value=format_as_is, confirm=confirm_prompt_sr),
    AxisOption("Prompt order", str, apply_prompt_order, format_value=format_value_join_list),
    AxisOption("Sampler", str, apply_field("sampler_name"), format_value=format_as_is, confirm=confirm_samplers,
               choices=_sampler_names),
    AxisOption("Schedule type", str, apply_field("scheduler"), confirm=confirm_schedulers, choices=_scheduler_labels),
    AxisOption("Checkpoint name", str, apply_checkpoint, format_value=format_as_is, confirm=confirm_checkpoints,
               cost=1.0, choices=_checkpoint_titles),
    AxisOption("Clip skip", int, apply_override("CLIP_stop_at_last_layers")),
    AxisOption("Denoising", float, apply_field("denoising_strength")),
    AxisOption("VAE", str, apply_vae, cost=0.7, confirm=confirm_vaes, choices=_vae_choices),
    AxisOption("Size", str, apply_size),
    AxisOption("Styles", str, apply_styles, choices=_style_names),
]


def axis_options(is_img2img: bool) -> list[AxisOption]:
    return [o for o in AXIS_OPTIONS if o.is_img2img is None or o.is_img2img == is_img2img]


def find_axis(options: list[AxisOption], choice: Any) -> AxisOption:
    """An axis by index (the UI's dropdown) or by label (any case)."""
    if isinstance(choice, str) and not choice.strip().isdigit():
        wanted = choice.strip().lower()
        for o in options:
            if o.label.lower() == wanted:
                return o
        raise ValueError(f"X/Y/Z plot: unknown axis type {choice!r}; known: {', '.join(o.label for o in options)}")
    index = int(choice or 0)
    if not 0 <= index < len(options):
        raise ValueError(f"X/Y/Z plot: axis type index {index} out of range 0..{len(options) - 1}")
    return options[index]


def process_axis(p: Any, opt: AxisOption, vals: str, vals_dropdown: list[str] | None, csv_mode: bool,
                 no_fixed_seeds: bool) -> list[Any]:
    """The values of one axis, expanded and checked (ValueError naming what is wrong)."""
    if opt.label == "Nothing":
        return [0]
    if opt.choices is not None and not csv_mode and vals_dropdown:
        valslist = list(vals_dropdown)
    else:
        valslist = split_values(vals)
    if not valslist:
        return []
    if opt.type is int:
        values: list[Any] = expand_int(valslist)
    elif opt.type is float:
        values = expand_float(valslist)
    elif opt.label == "Prompt order":
        values = list(itertools.permutations(valslist))
    else:
        values = [opt.type(x) for x in valslist]
    if opt.label in ("Seed", "Var. seed") and not no_fixed_seeds:
        values = [int(random.randrange(4294967294)) if v is None or v == "" or v == -1 else v for v in values]
    if opt.confirm is not None:
        opt.confirm(p, values)
    return values


def _values_text(opt: AxisOption, values: list[Any], vals: str, vals_dropdown: list[str] | None, csv_mode: bool) -> str:
    if opt.label in ("Seed", "Var. seed"):
        return ", ".join(str(v) for v in values)
    if opt.choices is not None and not csv_mode and vals_dropdown:
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(vals_dropdown)
        return out.getvalue()
    return vals


class Script(scripts.Script):
    def title(self) -> str:
        return "X/Y/Z plot"

    def ui(self, is_img2img: bool) -> list[Any]:
        self.current_axis_options = axis_options(is_img2img)
        labels = [o.label for o in self.current_axis_options]
        with gr.Row(), gr.Column(scale=19):
            with gr.Row():
                x_type = gr.Dropdown(label="X type", choices=labels, value=labels[1], type="index",
                                     elem_id=self.elem_id("x_type"))
                x_values = gr.Textbox(label="X values", lines=1, elem_id=self.elem_id("x_values"))
                x_values_dropdown = gr.Dropdown(label="X values", visible=False, multiselect=True, interactive=True)
            with gr.Row():
                y_type = gr.Dropdown(label="Y type", choices=labels, value=labels[0], type="index",
                                     elem_id=self.elem_id("y_type"))
                y_values = gr.Textbox(label="Y values", lines=1, elem_id=self.elem_id("y_values"))
                y_values_dropdown = gr.Dropdown(label="Y values", visible=False, multiselect=True, interactive=True)
            with gr.Row():
                z_type = gr.Dropdown(label="Z type", choices=labels, value=labels[0], type="index",
                                     elem_id=self.elem_id("z_type"))
                z_values = gr.Textbox(label="Z values", lines=1, elem_id=self.elem_id("z_values"))
                z_values_dropdown = gr.Dropdown(label="Z values", visible=False, multiselect=True, interactive=True)
        with gr.Row(variant="compact", elem_id="axis_options"):
            with gr.Column():
                draw_legend = gr.Checkbox(label="Draw legend", value=True, elem_id=self.elem_id("draw_legend"))
                no_fixed_seeds = gr.Checkbox(label="Keep -1 for seeds", value=False, elem_id=self.elem_id("no_fixed_seeds"))
                with gr.Row():
                    vary_seeds_x = gr.Checkbox(label="Vary seeds for X", value=False, elem_id=self.elem_id("vary_seeds_x"))
                    vary_seeds_y = gr.Checkbox(label="Vary seeds for Y", value=False, elem_id=self.elem_id("vary_seeds_y"))
                    vary_seeds_z = gr.Checkbox(label="Vary seeds for Z", value=False, elem_id=self.elem_id("vary_seeds_z"))
            with gr.Column():
                include_lone_images = gr.Checkbox(label="Include Sub Images", value=False,
                                                  elem_id=self.elem_id("include_lone_images"))
                include_sub_grids = gr.Checkbox(label="Include Sub Grids", value=False,
                                                elem_id=self.elem_id("include_sub_grids"))
                csv_mode = gr.Checkbox(label="Use text inputs instead of dropdowns", value=False,
                                       elem_id=self.elem_id("csv_mode"))
            with gr.Column():
                margin_size = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2,
                                        elem_id=self.elem_id("margin_size"))

        options = self.current_axis_options

        def select_axis(axis_type: Any, axis_values: str, axis_values_dropdown: list[str] | None,
                        csv_mode: bool) -> tuple[Any, Any]:
            opt = options[int(axis_type or 0)]
            has_choices = opt.choices is not None and not csv_mode
            choices = opt.choices() if has_choices and opt.choices is not None else []
            kept = [v for v in (axis_values_dropdown or []) if v in choices]
            return (gr.update(visible=not has_choices, value=axis_values),
                    gr.update(visible=has_choices, choices=choices, value=kept))

        for t, v, d in ((x_type, x_values, x_values_dropdown), (y_type, y_values, y_values_dropdown),
                        (z_type, z_values, z_values_dropdown)):
            t.change(fn=select_axis, inputs=[t, v, d, csv_mode], outputs=[v, d])

        self.infotext_fields = [
            (x_type, "X Type"), (x_values, "X Values"), (y_type, "Y Type"), (y_values, "Y Values"),
            (z_type, "Z Type"), (z_values, "Z Values"),
        ]
        return [x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown, z_type, z_values,
                z_values_dropdown, draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds,
                vary_seeds_x, vary_seeds_y, vary_seeds_z, margin_size, csv_mode]

    def run(self, p: Any, x_type: Any = 1, x_values: str = "", x_values_dropdown: list[str] | None = None,
            y_type: Any = 0, y_values: str = "", y_values_dropdown: list[str] | None = None, z_type: Any = 0,
            z_values: str = "", z_values_dropdown: list[str] | None = None, draw_legend: bool = True,
            include_lone_images: bool = False, include_sub_grids: bool = False, no_fixed_seeds: bool = False,
            vary_seeds_x: bool = False, vary_seeds_y: bool = False, vary_seeds_z: bool = False, margin_size: int = 0,
            csv_mode: bool = False) -> Processed:
        options = axis_options(p.mode == "img2img")
        if not no_fixed_seeds:
            processing.fix_seed(p)
        if not shared.opts.return_grid:
            p.batch_size = 1
        x_opt, y_opt, z_opt = (find_axis(options, t) for t in (x_type, y_type, z_type))
        xs = process_axis(p, x_opt, x_values, x_values_dropdown, csv_mode, no_fixed_seeds)
        ys = process_axis(p, y_opt, y_values, y_values_dropdown, csv_mode, no_fixed_seeds)
        zs = process_axis(p, z_opt, z_values, z_values_dropdown, csv_mode, no_fixed_seeds)
        for opt, values in ((x_opt, xs), (y_opt, ys), (z_opt, zs)):
            if not values:
                raise ValueError(f"X/Y/Z plot: no values given for axis {opt.label}")
        cells = len(xs) * len(ys) * len(zs)
        limit = int(getattr(shared.opts, "xyz_grid_max_images", 16 * 16 * 16) or 4096)
        if cells * p.n_iter > limit:
            raise ValueError(f"X/Y/Z plot: {cells * p.n_iter} images requested, more than the limit of {limit}")
        shared.state.job_count = cells * p.n_iter

        texts = {"X": (x_opt, _values_text(x_opt, xs, x_values, x_values_dropdown, csv_mode)),
                 "Y": (y_opt, _values_text(y_opt, ys, y_values, y_values_dropdown, csv_mode)),
                 "Z": (z_opt, _values_text(z_opt, zs, z_values, z_values_dropdown, csv_mode))}
        cell_images: list[Any] = [None] * cells
        cell_infotexts: list[str] = [""] * cells
        grid_infotext: str | None = None
        first_processed: Processed | None = None
        base_seed = p.seed

        for iz, z in enumerate(zs):
            for iy, y in enumerate(ys):
                for ix, x in enumerate(xs):
                    if shared.state.interrupted:
                        break
                    shared.state.job = f"{ix + iy * len(xs) + iz * len(xs) * len(ys) + 1} out of {cells}"
                    pc = copy.copy(p)
                    pc.styles = list(p.styles or [])
                    pc.override_settings = dict(p.override_settings or {})
                    pc.extra_generation_params = dict(p.extra_generation_params or {})
                    if isinstance(base_seed, int) and base_seed != -1:
                        pc.seed = (base_seed + (ix if vary_seeds_x else 0) + (iy * len(xs) if vary_seeds_y else 0)
                                   + (iz * len(xs) * len(ys) if vary_seeds_z else 0))
                    x_opt.apply(pc, x, xs)
                    y_opt.apply(pc, y, ys)
                    z_opt.apply(pc, z, zs)
                    first_cell = grid_infotext is None
                    if first_cell:
                        pc.extra_generation_params["Script"] = self.title()
                        for axis, (opt, text) in texts.items():
                            if opt.label != "Nothing":
                                pc.extra_generation_params[f"{axis} Type"] = opt.label
                                pc.extra_generation_params[f"{axis} Values"] = text
                    res = process_images(pc)
                    index = ix + iy * len(xs) + iz * len(xs) * len(ys)
                    if res.images:
                        cell_images[index] = res.images[0]
                        cell_infotexts[index] = res.infotexts[0] if res.infotexts else ""
                    if first_cell:
                        first_processed = res
                        grid_infotext = res.infotexts[0] if res.infotexts else ""

        available = [im for im in cell_images if im is not None]
        if not available:
            return first_processed or Processed(p, [])
        w, h = max(im.width for im in available), max(im.height for im in available)
        from PIL import Image

        filled = [im if im is not None else Image.new("RGB", (w, h)) for im in cell_images]
        hor = [[images.GridAnnotation(x_opt.format_value(p, x_opt, x))] for x in xs]
        ver = [[images.GridAnnotation(y_opt.format_value(p, y_opt, y))] for y in ys]
        sub_grids = []
        per_z = len(xs) * len(ys)
        for iz in range(len(zs)):
            grid = _grid_with_margin(filled[iz * per_z:(iz + 1) * per_z], len(xs), len(ys), w, h, int(margin_size))
            if draw_legend:
                grid = images.draw_grid_annotations(grid, w, h, hor, ver, int(margin_size))
            sub_grids.append(grid)
        if len(zs) > 1:
            sw, sh = max(g.width for g in sub_grids), max(g.height for g in sub_grids)
            main = _grid_with_margin(sub_grids, len(zs), 1, sw, sh, int(margin_size))
            if draw_legend:
                zlabels = [[images.GridAnnotation(z_opt.format_value(p, z_opt, z))] for z in zs]
                main = images.draw_grid_annotations(main, sw, sh, zlabels, [[images.GridAnnotation()]],
                                                    int(margin_size))
        else:
            main = sub_grids[0]

        result_images = [main]
        result_infotexts = [grid_infotext or ""]
        if include_sub_grids and len(zs) > 1:
            result_images += sub_grids
            result_infotexts += [grid_infotext or ""] * len(sub_grids)
        if include_lone_images:
            result_images += [im for im in cell_images if im is not None]
            result_infotexts += [t for im, t in zip(cell_images, cell_infotexts, strict=True) if im is not None]

        if shared.opts.grid_save:
            outdir = p.outpath_grids or processing._resolve_output_dir(shared.opts.outdir_grids,
                                                                       f"outdir_{p.mode}_grids")
            prompt = p.prompt if isinstance(p.prompt, str) else (p.prompt[0] if p.prompt else "")
            images.save_image(main, outdir, "xyz_grid", first_processed.seed if first_processed else p.seed, prompt,
                              shared.opts.grid_format, info=grid_infotext, grid=True, p=p)

        base = first_processed
        processed = Processed(p, result_images, base.seed if base else p.seed, grid_infotext or "",
                              all_prompts=base.all_prompts if base else None,
                              all_negative_prompts=base.all_negative_prompts if base else None,
                              all_seeds=base.all_seeds if base else None, infotexts=result_infotexts,
                              index_of_first_image=1 if len(result_images) > 1 else 0)
        if base is not None:
            processed.extra_generation_params = dict(base.extra_generation_params)
        return processed


def _grid_with_margin(imgs: list[Any], cols: int, rows: int, w: int, h: int, margin: int) -> Any:
    """Images pasted row by row into cols x rows cells of w x h, `margin` pixels apart."""
    from PIL import Image

    grid = Image.new("RGB", (cols * w + (cols - 1) * margin, rows * h + (rows - 1) * margin), "white")
    for i, im in enumerate(imgs):
        x, y = i % cols, i // cols
        grid.paste(im, (x * (w + margin) + (w - im.width) // 2, y * (h + margin) + (h - im.height) // 2))
    return grid
