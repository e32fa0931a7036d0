"""Exporting diffusers components to the original single-file layout, and loading them back."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from tiny_models import build_components, full_size_meta_components, write_config_folder

from modules.model_manager import ldm_export
from modules.model_manager.safe_load import read_state_dict


def _export(components: dict[str, Any], prediction_type: str = "epsilon") -> dict[str, torch.Tensor]:
    return ldm_export.export_state_dict(
        components["unet"],
        components["vae"],
        components["text_encoder"],
        components["text_encoder_2"],
        family=components["family"],
        prediction_type=prediction_type,
    )


def _load_with_diffusers(checkpoint: dict[str, torch.Tensor], config_dir: Path, family: str) -> dict[str, Any]:
    """Load every component the way diffusers' single-file loader does, against a local config."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    common: dict[str, Any] = {"config": str(config_dir), "local_files_only": True}
    loaded = {
        "unet": UNet2DConditionModel.from_single_file(checkpoint, subfolder="unet", **common),
        "vae": AutoencoderKL.from_single_file(checkpoint, subfolder="vae", **common),
        "text_encoder": create_diffusers_clip_model_from_ldm(CLIPTextModel, checkpoint, subfolder="text_encoder", **common),
        "text_encoder_2": None,
    }
    if family == "sdxl":
        loaded["text_encoder_2"] = create_diffusers_clip_model_from_ldm(
            CLIPTextModelWithProjection, checkpoint, subfolder="text_encoder_2", **common
        )
    return loaded


def _assert_identical(original: torch.nn.Module, loaded: torch.nn.Module, what: str) -> None:
    a, b = original.state_dict(), loaded.state_dict()
    assert set(a) == set(b), f"{what}: key sets differ: {sorted(set(a) ^ set(b))[:5]}"
    for key, tensor in a.items():
        assert not b[key].is_meta, f"{what}.{key} was not loaded"
        assert b[key].dtype == tensor.dtype, f"{what}.{key}"
        assert torch.equal(b[key], tensor), f"{what}.{key} differs after the round trip"


@pytest.mark.parametrize("arch", ["sd1", "sd1-inpaint", "sd2-v", "sdxl"])
def test_export_then_diffusers_single_file_load_is_bit_identical(arch: str, tmp_path: Path) -> None:
    components = build_components(arch, seed=7)
    config_dir = write_config_folder(tmp_path / "model.config", components)
    exported = _export(components, components["scheduler_config"]["prediction_type"])
    assert ("v_pred" in exported) == (arch == "sd2-v")
    path = ldm_export.save_single_file(tmp_path / "model.safetensors", exported)

    loaded = _load_with_diffusers(read_state_dict(path), config_dir, components["family"])
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if components[name] is None:
            assert loaded[name] is None
        else:
            _assert_identical(components[name], loaded[name], name)


def test_tiny_layouts_use_the_original_names() -> None:
    sd1 = _export(build_components("sd1"))
    assert sd1["model.diffusion_model.input_blocks.0.0.weight"].shape == (32, 4, 3, 3)
    assert sd1["model.diffusion_model.input_blocks.1.1.proj_in.weight"].shape == (32, 32, 1, 1)  # conv proj
    assert "model.diffusion_model.input_blocks.1.0.in_layers.2.weight" in sd1
    assert "model.diffusion_model.input_blocks.2.0.op.weight" in sd1
    assert "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight" in sd1
    assert "model.diffusion_model.output_blocks.1.1.conv.weight" in sd1  # upsampler after a plain resnet
    assert sd1["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)
    assert "first_stage_model.decoder.up.2.upsample.conv.weight" in sd1  # reverse-numbered decoder levels
    assert "cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc2.weight" in sd1

    sd2 = _export(build_components("sd2-v"))
    assert sd2["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"].shape == (96, 32)
    assert sd2["cond_stage_model.model.positional_embedding"].shape == (77, 32)
    assert not any(k.startswith("cond_stage_model.transformer.") for k in sd2)

    xl = _export(build_components("sdxl"))
    assert xl["model.diffusion_model.label_emb.0.0.weight"].shape[1] == 64 + 6 * 8
    assert "model.diffusion_model.output_blocks.1.2.conv.weight" in xl  # upsampler after an attention
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in xl
    assert xl["conditioner.embedders.1.model.text_projection"].shape == (64, 64)
    assert "conditioner.embedders.1.model.ln_final.weight" in xl


def test_openclip_projection_is_stored_transposed() -> None:
    components = build_components("sdxl")
    exported = _export(components)
    weight = components["text_encoder_2"].text_projection.weight
    weight_t = exported["conditioner.embedders.1.model.text_projection"]
    assert torch.equal(weight_t, weight.t())
    q = components["text_encoder_2"].state_dict()["text_model.encoder.layers.1.self_attn.q_proj.weight"]
    fused = exported["conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight"]
    assert torch.equal(fused[: q.shape[0]], q)


# --- full-size layouts (meta tensors: shapes only) --------------------------------------------------

SD15_SHAPES = {
    "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
    "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
    "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
    "model.diffusion_model.input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
    "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight": (1280, 768),
    "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
    "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
    "model.diffusion_model.output_blocks.8.2.conv.weight": (640, 640, 3, 3),
    "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
    "model.diffusion_model.time_embed.0.weight": (1280, 320),
    "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
    "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
    "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
    "first_stage_model.decoder.up.0.block.0.conv1.weight": (128, 256, 3, 3),
    "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
    "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
    "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight": (768, 3072),
    "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (77, 768),
}
SD2_SHAPES = {
    "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320),
    "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
    "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": (3072, 1024),
    "cond_stage_model.model.transformer.resblocks.22.mlp.c_fc.weight": (4096, 1024),
    "cond_stage_model.model.token_embedding.weight": (49408, 1024),
    "cond_stage_model.model.positional_embedding": (77, 1024),
    "cond_stage_model.model.ln_final.weight": (1024,),
}
SDXL_SHAPES = {
    "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
    "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
    "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight": (640, 640),
    "model.diffusion_model.middle_block.1.transformer_blocks.9.attn2.to_k.weight": (1280, 2048),
    "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
    "model.diffusion_model.output_blocks.5.2.conv.weight": (640, 640, 3, 3),
    "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight": (77, 768),
    "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (1280,),
    "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
    "conditioner.embedders.1.model.text_projection": (1280, 1280),
    "conditioner.embedders.1.model.ln_final.weight": (1280,),
}


def _count(sd: dict[str, torch.Tensor], prefix: str) -> int:
    return sum(k.startswith(prefix) for k in sd)


@functools.cache
def _full_size_export(arch: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    components = full_size_meta_components(arch)
    return components, _export(components)


def test_full_size_sd15_matches_published_checkpoint_layout() -> None:
    _, sd = _full_size_export("sd1")
    # v1-5-pruned-emaonly holds 686 UNet, 248 VAE and 197 text tensors (the 197th is CLIP's
    # position_ids buffer, which transformers no longer saves and no loader needs).
    assert _count(sd, "model.diffusion_model.") == 686
    assert _count(sd, "first_stage_model.") == 248
    assert _count(sd, "cond_stage_model.transformer.text_model.") == 196
    for key, shape in SD15_SHAPES.items():
        assert tuple(sd[key].shape) == shape, key


def test_full_size_sd2_and_sdxl_layouts() -> None:
    _, sd2 = _full_size_export("sd2")
    for key, shape in SD2_SHAPES.items():
        assert tuple(sd2[key].shape) == shape, key
    assert "cond_stage_model.model.transformer.resblocks.23.ln_1.weight" not in sd2  # 23 layers, see module doc
    _, xl = _full_size_export("sdxl")
    assert _count(xl, "model.diffusion_model.") == 1680
    assert _count(xl, "conditioner.embedders.1.model.") == 389
    for key, shape in SDXL_SHAPES.items():
        assert tuple(xl[key].shape) == shape, key


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl", "sdxl-inpaint"])
def test_full_size_keys_convert_back_onto_every_parameter(arch: str) -> None:
    """diffusers' converters map the exported full-size keys onto exactly the models' keys."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    components, sd = _full_size_export(arch)
    unet = convert_ldm_unet_checkpoint(sd, dict(components["unet"].config))
    assert set(unet) == set(components["unet"].state_dict())
    vae_part = {k: v for k, v in sd.items() if k.startswith("first_stage_model.")}
    vae = convert_ldm_vae_checkpoint(vae_part, dict(components["vae"].config))
    assert set(vae) == set(components["vae"].state_dict())
    assert vae["encoder.mid_block.attentions.0.to_q.weight"].ndim == 2

    te = components["text_encoder"]
    if components["family"] == "sd2":
        text = convert_open_clip_checkpoint(te, sd, prefix="cond_stage_model.model.")
    else:
        text = convert_ldm_clip_checkpoint(sd)
    assert {k.removeprefix("text_model.") for k in text} == set(te.state_dict())
    if components["family"] == "sdxl":
        te2 = components["text_encoder_2"]
        text2 = convert_open_clip_checkpoint(te2, sd, prefix="conditioner.embedders.1.model.")
        assert set(text2) == set(te2.state_dict())


# --- saving -----------------------------------------------------------------------------------------


def test_save_single_file_formats(tmp_path: Path) -> None:
    sd = {"a.weight": torch.arange(6, dtype=torch.float16).reshape(2, 3).t(), "b": torch.ones(2)}
    st = ldm_export.save_single_file(tmp_path / "m.safetensors", sd, metadata={"modelspec.title": "x", "n": 3})
    with safe_open(str(st), framework="pt") as f:
        assert f.metadata() == {"modelspec.title": "x", "n": "3"}
    back = read_state_dict(st)
    assert torch.equal(back["a.weight"], sd["a.weight"]) and back["a.weight"].dtype == torch.float16

    ckpt = ldm_export.save_single_file(tmp_path / "m.ckpt", sd)
    assert torch.equal(read_state_dict(ckpt)["b"], sd["b"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt", "m.safetensors"]  # no temp files left

    with pytest.raises(ValueError, match="can only write"):
        ldm_export.save_single_file(tmp_path / "m.bin", sd)


def test_failed_save_leaves_no_file(tmp_path: Path) -> None:
    shared = torch.ones(4)
    with pytest.raises(Exception):  # noqa: B017  (safetensors refuses tensors sharing memory)
        ldm_export.save_single_file(tmp_path / "bad.safetensors", {"a": shared, "b": shared})
    assert list(tmp_path.iterdir()) == []


def test_export_argument_checks() -> None:
    c = build_components("sd1")
    with pytest.raises(ValueError, match="unknown model family"):
        ldm_export.export_state_dict(c["unet"], c["vae"], c["text_encoder"], family="sd3")
    with pytest.raises(ValueError, match="unknown prediction type"):
        ldm_export.export_state_dict(c["unet"], c["vae"], c["text_encoder"], family="sd1", prediction_type="flow")
    with pytest.raises(ValueError, match="both text encoders"):
        ldm_export.export_state_dict(c["unet"], c["vae"], c["text_encoder"], family="sdxl")
