"""Tiny LoRA files for the tiny test models, in the layouts users bring.

Each builder returns a state dict with random low-rank weights whose target names match the tiny
models' layers: kohya files with diffusers-style UNet names (what kohya's SD 1.x trainer writes) or
with the original single-file layout's names (``input_blocks_1_1_...``, what SDXL trainers and many
converted SD 1.x files use), and diffusers/PEFT files (``unet.<path>.lora_A.weight``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

ATTN_LEAVES = ("to_q", "to_k", "to_v", "to_out.0")
TE_LEAVES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")


def unet_attention_layers(unet: torch.nn.Module) -> list[str]:
    """diffusers paths of the UNet's attention projections."""
    return [n for n, m in unet.named_modules()
            if isinstance(m, torch.nn.Linear) and ".transformer_blocks." in n and n.endswith(ATTN_LEAVES)]


def text_encoder_layers(encoder: torch.nn.Module) -> list[str]:
    """transformers paths without any `text_model.` level (the files add it)."""
    out = []
    for n, m in encoder.named_modules():
        if isinstance(m, torch.nn.Linear) and n.endswith(TE_LEAVES):
            out.append(n[len("text_model."):] if n.startswith("text_model.") else n)
    return out


def ldm_path_sd1_tiny(path: str) -> str:
    """The original layout's path of a tiny-SD1 UNet attention layer (block_out (32, 64), one layer
    per block, attention on the first level only), written out by hand as the original UNet numbers
    its blocks: input block 0 is the stem, so level 0's first layer is input block 1; the decoder's
    level 1 (the full-resolution one, with attention) starts at output block 2."""
    m = re.match(r"down_blocks\.0\.attentions\.(\d)\.(.*)", path)
    if m:
        return f"input_blocks.{1 + int(m.group(1))}.1.{m.group(2)}"
    m = re.match(r"up_blocks\.1\.attentions\.(\d)\.(.*)", path)
    if m:
        return f"output_blocks.{2 + int(m.group(1))}.1.{m.group(2)}"
    m = re.match(r"mid_block\.attentions\.0\.(.*)", path)
    if m:
        return f"middle_block.1.{m.group(1)}"
    raise ValueError(path)


def _pair(layer: torch.nn.Linear, rank: int, gen: torch.Generator, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    down = torch.randn(rank, layer.in_features, generator=gen) * scale
    up = torch.randn(layer.out_features, rank, generator=gen) * scale
    return down, up


def lora_tensors(model: Any, *, rank: int = 4, seed: int = 0, scale: float = 0.3, unet: bool = True,
                 te: bool = True) -> dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]:
    """Random (down, up) pairs keyed by (component, path): component 'unet', 'te' or 'te2'."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
    if unet:
        for path in unet_attention_layers(model.unet):
            out[("unet", path)] = _pair(model.unet.get_submodule(path), rank, gen, scale)
    if te:
        encoders = [("te", model.text_encoder)]
        if model.text_encoder_2 is not None:
            encoders.append(("te2", model.text_encoder_2))
        for name, enc in encoders:
            root = enc.text_model if hasattr(enc, "text_model") else enc
            for path in text_encoder_layers(enc):
                out[(name, path)] = _pair(root.get_submodule(path), rank, gen, scale)
    return out


def kohya_state_dict(tensors: dict, *, alpha: float | None = None, unet_naming: str = "diffusers",
                     sdxl: bool = False) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}
    for (component, path), (down, up) in tensors.items():
        if component == "unet":
            p = ldm_path_sd1_tiny(path) if unet_naming == "ldm" else path
            name = "lora_unet_" + p.replace(".", "_")
        else:
            prefix = {"te": "lora_te1_" if sdxl else "lora_te_", "te2": "lora_te2_"}[component]
            name = prefix + ("text_model." + path).replace(".", "_")
        sd[f"{name}.lora_down.weight"] = down.clone()
        sd[f"{name}.lora_up.weight"] = up.clone()
        if alpha is not None:
            sd[f"{name}.alpha"] = torch.tensor(float(alpha))
    return sd


def peft_state_dict(tensors: dict) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}
    for (component, path), (down, up) in tensors.items():
        prefix = {"unet": "unet.", "te": "text_encoder.text_model.", "te2": "text_encoder_2.text_model."}[component]
        sd[f"{prefix}{path}.lora_A.weight"] = down.clone()
        sd[f"{prefix}{path}.lora_B.weight"] = up.clone()
    return sd


def save_lora(path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path), metadata=metadata)
    return path


def expected_weight(base: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
    """base + sum(multiplier * up @ down), computed in fp32 as a reference."""
    w = base.float().clone()
    for down, up, mult in pairs:
        w += mult * (up.float() @ down.float())
    return w.to(base.dtype)
