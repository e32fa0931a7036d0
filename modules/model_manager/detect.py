"""Which architecture a single-file checkpoint is, from its tensor names and shapes alone.

The rules follow A1111's order (`guess_model_config_from_state_dict`) so a file is recognised as the
same kind of model in both programs; file names and sizes are never used. Families Easel cannot build
yet (SD3, Flux, the SDXL refiner, depth / unCLIP / instruct-pix2pix variants) and files that are no
Stable Diffusion checkpoint at all (a LoRA, a VAE, an embedding put in the wrong folder) raise
`UnknownArchitectureError` saying what the file looks like.

SD 2.x eps and v-prediction checkpoints have identical keys; `probe_v_prediction` tells them apart
the way A1111 does, by one UNet evaluation.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from modules.model_manager.arch import ModelArch, UnknownArchitectureError
from modules.model_manager.safe_load import read_safetensors_header, read_state_dict
from modules.options import atomic_write_text

log = logging.getLogger(__name__)

UNET_INPUT_KEY = "model.diffusion_model.input_blocks.0.0.weight"
SDXL_KEY = "conditioner.embedders.1.model.ln_final.weight"
SDXL_REFINER_KEY = "conditioner.embedders.0.model.ln_final.weight"
SD3_KEY = "model.diffusion_model.x_embedder.proj.weight"
SD2_DEPTH_KEY = "depth_model.model.pretrained.act_postprocess3.0.project.0.bias"
UNCLIP_KEY = "embedder.model.ln_final.weight"
ALT_DIFFUSION_KEY = "cond_stage_model.roberta.embeddings.word_embeddings.weight"
OPENCLIP_PREFIX = "cond_stage_model.model."
CLIP_PREFIX = "cond_stage_model.transformer."
V_PRED_KEY = "v_pred"
ZTSNR_KEY = "ztsnr"

Shapes = Mapping[str, Sequence[int]]


def shapes_of(state_dict: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor in a state dict (what `detect_arch` needs)."""
    return {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}


def _has_prefix(keys: Sequence[str], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def _unet_in_channels(shapes: Shapes) -> int | None:
    shape = shapes.get(UNET_INPUT_KEY)
    if shape is None or len(shape) < 2:
        return None
    return int(shape[1])


def _unknown(source: str, what: str) -> UnknownArchitectureError:
    return UnknownArchitectureError(f"{source} is not a supported Stable Diffusion checkpoint: {what}")


def _describe_other_file(keys: Sequence[str]) -> str:
    """What a file without an SD UNet seems to be, with where it belongs."""
    joined = "\n".join(keys)
    if any(marker in joined for marker in ("lora_down", "lora_up", "lora_A.", "lora_B.", "hada_w1", "lokr_w1", ".oft_")):
        return "it looks like a LoRA; put it in models/Lora"
    if any(k in ("string_to_param", "emb_params", "clip_l", "clip_g") or k.startswith("string_to_param.")
           for k in keys):
        return "it looks like a textual-inversion embedding; put it in the embeddings folder"
    if _has_prefix(keys, "first_stage_model.") or (_has_prefix(keys, "encoder.") and _has_prefix(keys, "decoder.")):
        return "it looks like a VAE; put it in models/VAE"
    if _has_prefix(keys, "control_model.") or any("input_hint_block" in k for k in keys):
        return "it looks like a ControlNet model"
    if "conv_in.weight" in keys and _has_prefix(keys, "down_blocks."):
        return "it looks like a diffusers-format UNet on its own, not a whole checkpoint"
    if _has_prefix(keys, "model.0.") or "conv_first.weight" in keys or "params_ema" in keys:
        return "it looks like an upscaler model; put it in models/ESRGAN"
    return "it holds no Stable Diffusion UNet weights (model.diffusion_model.*)"


def detect_arch(shapes: Shapes, *, source: str = "this file") -> ModelArch:
    """The architecture of an original-layout (LDM) checkpoint, from key names and tensor shapes.

    `source` names the file in error messages. For SD 2.x without a `v_pred` marker key this returns
    `ModelArch.SD2`; whether it really is eps or v-prediction needs `probe_v_prediction`.
    """
    keys = list(shapes.keys())

    if SD3_KEY in shapes:
        raise _unknown(source, "it looks like a Stable Diffusion 3 model, which Easel does not support yet")
    if _has_prefix(keys, "double_blocks.") or _has_prefix(keys, "model.diffusion_model.double_blocks."):
        raise _unknown(source, "it looks like a Flux model, which Easel does not support yet")

    channels = _unet_in_channels(shapes)

    if SDXL_KEY in shapes:
        if channels == 4:
            return ModelArch.SDXL
        if channels == 9:
            return ModelArch.SDXL_INPAINT
        if channels is None:
            raise _unknown(source, "it has SDXL text encoders but no UNet weights")
        raise _unknown(source, f"it looks like an SDXL model with {channels} UNet input channels, which Easel does not support")
    if SDXL_REFINER_KEY in shapes:
        raise _unknown(source, "it looks like an SDXL refiner, which Easel does not support yet")
    if SD2_DEPTH_KEY in shapes:
        raise _unknown(source, "it looks like an SD 2.x depth-to-image model, which Easel does not support yet")
    if UNCLIP_KEY in shapes:
        raise _unknown(source, "it looks like an SD 2.x unCLIP model, which Easel does not support yet")
    if ALT_DIFFUSION_KEY in shapes:
        raise _unknown(source, "it looks like an AltDiffusion model, which Easel does not support yet")

    if channels is None:
        raise _unknown(source, _describe_other_file(keys))

    # SD 2.x: the OpenCLIP text encoder. A1111 also checks the encoder width (1024) here; the key
    # layout alone is what separates the families, and it keeps narrow test models working.
    if _has_prefix(keys, OPENCLIP_PREFIX):
        if channels == 9:
            return ModelArch.SD2_INPAINT
        if channels == 4:
            return ModelArch.SD2_V if V_PRED_KEY in shapes else ModelArch.SD2
        raise _unknown(source, f"it looks like an SD 2.x model with {channels} UNet input channels, which Easel does not support")

    if _has_prefix(keys, CLIP_PREFIX):
        if channels == 4:
            return ModelArch.SD1
        if channels == 9:
            return ModelArch.SD1_INPAINT
        if channels == 8:
            raise _unknown(source, "it looks like an instruct-pix2pix model, which Easel does not support yet")
        raise _unknown(source, f"it looks like an SD 1.x model with {channels} UNet input channels, which Easel does not support")

    raise _unknown(source, "it has a Stable Diffusion UNet but no text encoder weights (cond_stage_model.*)")


def detect_from_file(path: str | os.PathLike, *, allow_unsafe: bool = False) -> ModelArch:
    """Detect a checkpoint file's architecture. For .safetensors only the header is read; pickled
    formats have no header, so the whole state dict is read (safely, unless `allow_unsafe`)."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        header, _meta = read_safetensors_header(path)
        shapes: dict[str, Sequence[int]] = {k: shape for k, (shape, _dtype) in header.items()}
    else:
        shapes = shapes_of(read_state_dict(path, allow_unsafe=allow_unsafe))
    return detect_arch(shapes, source=str(path))


# --- SD 2.x eps / v-prediction ------------------------------------------------------------------


@torch.no_grad()
def probe_v_prediction(unet: Any, device: torch.device | None = None) -> bool:
    """True when a UNet predicts v rather than noise.

    Evaluated at the last timestep on a constant input: there the noisy sample is almost pure noise,
    so an eps model returns roughly the input while a v model returns roughly its negation, and the
    mean of (output - input) falls well below -1. This is A1111's test for SD 2.x checkpoints.
    `device`: where the UNet computes, when that is not where its weights are (offloaded models).
    """
    config = unet.config
    param = next(unet.parameters())
    device, dtype = device or param.device, param.dtype
    blocks = len(getattr(config, "block_out_channels", (0, 0, 0, 0)))
    size = max(8, 2 ** max(blocks - 1, 0))
    x = torch.full((1, int(config.in_channels), size, size), 0.5, device=device, dtype=dtype)
    context = torch.full((1, 2, int(config.cross_attention_dim)), 0.5, device=device, dtype=dtype)
    timestep = torch.tensor([999], device=device)
    kwargs: dict[str, Any] = {}
    if getattr(config, "addition_embed_type", None) == "text_time":
        time_dim = int(config.addition_time_embed_dim)
        text_dim = int(config.projection_class_embeddings_input_dim) - 6 * time_dim
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.full((1, text_dim), 0.5, device=device, dtype=dtype),
            "time_ids": torch.tensor([[size * 8, size * 8, 0, 0, size * 8, size * 8]], device=device, dtype=dtype),
        }
    out = unet(x, timestep, encoder_hidden_states=context, return_dict=False, **kwargs)[0]
    diff = (out.float() - x[:, : out.shape[1]].float()).mean().item()
    return diff < -1.0


class ProbeCache:
    """Remembers probe answers (e.g. a file's prediction type) by file identity across restarts, so
    the probe runs once per checkpoint."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._data: dict[str, str] | None = None

    def _loaded(self) -> dict[str, str]:
        if self._data is None:
            try:
                with open(self.path, encoding="utf8") as f:
                    raw = json.load(f)
                self._data = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
            except FileNotFoundError:
                self._data = {}
            except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
                log.warning("probe cache %s could not be read (%s); starting a new one", self.path, e)
                self._data = {}
        return self._data

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._loaded().get(key)

    def put(self, key: str, value: str) -> None:
        with self._lock:
            data = self._loaded()
            data[key] = value
            try:
                atomic_write_text(self.path, json.dumps(data, indent=1, sort_keys=True))
            except OSError as e:
                log.warning("probe cache %s could not be written: %s", self.path, e)
