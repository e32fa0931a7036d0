"""The weight change one network module makes to one layer, for each kind of network.

A network file holds, per target layer, a few small tensors whose product is the change to that
layer's weight. The kinds Easel understands (names as kohya's and LyCORIS' files write them):

- LoRA / LoCon: ``lora_down`` (rank x in[, kh, kw]) and ``lora_up`` (out x rank[, 1, 1]); LoCon's
  Tucker form adds ``lora_mid`` (rank x rank x kh x kw). diffusers/PEFT call them ``lora_A`` /
  ``lora_B``. Change = up @ down.
- LoHa: ``hada_w1_a/b`` and ``hada_w2_a/b`` (optional Tucker cores ``hada_t1/t2``). Change = the
  element-wise product of the two low-rank products.
- LoKr: ``lokr_w1`` (or ``lokr_w1_a/b``) and ``lokr_w2`` (or ``lokr_w2_a/b``, optional ``lokr_t2``).
  Change = kron(w1, w2).
- Full difference: ``diff`` (and ``diff_b`` for the bias).

Every kind may carry ``alpha``; the change is scaled by alpha / rank (1 without alpha), as kohya and
A1111 do. The result is reshaped to the layer's weight shape, so a LoRA trained on 1x1 convolutions
applies to the equivalent linear layers and the other way round.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

__all__ = ["UnsupportedModuleError", "module_delta", "module_kind"]

# The parameter names of each kind; a module's tensors are keyed by these short names.
LORA_PARAMS = ("lora_down", "lora_up", "lora_mid")
HADA_PARAMS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
LOKR_PARAMS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
FULL_PARAMS = ("diff", "diff_b")
COMMON_PARAMS = ("alpha",)
KNOWN_PARAMS = frozenset(LORA_PARAMS + HADA_PARAMS + LOKR_PARAMS + FULL_PARAMS + COMMON_PARAMS)


class UnsupportedModuleError(ValueError):
    """A module whose tensors form no kind Easel can apply, or whose shapes do not fit the layer."""


@dataclass(frozen=True)
class Delta:
    """A change to a layer: weight change and, for full-difference networks, a bias change."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None


def module_kind(params: Mapping[str, torch.Tensor]) -> str:
    """'lora', 'hada', 'lokr' or 'full' for a module's parameter names; raises for anything else."""
    names = set(params)
    if {"lora_down", "lora_up"} <= names:
        return "lora"
    if {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"} <= names:
        return "hada"
    if ("lokr_w1" in names or {"lokr_w1_a", "lokr_w1_b"} <= names) and (
            "lokr_w2" in names or {"lokr_w2_a", "lokr_w2_b"} <= names):
        return "lokr"
    if "diff" in names:
        return "full"
    raise UnsupportedModuleError(f"no known network kind has the parameters {sorted(names)}")


def _scale(params: Mapping[str, torch.Tensor], rank: int | None) -> float:
    alpha = params.get("alpha")
    if alpha is None or not rank:
        return 1.0
    return float(alpha) / rank


def _tucker(core: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """LyCORIS' Tucker rebuild: core (i, j, kh, kw), first (j, in), second (i, out) -> (out, in, kh, kw)."""
    return torch.einsum("ijkl,jr,ip->prkl", core, first, second)


def _lora(p: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    down, up = p["lora_down"], p["lora_up"]
    rank = int(down.shape[0])
    mid = p.get("lora_mid")
    if mid is not None:
        return _tucker(mid, down.flatten(1), up.flatten(1).t()), rank
    w = up.flatten(1) @ down.flatten(1)
    if down.dim() == 4:
        w = w.reshape(up.shape[0], *down.shape[1:])
    return w, rank


def _hada(p: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    rank = int(p["hada_w1_b"].shape[0])
    if "hada_t1" in p and "hada_t2" in p:
        w1 = _tucker(p["hada_t1"], p["hada_w1_b"], p["hada_w1_a"])
        w2 = _tucker(p["hada_t2"], p["hada_w2_b"], p["hada_w2_a"])
    else:
        w1 = p["hada_w1_a"] @ p["hada_w1_b"]
        w2 = p["hada_w2_a"] @ p["hada_w2_b"]
    return w1 * w2, rank


def _lokr(p: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int | None]:
    rank = None
    if "lokr_w1" in p:
        w1 = p["lokr_w1"]
    else:
        w1 = p["lokr_w1_a"] @ p["lokr_w1_b"]
        rank = int(p["lokr_w1_b"].shape[0])
    if "lokr_w2" in p:
        w2 = p["lokr_w2"]
    elif "lokr_t2" in p:
        w2 = _tucker(p["lokr_t2"], p["lokr_w2_b"], p["lokr_w2_a"])
        rank = rank or int(p["lokr_w2_b"].shape[0])
    else:
        w2 = p["lokr_w2_a"] @ p["lokr_w2_b"]
        rank = rank or int(p["lokr_w2_b"].shape[0])
    if w2.dim() == 4 and w1.dim() == 2:
        w1 = w1[:, :, None, None]
    return torch.kron(w1, w2), rank


def module_delta(params: Mapping[str, torch.Tensor], weight_shape: torch.Size | tuple[int, ...],
                 *, device: torch.device | None = None, dtype: torch.dtype = torch.float32,
                 bias_shape: torch.Size | tuple[int, ...] | None = None) -> Delta:
    """The change one module makes to a layer of `weight_shape`, computed in `dtype` on `device`.

    The multiplier is not applied here: the caller scales the result per network and component.
    Raises UnsupportedModuleError when the tensors do not make a change of the layer's size.
    """
    kind = module_kind(params)
    p = {k: v.to(device=device, dtype=dtype) for k, v in params.items() if k != "alpha"}
    if "alpha" in params:
        p["alpha"] = params["alpha"]
    bias = None
    if kind == "lora":
        w, rank = _lora(p)
    elif kind == "hada":
        w, rank = _hada(p)
    elif kind == "lokr":
        w, rank = _lokr(p)
    else:
        w, rank = p["diff"], None
        if "diff_b" in p:
            if bias_shape is None or p["diff_b"].numel() != _numel(bias_shape):
                raise UnsupportedModuleError("a bias difference for a layer without a matching bias")
            bias = p["diff_b"].reshape(bias_shape)
    if w.numel() != _numel(weight_shape):
        raise UnsupportedModuleError(
            f"{kind} change of shape {tuple(w.shape)} does not fit a layer of shape {tuple(weight_shape)}")
    w = w.reshape(weight_shape)
    scale = _scale(params, rank)
    if scale != 1.0:
        w = w * scale
    return Delta(w, bias)


def _numel(shape: torch.Size | tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
