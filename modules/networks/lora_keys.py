"""Which layer of a loaded model each tensor of a network file belongs to.

Network files name their target layers in several ways:

- kohya / A1111: ``lora_unet_<path>`` and ``lora_te_<path>`` (SDXL: ``lora_te1_`` / ``lora_te2_``)
  with the module path's dots turned into underscores. For the UNet the path is either diffusers'
  (``down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q``, what kohya's SD 1.x/2.x
  trainers write) or the original single-file layout's (``input_blocks_1_1_transformer_blocks_0_
  attn1_to_q``, what SDXL trainers and many converted files use). Text encoder paths are
  transformers' CLIP names (``text_model_encoder_layers_0_self_attn_q_proj``).
- diffusers / PEFT: dotted paths under ``unet.``, ``text_encoder.``, ``text_encoder_2.`` (or
  without a component prefix for a bare UNet adapter), with ``lora_A`` / ``lora_B`` or the older
  ``processor.to_q_lora.down`` attention-processor names.

Everything is normalised to the flat kohya form and looked up in an index built from the model's
own modules, under both UNet namings. The index is built once per model.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from modules.engine.model import DiffusionModel
from modules.model_manager import ldm_export
from modules.networks.lora_weights import KNOWN_PARAMS

log = logging.getLogger(__name__)

__all__ = ["ModuleIndex", "Target", "group_by_module", "module_index", "split_key"]

UNET = "unet"
TEXT_ENCODER = "te"

# File key suffix -> the short parameter name `lora_weights` uses. Longest suffixes are tried first.
_SUFFIXES: dict[str, str] = {
    ".lora_down.weight": "lora_down",
    ".lora_up.weight": "lora_up",
    ".lora_mid.weight": "lora_mid",
    ".lora_A.weight": "lora_down",
    ".lora_B.weight": "lora_up",
    ".lora.down.weight": "lora_down",
    ".lora.up.weight": "lora_up",
    "_lora.down.weight": "lora_down",
    "_lora.up.weight": "lora_up",
    ".alpha": "alpha",
    ".dora_scale": "dora_scale",
    ".on_input": "on_input",
    ".w_norm": "w_norm",
    ".b_norm": "b_norm",
    **{f".{name}": name for name in KNOWN_PARAMS if name.startswith(("hada_", "lokr_", "diff"))},
}
_SUFFIX_ORDER = sorted(_SUFFIXES, key=len, reverse=True)
_FLAT_PREFIXES = ("lora_unet_", "lora_te1_", "lora_te2_", "lora_te_")
_COMPONENT_PREFIXES = {"unet": "lora_unet_", "text_encoder": "lora_te_", "text_encoder_2": "lora_te2_"}
_PEFT_WRAPPERS = ("base_model.model.",)


@dataclass(frozen=True)
class Target:
    """A layer networks can change: its component ('unet' or 'te') and the module itself."""

    component: str
    path: str
    module: torch.nn.Module


@dataclass
class ModuleIndex:
    """Flat kohya-style names -> layers of one model."""

    targets: dict[str, Target] = field(default_factory=dict)

    def find(self, flat_name: str) -> Target | None:
        return self.targets.get(flat_name)


def _flat(path: str) -> str:
    return path.replace(".", "_")


def _layers(module: torch.nn.Module) -> Iterable[tuple[str, torch.nn.Module]]:
    for name, m in module.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            yield name, m


def _ldm_names(unet: torch.nn.Module, paths: list[str]) -> dict[str, str]:
    """diffusers UNet module path -> the original layout's module path (where it has one)."""
    config = getattr(unet, "config", None)
    if config is None or not isinstance(config.get("layers_per_block"), int):
        return {}
    keys = {f"{p}.weight": p for p in paths}
    try:
        mapped = ldm_export.unet_to_ldm(keys, config)  # values ride along: ldm key -> diffusers path
    except ValueError:
        mapped = {}
        for key, path in keys.items():
            try:
                mapped.update(ldm_export.unet_to_ldm({key: path}, config))
            except ValueError:
                continue
    return {str(path): ldm_key[: -len(".weight")] for ldm_key, path in mapped.items()}


def _text_path(name: str) -> str:
    # transformers 5's CLIPTextModel has no `text_model.` level; files always name it.
    return name if name.startswith("text_model.") else f"text_model.{name}"


def module_index(model: DiffusionModel) -> ModuleIndex:
    """The model's changeable layers under every name a network file may use (cached on the model)."""
    cached = model.extra.get("network_module_index")
    if isinstance(cached, ModuleIndex):
        return cached
    index = ModuleIndex()
    unet_layers = list(_layers(model.unet))
    for path, m in unet_layers:
        index.targets[f"lora_unet_{_flat(path)}"] = Target(UNET, path, m)
    for path, ldm_path in _ldm_names(model.unet, [p for p, _ in unet_layers]).items():
        module = model.unet.get_submodule(path)
        index.targets.setdefault(f"lora_unet_{_flat(ldm_path)}", Target(UNET, path, module))

    encoders: list[tuple[Any, tuple[str, ...]]] = [(model.text_encoder, ("lora_te_", "lora_te1_"))]
    if model.text_encoder_2 is not None:
        encoders.append((model.text_encoder_2, ("lora_te2_",)))
    for number, (encoder, prefixes) in enumerate(encoders):
        if encoder is None:
            continue
        component = "te" if number == 0 else "te2"
        for name, m in _layers(encoder):
            path = _text_path(name)
            for prefix in prefixes:
                index.targets[f"{prefix}{_flat(path)}"] = Target(TEXT_ENCODER, f"{component}.{name}", m)
    model.extra["network_module_index"] = index
    return index


def split_key(key: str) -> tuple[str, str] | None:
    """A file key -> (module name as the file writes it, short parameter name); None if unknown."""
    for suffix in _SUFFIX_ORDER:
        if key.endswith(suffix):
            return key[: -len(suffix)], _SUFFIXES[suffix]
    return None


_PROCESSOR_OUT = re.compile(r"\.processor\.to_out$")


_UNET_ROOTS = ("down_blocks", "up_blocks", "mid_block", "conv_in", "conv_out", "conv_norm_out", "time_embedding",
               "add_embedding")


def flat_module_name(name: str) -> str | None:
    """A module name from a file -> the flat kohya name the index uses; None when unplaceable.

    The result does not depend on the model: ``text_encoder.`` becomes ``lora_te_``, which the
    index of an SDXL model lists for its first (ViT-L) encoder as well as ``lora_te1_``.
    """
    if name.startswith(_FLAT_PREFIXES):
        return name
    for wrapper in _PEFT_WRAPPERS:
        if name.startswith(wrapper):
            name = name[len(wrapper):]
    # diffusers' old attention-processor LoRA: attn1.processor.to_q(_lora) -> attn1.to_q
    name = _PROCESSOR_OUT.sub(".to_out.0", name)
    name = name.replace(".processor.", ".")
    head, _, rest = name.partition(".")
    if head in _COMPONENT_PREFIXES and rest:
        if head.startswith("text_encoder"):
            rest = _text_path(rest)
        return _COMPONENT_PREFIXES[head] + _flat(rest)
    if head in _UNET_ROOTS:  # a bare UNet adapter (PEFT's get_peft_model_state_dict of a UNet)
        return "lora_unet_" + _flat(name)
    return None


def group_by_module(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    """A network's tensors grouped per flat module name, and the keys that fit no module."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        split = split_key(key)
        if split is None:
            unknown.append(key)
            continue
        module_name, param = split
        flat = flat_module_name(module_name)
        if flat is None:
            unknown.append(key)
            continue
        groups.setdefault(flat, {})[param] = tensor
    return groups, unknown
