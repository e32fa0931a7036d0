"""LoRAs named in prompts through process_images: applied, recorded in infotext, taken out when the
next prompt does not name them, and unknown names reported without stopping the run."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from lora_factory import kohya_state_dict, lora_tensors, save_lora
from PIL import Image

from modules import cmd_args, infotext_utils, shared
from modules.processing import StableDiffusionProcessingTxt2Img, process_images


@pytest.fixture
def easel(tmp_path: Path, tiny_models_dir: Path):  # type: ignore[no-untyped-def]
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    args = cmd_args.build_parser().parse_args(["--data-dir", str(tmp_path / "data"), "--models-dir", str(models)])
    shared.initialize(args)
    shared.opts.sd_model_checkpoint = "tiny-sd1.safetensors"
    shared.opts.live_previews_enable = False
    model = shared.model_manager.ensure("tiny-sd1.safetensors")
    for name, seed, te in (("detail", 1, True), ("unet_only", 2, False)):
        save_lora(models / "Lora" / f"{name}.safetensors",
                  kohya_state_dict(lora_tensors(model, seed=seed, scale=0.5, te=te), alpha=4.0))
    yield models / "Lora"
    shared.model_manager.close()


def run(prompt: str, **kw) -> object:  # type: ignore[no-untyped-def]
    p = StableDiffusionProcessingTxt2Img(prompt=prompt, negative_prompt="", seed=3, steps=2, width=64, height=64,
                                         sampler_name="Euler", do_not_save_samples=True, do_not_save_grid=True, **kw)
    return process_images(p)


def arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"), dtype=np.int16)


def body_hash12(path: Path) -> str:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + n:]).hexdigest()[:12]


def test_lora_changes_the_image_and_is_taken_out_next_run(easel: Path) -> None:
    model = shared.model_manager.current_model()
    base = {k: v.clone() for k, v in model.unet.state_dict().items()}
    plain = run("a red cat")
    styled = run("a red cat <lora:detail:1>")
    assert np.abs(arr(plain.images[0]) - arr(styled.images[0])).max() > 0
    h = body_hash12(easel / "detail.safetensors")
    assert f'Lora hashes: "detail: {h}"' in styled.infotexts[0]
    assert styled.infotexts[0].startswith("a red cat <lora:detail:1>\n")
    assert not styled.comments
    parsed = infotext_utils.parse_generation_parameters(styled.infotexts[0])
    assert parsed["Lora hashes"] == f"detail: {h}"
    again = run("a red cat")
    assert np.array_equal(arr(again.images[0]), arr(plain.images[0]))
    assert "Lora hashes" not in again.infotexts[0]
    assert all(torch.equal(v, base[k]) for k, v in model.unet.state_dict().items())


def test_two_loras_with_separate_weights_and_infotext_order(easel: Path) -> None:
    both = run("a cat <lora:detail:0.5:1> <lora:unet_only:unet=0.8>")
    h1, h2 = body_hash12(easel / "detail.safetensors"), body_hash12(easel / "unet_only.safetensors")
    assert f'Lora hashes: "detail: {h1}, unet_only: {h2}"' in both.infotexts[0]
    te_zero = run("a cat <lora:detail:0:1> <lora:unet_only:unet=0.8>")
    assert np.abs(arr(both.images[0]) - arr(te_zero.images[0])).max() > 0  # the te weight matters


def test_unknown_lora_warns_and_the_run_goes_on(easel: Path) -> None:
    plain = run("a cat ")
    res = run("a cat <lora:nope:1>")
    assert "Networks not found: <lora:nope>" in res.comments
    assert np.array_equal(arr(res.images[0]), arr(plain.images[0]))
    assert "Lora hashes" not in res.infotexts[0]


def test_disable_extra_networks_leaves_the_model_alone(easel: Path) -> None:
    plain = run("a cat ")
    res = run("a cat <lora:detail:1>", disable_extra_networks=True)
    assert np.array_equal(arr(res.images[0]), arr(plain.images[0]))
