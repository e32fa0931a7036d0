"""Prompts from file or textbox: one generation per line. A line is a prompt, or options in the
command-line style `--prompt "a cat" --negative_prompt "blurry" --steps 30 --seed 1 ...`."""

from __future__ import annotations

import copy
import random
import shlex
from collections.abc import Callable
from typing import Any

import gradio as gr

from modules import scripts, shared
from modules.processing import Processed, process_images


def _string(tag: str) -> str:
    return tag


def _bool(tag: str) -> bool:
    if tag.lower() in ("true", "1", "yes"):
        return True
    if tag.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"{tag!r} is not true or false")


def _styles(tag: str) -> list[str]:
    return [s.strip() for s in tag.split(",") if s.strip()]


OPTIONS: dict[str, Callable[[str], Any]] = {
    "sd_model": _string,
    "outpath_samples": _string,
    "outpath_grids": _string,
    "prompt_for_display": _string,
    "prompt": _string,
    "negative_prompt": _string,
    "styles": _styles,
    "seed": int,
    "subseed_strength": float,
    "subseed": int,
    "seed_resize_from_h": int,
    "seed_resize_from_w": int,
    "sampler_index": int,
    "sampler_name": _string,
    "scheduler": _string,
    "batch_size": int,
    "n_iter": int,
    "steps": int,
    "cfg_scale": float,
    "width": int,
    "height": int,
    "denoising_strength": float,
    "restore_faces": _bool,
    "tiling": _bool,
    "do_not_save_samples": _bool,
    "do_not_save_grid": _bool,
}
"""The options a line may set, with how their values are read."""


def parse_line(line: str) -> dict[str, Any]:
    """`--name value` pairs of one line; a flag without a value means true. ValueError naming the
    unknown option or the bad value."""
    args = shlex.split(line)
    res: dict[str, Any] = {}
    pos = 0
    while pos < len(args):
        arg = args[pos]
        if not arg.startswith("--"):
            raise ValueError(f"expected an option (--name) in line {line!r}, found {arg!r}")
        name = arg[2:]
        reader = OPTIONS.get(name)
        if reader is None:
            raise ValueError(f"unknown option --{name} in line {line!r}; known: "
                             f"{', '.join('--' + k for k in OPTIONS)}")
        if pos + 1 >= len(args) or args[pos + 1].startswith("--"):
            res[name] = True
            pos += 1
            continue
        value = args[pos + 1]
        try:
            res[name] = reader(value)
        except ValueError as e:
            raise ValueError(f"bad value for --{name} in line {line!r}: {e}") from None
        pos += 2
    return res


def jobs_from_text(text: str) -> list[dict[str, Any]]:
    """One job per non-empty line: options when the line starts with "--", else the prompt."""
    jobs = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        jobs.append(parse_line(line) if line.startswith("--") else {"prompt": line})
    return jobs


class Script(scripts.Script):
    def title(self) -> str:
        return "Prompts from file or textbox"

    def ui(self, is_img2img: bool) -> list[Any]:
        checkbox_iterate = gr.Checkbox(label="Iterate seed every line", value=False, elem_id=self.elem_id("checkbox_iterate"))
        checkbox_iterate_batch = gr.Checkbox(label="Use same random seed for all lines", value=False,
                                             elem_id=self.elem_id("checkbox_iterate_batch"))
        prompt_position = gr.Radio(["start", "end"], label="Insert prompts at the", elem_id=self.elem_id("prompt_position"),
                                   value="start")
        prompt_txt = gr.Textbox(label="List of prompt inputs", lines=1, elem_id=self.elem_id("prompt_txt"))
        upload = gr.File(label="Upload prompt inputs", type="binary", elem_id=self.elem_id("file"))
        upload.change(fn=_read_upload, inputs=[upload], outputs=[upload, prompt_txt], show_progress="hidden")
        return [checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt]

    def run(self, p: Any, checkbox_iterate: bool = False, checkbox_iterate_batch: bool = False,
            prompt_position: str = "start", prompt_txt: str = "", *_rest: Any) -> Processed:
        jobs = jobs_from_text(prompt_txt or "")
        if not jobs:
            raise ValueError("Prompts from file or textbox: the list of prompt inputs is empty")
        if (checkbox_iterate or checkbox_iterate_batch) and (p.seed is None or int(p.seed) == -1):
            p.seed = int(random.randrange(4294967294))
        p.do_not_save_grid = True
        state = shared.state
        state.job_count = sum(int(job.get("n_iter", p.n_iter)) for job in jobs)

        all_images: list[Any] = []
        all_prompts: list[str] = []
        all_negative: list[str] = []
        all_seeds: list[int] = []
        infotexts: list[str] = []
        for job in jobs:
            if state.interrupted:
                break
            copy_p = copy.copy(p)
            copy_p.extra_generation_params = dict(p.extra_generation_params or {})
            copy_p.override_settings = dict(p.override_settings or {})
            copy_p.styles = list(p.styles or [])
            for k, v in job.items():
                if k == "sd_model":
                    copy_p.override_settings["sd_model_checkpoint"] = v
                elif k in ("prompt", "negative_prompt"):
                    continue
                else:
                    setattr(copy_p, k, v)
            if "prompt" in job:
                base = p.prompt if isinstance(p.prompt, str) else ""
                if base:
                    copy_p.prompt = f"{job['prompt']} {base}" if prompt_position == "start" else f"{base} {job['prompt']}"
                else:
                    copy_p.prompt = job["prompt"]
            if "negative_prompt" in job:
                base = p.negative_prompt if isinstance(p.negative_prompt, str) else ""
                copy_p.negative_prompt = f"{base} {job['negative_prompt']}".strip() if base else job["negative_prompt"]
            if "sampler_index" in job and "sampler_name" not in job:
                copy_p.sampler_name = None
            proc = process_images(copy_p)
            all_images += proc.images
            all_prompts += proc.all_prompts
            all_negative += proc.all_negative_prompts
            all_seeds += proc.all_seeds
            infotexts += proc.infotexts
            if checkbox_iterate:
                p.seed = int(p.seed) + p.batch_size * p.n_iter
        return Processed(p, all_images, all_seeds[0] if all_seeds else p.seed, infotexts[0] if infotexts else "",
                         all_prompts=all_prompts, all_negative_prompts=all_negative, all_seeds=all_seeds,
                         infotexts=infotexts)


def _read_upload(file: Any) -> tuple[Any, Any]:
    """The uploaded file's text goes into the textbox (and the upload is cleared)."""
    if file is None:
        return None, gr.update()
    data = file if isinstance(file, bytes) else open(file, "rb").read()  # noqa: SIM115
    return None, data.decode("utf8", errors="replace")
