"""Architecture detection from key names and (real, full-size) tensor shapes."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from modules.model_manager.arch import ModelArch, UnknownArchitectureError
from modules.model_manager.detect import ProbeCache, detect_arch, detect_from_file, probe_v_prediction, shapes_of

UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"

# Key -> shape tables with the probing keys of real checkpoints (shapes as in the released files).
SD1 = {
    UNET_IN: [320, 4, 3, 3],
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [320, 768],
    "model.diffusion_model.out.2.weight": [4, 320, 3, 3],
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": [49408, 768],
    "cond_stage_model.transformer.text_model.final_layer_norm.weight": [768],
    "first_stage_model.decoder.conv_out.weight": [3, 128, 3, 3],
    "first_stage_model.encoder.conv_in.weight": [128, 3, 3, 3],
}
SD1_OLD_TRANSFORMERS = {  # text model one level up, as written by older transformers versions
    **{k: v for k, v in SD1.items() if not k.startswith("cond_stage_model.")},
    "cond_stage_model.transformer.embeddings.token_embedding.weight": [49408, 768],
    "cond_stage_model.transformer.final_layer_norm.weight": [768],
}
SD1_INPAINT = {**SD1, UNET_IN: [320, 9, 3, 3]}
PIX2PIX = {**SD1, UNET_IN: [320, 8, 3, 3]}
SD2 = {
    UNET_IN: [320, 4, 3, 3],
    "model.diffusion_model.input_blocks.1.1.proj_in.weight": [320, 320],
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [320, 1024],
    "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": [3072, 1024],
    "cond_stage_model.model.ln_final.weight": [1024],
    "cond_stage_model.model.token_embedding.weight": [49408, 1024],
    "cond_stage_model.model.positional_embedding": [77, 1024],
    "first_stage_model.decoder.conv_out.weight": [3, 128, 3, 3],
}
SD2_V_MARKED = {**SD2, "v_pred": []}
SD2_INPAINT = {**SD2, UNET_IN: [320, 9, 3, 3]}
SD2_DEPTH = {**SD2, UNET_IN: [320, 5, 3, 3], "depth_model.model.pretrained.act_postprocess3.0.project.0.bias": [256]}
SDXL = {
    UNET_IN: [320, 4, 3, 3],
    "model.diffusion_model.label_emb.0.0.weight": [1280, 2816],
    "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": [640, 2048],
    "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": [49408, 768],
    "conditioner.embedders.1.model.ln_final.weight": [1280],
    "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight": [3840, 1280],
    "conditioner.embedders.1.model.text_projection": [1280, 1280],
    "first_stage_model.decoder.conv_out.weight": [3, 128, 3, 3],
}
SDXL_INPAINT = {**SDXL, UNET_IN: [320, 9, 3, 3]}
SDXL_REFINER = {
    UNET_IN: [384, 4, 3, 3],
    "model.diffusion_model.label_emb.0.0.weight": [1536, 2560],
    "conditioner.embedders.0.model.ln_final.weight": [1280],
    "conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight": [3840, 1280],
}
SD3 = {
    "model.diffusion_model.x_embedder.proj.weight": [1536, 16, 2, 2],
    "model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight": [4608, 1536],
    "text_encoders.clip_l.transformer.text_model.final_layer_norm.weight": [768],
}
FLUX = {
    "double_blocks.0.img_attn.norm.key_norm.scale": [128],
    "img_in.weight": [3072, 64],
    "final_layer.linear.weight": [64, 3072],
}
FLUX_PREFIXED = {f"model.diffusion_model.{k}": v for k, v in FLUX.items()}
LORA = {
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": [4, 320],
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": [320, 4],
    "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": [],
    "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": [4, 768],
}
VAE = {
    "encoder.conv_in.weight": [128, 3, 3, 3],
    "decoder.conv_out.weight": [3, 128, 3, 3],
    "quant_conv.weight": [8, 8, 1, 1],
    "post_quant_conv.weight": [4, 4, 1, 1],
}
EMBEDDING = {"emb_params": [8, 768]}
EMBEDDING_XL = {"clip_l": [4, 768], "clip_g": [4, 1280]}
UNET_ONLY = {UNET_IN: [320, 4, 3, 3], "model.diffusion_model.out.2.weight": [4, 320, 3, 3]}
DIFFUSERS_UNET = {"conv_in.weight": [320, 4, 3, 3], "down_blocks.0.attentions.0.proj_in.weight": [320, 320]}
CONTROLNET = {"control_model.input_hint_block.0.weight": [16, 3, 3, 3], "control_model.zero_convs.0.0.weight": [320, 320, 1, 1]}
ALT_DIFFUSION = {**SD1, "cond_stage_model.roberta.embeddings.word_embeddings.weight": [250002, 1024]}
UNCLIP = {**SD2, "embedder.model.ln_final.weight": [1024]}


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (SD1, ModelArch.SD1),
        (SD1_OLD_TRANSFORMERS, ModelArch.SD1),
        (SD1_INPAINT, ModelArch.SD1_INPAINT),
        (SD2, ModelArch.SD2),
        (SD2_V_MARKED, ModelArch.SD2_V),
        (SD2_INPAINT, ModelArch.SD2_INPAINT),
        (SDXL, ModelArch.SDXL),
        ({**SDXL, "v_pred": []}, ModelArch.SDXL),  # SDXL v-pred: same build, the manager sets the type
        (SDXL_INPAINT, ModelArch.SDXL_INPAINT),
    ],
    ids=["sd1", "sd1-old-te-keys", "sd1-inpaint", "sd2", "sd2-v-key", "sd2-inpaint", "sdxl", "sdxl-vpred",
         "sdxl-inpaint"],
)
def test_supported_architectures(table: dict[str, list[int]], expected: ModelArch) -> None:
    assert detect_arch(table) is expected


@pytest.mark.parametrize(
    ("table", "says"),
    [
        (SD3, "Stable Diffusion 3"),
        (FLUX, "Flux"),
        (FLUX_PREFIXED, "Flux"),
        (SDXL_REFINER, "SDXL refiner"),
        (PIX2PIX, "instruct-pix2pix"),
        (SD2_DEPTH, "depth"),
        (UNCLIP, "unCLIP"),
        (ALT_DIFFUSION, "AltDiffusion"),
        (LORA, "LoRA"),
        (VAE, "VAE"),
        (EMBEDDING, "embedding"),
        (EMBEDDING_XL, "embedding"),
        (UNET_ONLY, "no text encoder"),
        (DIFFUSERS_UNET, "diffusers-format UNet"),
        (CONTROLNET, "ControlNet"),
        ({}, "no Stable Diffusion UNet"),
    ],
    ids=["sd3", "flux", "flux-prefixed", "sdxl-refiner", "pix2pix", "sd2-depth", "unclip", "altdiffusion", "lora",
         "vae", "embedding", "embedding-xl", "unet-only", "diffusers-unet", "controlnet", "empty"],
)
def test_unsupported_or_not_a_checkpoint(table: dict[str, list[int]], says: str) -> None:
    with pytest.raises(UnknownArchitectureError) as info:
        detect_arch(table, source="models/Stable-diffusion/thing.safetensors")
    message = str(info.value)
    assert "models/Stable-diffusion/thing.safetensors" in message
    assert says in message


def test_file_names_and_sizes_do_not_matter() -> None:
    # An SD1 table is SD1 whatever other keys with misleading names say about "xl" or "v2".
    table = {**SD1, "model_ema.decay": [], "sdxl_v2_note": [1]}
    assert detect_arch(table) is ModelArch.SD1


def test_shapes_of_ignores_non_tensors() -> None:
    sd: dict[str, Any] = {"a": torch.zeros(2, 3), "b": torch.zeros(()), "epoch": 3}
    assert shapes_of(sd) == {"a": (2, 3), "b": ()}


def _write_header_only(path: Path, table: dict[str, list[int]]) -> None:
    """A safetensors file whose header declares full-size tensors but which holds no tensor data:
    detecting it must work from the header alone."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key, shape in table.items():
        n = 2
        for d in shape:
            n *= d
        header[key] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


def test_detect_from_file_reads_only_the_safetensors_header(tmp_path: Path) -> None:
    path = tmp_path / "xl.safetensors"
    _write_header_only(path, SDXL)
    assert path.stat().st_size < 10_000  # the declared tensors would be megabytes
    assert detect_from_file(path) is ModelArch.SDXL


def test_detect_from_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "some_lora.safetensors"
    _write_header_only(path, LORA)
    with pytest.raises(UnknownArchitectureError, match="some_lora"):
        detect_from_file(path)


def test_detect_from_pickled_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "inpaint.ckpt"
    small = {k: torch.zeros([min(d, 2) if i != 1 else d for i, d in enumerate(s)]) for k, s in SD1_INPAINT.items()}
    torch.save({"state_dict": small}, path)
    assert detect_from_file(path) is ModelArch.SD1_INPAINT


# --- v-prediction probe --------------------------------------------------------------------------


class _FakeUNet(torch.nn.Module):
    """Returns what an eps model (about the input) or a v model (about minus the input) would."""

    def __init__(self, v: bool, in_channels: int = 4) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.v = v
        self.config = SimpleNamespace(in_channels=in_channels, cross_attention_dim=1024,
                                      block_out_channels=(320, 640, 1280, 1280))
        self.calls: list[tuple[torch.Size, list[int], torch.Size]] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,
                return_dict: bool = True) -> tuple[torch.Tensor]:
        self.calls.append((x.shape, t.tolist(), encoder_hidden_states.shape))
        latent = x[:, :4]
        return (-latent - 1.0 if self.v else latent * 0.98,)


def test_probe_tells_v_from_eps() -> None:
    v, eps = _FakeUNet(v=True), _FakeUNet(v=False)
    assert probe_v_prediction(v) is True
    assert probe_v_prediction(eps) is False
    x_shape, t, ctx_shape = v.calls[0]
    assert t == [999]
    assert x_shape == (1, 4, 8, 8) and ctx_shape == (1, 2, 1024)


def test_probe_runs_a_real_diffusers_unet() -> None:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=32, use_linear_projection=True,
    ).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.zero_()
        # An output layer that returns -(input) - 2 through the skip path is impossible to set up
        # simply; a zeroed UNet outputs zeros, so mean(out - x) = -0.5: eps.
    assert probe_v_prediction(unet) is False
    with torch.no_grad():
        unet.conv_out.bias.fill_(-3.0)  # output -3 everywhere: mean(out - x) = -3.5 -> v
    assert probe_v_prediction(unet) is True


def test_probe_cache_persists(tmp_path: Path) -> None:
    cache = ProbeCache(tmp_path / "probes.json")
    assert cache.get("prediction_type/abc") is None
    cache.put("prediction_type/abc", "v_prediction")
    assert ProbeCache(tmp_path / "probes.json").get("prediction_type/abc") == "v_prediction"
