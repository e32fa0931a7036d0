"""Measure the demo model through Easel itself: held-out captions, img2img, inpainting, speed.

    python -m tools.demo.evaluate                                  # the shipped model
    python -m tools.demo.evaluate --model /tmp/demo/easel-demo.safetensors --save-images /tmp/eval

The checkpoint is loaded by Easel's single-file loader and every picture is made by
`modules.processing.process_images` with the default sampler (as a user's request would be), so the
numbers describe what the app produces. Prints a markdown report for bench/RESULTS.md.

- Held-out captions (`dataset.heldout_eval_specs`): 20 steps, CFG 7, 4 seeds each; the checker judges
  background colour, shape colour, shape class and position. The same at CFG 1 (1 seed) shows how
  much guidance adds.
- img2img: a generator picture with a new caption that differs in every attribute; at denoising 0.3
  the layout (the source's shape class and position) must survive, at 0.9 the new caption must be
  followed (all four attributes). Whether the source colour survives 0.3 as well is reported too.
- Inpainting: "a red circle" into the masked quadrant of a picture whose shape lies in the opposite
  quadrant, over each background but red (where a red circle could not be seen); success when a red
  circle is found centred inside the mask. Pixels outside the mask must equal the input exactly
  (mask blur 0). Denoising 0.75 and masked content "original" are the img2img tab's defaults;
  inpaint area "Only masked" (padding 8 px) is how a new object is put into a region: the model
  draws the masked area and a little context at its full resolution, and a caption naming no place
  puts a lone shape in the middle of that crop. The padding is an eighth of the side: the crop is
  clipped at the picture's edge, so a wider padding moves the crop's middle off the mask's middle
  and a big circle drawn there spills over the mask's edge. "Whole picture" is reported too: there
  the model has no reason to put the circle in the mask rather than in the middle of the picture.
- Negative prompt: share of red pixels for "a circle" with and without the negative prompt "red".
- Speed: txt2img, 20 steps, batch 1, the model's resolution; median wall time of 5 runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import modules  # noqa: F401  (offline environment before diffusers/transformers are imported)
from tools.demo import checker
from tools.demo import model as demo_model
from tools.demo.captions import SceneSpec, ShapeSpec, write_caption
from tools.demo.dataset import heldout_eval_specs, sample_for_spec
from tools.demo.shapes import COLORS

DEFAULT_MODEL = Path("models/Stable-diffusion/easel-demo.safetensors")
ATTRIBUTES = ("background", "color", "shape", "position")
TARGETS = {"background": 0.95, "color": 0.90, "shape": 0.80, "position": 0.80}
# A red circle on a red background cannot be seen, so inpainting sources use the other colours.
INPAINT_BACKGROUNDS = tuple(c for c in COLORS if c != "red")


@dataclass
class Settings:
    steps: int = 20
    cfg_scale: float = 7.0
    seeds: int = 4
    per_pair: int = 2
    img2img_pairs: int = 8
    inpaint_cases: int = 16
    inpaint_strength: float = 0.75
    inpaint_padding: int = 8
    negative_seeds: int = 8
    speed_runs: int = 5
    save_images: Path | None = None


@dataclass
class Report:
    settings: Settings
    resolution: int
    dtype: str
    txt2img: dict[str, float] = field(default_factory=dict)
    txt2img_cfg1: dict[str, float] = field(default_factory=dict)
    images_judged: int = 0
    img2img_low_keeps_layout: float = 0.0
    img2img_low_keeps_colour: float = 0.0
    img2img_high_follows_prompt: float = 0.0
    inpaint_red_circle: float = 0.0
    inpaint_whole_picture_red_circle: float = 0.0
    inpaint_outside_max_diff: int = 0
    red_share_plain: float = 0.0
    red_share_negative: float = 0.0
    seconds_20_steps: float = 0.0

    def markdown(self) -> str:
        lines = [
            f"Held-out captions: {self.images_judged} images ({self.settings.seeds} seeds per caption), "
            f"{self.settings.steps} steps, default sampler, {self.resolution}x{self.resolution}, {self.dtype}.",
            "",
            "| check | CFG 7 | CFG 1 | target |",
            "|---|---|---|---|",
        ]
        for key in ATTRIBUTES:
            lines.append(f"| {key} | {self.txt2img.get(key, 0):.0%} | {self.txt2img_cfg1.get(key, 0):.0%} | "
                         f">= {TARGETS[key]:.0%} |")
        lines += [
            "",
            "| check | result |",
            "|---|---|",
            f"| img2img, denoising 0.3: layout (shape and position) kept | {self.img2img_low_keeps_layout:.0%} |",
            f"| img2img, denoising 0.3: colour kept as well | {self.img2img_low_keeps_colour:.0%} |",
            f"| img2img, denoising 0.9: new caption followed (all four) | {self.img2img_high_follows_prompt:.0%} |",
            f"| inpaint \"a red circle\", denoising {self.settings.inpaint_strength}, Only masked (padding "
            f"{self.settings.inpaint_padding} px): red circle inside the mask (target >= 80%) | "
            f"{self.inpaint_red_circle:.0%} |",
            f"| inpaint \"a red circle\", Whole picture: red circle inside the mask | "
            f"{self.inpaint_whole_picture_red_circle:.0%} |",
            f"| inpaint: largest pixel change outside the mask | {self.inpaint_outside_max_diff} |",
            f"| red pixels, \"a circle\" / with negative prompt \"red\" | {self.red_share_plain:.1%} / "
            f"{self.red_share_negative:.1%} |",
            f"| txt2img 20 steps, batch 1, median of {self.settings.speed_runs} (target < 1 s) | "
            f"{self.seconds_20_steps:.2f} s |",
        ]
        return "\n".join(lines)


def init_easel(data_dir: Path) -> None:
    """Point Easel at a scratch data folder (settings, params.txt) with previews off."""
    from modules import cmd_args, shared

    models = data_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    args = cmd_args.build_parser().parse_args(["--data-dir", str(data_dir), "--models-dir", str(models)])
    shared.initialize(args, load_settings=False)
    shared.opts.live_previews_enable = False


def _arrays(processed: Any) -> list[np.ndarray]:
    return [np.asarray(im.convert("RGB")) for im in processed.images]


def txt2img(model: Any, prompt: str, seed: int, *, batch: int, steps: int, cfg: float,
            negative: str = "") -> list[np.ndarray]:
    from modules.processing import StableDiffusionProcessingTxt2Img, process_images

    size = model.vae.config.sample_size
    p = StableDiffusionProcessingTxt2Img(prompt=prompt, negative_prompt=negative, seed=seed, batch_size=batch,
                                         steps=steps, cfg_scale=cfg, width=size, height=size,
                                         do_not_save_samples=True, do_not_save_grid=True)
    p.sd_model = model
    return _arrays(process_images(p))


def img2img(model: Any, image: np.ndarray, prompt: str, seed: int, *, strength: float, steps: int, cfg: float,
            mask: Image.Image | None = None, only_masked: bool = False, padding: int = 0) -> np.ndarray:
    from modules.processing import StableDiffusionProcessingImg2Img, process_images

    size = image.shape[0]
    p = StableDiffusionProcessingImg2Img(init_images=[Image.fromarray(image)], prompt=prompt, seed=seed, steps=steps,
                                         cfg_scale=cfg, width=size, height=size, denoising_strength=strength,
                                         mask=mask, mask_blur=0, inpainting_fill=1, inpaint_full_res=only_masked,
                                         inpaint_full_res_padding=padding,
                                         do_not_save_samples=True, do_not_save_grid=True)
    p.sd_model = model
    return _arrays(process_images(p))[0]


def _rate(judgements: list[checker.Judgement]) -> dict[str, float]:
    out = {}
    for key in ATTRIBUTES:
        values = [getattr(j, f"{key}_ok") for j in judgements]
        values = [v for v in values if v is not None]
        out[key] = float(np.mean(values)) if values else 0.0
    return out


def _save(folder: Path | None, name: str, image: np.ndarray) -> None:
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{name}.png")


def _img2img_pairs(count: int) -> list[tuple[SceneSpec, SceneSpec]]:
    """(source, new caption) pairs differing in shape, colour, position and background."""
    rng = np.random.default_rng(11)
    from tools.demo import shapes as sh

    pairs = []
    for _ in range(count):
        a_shape, b_shape = rng.choice(sh.SHAPES, 2, replace=False).tolist()
        a_color, b_color, a_bg, b_bg = rng.choice(sh.COLORS, 4, replace=False).tolist()
        a_pos, b_pos = rng.choice(["left", "right", "top", "bottom", "top left", "bottom right"], 2,
                                  replace=False).tolist()
        pairs.append((SceneSpec((ShapeSpec(a_shape, a_color, "big", a_pos),), a_bg),
                      SceneSpec((ShapeSpec(b_shape, b_color, "big", b_pos),), b_bg)))
    return pairs


def _inpaint(model: Any, settings: Settings, clf: Any, *, only_masked: bool) -> tuple[float, int]:
    """Share of cases with a red circle centred in the masked quadrant, and the largest pixel change
    outside the mask."""
    size = int(model.vae.config.sample_size)
    hits, worst = [], 0
    quadrants = [("top left", "bottom right"), ("top right", "bottom left"), ("bottom left", "top right"),
                 ("bottom right", "top left")]
    for i in range(settings.inpaint_cases):
        hole, shape_at = quadrants[i % 4]
        shape = ("square", "triangle", "star", "cross")[i % 4]
        background = INPAINT_BACKGROUNDS[i % len(INPAINT_BACKGROUNDS)]
        source = sample_for_spec(SceneSpec((ShapeSpec(shape, None, "big", shape_at),), background), seed=100 + i).image
        mask = np.zeros((size, size), dtype=np.uint8)
        x0 = 0 if "left" in hole else size // 2
        y0 = 0 if "top" in hole else size // 2
        mask[y0:y0 + size // 2, x0:x0 + size // 2] = 255
        result = img2img(model, source, "a red circle", 3000 + i, strength=settings.inpaint_strength,
                         steps=settings.steps, cfg=settings.cfg_scale, mask=Image.fromarray(mask),
                         only_masked=only_masked, padding=settings.inpaint_padding)
        outside = mask == 0
        worst = max(worst, int(np.abs(result.astype(int) - source.astype(int))[outside].max()))
        _, found = checker.detect(result)
        clf.classify(found)
        inside = [d for d in found if mask[min(size - 1, int(d.centroid[1])), min(size - 1, int(d.centroid[0]))]]
        hits.append(any(d.shape == "circle" and d.color == "red" for d in inside))
        _save(settings.save_images, f"inpaint-{'masked' if only_masked else 'whole'}-{i:02d}", result)
    return (float(np.mean(hits)) if hits else 0.0), worst


def evaluate(model: Any, settings: Settings) -> Report:
    size = int(model.vae.config.sample_size)
    report = Report(settings=settings, resolution=size, dtype=str(model.dtype).replace("torch.", ""))
    clf = checker.default_classifier()
    out = settings.save_images

    judged, judged_cfg1 = [], []
    for i, spec in enumerate(heldout_eval_specs(per_pair=settings.per_pair)):
        prompt = write_caption(spec)
        seed = 1000 + 10 * i
        for k, image in enumerate(txt2img(model, prompt, seed, batch=settings.seeds, steps=settings.steps,
                                          cfg=settings.cfg_scale)):
            judged.append(checker.judge(image, spec, clf))
            _save(out, f"heldout-{i:02d}-{k}", image)
        image = txt2img(model, prompt, seed, batch=1, steps=settings.steps, cfg=1.0)[0]
        judged_cfg1.append(checker.judge(image, spec, clf))
    report.txt2img, report.txt2img_cfg1, report.images_judged = _rate(judged), _rate(judged_cfg1), len(judged)

    low, low_colour, high = [], [], []
    for i, (a, b) in enumerate(_img2img_pairs(settings.img2img_pairs)):
        source = sample_for_spec(a, seed=i).image
        prompt = write_caption(b)
        kept = img2img(model, source, prompt, 2000 + i, strength=0.3, steps=settings.steps, cfg=settings.cfg_scale)
        changed = img2img(model, source, prompt, 2000 + i, strength=0.9, steps=settings.steps, cfg=settings.cfg_scale)
        j_low = checker.judge(kept, a, clf)
        low.append(bool(j_low.shape_ok and j_low.position_ok))
        low_colour.append(bool(j_low.shape_ok and j_low.position_ok and j_low.color_ok))
        j_high = checker.judge(changed, b, clf)
        high.append(all(getattr(j_high, f"{k}_ok") for k in ATTRIBUTES))
        _save(out, f"img2img-{i:02d}-source", source)
        _save(out, f"img2img-{i:02d}-low", kept)
        _save(out, f"img2img-{i:02d}-high", changed)
    report.img2img_low_keeps_layout = float(np.mean(low)) if low else 0.0
    report.img2img_low_keeps_colour = float(np.mean(low_colour)) if low_colour else 0.0
    report.img2img_high_follows_prompt = float(np.mean(high)) if high else 0.0

    report.inpaint_red_circle, worst = _inpaint(model, settings, clf, only_masked=True)
    report.inpaint_whole_picture_red_circle, worst_whole = _inpaint(model, settings, clf, only_masked=False)
    report.inpaint_outside_max_diff = max(worst, worst_whole)

    def red_share(images: list[np.ndarray]) -> float:
        names = checker.nearest_colors(np.concatenate([im.reshape(-1, 3) for im in images]))
        return float(np.mean(names == list(checker.sh.PALETTE).index("red")))

    if settings.negative_seeds:
        report.red_share_plain = red_share(txt2img(model, "a circle", 4000, batch=settings.negative_seeds,
                                                   steps=settings.steps, cfg=settings.cfg_scale))
        report.red_share_negative = red_share(txt2img(model, "a circle", 4000, batch=settings.negative_seeds,
                                                      steps=settings.steps, cfg=settings.cfg_scale, negative="red"))

    times = []
    for run in range(settings.speed_runs + 1):
        start = time.perf_counter()
        txt2img(model, "a big red circle on a blue background", 5000 + run, batch=1, steps=20, cfg=7.0)
        if run:  # the first run warms caches up
            times.append(time.perf_counter() - start)
    report.seconds_20_steps = statistics.median(times) if times else 0.0
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Evaluate the demo model through Easel's loader and processing.")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                    help="UNet/text encoder precision (Easel itself uses bfloat16 on a CPU with native bf16)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--per-pair", type=int, default=2, help="captions per held-out combination")
    ap.add_argument("--save-images", type=Path, help="write every picture made into this folder")
    ap.add_argument("--quick", action="store_true", help="a handful of images per check (pipeline check only)")
    args = ap.parse_args(argv)

    settings = Settings(steps=args.steps, seeds=args.seeds, per_pair=args.per_pair, save_images=args.save_images)
    if args.quick:
        settings = Settings(steps=args.steps, seeds=1, per_pair=1, img2img_pairs=1, inpaint_cases=1,
                            negative_seeds=1, speed_runs=1, save_images=args.save_images)
    with tempfile.TemporaryDirectory(prefix="easel-eval-") as tmp:
        init_easel(Path(tmp))
        model = demo_model.load_exported(args.model, dtype=getattr(torch, args.dtype), vae_dtype=torch.float32)
        report = evaluate(model, settings)
    print(report.markdown())


if __name__ == "__main__":
    main()
