"""The demo model's components: the SD 1.x architecture family at small dimensions, and its export.

Same classes and wiring as a real SD 1.x checkpoint (AutoencoderKL, CLIPTextModel with the real
49408-token CLIP tokenizer, UNet2DConditionModel with cross-attention, the scaled-linear noise
schedule), only narrower and shallower:

- VAE: three levels (16, 32, 64 channels), so a scale factor of 4: a 64x64 picture has 16x16x4
  latents. Flat-coloured shapes need no more detail than that, a 16x16 latent keeps the UNet fast,
  and the narrow full-resolution level keeps both VAE training and decoding cheap on a CPU.
- UNet: three levels (16, 8, 4 latent pixels), one ResNet per level, cross-attention at 8x8, at 4x4
  and in the middle block (4x4). At 4x4 one attention map spans the whole picture and every pixel
  knows where it is (from the convolutions' zero padding): that is where "left" or "top right" can
  move a shape, and attention there costs 5% of a training step. Attention at 16x16 was measured to
  cost a third more time per step on a CPU; per-step time at this size is mostly per-layer overhead,
  so fewer attention blocks matter more than narrower channels.
- Group normalisation with at least 4 channels per group (SD's own VAE has 4 to 16, its UNet 10 to
  40): with one channel per group the normalisation works per channel, and the VAE learned to draw a
  dark speck beside each shape to steer it (the "droplet" artefact known from StyleGAN); with 4 per
  group its loss after 250 steps was a third of what it had been, and steps were 20% faster.
- Text encoder: 3 CLIP layers at width 128. Most of its size is the token embedding of the full
  vocabulary, kept so that any prompt tokenizes as it would for a real SD 1.x model.

The export writes the original single-file key layout that SD 1.x checkpoints on the web use, plus a
`<stem>.config/` diffusers folder beside it, and is loaded by Easel exactly like a user's checkpoint.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import modules  # noqa: F401  (offline environment before diffusers/transformers are imported)
from modules.model_manager import ldm_export
from modules.paths import configs_path

TOKENIZER_DIR = configs_path / "_tokenizers" / "clip"
SIZE_BUDGET_BYTES = 60 * 1000 * 1000


@dataclass(frozen=True)
class DemoModelConfig:
    """The demo model's dimensions. `resolution` is the picture side the model is trained at."""

    resolution: int = 64
    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_norm_groups: int = 4
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (64, 128, 128, 128)
    unet_attention: tuple[bool, ...] = (False, True, True, False)
    unet_norm_groups: int = 8
    unet_head_count: int = 4
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    prediction_type: str = "v_prediction"
    """what the UNet predicts: "v_prediction" (as SD 2.x 768-v) or "epsilon" (as SD 1.x)"""
    zero_terminal_snr: bool = True
    """SD's scaled-linear betas rescaled so the last step is pure noise (diffusers' rescale_betas_zero_snr)"""
    vae_scaling_factor: float = 0.18215
    """replaced by the measured 1 / std of the latents after the VAE is trained"""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.resolution // self.vae_factor

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DemoModelConfig:
        tuples = ("vae_channels", "unet_channels", "unet_attention")
        return cls(**{k: tuple(v) if k in tuples else v for k, v in data.items()})


def scheduler_config(config: DemoModelConfig | None = None) -> dict[str, Any]:
    """SD 1.x's noise schedule (scaled-linear betas 0.00085..0.012 over 1000 steps) with the model's
    prediction type, rescaled to a zero terminal SNR when the model is trained that way.

    Why zero terminal SNR: with SD 1.x's own schedule the most-noised training input still holds 7% of
    the picture, enough for the model to read where the shape is from the noise instead of from the
    prompt; at sampling time the noise is pure, so the seed decided the layout and position words did
    nothing. With the last step pure noise only the prompt can say where things go; predicting v
    (as SD 2.x does) keeps that step learnable, where epsilon would be the input itself."""
    base = json.loads((configs_path / "sd1" / "scheduler" / "scheduler_config.json").read_text("utf-8"))
    config = config or DemoModelConfig()
    base["prediction_type"] = config.prediction_type
    if config.zero_terminal_snr:
        if config.prediction_type != "v_prediction":
            raise ValueError("a zero terminal SNR needs v-prediction: epsilon is undefined at pure noise")
        base["rescale_betas_zero_snr"] = True
        base["timestep_spacing"] = "trailing"  # sampling starts at the last, pure-noise step
    return base


def unet_config(config: DemoModelConfig) -> dict[str, Any]:
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.unet_attention]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.unet_attention)]
    return {
        "sample_size": config.latent_size,
        "in_channels": config.latent_channels,
        "out_channels": config.latent_channels,
        "layers_per_block": 1,
        "block_out_channels": list(config.unet_channels),
        "down_block_types": down,
        "up_block_types": up,
        "norm_num_groups": config.unet_norm_groups,
        "cross_attention_dim": config.text_width,
        "attention_head_dim": config.unet_head_count,
    }


def vae_config(config: DemoModelConfig) -> dict[str, Any]:
    levels = len(config.vae_channels)
    return {
        "block_out_channels": list(config.vae_channels),
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "layers_per_block": 1,
        "latent_channels": config.latent_channels,
        "norm_num_groups": config.vae_norm_groups,
        "sample_size": config.resolution,
        "scaling_factor": config.vae_scaling_factor,
    }


def text_config(config: DemoModelConfig) -> dict[str, Any]:
    # Token ids as SD 1.x's CLIP config states them (the legacy bos/eos/pad ids).
    return {
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": "quick_gelu",
        "hidden_size": config.text_width,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 4 * config.text_width,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "model_type": "clip_text_model",
        "num_attention_heads": config.text_heads,
        "num_hidden_layers": config.text_layers,
        "pad_token_id": 1,
        "projection_dim": config.text_width,
        "vocab_size": 49408,
    }


def load_tokenizer() -> Any:
    """The real SD 1.x CLIP tokenizer from the bundled files."""
    from modules.model_manager.loader import load_tokenizer as load

    return load(TOKENIZER_DIR)


def build_components(config: DemoModelConfig | None = None, seed: int = 0) -> dict[str, Any]:
    """Freshly initialised components (fp32, CPU, train mode); weights depend only on `seed` and the
    global RNG is left as it was. Keys: unet, vae, text_encoder, tokenizer, scheduler_config, config."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    config = config or DemoModelConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**vae_config(config))
        torch.manual_seed(seed + 1)
        unet = UNet2DConditionModel(**unet_config(config))
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_config(config)))
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": load_tokenizer(),
        "scheduler_config": scheduler_config(config),
        "config": config,
    }


def parameter_counts(components: dict[str, Any]) -> dict[str, int]:
    """Parameters per component and in total."""
    counts = {name: sum(p.numel() for p in components[name].parameters()) for name in ("unet", "vae", "text_encoder")}
    counts["total"] = sum(counts.values())
    return counts


def export_state_dict(components: dict[str, Any], dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The original-layout (single-file SD 1.x) state dict, cast to `dtype`."""
    state = ldm_export.export_state_dict(components["unet"], components["vae"], components["text_encoder"],
                                         family="sd1")
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_config_folder(folder: Path, components: dict[str, Any]) -> Path:
    """`<stem>.config/`: model_index.json (family sd1), scheduler, unet, vae and text encoder configs,
    and the tokenizer files, so the checkpoint loads without the bundled architecture configs."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    _write_json(folder / "model_index.json", {
        "_class_name": "StableDiffusionPipeline",
        "_easel_family": "sd1",
        "scheduler": ["diffusers", components["scheduler_config"]["_class_name"]],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    })
    _write_json(folder / "scheduler" / "scheduler_config.json", components["scheduler_config"])
    for sub in ("unet", "vae"):
        (folder / sub).mkdir()
        components[sub].to_json_file(folder / sub / "config.json")
    (folder / "text_encoder").mkdir()
    components["text_encoder"].config.to_json_file(folder / "text_encoder" / "config.json", use_diff=False)
    shutil.copytree(TOKENIZER_DIR, folder / "tokenizer")
    return folder


def export_model(components: dict[str, Any], path: Path, *, metadata: dict[str, str] | None = None) -> Path:
    """Write `path` (.safetensors, fp16, original layout) and `<stem>.config/` beside it."""
    path = Path(path)
    ldm_export.save_single_file(path, export_state_dict(components), metadata=metadata)
    path.chmod(0o644)  # a file to ship: readable by all (the writer's temporary file starts private)
    write_config_folder(path.with_suffix(".config"), components)
    return path


def exported_size_bytes(path: Path) -> int:
    """Bytes on disk of a checkpoint and its `<stem>.config/` folder together."""
    path = Path(path)
    folder = path.with_suffix(".config")
    extra = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0
    return path.stat().st_size + extra


def load_exported(path: Path, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32,
                  vae_dtype: torch.dtype | None = None) -> Any:
    """Load an exported checkpoint through Easel's single-file loader (as the model manager does)."""
    from modules.model_manager.loader import load_from_state_dict
    from modules.model_manager.safe_load import read_state_dict

    path = Path(path)
    return load_from_state_dict(read_state_dict(path), path.with_suffix(".config"),
                                device=device or torch.device("cpu"), dtype=dtype,
                                vae_dtype=vae_dtype or dtype, source_name=path.name)
