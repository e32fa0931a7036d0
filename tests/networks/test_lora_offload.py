"""LoRAs on offloaded models (--medvram / --lowvram): merged into the weights where they are stored,
giving the same images as without offloading, and taken out bit for bit."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from lora_factory import kohya_state_dict, lora_tensors, save_lora
from PIL import Image

from modules import cmd_args, shared
from modules.engine.offload import OffloadPolicy
from modules.networks.lora import applier_for
from modules.processing import StableDiffusionProcessingTxt2Img, process_images


@pytest.fixture
def models(tmp_path: Path, tiny_models_dir: Path):  # type: ignore[no-untyped-def]
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    yield models
    if shared.model_manager is not None:
        shared.model_manager.close()


def start(models: Path, policy: OffloadPolicy | None = None) -> None:
    if shared.model_manager is not None:
        shared.model_manager.close()
    args = cmd_args.build_parser().parse_args(["--data-dir", str(models.parent / "data"), "--models-dir", str(models)])
    shared.initialize(args)
    assert shared.model_manager is not None
    if policy is not None:
        shared.model_manager.offload_policy = policy
    shared.opts.sd_model_checkpoint = "tiny-sd1.safetensors"
    shared.opts.live_previews_enable = False


def run(prompt: str) -> np.ndarray:
    p = StableDiffusionProcessingTxt2Img(prompt=prompt, negative_prompt="", seed=3, steps=2, width=64, height=64,
                                         sampler_name="Euler", do_not_save_samples=True, do_not_save_grid=True)
    image: Image.Image = process_images(p).images[0]
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def weights(model) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    return {f"{part}.{k}": v.clone() for part in ("unet", "text_encoder")
            for k, v in getattr(model, part).state_dict().items()}


@pytest.mark.parametrize("policy", [OffloadPolicy(medvram=True), OffloadPolicy(lowvram=True)],
                         ids=["medvram", "lowvram"])
def test_lora_under_offloading_matches_and_unloads_exactly(models: Path, policy: OffloadPolicy) -> None:
    start(models)
    model = shared.model_manager.ensure("tiny-sd1.safetensors")
    save_lora(models / "Lora" / "detail.safetensors",
              kohya_state_dict(lora_tensors(model, seed=1, scale=0.5), alpha=4.0))
    plain, styled = run("a red cat"), run("a red cat <lora:detail:1>")
    assert np.abs(plain - styled).max() > 0

    start(models, policy)
    model = shared.model_manager.ensure("tiny-sd1.safetensors")
    assert model is not None and model.offload is not None
    base = weights(model)
    assert np.array_equal(run("a red cat <lora:detail:1>"), styled)
    merged = weights(model)
    assert any(not torch.equal(merged[k], base[k]) for k in base if k.startswith("unet."))
    assert any(not torch.equal(merged[k], base[k]) for k in base if k.startswith("text_encoder."))

    assert np.array_equal(run("a red cat"), plain)
    after = weights(model)
    assert all(torch.equal(after[k], base[k]) for k in base)
    assert applier_for(model).is_clean
    assert {p.device.type for p in model.unet.parameters()} == {"cpu"}
