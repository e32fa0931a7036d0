"""--medvram / --medvram-sdxl / --lowvram through process_images and the model manager.

On this CPU-only machine the offload policy is given with the CPU as execution device: placing moves
nothing, so the images must be bit-identical to runs without offloading, and the recorded placements
show which part ran when. The CUDA tests measure the VRAM the flags save.
"""

from __future__ import annotations

import gc
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modules import cmd_args, shared
from modules.engine.offload import OffloadMode, OffloadPolicy
from modules.model_manager.manager import ModelManager
from modules.processing import StableDiffusionProcessingImg2Img, StableDiffusionProcessingTxt2Img, process_images

MEDVRAM = OffloadPolicy(medvram=True)
LOWVRAM = OffloadPolicy(lowvram=True)
MEDVRAM_SDXL = OffloadPolicy(medvram_sdxl=True)

Start = Callable[..., ModelManager]


@pytest.fixture
def start(tmp_path: Path, tiny_models_dir: Path):  # type: ignore[no-untyped-def]
    """Start (or restart) an instance over a copy of the tiny models with the given flags and, to
    force offloading with the CPU as execution device, an explicit offload policy."""
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)

    def start(*flags: str, policy: OffloadPolicy | None = None) -> ModelManager:
        if shared.model_manager is not None:
            shared.model_manager.close()
        args = cmd_args.build_parser().parse_args(
            ["--data-dir", str(tmp_path / "data"), "--models-dir", str(models), *flags])
        shared.initialize(args)
        assert shared.model_manager is not None
        if policy is not None:
            shared.model_manager.offload_policy = policy
        shared.opts.sd_model_checkpoint = "tiny-sd1.safetensors"
        shared.opts.live_previews_enable = False
        return shared.model_manager

    yield start
    if shared.model_manager is not None:
        shared.model_manager.close()


def record(manager: ModelManager, checkpoint: str) -> list[tuple[str, str]]:
    model = manager.load(checkpoint)
    assert model.offload is not None
    events: list[tuple[str, str]] = []
    model.offload.listener = lambda action, name: events.append((action, name))
    return events


def txt2img(**kw) -> StableDiffusionProcessingTxt2Img:  # type: ignore[no-untyped-def]
    base = dict(prompt="a red circle", negative_prompt="blurry", seed=11, steps=3, cfg_scale=7.0, width=64,
                height=64, sampler_name="Euler a", do_not_save_samples=True, do_not_save_grid=True)
    base.update(kw)
    return StableDiffusionProcessingTxt2Img(**base)


def picture() -> Image.Image:
    a = np.zeros((64, 64, 3), dtype=np.uint8)
    a[:, :, 1] = 180
    a[10:40, 20:60, 0] = 220
    return Image.fromarray(a)


def mask() -> Image.Image:
    m = Image.new("L", (64, 64), 0)
    m.paste(255, (16, 16, 48, 48))
    return m


def img2img(**kw) -> StableDiffusionProcessingImg2Img:  # type: ignore[no-untyped-def]
    base = dict(init_images=[picture()], prompt="a house", negative_prompt="", seed=4, steps=4,
                denoising_strength=0.6, width=64, height=64, sampler_name="Euler", do_not_save_samples=True,
                do_not_save_grid=True)
    base.update(kw)
    return StableDiffusionProcessingImg2Img(**base)


def arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"), dtype=np.int16)


def generate_all() -> list[tuple[np.ndarray, str]]:
    """txt2img, img2img and inpainting with a 9-channel model: images and infotexts."""
    runs = [txt2img(), txt2img(batch_size=2, seed=30), img2img(), img2img(mask=mask(), mask_blur=2)]
    out = []
    for p in runs:
        res = process_images(p)
        out += [(arr(im), text) for im, text in zip(res.images, res.infotexts, strict=True)]
    shared.opts.sd_model_checkpoint = "tiny-sd1-inpaint"
    res = process_images(img2img(mask=mask(), prompt="a door"))
    shared.opts.sd_model_checkpoint = "tiny-sd1.safetensors"
    return [*out, (arr(res.images[0]), res.infotexts[0])]


@pytest.mark.slow
@pytest.mark.parametrize("policy", [MEDVRAM, LOWVRAM], ids=["medvram", "lowvram"])
def test_generations_are_bit_identical_with_offloading(start: Start, policy: OffloadPolicy) -> None:
    start()
    reference = generate_all()
    manager = start(policy=policy)
    offloaded = generate_all()
    assert len(offloaded) == len(reference) == 6
    for (image, text), (ref_image, ref_text) in zip(offloaded, reference, strict=True):
        assert np.array_equal(image, ref_image)
        assert text == ref_text  # the mode is recorded nowhere in the infotext
    model = manager.current_model(load=False)
    assert model is not None and model.offload is not None
    assert model.offload.mode is policy.mode_for("sd1") and model.storage_device.type == "cpu"


def test_medvram_txt2img_runs_each_part_in_its_stage(start: Start) -> None:
    manager = start(policy=MEDVRAM)
    events = record(manager, "tiny-sd1")
    process_images(txt2img())
    assert events == [("load", "text_encoder"), ("offload", "text_encoder"),  # the prompt
                      ("load", "text_encoder"), ("offload", "text_encoder"),  # the negative prompt
                      ("load", "unet"), ("offload", "unet"), ("load", "vae"), ("offload", "vae")]
    events.clear()
    process_images(txt2img(seed=12))  # prompts come from the cache: no text encoder this time
    assert events == [("load", "unet"), ("offload", "unet"), ("load", "vae"), ("offload", "vae")]


def test_medvram_img2img_encodes_the_picture_first(start: Start) -> None:
    manager = start(policy=MEDVRAM)
    events = record(manager, "tiny-sd1")
    process_images(img2img())
    assert [name for action, name in events if action == "load"] == [
        "vae", "text_encoder", "text_encoder", "unet", "vae"]


def test_lowvram_moves_units_and_never_whole_parts(start: Start) -> None:
    manager = start(policy=LOWVRAM)
    events = record(manager, "tiny-sd1")
    process_images(txt2img())
    names = {name for _action, name in events}
    assert not names & {"text_encoder", "unet", "vae"}
    assert {name.split(".")[0] for name in names} == {"text_encoder", "unet", "vae"}
    model = manager.current_model(load=False)
    assert model is not None
    assert {p.device.type for p in model.unet.parameters()} == {"cpu"}


@pytest.mark.slow
def test_medvram_sdxl_offloads_sdxl_only_and_switching_keeps_working(start: Start) -> None:
    start()
    plain_sd1 = process_images(txt2img()).images[0]
    shared.opts.sd_model_checkpoint = "tiny-sdxl"
    plain_sdxl = process_images(txt2img(width=64, height=96)).images[0]

    manager = start(policy=MEDVRAM_SDXL)
    manager.opts.sd_checkpoints_limit = 2
    manager.opts.sd_checkpoints_keep_in_cpu = True
    sd1 = manager.load("tiny-sd1")
    assert sd1.offload is None
    assert np.array_equal(arr(process_images(txt2img()).images[0]), arr(plain_sd1))

    shared.opts.sd_model_checkpoint = "tiny-sdxl"
    events: list[tuple[str, str]] = []
    sdxl = manager.load("tiny-sdxl")
    assert sdxl.offload is not None and sdxl.offload.mode is OffloadMode.MEDVRAM
    sdxl.offload.listener = lambda action, name: events.append((action, name))
    res = process_images(txt2img(width=64, height=96))
    assert np.array_equal(arr(res.images[0]), arr(plain_sdxl))
    assert [n for a, n in events if a == "load"] == ["text_encoder", "text_encoder_2", "text_encoder",
                                                     "text_encoder_2", "unet", "vae"]

    shared.opts.sd_model_checkpoint = "tiny-sd1.safetensors"
    assert manager.load("tiny-sd1") is sd1  # back from the cache
    assert np.array_equal(arr(process_images(txt2img()).images[0]), arr(plain_sd1))
    shared.opts.sd_model_checkpoint = "tiny-sdxl"
    assert manager.load("tiny-sdxl") is sdxl and sdxl.offload is not None
    events.clear()
    assert np.array_equal(arr(process_images(txt2img(width=64, height=96)).images[0]), arr(plain_sdxl))
    assert ("load", "unet") in events


def test_vae_switch_under_medvram(start: Start) -> None:
    start()
    shared.opts.sd_vae = "tiny-vae.safetensors"
    with_vae = process_images(txt2img())
    manager = start(policy=MEDVRAM)
    events = record(manager, "tiny-sd1")
    shared.opts.sd_vae = "tiny-vae.safetensors"
    res = process_images(txt2img())
    model = manager.current_model(load=False)
    assert model is not None and model.vae_name == "tiny-vae.safetensors"
    assert {p.device.type for p in model.vae.parameters()} == {"cpu"}
    assert np.array_equal(arr(res.images[0]), arr(with_vae.images[0]))
    assert res.infotexts[0] == with_vae.infotexts[0]
    assert events[-2:] == [("load", "vae"), ("offload", "vae")]
    shared.opts.sd_vae = "None"
    events.clear()
    back = process_images(txt2img())
    assert model.vae_name is None and events[-2:] == [("load", "vae"), ("offload", "vae")]
    assert not np.array_equal(arr(back.images[0]), arr(res.images[0]))


# --- on a GPU: what the flags save -----------------------------------------------------------------------
@pytest.mark.gpu
def test_medvram_and_lowvram_lower_the_peak_vram(start: Start) -> None:
    peaks: dict[str, int] = {}
    images: dict[str, np.ndarray] = {}
    for label, flags in (("none", ()), ("medvram", ("--medvram",)), ("lowvram", ("--lowvram",))):
        gc.collect()
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
        manager = start(*flags)
        model = manager.load("tiny-sd1")
        assert (model.offload is None) == (label == "none")
        assert model.device.type == "cuda"
        assert {p.device.type for p in model.unet.parameters()} == ({"cuda"} if label == "none" else {"cpu"})
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        # 256x256: the VAE's activations outweigh the text encoder, so each mode's saving shows
        res = process_images(txt2img(width=256, height=256, steps=2))
        torch.cuda.synchronize()
        peaks[label] = torch.cuda.max_memory_allocated() - before  # the weights on the GPU count too
        images[label] = arr(res.images[0])
        manager.close()
        shared.model_manager = None
        del model, manager, res
    assert peaks["none"] > peaks["medvram"] > peaks["lowvram"], peaks
    for label in ("medvram", "lowvram"):
        assert np.abs(images[label] - images["none"]).max() <= 1, label


@pytest.mark.gpu
def test_offloaded_model_switches_and_reuses_on_cuda(start: Start) -> None:
    manager = start("--medvram-sdxl")
    sd1 = manager.load("tiny-sd1")
    assert sd1.offload is None and sd1.unet.device.type == "cuda"
    sdxl = manager.load("tiny-sdxl")
    assert sdxl.offload is not None and {p.device.type for p in sdxl.unet.parameters()} == {"cpu"}
    shared.opts.sd_model_checkpoint = "tiny-sdxl"
    res = process_images(txt2img(width=64, height=96))
    assert res.images[0].size == (64, 96)
    assert {p.device.type for p in sdxl.unet.parameters()} == {"cpu"}
    assert {p.device.type for p in sdxl.text_encoder_2.parameters()} == {"cpu"}
