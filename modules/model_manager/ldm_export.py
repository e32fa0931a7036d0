"""Writing diffusers components back in the original single-file ("LDM") key layout.

Checkpoints shared on the web are single files in the layout of the original Stable Diffusion code:
`model.diffusion_model.*` for the UNet, `first_stage_model.*` for the VAE and the text encoder(s) under
`cond_stage_model.*` (SD 1.x/2.x) or `conditioner.embedders.N.*` (SDXL). Diffusers' single-file loader
converts that layout into diffusers modules; this module is the inverse, so that a model Easel holds
(merged, baked with a VAE, or a tiny test model) can be saved as a file every other tool loads.

The mapping is written for exact round trips through diffusers' loader (`diffusers.loaders.
single_file_utils`): every tensor comes back bit-identical. Two deliberate details:

- The VAE's mid-block attention projections are stored as 1x1 convolution weights `(C, C, 1, 1)`,
  as the original autoencoder defines them; diffusers holds them as linear `(C, C)` weights.
- OpenCLIP text encoders keep fused `in_proj_weight`/`in_proj_bias` (q, k, v stacked) and a
  `text_projection` matrix that is the transpose of transformers' `text_projection.weight`.
  SD 2.x files made by the original code carry 24 resblocks and a text projection, but SD 2.x only
  ever reads the penultimate layer's output: diffusers' config has 23 layers and its loader skips
  resblock 23 and the projection. An exported SD 2.x encoder therefore holds exactly the 23
  resblocks the model has, and no projection; nothing that uses the file reads the missing parts.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_OPENCLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."
V_PRED_KEY = "v_pred"

FAMILIES = ("sd1", "sd2", "sdxl")


def export_state_dict(
    unet: torch.nn.Module,
    vae: torch.nn.Module,
    text_encoder: torch.nn.Module,
    text_encoder_2: torch.nn.Module | None = None,
    *,
    family: str,
    prediction_type: str = "epsilon",
) -> dict[str, torch.Tensor]:
    """The original-layout state dict of a model's components.

    `family` ('sd1', 'sd2' or 'sdxl') decides the text encoder layout: SD 1.x keeps transformers'
    CLIP names, SD 2.x uses OpenCLIP's, SDXL has CLIP ViT-L first and OpenCLIP bigG second.
    Tensors are shared with the modules where no reshaping is needed (no copy of the weights).
    A v-prediction model gets the empty `v_pred` marker tensor that A1111 and ComfyUI read, so the
    file says how to sample it.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {', '.join(FAMILIES)}")
    if family == "sdxl" and text_encoder_2 is None:
        raise ValueError("an SDXL export needs both text encoders")
    if family != "sdxl" and text_encoder_2 is not None:
        raise ValueError(f"a {family} model has a single text encoder")

    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"unknown prediction type {prediction_type!r}")

    out: dict[str, torch.Tensor] = {}
    _merge(out, unet_to_ldm(unet.state_dict(), dict(unet.config)), UNET_PREFIX)
    _merge(out, vae_to_ldm(vae.state_dict()), VAE_PREFIX)
    if family == "sd1":
        _merge(out, clip_to_ldm(text_encoder.state_dict()), SD1_CLIP_PREFIX)
    elif family == "sd2":
        _merge(out, clip_to_openclip(text_encoder.state_dict()), SD2_OPENCLIP_PREFIX)
    else:
        _merge(out, clip_to_ldm(text_encoder.state_dict()), SDXL_CLIP_PREFIX)
        assert text_encoder_2 is not None
        _merge(out, clip_to_openclip(text_encoder_2.state_dict()), SDXL_OPENCLIP_PREFIX)
    if prediction_type == "v_prediction":
        out[V_PRED_KEY] = torch.tensor([])
    return out


def save_single_file(
    path: str | Path, state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write a checkpoint: `.safetensors` (with optional string metadata) or a `.ckpt`/`.pt` pickle
    holding `{"state_dict": ...}` as the original code saves it.

    The file is written under a temporary name in the same folder and renamed into place, so a
    half-written checkpoint is never visible under its final name.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".ckpt", ".pt"):
        raise ValueError(f"{path.name}: can only write .safetensors, .ckpt or .pt checkpoints")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp makes 0600 files; give the normal permissions
    try:
        if suffix == ".safetensors":
            from safetensors.torch import save_file

            meta = {str(k): str(v) for k, v in (metadata or {}).items()}
            save_file(tensors, tmp_name, metadata=meta or None)
        else:
            torch.save({"state_dict": tensors}, tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


# --- UNet -----------------------------------------------------------------------------------------

_UNET_FIXED = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
    "class_embedding.linear_1.": "label_emb.0.0.",
    "class_embedding.linear_2.": "label_emb.0.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}

_UNET_RESNET = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "time_emb_proj.": "emb_layers.1.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "conv_shortcut.": "skip_connection.",
}

_BLOCK_PART = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)$")
_MID_PART = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$")


def _resnet_tail(tail: str) -> str:
    for old, new in _UNET_RESNET.items():
        if tail.startswith(old):
            return new + tail[len(old) :]
    raise ValueError(f"unexpected UNet resnet parameter {tail!r}")


def unet_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """UNet2DConditionModel keys -> `input_blocks`/`middle_block`/`output_blocks` keys (no prefix).

    The original UNet numbers its blocks sequentially: input block 0 is the stem convolution, then
    each resolution level contributes `layers_per_block` (resnet [+ attention]) blocks and, except
    the last level, one downsampler block. The decoder side has one more block per level, and its
    upsampler sits after the attention (index 2) when the level has attention, else at index 1.
    """
    per_level = config["layers_per_block"]
    if not isinstance(per_level, int):
        raise ValueError("per-level layers_per_block lists have no original single-file layout")
    up_with_attention = {
        int(m.group(2)) for k in state_dict if (m := _BLOCK_PART.match(k)) and m.group(1) == "up_blocks" and m.group(3) == "attentions"
    }

    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        out[_unet_key(key, per_level, up_with_attention)] = value
    return out


def _unet_key(key: str, per_level: int, up_with_attention: set[int]) -> str:
    for old, new in _UNET_FIXED.items():
        if key.startswith(old):
            return new + key[len(old) :]
    m = _BLOCK_PART.match(key)
    if m:
        side, level, part, index, tail = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        if side == "down_blocks":
            first = 1 + level * (per_level + 1)
            if part == "resnets":
                return f"input_blocks.{first + index}.0.{_resnet_tail(tail)}"
            if part == "attentions":
                return f"input_blocks.{first + index}.1.{tail}"
            if part == "downsamplers" and tail.startswith("conv."):
                return f"input_blocks.{first + per_level}.0.op.{tail[len('conv.') :]}"
        else:
            first = level * (per_level + 1)
            if part == "resnets":
                return f"output_blocks.{first + index}.0.{_resnet_tail(tail)}"
            if part == "attentions":
                return f"output_blocks.{first + index}.1.{tail}"
            if part == "upsamplers" and tail.startswith("conv."):
                slot = 2 if level in up_with_attention else 1
                return f"output_blocks.{first + per_level}.{slot}.{tail}"
    m = _MID_PART.match(key)
    if m:
        part, index, tail = m.group(1), int(m.group(2)), m.group(3)
        if part == "resnets":
            return f"middle_block.{2 * index}.{_resnet_tail(tail)}"
        return f"middle_block.{2 * index + 1}.{tail}"
    raise ValueError(f"UNet parameter {key!r} has no place in the original layout")


# --- VAE ------------------------------------------------------------------------------------------

_VAE_FIXED = {
    "encoder.conv_norm_out.": "encoder.norm_out.",
    "decoder.conv_norm_out.": "decoder.norm_out.",
}
_VAE_PASSTHROUGH = ("encoder.conv_in.", "encoder.conv_out.", "decoder.conv_in.", "decoder.conv_out.",
                    "quant_conv.", "post_quant_conv.")
_VAE_ATTENTION = {
    "group_norm.": "norm.",
    "to_q.": "q.",
    "to_k.": "k.",
    "to_v.": "v.",
    "to_out.0.": "proj_out.",
}
_VAE_BLOCK = re.compile(r"^(encoder|decoder)\.(down_blocks|up_blocks)\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.+)$")
_VAE_MID = re.compile(r"^(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)$")


def vae_to_ldm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """AutoencoderKL keys -> the original autoencoder's keys (no prefix).

    The decoder's up blocks are numbered in reverse in the original code (`up.0` is the last,
    full-resolution level), and the mid attention's linear projections become 1x1 convolutions.
    """
    up_levels = {int(m.group(3)) for k in state_dict if (m := _VAE_BLOCK.match(k)) and m.group(2) == "up_blocks"}
    num_up = max(up_levels) + 1 if up_levels else 0
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new_key, conv_shaped = _vae_key(key, num_up)
        if conv_shaped and value.ndim == 2:
            value = value[:, :, None, None]
        out[new_key] = value
    return out


def _vae_key(key: str, num_up: int) -> tuple[str, bool]:
    if key.startswith(_VAE_PASSTHROUGH):
        return key, False
    for old, new in _VAE_FIXED.items():
        if key.startswith(old):
            return new + key[len(old) :], False
    m = _VAE_BLOCK.match(key)
    if m:
        coder, _side, level, part, index, tail = m.groups()
        tail = tail.replace("conv_shortcut.", "nin_shortcut.")
        if coder == "encoder":
            if part == "resnets":
                return f"encoder.down.{level}.block.{index}.{tail}", False
            if part == "downsamplers":
                return f"encoder.down.{level}.downsample.{tail}", False
        else:
            ldm_level = num_up - 1 - int(level)
            if part == "resnets":
                return f"decoder.up.{ldm_level}.block.{index}.{tail}", False
            if part == "upsamplers":
                return f"decoder.up.{ldm_level}.upsample.{tail}", False
    m = _VAE_MID.match(key)
    if m:
        coder, part, index, tail = m.groups()
        if part == "resnets":
            return f"{coder}.mid.block_{int(index) + 1}.{tail.replace('conv_shortcut.', 'nin_shortcut.')}", False
        for old, new in _VAE_ATTENTION.items():
            if tail.startswith(old):
                return f"{coder}.mid.attn_1.{new}{tail[len(old) :]}", new != "norm."
    raise ValueError(f"VAE parameter {key!r} has no place in the original layout")


# --- text encoders --------------------------------------------------------------------------------


def _text_model_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' CLIP text weights with `text_model.` stripped (newer transformers releases
    store `CLIPTextModel` flat, `CLIPTextModelWithProjection` under `text_model.`)."""
    return {k.removeprefix("text_model."): v for k, v in state_dict.items()}


def clip_to_ldm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIP ViT-L weights as SD 1.x/SDXL files hold them: transformers' names under `text_model.`."""
    flat = _text_model_keys(state_dict)
    if "text_projection.weight" in flat:
        raise ValueError("the CLIP ViT-L text encoder of SD 1.x / SDXL has no text projection")
    return {f"text_model.{k}": v for k, v in flat.items()}


_OPENCLIP_FIXED = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}
_OPENCLIP_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_OPENCLIP_LAYER_PARTS = {
    "self_attn.out_proj.": "attn.out_proj.",
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
}


def clip_to_openclip(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers CLIP text weights -> OpenCLIP's text tower keys (no prefix)."""
    flat = _text_model_keys(state_dict)
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        if key in _OPENCLIP_FIXED:
            out[_OPENCLIP_FIXED[key]] = value
            continue
        if key == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()
            continue
        m = _OPENCLIP_LAYER.match(key)
        if not m:
            raise ValueError(f"text encoder parameter {key!r} has no place in the OpenCLIP layout")
        layer, tail = int(m.group(1)), m.group(2)
        qm = re.match(r"^self_attn\.([qkv])_proj\.(weight|bias)$", tail)
        if qm:
            qkv.setdefault((layer, qm.group(2)), {})[qm.group(1)] = value
            continue
        out[f"transformer.resblocks.{layer}.{_replace_prefix(tail, _OPENCLIP_LAYER_PARTS, key)}"] = value
    for (layer, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"text encoder layer {layer} lacks some of its q/k/v projections")
        out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    return out


# --- helpers --------------------------------------------------------------------------------------


def _replace_prefix(tail: str, table: Mapping[str, str], full_key: str) -> str:
    for old, new in table.items():
        if tail.startswith(old):
            return new + tail[len(old) :]
    raise ValueError(f"parameter {full_key!r} has no place in the original layout")


def _merge(out: dict[str, torch.Tensor], part: Mapping[str, torch.Tensor], prefix: str) -> None:
    for key, value in part.items():
        full = prefix + key
        if full in out:
            raise ValueError(f"two parameters map to {full!r}")
        out[full] = value.detach()

