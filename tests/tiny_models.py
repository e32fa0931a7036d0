"""Tiny random-weight Stable Diffusion models for tests, and the pytest fixtures that build them.

The models keep the real architectures' shapes in miniature so every code path (key conversion,
conditioning, the denoising loop, VAE round trips) runs for real in milliseconds on a CPU:

- UNet: block_out_channels (32, 64), layers_per_block 1, cross-attention width 32 (SDXL: 96, the
  two encoders' widths concatenated), one downsampling step.
- VAE: block_out_channels (32, 64, 64), layers_per_block 1: a **scale factor of 4** (a 64x64 image
  has 16x16 latents). Any width/height that is a multiple of 8 therefore gives latents the UNet can
  halve.
- Text encoders: CLIP with hidden size 32 (SDXL's second: 64, with a 64-wide projection), 2 layers,
  the real 49408-token vocabulary and the real tokenizer, so prompts tokenize as they do for real.
- Scheduler configs are the bundled ones of the matching architecture (`configs/<arch>/scheduler`).

Weights depend only on the seed. The builders are plain functions; the fixtures at the bottom build a
whole `models/` tree once per test session. `tests/conftest.py` may re-export them with
`from tiny_models import *`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import modules  # noqa: F401  (offline environment before diffusers/transformers are imported)
from modules.model_manager import ldm_export
from modules.paths import configs_path

__all__ = [
    "TINY_ARCHS",
    "build_components",
    "full_size_meta_components",
    "load_tiny_model",
    "tiny_models_dir",
    "tiny_sd1_model",
    "write_config_folder",
    "write_diffusers_folder",
    "write_single_file",
    "write_vae_file",
]

TINY_ARCHS = ("sd1", "sd1-inpaint", "sd2", "sd2-v", "sd2-inpaint", "sdxl", "sdxl-inpaint")

_FAMILY = {arch: arch.split("-")[0] for arch in TINY_ARCHS}
_PIPELINE = {
    "sd1": "StableDiffusionPipeline",
    "sd2": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
}
_INPAINT_PIPELINE = {
    "sd1": "StableDiffusionInpaintPipeline",
    "sd2": "StableDiffusionInpaintPipeline",
    "sdxl": "StableDiffusionXLInpaintPipeline",
}

_TEXT_HIDDEN = 32
_TEXT2_HIDDEN = 64
_TIME_EMBED = 8  # SDXL's addition_time_embed_dim (real: 256)


def _text_config(hidden: int, *, openclip: bool, projection: bool) -> dict[str, Any]:
    return {
        "architectures": ["CLIPTextModelWithProjection" if projection else "CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": "gelu" if openclip else "quick_gelu",
        "hidden_size": hidden,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 2 * hidden,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "model_type": "clip_text_model",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "pad_token_id": 1,
        "projection_dim": hidden,
        "vocab_size": 49408,
    }


def _unet_config(arch: str) -> dict[str, Any]:
    family = _FAMILY[arch]
    config: dict[str, Any] = {
        "sample_size": 8,
        "in_channels": 9 if arch.endswith("-inpaint") else 4,
        "out_channels": 4,
        "layers_per_block": 1,
        "block_out_channels": [32, 64],
        "norm_num_groups": 32,
        "cross_attention_dim": _TEXT_HIDDEN,
        "attention_head_dim": [2, 4],
    }
    if family == "sd1":
        config["down_block_types"] = ["CrossAttnDownBlock2D", "DownBlock2D"]
        config["up_block_types"] = ["UpBlock2D", "CrossAttnUpBlock2D"]
    elif family == "sd2":
        config["down_block_types"] = ["CrossAttnDownBlock2D", "DownBlock2D"]
        config["up_block_types"] = ["UpBlock2D", "CrossAttnUpBlock2D"]
        config["use_linear_projection"] = True
        config["upcast_attention"] = arch == "sd2-v"
    else:
        config["down_block_types"] = ["DownBlock2D", "CrossAttnDownBlock2D"]
        config["up_block_types"] = ["CrossAttnUpBlock2D", "UpBlock2D"]
        config["use_linear_projection"] = True
        config["transformer_layers_per_block"] = [1, 2]
        config["cross_attention_dim"] = _TEXT_HIDDEN + _TEXT2_HIDDEN
        config["addition_embed_type"] = "text_time"
        config["addition_time_embed_dim"] = _TIME_EMBED
        config["projection_class_embeddings_input_dim"] = _TEXT2_HIDDEN + 6 * _TIME_EMBED
    return config


def _vae_config(family: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "block_out_channels": [32, 64, 64],
        "down_block_types": ["DownEncoderBlock2D"] * 3,
        "up_block_types": ["UpDecoderBlock2D"] * 3,
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": 64,
        "scaling_factor": 0.18215,
    }
    if family == "sdxl":
        config.update(scaling_factor=0.13025, force_upcast=True)
    return config


def _check_arch(arch: str) -> str:
    if arch not in TINY_ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(TINY_ARCHS)}")
    return arch


def build_components(family_or_arch: str, seed: int = 0) -> dict[str, Any]:
    """Random tiny components for an architecture ('sd1', 'sd1-inpaint', 'sd2-v', 'sdxl', ...).

    Returns a dict with `unet`, `vae`, `text_encoder`, `tokenizer`, `text_encoder_2`, `tokenizer_2`
    (None except for SDXL), `scheduler_config`, `family` and `arch`. Modules are fp32, CPU, in eval
    mode. The same seed always gives the same weights, and the global RNG is left untouched.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from modules.model_manager.loader import load_tokenizer

    arch = _check_arch(family_or_arch)
    family = _FAMILY[arch]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**_unet_config(arch))
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**_vae_config(family))
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(**_text_config(_TEXT_HIDDEN, openclip=family == "sd2", projection=False))
        )
        text_encoder_2 = None
        if family == "sdxl":
            torch.manual_seed(seed + 3)
            text_encoder_2 = CLIPTextModelWithProjection(
                CLIPTextConfig(**_text_config(_TEXT2_HIDDEN, openclip=True, projection=True))
            )
    for module in (unet, vae, text_encoder, text_encoder_2):
        if module is not None:
            module.eval().requires_grad_(False)

    tokenizers = _tokenizer_flavours(family)
    tokenizer = load_tokenizer(configs_path / "_tokenizers" / tokenizers["tokenizer"])
    tokenizer_2 = load_tokenizer(configs_path / "_tokenizers" / tokenizers["tokenizer_2"]) if family == "sdxl" else None
    scheduler_config = json.loads((configs_path / arch / "scheduler" / "scheduler_config.json").read_text("utf-8"))
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": tokenizer_2,
        "scheduler_config": scheduler_config,
        "family": family,
        "arch": arch,
    }


def full_size_meta_components(arch: str) -> dict[str, Any]:
    """The real-size components of a bundled `configs/<arch>/` folder on the meta device (shapes
    only, no memory, well under a second): for checking configs and key layouts at full size."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config_dir = configs_path / _check_arch(arch)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_dir, subfolder="unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir, subfolder="vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(config_dir / "text_encoder"))
        text_encoder_2 = None
        if (config_dir / "text_encoder_2").is_dir():
            text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(config_dir / "text_encoder_2"))
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "family": _FAMILY[arch],
        "arch": arch,
    }


def _tokenizer_flavours(family: str) -> dict[str, str]:
    if family == "sd1":
        return {"tokenizer": "clip"}
    if family == "sd2":
        return {"tokenizer": "openclip"}
    return {"tokenizer": "clip", "tokenizer_2": "openclip"}


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _model_index(components: dict[str, Any]) -> dict[str, Any]:
    arch, family = components["arch"], components["family"]
    pipelines = _INPAINT_PIPELINE if arch.endswith("-inpaint") else _PIPELINE
    index: dict[str, Any] = {
        "_class_name": pipelines[family],
        "_easel_family": family,
        "scheduler": ["diffusers", components["scheduler_config"]["_class_name"]],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if family == "sdxl":
        index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
        index["tokenizer_2"] = ["transformers", "CLIPTokenizer"]
        index["force_zeros_for_empty_prompt"] = True
    else:
        index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    return index


def write_config_folder(folder: Path, components: dict[str, Any]) -> Path:
    """A diffusers config folder without weights for `components` (what `<stem>.config/` holds):
    model_index.json (with `_easel_family`), scheduler/, unet/, vae/, text_encoder[_2]/ configs and
    complete tokenizer folders."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "model_index.json", _model_index(components))
    _write_json(folder / "scheduler" / "scheduler_config.json", components["scheduler_config"])
    for sub in ("unet", "vae"):
        (folder / sub).mkdir(exist_ok=True)
        components[sub].to_json_file(folder / sub / "config.json")
    encoders = {"tokenizer": "text_encoder", "tokenizer_2": "text_encoder_2"}
    for tokenizer_sub, flavour in _tokenizer_flavours(components["family"]).items():
        encoder_sub = encoders[tokenizer_sub]
        (folder / encoder_sub).mkdir(exist_ok=True)
        components[encoder_sub].config.to_json_file(folder / encoder_sub / "config.json", use_diff=False)
        shutil.copytree(configs_path / "_tokenizers" / flavour, folder / tokenizer_sub, dirs_exist_ok=True)
    return folder


def write_single_file(directory: Path, stem: str, arch: str, seed: int = 0, *, ckpt: bool = False) -> Path:
    """Write `<stem>.safetensors` (or `<stem>.ckpt`, a pickled `{"state_dict": ...}`) in the original
    single-file layout, plus the `<stem>.config/` folder beside it. Returns the checkpoint's path."""
    directory = Path(directory)
    components = build_components(arch, seed)
    state_dict = ldm_export.export_state_dict(
        components["unet"],
        components["vae"],
        components["text_encoder"],
        components["text_encoder_2"],
        family=components["family"],
    )
    # No `v_pred` marker even for sd2-v: real SD 2.x v-prediction files have none either (A1111 probes
    # the UNet), and the `<stem>.config/` folder states the prediction type.
    path = ldm_export.save_single_file(directory / f"{stem}{'.ckpt' if ckpt else '.safetensors'}", state_dict)
    write_config_folder(directory / f"{stem}.config", components)
    return path


def write_vae_file(directory: Path, stem: str, arch: str = "sd1", seed: int = 0) -> Path:
    """A standalone VAE file as A1111 users have them: original layout, bare `encoder.*`/`decoder.*`."""
    vae = build_components(arch, seed)["vae"]
    return ldm_export.save_single_file(Path(directory) / f"{stem}.safetensors", ldm_export.vae_to_ldm(vae.state_dict()))


def write_diffusers_folder(directory: Path, name: str, arch: str, seed: int = 0) -> Path:
    """A diffusers-format model folder (model_index.json, configs, safetensors weights, tokenizers)."""
    components = build_components(arch, seed)
    folder = write_config_folder(Path(directory) / name, components)
    for sub in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if components[sub] is not None:
            components[sub].save_pretrained(folder / sub, safe_serialization=True)
    return folder


def load_tiny_model(checkpoint: Path, *, dtype: torch.dtype = torch.float32) -> Any:
    """Load a tiny single-file model written by `write_single_file` (CPU) into a DiffusionModel."""
    from modules.model_manager.loader import load_from_state_dict
    from modules.model_manager.safe_load import read_state_dict

    checkpoint = Path(checkpoint)
    return load_from_state_dict(
        read_state_dict(checkpoint),
        checkpoint.with_suffix(".config"),
        device=torch.device("cpu"),
        dtype=dtype,
        vae_dtype=dtype,
        source_name=checkpoint.name,
    )


TINY_CHECKPOINTS = {
    "tiny-sd1": ("sd1", 0),
    "tiny-sd1-inpaint": ("sd1-inpaint", 10),
    "tiny-sd2v": ("sd2-v", 20),
    "tiny-sdxl": ("sdxl", 30),
}


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `models/` tree of tiny models, built once per session:

    models/Stable-diffusion/tiny-sd1.safetensors (+ tiny-sd1.config/), tiny-sd1-inpaint, tiny-sd2v,
    tiny-sdxl (same), tiny-sd1-diffusers/ (a diffusers folder with the same weights as tiny-sd1),
    models/VAE/tiny-vae.safetensors (an SD 1.x-family VAE with weights unlike tiny-sd1's).
    Treat it as read-only; copy what a test needs to change.
    """
    models = tmp_path_factory.mktemp("tiny") / "models"
    checkpoints = models / "Stable-diffusion"
    for stem, (arch, seed) in TINY_CHECKPOINTS.items():
        write_single_file(checkpoints, stem, arch, seed)
    write_diffusers_folder(checkpoints, "tiny-sd1-diffusers", "sd1", seed=TINY_CHECKPOINTS["tiny-sd1"][1])
    write_vae_file(models / "VAE", "tiny-vae", "sd1", seed=50)
    return models


@pytest.fixture(scope="session")
def tiny_sd1_model(tiny_models_dir: Path) -> Any:
    """tiny-sd1 loaded into a DiffusionModel (fp32, CPU). Shared by the session: don't modify it;
    use `load_tiny_model()` for a private copy."""
    return load_tiny_model(tiny_models_dir / "Stable-diffusion" / "tiny-sd1.safetensors")
