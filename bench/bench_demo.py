"""Demo model speed: a whole txt2img (20 steps, batch 1, the model's 64x64) through Easel against
diffusers' StableDiffusionPipeline (fp32, its CPU default) on the same checkpoint, in one process.

The checkpoint is loaded by Easel's single-file loader, as the app loads it. Each side runs the
default sampler (DPM++ 2M) with CFG 7; the median wall time of `--reps` rounds (after one warm-up
round; the order of the sides alternates) is reported for each Easel precision, with its ratio to
diffusers.

    python bench/bench_demo.py
    python bench/bench_demo.py --model /tmp/demo/easel-demo.safetensors --reps 10
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

import modules  # noqa: F401  (offline environment before diffusers/transformers are imported)
from tools.demo import model as demo_model
from tools.demo.evaluate import DEFAULT_MODEL, init_easel, txt2img

PROMPT = "a big red circle on a blue background"


def easel_seconds(model: object) -> float:
    start = time.perf_counter()
    txt2img(model, PROMPT, 1, batch=1, steps=20, cfg=7.0)
    return time.perf_counter() - start


def diffusers_seconds(pipe: object, size: int) -> float:
    start = time.perf_counter()
    pipe(PROMPT, num_inference_steps=20, guidance_scale=7.0, height=size, width=size,
         generator=torch.Generator().manual_seed(1), output_type="pil")
    return time.perf_counter() - start


def build_pipeline(model: object) -> object:
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    scheduler = DPMSolverMultistepScheduler.from_config(model.scheduler_config)
    pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                   unet=model.unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def measure(path: Path, dtypes: list[str], reps: int) -> tuple[int, float, dict[str, float]]:
    """(size, diffusers fp32 median seconds, {Easel dtype: median seconds}), runs interleaved."""
    reference = demo_model.load_exported(path, dtype=torch.float32, vae_dtype=torch.float32)
    size = int(reference.vae.config.sample_size)
    pipe = build_pipeline(reference)
    models = {name: demo_model.load_exported(path, dtype=getattr(torch, name), vae_dtype=torch.float32)
              for name in dtypes}
    runs: dict[str, list[float]] = {name: [] for name in ["diffusers", *dtypes]}
    sides = ["diffusers", *dtypes]
    for i in range(reps + 1):
        for side in (sides if i % 2 == 0 else sides[::-1]):
            t = diffusers_seconds(pipe, size) if side == "diffusers" else easel_seconds(models[side])
            if i:  # the first round warms caches up
                runs[side].append(t)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    return size, medians.pop("diffusers"), medians


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    args = ap.parse_args()

    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="easel-bench-demo-") as tmp:
        init_easel(Path(tmp))
        size, ref, easel = measure(args.model, args.dtypes.split(","), args.reps)
        print(f"{size}x{size}, 20 steps, batch 1, CFG 7, DPM++ 2M; median of {args.reps} runs (ABBA order)")
        print("| Easel UNet/text encoder dtype | Easel | diffusers (fp32) | Easel / diffusers |")
        print("|---|---|---|---|")
        for name, seconds in easel.items():
            print(f"| {name} | {seconds:.3f} s | {ref:.3f} s | {seconds / ref:.3f} |")

if __name__ == "__main__":
    main()
