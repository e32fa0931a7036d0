"""The weight change of each network kind, against the formulas written out by hand."""

from __future__ import annotations

import pytest
import torch

from modules.networks.lora_weights import UnsupportedModuleError, module_delta, module_kind

g = torch.Generator().manual_seed(0)


def rnd(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


def test_linear_lora_with_alpha() -> None:
    down, up = rnd(4, 10), rnd(6, 4)
    d = module_delta({"lora_down": down, "lora_up": up, "alpha": torch.tensor(2.0)}, (6, 10))
    torch.testing.assert_close(d.weight, up @ down * 0.5)
    assert d.bias is None
    # no alpha: scale 1
    torch.testing.assert_close(module_delta({"lora_down": down, "lora_up": up}, (6, 10)).weight, up @ down)


def test_locon_conv_and_1x1_on_linear() -> None:
    down, up = rnd(3, 8, 3, 3), rnd(5, 3, 1, 1)
    d = module_delta({"lora_down": down, "lora_up": up}, (5, 8, 3, 3)).weight
    x = rnd(1, 8, 7, 7)
    # a 3x3 conv with `down` followed by a 1x1 conv with `up` is the same map as the merged kernel
    ref = torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, down, padding=1), up)
    torch.testing.assert_close(torch.nn.functional.conv2d(x, d, padding=1), ref, rtol=1e-4, atol=1e-4)
    # a LoRA trained on 1x1 convolutions fits the equivalent linear layer
    d2 = module_delta({"lora_down": rnd(2, 8, 1, 1), "lora_up": rnd(5, 2, 1, 1)}, (5, 8)).weight
    assert d2.shape == (5, 8)


def test_locon_tucker_mid() -> None:
    down, mid, up = rnd(3, 8, 1, 1), rnd(3, 3, 3, 3), rnd(5, 3, 1, 1)
    d = module_delta({"lora_down": down, "lora_mid": mid, "lora_up": up}, (5, 8, 3, 3)).weight
    x = rnd(1, 8, 6, 6)
    conv = torch.nn.functional.conv2d
    ref = conv(conv(conv(x, down), mid, padding=1), up)
    torch.testing.assert_close(conv(x, d, padding=1), ref, rtol=1e-4, atol=1e-4)


def test_loha_and_lokr() -> None:
    w1a, w1b, w2a, w2b = rnd(6, 2), rnd(2, 4), rnd(6, 2), rnd(2, 4)
    d = module_delta({"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b,
                      "alpha": torch.tensor(1.0)}, (6, 4)).weight
    torch.testing.assert_close(d, (w1a @ w1b) * (w2a @ w2b) / 2)
    k1, k2a, k2b = rnd(2, 2), rnd(3, 1), rnd(1, 5)
    d = module_delta({"lokr_w1": k1, "lokr_w2_a": k2a, "lokr_w2_b": k2b, "alpha": torch.tensor(3.0)}, (6, 10)).weight
    torch.testing.assert_close(d, torch.kron(k1, k2a @ k2b) * 3.0)
    assert module_kind({"lokr_w1": k1, "lokr_w2": k2a}) == "lokr"


def test_full_difference_with_bias() -> None:
    diff, diff_b = rnd(4, 3), rnd(4)
    d = module_delta({"diff": diff, "diff_b": diff_b}, (4, 3), bias_shape=(4,))
    assert torch.equal(d.weight, diff) and torch.equal(d.bias, diff_b)


def test_mismatched_or_unknown_modules_are_refused() -> None:
    with pytest.raises(UnsupportedModuleError):
        module_delta({"lora_down": rnd(4, 10), "lora_up": rnd(6, 4)}, (6, 12))
    with pytest.raises(UnsupportedModuleError):
        module_kind({"dora_scale": rnd(3), "alpha": torch.tensor(1.0)})
