"""Building DiffusionModels from single files, diffusers folders and VAE files, offline."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import (
    TINY_CHECKPOINTS,
    build_components,
    full_size_meta_components,
    load_tiny_model,
    write_config_folder,
)

from modules.engine.model import DiffusionModel
from modules.model_manager import ldm_export, loader
from modules.model_manager.arch import ModelArch
from modules.model_manager.loader import ComponentLoadError, load_from_state_dict, load_vae_state_dict
from modules.model_manager.safe_load import CheckpointReadError, read_state_dict

# The fixtures tiny_models_dir and tiny_sd1_model come from tests/tiny_models.py through conftest.py.
CPU = torch.device("cpu")
COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def _assert_same_weights(a: Any, b: Any, what: str) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb), what
    for key in sa:
        assert torch.equal(sa[key].to(sb[key].dtype), sb[key]), f"{what}.{key}"


def _checkpoint(models: Path, stem: str) -> Path:
    return models / "Stable-diffusion" / f"{stem}.safetensors"


# --- bundled configs --------------------------------------------------------------------------------

# Published parameter counts (millions) of the reference models the bundled configs describe.
PUBLISHED = {
    "unet": {"sd1": 859.52, "sd2": 865.91, "sdxl": 2567.46},
    "vae": 83.65,
    "text_encoder": {"sd1": 123.06, "sd2": 340.39, "sdxl": 123.06},
    "text_encoder_2": 694.66,
}


@pytest.mark.parametrize("arch", list(ModelArch))
def test_bundled_config_matches_reference_model(arch: ModelArch) -> None:
    """Instantiated on the meta device (no memory), every bundled config has the parameter count of
    the public model it stands for, so real checkpoints load into it."""
    c = full_size_meta_components(arch.value)

    def millions(module: torch.nn.Module) -> float:
        return sum(p.numel() for p in module.parameters()) / 1e6

    inpaint_extra = 5 * 320 * 9 / 1e6 if arch.is_inpaint else 0  # 5 more input channels of conv_in
    assert millions(c["unet"]) == pytest.approx(PUBLISHED["unet"][arch.family] + inpaint_extra, abs=0.01)
    assert millions(c["vae"]) == pytest.approx(PUBLISHED["vae"], abs=0.01)
    assert millions(c["text_encoder"]) == pytest.approx(PUBLISHED["text_encoder"][arch.family], abs=0.01)
    if arch.family == "sdxl":
        assert millions(c["text_encoder_2"]) == pytest.approx(PUBLISHED["text_encoder_2"], abs=0.01)
    else:
        assert c["text_encoder_2"] is None

    assert c["unet"].config.in_channels == (9 if arch.is_inpaint else 4)
    assert loader.model_family(arch.config_dir) == arch.family
    scheduler = loader.read_scheduler_config(arch.config_dir)
    assert scheduler["prediction_type"] == arch.prediction_type
    assert (scheduler["beta_start"], scheduler["beta_end"], scheduler["beta_schedule"]) == (0.00085, 0.012, "scaled_linear")
    assert (scheduler["num_train_timesteps"], scheduler["steps_offset"], scheduler["timestep_spacing"]) == (1000, 1, "leading")
    if arch.family == "sdxl":
        assert c["vae"].config.scaling_factor == 0.13025 and c["vae"].config.force_upcast
    else:
        assert c["vae"].config.scaling_factor == 0.18215
    index = loader.read_model_index(arch.config_dir)
    assert index.get("safety_checker", [None, None]) == [None, None]


def test_bundled_schedulers_build_without_unknown_keys() -> None:
    import diffusers

    for arch in ModelArch:
        config = loader.read_scheduler_config(arch.config_dir)
        cls = getattr(diffusers, config["_class_name"])
        scheduler = cls.from_config(config)
        assert scheduler.config.prediction_type == arch.prediction_type


def test_family_inference_without_the_easel_key(tmp_path: Path) -> None:
    for arch in (ModelArch.SD1, ModelArch.SD2_V, ModelArch.SDXL_INPAINT):
        folder = tmp_path / arch.value
        shutil.copytree(arch.config_dir, folder)
        index = json.loads((folder / "model_index.json").read_text())
        del index["_easel_family"], index["_easel_tokenizers"]
        (folder / "model_index.json").write_text(json.dumps(index))
        assert loader.model_family(folder) == arch.family
        assert loader.tokenizer_dir(folder).name == ("openclip" if arch.family == "sd2" else "clip")


# --- single files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stem", list(TINY_CHECKPOINTS))
def test_single_file_loads_bit_identical(stem: str, tiny_models_dir: Path) -> None:
    arch, seed = TINY_CHECKPOINTS[stem]
    path = _checkpoint(tiny_models_dir, stem)
    model = load_tiny_model(path)
    original = build_components(arch, seed)

    assert isinstance(model, DiffusionModel)
    assert model.family == original["family"]
    assert model.is_inpaint == arch.endswith("-inpaint")
    assert model.scheduler_config == original["scheduler_config"]
    assert model.prediction_type == ("v_prediction" if arch == "sd2-v" else "epsilon")
    for name in COMPONENTS:
        if original[name] is None:
            assert getattr(model, name) is None
            continue
        module = getattr(model, name)
        _assert_same_weights(original[name], module, name)
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    assert model.tokenizer("a cat").input_ids == [49406, 320, 2368, 49407]
    assert model.tokenizer.pad_token_id == (0 if model.family == "sd2" else 49407)
    if model.is_sdxl:
        assert model.tokenizer_2.pad_token_id == 0
    else:
        assert model.tokenizer_2 is None


def test_dtypes_and_devices_per_component(tiny_models_dir: Path) -> None:
    sd = read_state_dict(_checkpoint(tiny_models_dir, "tiny-sdxl"))
    before = {k: v.data_ptr() for k, v in sd.items()}
    model = load_from_state_dict(
        sd, _checkpoint(tiny_models_dir, "tiny-sdxl").with_suffix(".config"),
        device=CPU, dtype=torch.bfloat16, vae_dtype=torch.float32, vae_device=CPU,
    )
    for name in ("unet", "text_encoder", "text_encoder_2"):
        assert {p.dtype for p in getattr(model, name).parameters()} == {torch.bfloat16}, name
    assert {p.dtype for p in model.vae.parameters()} == {torch.float32}
    assert model.dtype == torch.bfloat16 and model.device == CPU
    # The caller's state dict is left as it was.
    assert {k: v.data_ptr() for k, v in sd.items()} == before
    assert all(v.dtype == torch.float32 for v in sd.values())


def test_half_precision_file_loads_to_float32(tiny_models_dir: Path, tmp_path: Path) -> None:
    sd = {k: v.half() for k, v in read_state_dict(_checkpoint(tiny_models_dir, "tiny-sd1")).items()}
    model = load_from_state_dict(
        sd, _checkpoint(tiny_models_dir, "tiny-sd1").with_suffix(".config"),
        device=CPU, dtype=torch.float32, vae_dtype=torch.float32,
    )
    assert model.unet.dtype == torch.float32
    key = "model.diffusion_model.out.2.weight"
    assert torch.equal(model.unet.conv_out.weight, sd[key].float())


def test_ckpt_pickle_loads(tiny_models_dir: Path, tmp_path: Path) -> None:
    sd = read_state_dict(_checkpoint(tiny_models_dir, "tiny-sd1"))
    ckpt = ldm_export.save_single_file(tmp_path / "old.ckpt", sd)
    model = load_from_state_dict(
        read_state_dict(ckpt), _checkpoint(tiny_models_dir, "tiny-sd1").with_suffix(".config"),
        device=CPU, dtype=torch.float32, vae_dtype=torch.float32,
    )
    assert torch.equal(model.unet.conv_in.weight, sd["model.diffusion_model.input_blocks.0.0.weight"])


def test_legacy_key_variants_load(tiny_models_dir: Path) -> None:
    """SD 1.x text encoders saved without `text_model.`, and SD 2.x (Turbo) encoders kept under
    `conditioner.embedders.0.`, load like the usual layout."""
    sd1_path = _checkpoint(tiny_models_dir, "tiny-sd1")
    sd1 = read_state_dict(sd1_path)
    old = {k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v for k, v in sd1.items()}
    model = load_from_state_dict(old, sd1_path.with_suffix(".config"), device=CPU, dtype=torch.float32, vae_dtype=torch.float32)
    _assert_same_weights(load_tiny_model(sd1_path).text_encoder, model.text_encoder, "text_encoder")

    sd2_path = _checkpoint(tiny_models_dir, "tiny-sd2v")
    sd2 = read_state_dict(sd2_path)
    turbo = {k.replace("cond_stage_model.", "conditioner.embedders.0."): v for k, v in sd2.items()}
    model = load_from_state_dict(turbo, sd2_path.with_suffix(".config"), device=CPU, dtype=torch.float32, vae_dtype=torch.float32)
    _assert_same_weights(load_tiny_model(sd2_path).text_encoder, model.text_encoder, "text_encoder")


def test_tiny_sd1_model_runs_end_to_end(tiny_sd1_model: DiffusionModel) -> None:
    m = tiny_sd1_model
    assert m.vae_scale_factor == 4 and m.latent_channels == 4 and m.in_channels == 4
    ids = m.tokenizer("a photo of a cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        cond = m.text_encoder(ids).last_hidden_state
        latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
        eps = m.unet(latents, 999, encoder_hidden_states=cond).sample
        image = m.vae.decode(latents / m.vae_scaling_factor).sample
    assert cond.shape == (1, 77, 32)
    assert eps.shape == latents.shape and torch.isfinite(eps).all()
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()


def test_loading_is_offline() -> None:
    """`import modules` switches the hub libraries offline before anything loads; the suite's
    network guard fails the run if any load above tried a connection anyway."""
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE


# --- errors -----------------------------------------------------------------------------------------


def test_weights_for_another_architecture_are_refused(tiny_models_dir: Path) -> None:
    sd = read_state_dict(_checkpoint(tiny_models_dir, "tiny-sd1"))
    with pytest.raises(ComponentLoadError, match=r"^tiny-sd1\.safetensors: \d+ unet weights are missing for the sd1 config") as err:
        load_from_state_dict(sd, ModelArch.SD1.config_dir, device=CPU, dtype=torch.float32, vae_dtype=torch.float32,
                             source_name="tiny-sd1.safetensors")
    assert err.value.component == "unet"
    assert isinstance(err.value, CheckpointReadError)

    inpaint_config = _checkpoint(tiny_models_dir, "tiny-sd1-inpaint").with_suffix(".config")
    with pytest.raises(ComponentLoadError, match=r"conv_in\.weight has shape \[32, 4, 3, 3\], the config expects \[32, 9, 3, 3\]"):
        load_from_state_dict(sd, inpaint_config, device=CPU, dtype=torch.float32, vae_dtype=torch.float32)


def test_missing_weights_are_named(tiny_models_dir: Path) -> None:
    path = _checkpoint(tiny_models_dir, "tiny-sd1")
    sd = dict(read_state_dict(path))
    del sd["model.diffusion_model.out.2.weight"]
    with pytest.raises(ComponentLoadError, match="unet weights are missing") as err:
        load_from_state_dict(sd, path.with_suffix(".config"), device=CPU, dtype=torch.float32, vae_dtype=torch.float32,
                             source_name=path.name)
    assert err.value.missing == ["conv_out.weight"]

    sd = read_state_dict(path)
    no_text = {k: v for k, v in sd.items() if not k.startswith("cond_stage_model.")}
    with pytest.raises(ComponentLoadError, match="text_encoder") as err:
        load_from_state_dict(no_text, path.with_suffix(".config"), device=CPU, dtype=torch.float32, vae_dtype=torch.float32)
    assert err.value.component == "text_encoder"

    no_vae = {k: v for k, v in sd.items() if not k.startswith("first_stage_model.")}
    with pytest.raises(ComponentLoadError, match="no VAE weights"):
        load_from_state_dict(no_vae, path.with_suffix(".config"), device=CPU, dtype=torch.float32, vae_dtype=torch.float32)

    no_unet = {k: v for k, v in sd.items() if not k.startswith("model.diffusion_model.")}
    with pytest.raises(ComponentLoadError, match="no UNet weights"):
        load_from_state_dict(no_unet, path.with_suffix(".config"), device=CPU, dtype=torch.float32, vae_dtype=torch.float32)


def test_config_folder_without_index_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointReadError, match=r"no model_index\.json"):
        load_from_state_dict({}, tmp_path, device=CPU, dtype=torch.float32, vae_dtype=torch.float32)


# --- diffusers folders ------------------------------------------------------------------------------


def test_diffusers_folder_loads_the_same_model(tiny_models_dir: Path) -> None:
    folder = tiny_models_dir / "Stable-diffusion" / "tiny-sd1-diffusers"
    model = loader.load_diffusers_folder(folder, device=CPU, dtype=torch.float32, vae_dtype=torch.float32)
    reference = load_tiny_model(_checkpoint(tiny_models_dir, "tiny-sd1"))
    assert model.family == "sd1"
    for name in ("unet", "vae", "text_encoder"):
        _assert_same_weights(getattr(reference, name), getattr(model, name), name)
        assert not getattr(model, name).training
    assert model.scheduler_config == reference.scheduler_config
    assert model.tokenizer("a cat").input_ids == [49406, 320, 2368, 49407]


def test_diffusers_folder_with_fp16_variant_only(tmp_path: Path) -> None:
    components = build_components("sd2-v", seed=3)
    folder = write_config_folder(tmp_path / "m", components)
    for name in ("unet", "vae", "text_encoder"):
        components[name].half().save_pretrained(folder / name, safe_serialization=True, variant="fp16")
    model = loader.load_diffusers_folder(folder, device=CPU, dtype=torch.float16, vae_dtype=torch.float32)
    assert model.family == "sd2" and model.prediction_type == "v_prediction"
    assert model.unet.dtype == torch.float16 and model.vae.dtype == torch.float32
    _assert_same_weights(components["unet"], model.unet, "unet")


# --- VAE files --------------------------------------------------------------------------------------


def _vae_variants(vae: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    ldm = ldm_export.vae_to_ldm(vae.state_dict())
    diffusers_layout = dict(vae.state_dict())
    legacy = {}
    for k, v in diffusers_layout.items():
        k = k.replace(".to_q.", ".query.").replace(".to_k.", ".key.").replace(".to_v.", ".value.").replace(".to_out.0.", ".proj_attn.")
        legacy[k] = v
    return {
        "bare original keys (A1111 VAE files)": {**ldm, "loss.logvar": torch.zeros(())},
        "original keys with prefix": {f"first_stage_model.{k}": v for k, v in ldm.items()},
        "diffusers layout": diffusers_layout,
        "diffusers layout with legacy attention names": legacy,
    }


def test_vae_file_layouts_all_load(tiny_models_dir: Path) -> None:
    vae_path = tiny_models_dir / "VAE" / "tiny-vae.safetensors"
    config_dir = _checkpoint(tiny_models_dir, "tiny-sd1").with_suffix(".config")
    reference = load_vae_state_dict(read_state_dict(vae_path), config_dir, device=CPU, dtype=torch.float32)
    checkpoint_vae = load_tiny_model(_checkpoint(tiny_models_dir, "tiny-sd1")).vae
    assert not torch.equal(reference.decoder.conv_out.weight, checkpoint_vae.decoder.conv_out.weight)  # another seed

    for label, sd in _vae_variants(reference).items():
        vae = load_vae_state_dict(sd, config_dir, device=CPU, dtype=torch.float16, source_name=label)
        assert vae.dtype == torch.float16, label
        assert not vae.training and not any(p.requires_grad for p in vae.parameters())
        _assert_same_weights(reference, vae, label)  # compared after casting the reference to fp16


def test_vae_file_errors(tiny_models_dir: Path) -> None:
    config_dir = _checkpoint(tiny_models_dir, "tiny-sd1").with_suffix(".config")
    unet_only = {k: v for k, v in read_state_dict(_checkpoint(tiny_models_dir, "tiny-sd1")).items() if k.startswith("model.")}
    with pytest.raises(ComponentLoadError, match=r"lora\.safetensors holds no VAE weights"):
        load_vae_state_dict(unet_only, config_dir, device=CPU, dtype=torch.float32, source_name="lora.safetensors")
    sd = dict(build_components("sd1")["vae"].state_dict())
    del sd["decoder.conv_out.bias"]
    with pytest.raises(ComponentLoadError, match="1 vae weights are missing") as err:
        load_vae_state_dict(sd, config_dir, device=CPU, dtype=torch.float32, source_name="x.safetensors")
    assert err.value.missing == ["decoder.conv_out.bias"]


# --- full size --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_full_size_sd15_round_trip_and_load_time(tmp_path: Path) -> None:
    """A full-size SD 1.5 checkpoint (random fp16 weights) loads and re-exports bit-identically."""
    meta = full_size_meta_components("sd1")  # also imports everything the load needs before timing
    layout = ldm_export.export_state_dict(meta["unet"], meta["vae"], meta["text_encoder"], family="sd1")
    generator = torch.Generator().manual_seed(0)
    sd = {k: torch.empty(v.shape, dtype=torch.float16).uniform_(-0.1, 0.1, generator=generator) for k, v in layout.items()}
    path = ldm_export.save_single_file(tmp_path / "sd15.safetensors", sd)
    del sd

    start = time.perf_counter()
    state_dict = read_state_dict(path)
    model = load_from_state_dict(state_dict, ModelArch.SD1.config_dir, device=CPU, dtype=torch.float16, vae_dtype=torch.float16)
    elapsed = time.perf_counter() - start
    print(f"\nfull-size SD 1.5 (fp16 file -> fp16 CPU) loaded in {elapsed:.2f} s")

    again = ldm_export.export_state_dict(model.unet, model.vae, model.text_encoder, family="sd1")
    assert set(again) == set(state_dict)
    for key, tensor in state_dict.items():
        assert torch.equal(again[key], tensor), key
