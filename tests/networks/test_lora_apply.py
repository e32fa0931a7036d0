"""Merging LoRAs into tiny models: every file layout lands on the same layers, multipliers act per
component, several networks add up, and taking them out restores the weights bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lora_factory import (
    expected_weight,
    kohya_state_dict,
    lora_tensors,
    peft_state_dict,
    save_lora,
)
from tiny_models import load_tiny_model

from modules.engine import conditioning
from modules.networks import lora_keys
from modules.networks.lora import AppliedNetwork, NetworkApplier, applier_for
from modules.networks.lora_files import LoraFile, read_network


@pytest.fixture
def sd1(tiny_models_dir: Path):  # type: ignore[no-untyped-def]
    return load_tiny_model(tiny_models_dir / "Stable-diffusion" / "tiny-sd1.safetensors")


def snapshot(model) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    out = {}
    for name, module in (("unet", model.unet), ("te", model.text_encoder), ("te2", model.text_encoder_2)):
        if module is not None:
            out.update({f"{name}.{k}": v.detach().clone() for k, v in module.state_dict().items()})
    return out


def assert_bit_identical(model, snap: dict[str, torch.Tensor]) -> None:  # type: ignore[no-untyped-def]
    now = snapshot(model)
    assert now.keys() == snap.keys()
    changed = [k for k in snap if not torch.equal(now[k], snap[k])]
    assert changed == []


def network(tmp_path: Path, name: str, sd: dict[str, torch.Tensor]):  # type: ignore[no-untyped-def]
    path = save_lora(tmp_path / f"{name}.safetensors", sd)
    return read_network(LoraFile(name=name, filename=str(path)))


def te_layer(model, path: str) -> torch.nn.Module:  # type: ignore[no-untyped-def]
    root = model.text_encoder.text_model if hasattr(model.text_encoder, "text_model") else model.text_encoder
    return root.get_submodule(path)


def test_kohya_lora_changes_exactly_the_targeted_layers(tmp_path: Path, sd1) -> None:  # type: ignore[no-untyped-def]
    tensors = lora_tensors(sd1, rank=4, seed=1)
    net = network(tmp_path, "k", kohya_state_dict(tensors, alpha=2.0))
    before = snapshot(sd1)
    report = NetworkApplier(sd1).apply([AppliedNetwork(net, te_multiplier=0.5, unet_multiplier=0.8)])
    assert report.changed and report.incompatible == [] and report.partial == {}
    assert report.layers == len(tensors)
    for (component, path), (down, up) in tensors.items():
        if component == "unet":
            layer, mult, key = sd1.unet.get_submodule(path), 0.8, f"unet.{path}.weight"
        else:
            layer, mult, key = te_layer(sd1, path), 0.5, f"te.{path}.weight"
            key = key if key in before else f"te.text_model.{path}.weight"
        want = expected_weight(before[key], [(down, up, mult * 2.0 / 4)])
        torch.testing.assert_close(layer.weight, want, rtol=1e-5, atol=1e-6)
    untouched = "unet.conv_in.weight"
    assert torch.equal(sd1.unet.conv_in.weight, before[untouched])


def test_ldm_named_and_peft_files_equal_diffusers_named(tmp_path: Path, tiny_models_dir: Path) -> None:
    results = []
    for layout in ("diffusers", "ldm", "peft"):
        model = load_tiny_model(tiny_models_dir / "Stable-diffusion" / "tiny-sd1.safetensors")
        tensors = lora_tensors(model, rank=4, seed=2)
        sd = peft_state_dict(tensors) if layout == "peft" else kohya_state_dict(tensors, unet_naming=layout)
        report = NetworkApplier(model).apply([AppliedNetwork(network(tmp_path, layout, sd))])
        assert report.layers == len(tensors), layout
        results.append(snapshot(model))
    for other in results[1:]:
        assert all(torch.equal(results[0][k], other[k]) for k in results[0])


def test_te_and_unet_multipliers_act_separately(tmp_path: Path, sd1) -> None:  # type: ignore[no-untyped-def]
    net = network(tmp_path, "k", kohya_state_dict(lora_tensors(sd1, seed=3)))
    before = snapshot(sd1)
    applier = NetworkApplier(sd1)
    applier.apply([AppliedNetwork(net, te_multiplier=0.0, unet_multiplier=1.0)])
    now = snapshot(sd1)
    assert all(torch.equal(now[k], before[k]) for k in before if k.startswith("te."))
    assert any(not torch.equal(now[k], before[k]) for k in before if k.startswith("unet."))
    assert sd1.extra.get("text_encoder_state") is None
    applier.apply([AppliedNetwork(net, te_multiplier=1.0, unet_multiplier=0.0)])
    now = snapshot(sd1)
    assert all(torch.equal(now[k], before[k]) for k in before if k.startswith("unet."))
    assert any(not torch.equal(now[k], before[k]) for k in before if k.startswith("te."))
    assert sd1.extra.get("text_encoder_state") is not None


def test_two_networks_add_up_and_unloading_is_bit_identical(tmp_path: Path, sd1) -> None:  # type: ignore[no-untyped-def]
    ta, tb = lora_tensors(sd1, seed=4), lora_tensors(sd1, seed=5, te=False)
    a, b = network(tmp_path, "a", kohya_state_dict(ta)), network(tmp_path, "b", kohya_state_dict(tb))
    before = snapshot(sd1)
    applier = NetworkApplier(sd1)
    applier.apply([AppliedNetwork(a, 0.7, 0.7), AppliedNetwork(b, 1.0, -0.5)])
    path = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    (da, ua), (db, ub) = ta[("unet", path)], tb[("unet", path)]
    want = expected_weight(before[f"unet.{path}.weight"], [(da, ua, 0.7), (db, ub, -0.5)])
    torch.testing.assert_close(sd1.unet.get_submodule(path).weight, want, rtol=1e-5, atol=1e-6)
    assert applier.applied == ["a", "b"]
    # switching to b alone gives exactly what b alone gives on a fresh model
    applier.apply([AppliedNetwork(b, 1.0, -0.5)])
    with_b = snapshot(sd1)
    applier.restore()
    assert_bit_identical(sd1, before)
    assert applier.is_clean and applier.applied == []
    applier.apply([AppliedNetwork(b, 1.0, -0.5)])
    assert all(torch.equal(with_b[k], v) for k, v in snapshot(sd1).items())
    applier.restore()
    assert_bit_identical(sd1, before)


def test_same_set_is_not_merged_twice(tmp_path: Path, sd1) -> None:  # type: ignore[no-untyped-def]
    net = network(tmp_path, "k", kohya_state_dict(lora_tensors(sd1, seed=6)))
    applier = applier_for(sd1)
    assert applier_for(sd1) is applier
    assert applier.apply([AppliedNetwork(net)]).changed
    once = snapshot(sd1)
    assert not applier.apply([AppliedNetwork(net)]).changed
    assert all(torch.equal(once[k], v) for k, v in snapshot(sd1).items())
    applier.restore()


def test_bf16_model_restores_bit_identically_inside_inference_mode(tmp_path: Path, tiny_models_dir: Path) -> None:
    model = load_tiny_model(tiny_models_dir / "Stable-diffusion" / "tiny-sd1.safetensors", dtype=torch.bfloat16)
    net = network(tmp_path, "k", kohya_state_dict(lora_tensors(model, seed=7)))
    before = snapshot(model)
    applier = NetworkApplier(model)
    with torch.inference_mode():
        applier.apply([AppliedNetwork(net, 0.3, 1.3)])
    assert model.unet.dtype == torch.bfloat16
    assert any(not torch.equal(v, before[k]) for k, v in snapshot(model).items())
    applier.restore()  # outside inference mode, from copies taken inside it
    assert_bit_identical(model, before)


def test_sdxl_kohya_lora_reaches_both_text_encoders_and_ldm_named_unet(tmp_path: Path, tiny_models_dir: Path) -> None:
    model = load_tiny_model(tiny_models_dir / "Stable-diffusion" / "tiny-sdxl.safetensors")
    index = lora_keys.module_index(model)
    # SDXL trainers name UNet layers in the original layout: level 1 of the tiny SDXL UNet has the
    # attention (two transformer blocks); it is input block 3 (after the stem, level 0's resnet and
    # level 0's downsampler)
    target = index.find("lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_v")
    assert target is not None and target.path == "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_v"
    tensors = lora_tensors(model, seed=8, unet=True)
    sd = kohya_state_dict({k: v for k, v in tensors.items() if k[0] != "unet"}, sdxl=True)
    down = torch.randn(2, target.module.in_features)
    up = torch.randn(target.module.out_features, 2)
    sd["lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_v.lora_down.weight"] = down
    sd["lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_v.lora_up.weight"] = up
    before = snapshot(model)
    report = NetworkApplier(model).apply([AppliedNetwork(network(tmp_path, "xl", sd))])
    assert report.incompatible == [] and report.partial == {}
    now = snapshot(model)
    assert any(not torch.equal(now[k], before[k]) for k in before if k.startswith("te2."))
    assert any(not torch.equal(now[k], before[k]) for k in before if k.startswith("te."))
    torch.testing.assert_close(target.module.weight, before[f"unet.{target.path}.weight"] + up @ down)


def test_lora_for_another_architecture_is_reported_incompatible(tmp_path: Path, sd1, tiny_models_dir: Path) -> None:  # type: ignore[no-untyped-def]
    xl = load_tiny_model(tiny_models_dir / "Stable-diffusion" / "tiny-sdxl.safetensors")
    sd = kohya_state_dict({k: v for k, v in lora_tensors(xl, seed=9).items() if k[0] == "te2"}, sdxl=True)
    before = snapshot(sd1)
    report = NetworkApplier(sd1).apply([AppliedNetwork(network(tmp_path, "xl", sd))])
    assert report.incompatible == ["xl"]
    assert_bit_identical(sd1, before)


def test_text_encoder_loras_do_not_reuse_cached_conditioning(tmp_path: Path, sd1) -> None:  # type: ignore[no-untyped-def]
    encoder = conditioning.PromptEncoder(sd1)
    plain = encoder.encode_one("a red cat").embeds.clone()
    net = network(tmp_path, "k", kohya_state_dict(lora_tensors(sd1, seed=10, unet=False)))
    applier = NetworkApplier(sd1)
    applier.apply([AppliedNetwork(net)])
    styled = encoder.encode_one("a red cat").embeds
    assert not torch.allclose(plain, styled)
    applier.restore()
    assert torch.equal(encoder.encode_one("a red cat").embeds, plain)
