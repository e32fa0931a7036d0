"""Engine speed: Easel's `process_images` against diffusers' StableDiffusionPipeline, per step.

Both sides use the same full-size SD 1.5-shaped model (random weights), the same sampler, steps and
seed. Each run records the wall time of every denoising step through the step callbacks; the
median over steps and repetitions is the s/it. Results are ratios measured in one process, so a
noisy machine affects both sides alike.

    python bench/bench_engine.py                       # 256x256 and 512x512, default policy + fp32
    python bench/bench_engine.py --sizes 256 --steps 4 --reps 2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from modules import devices, shared  # first: sets the offline environment before diffusers loads
from modules.engine import samplers
from modules.engine.model import DiffusionModel
from modules.model_manager.arch import ModelArch
from modules.paths import configs_path
from modules.processing import StableDiffusionProcessingTxt2Img, process_images


def build_random_sd15(dtype: torch.dtype, device: torch.device) -> DiffusionModel:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    cfg = ModelArch.SD1.config_dir
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(cfg / "vae"))
    te = CLIPTextModel(CLIPTextConfig.from_json_file(str(cfg / "text_encoder" / "config.json")))
    tok = CLIPTokenizer.from_pretrained(str(configs_path / "_tokenizers" / "clip"), model_max_length=77,
                                        local_files_only=True)
    sched = json.loads((cfg / "scheduler" / "scheduler_config.json").read_text())
    for m in (unet, te):
        m.to(device=device, dtype=dtype).eval().requires_grad_(False)
    vae.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
    return DiffusionModel(family="sd1", unet=unet, vae=vae, text_encoder=te, tokenizer=tok, scheduler_config=sched)


def step_times_easel(model: DiffusionModel, size: int, steps: int, sampler: str) -> list[float]:
    stamps: list[float] = []
    p = StableDiffusionProcessingTxt2Img(prompt="a photo of a cat", negative_prompt="", seed=1, steps=steps,
                                         cfg_scale=7.0, width=size, height=size, sampler_name=sampler,
                                         do_not_save_samples=True, do_not_save_grid=True)
    p.sd_model = model
    p.step_callback = lambda info: stamps.append(time.perf_counter())
    start = time.perf_counter()
    process_images(p)
    return [b - a for a, b in zip([start, *stamps], stamps, strict=False)][1:]


def step_times_diffusers(model: DiffusionModel, size: int, steps: int, sampler: str) -> list[float]:
    from diffusers import StableDiffusionPipeline

    spec, schedule = samplers.resolve(sampler, None)
    pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                   unet=model.unet, scheduler=samplers.build_scheduler(spec, schedule,
                                                                                       model.scheduler_config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    stamps: list[float] = []

    def cb(pipe, i, t, kw):  # type: ignore[no-untyped-def]
        stamps.append(time.perf_counter())
        return kw

    start = time.perf_counter()
    with torch.inference_mode():
        pipe(prompt="a photo of a cat", negative_prompt="", num_inference_steps=steps, guidance_scale=7.0,
             height=size, width=size, generator=torch.Generator().manual_seed(1), callback_on_step_end=cb,
             output_type="latent")
    return [b - a for a, b in zip([start, *stamps], stamps, strict=False)][1:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--sampler", default="Euler")
    ap.add_argument("--json", type=str, default=None, help="write results here")
    args = ap.parse_args()

    shared.initialize(load_settings=False)
    shared.opts.live_previews_enable = False
    policy = devices.select_policy(shared.cmd_opts)
    device = policy.device
    torch.set_num_threads(torch.get_num_threads())
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {device}, native bf16: {devices.cpu_has_native_bf16()}")

    results = []
    dtypes = {"fp32": torch.float32, "default": policy.dtype}
    models = {name: build_random_sd15(dt, device) for name, dt in dtypes.items()}
    for size in args.sizes:
        # warm-up both paths once (allocator, kernels)
        for name in models:
            step_times_easel(models[name], size, 2, args.sampler)
        step_times_diffusers(models["fp32"], size, 2, args.sampler)
        rows = {}
        half = str(policy.dtype).removeprefix("torch.")
        runs = [
            ("diffusers fp32", step_times_diffusers, models["fp32"]),
            ("easel fp32", step_times_easel, models["fp32"]),
            (f"easel default ({half})", step_times_easel, models["default"]),
            (f"diffusers {half}", step_times_diffusers, models["default"]),
        ]
        for rep in range(args.reps):
            # alternate the order (ABBA) so neither side always runs first after the other
            for label, fn, model in (runs if rep % 2 == 0 else list(reversed(runs))):
                rows.setdefault(label, []).extend(fn(model, size, args.steps, args.sampler))
                print(f"  {size}px rep {rep} {label}: median {statistics.median(rows[label]):.3f} s/it", flush=True)
        med = {k: statistics.median(v) for k, v in rows.items()}
        ref = med["diffusers fp32"]
        same_dtype_ratio = med["easel fp32"] / ref
        default_label = next(k for k in med if k.startswith("easel default"))
        diff_same = next(k for k in med if k.startswith("diffusers ") and k != "diffusers fp32")
        res = {
            "size": size,
            "steps": args.steps,
            "reps": args.reps,
            "s_per_it": med,
            "easel_fp32_vs_diffusers_fp32": same_dtype_ratio,
            "easel_default_vs_diffusers_same_dtype": med[default_label] / med[diff_same],
            "speedup_default_vs_diffusers_fp32": ref / med[default_label],
        }
        results.append(res)
        print(json.dumps(res, indent=2), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
