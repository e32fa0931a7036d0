"""The demo model's architecture, size budget, and its export loading as a user's checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tools.demo import model as demo_model


def _meta_parameter_count(config: demo_model.DemoModelConfig) -> int:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with init_empty_weights():
        parts = (UNet2DConditionModel(**demo_model.unet_config(config)), AutoencoderKL(**demo_model.vae_config(config)),
                 CLIPTextModel(CLIPTextConfig(**demo_model.text_config(config))))
    return sum(p.numel() for m in parts for p in m.parameters())


def test_dimensions_and_size_budget() -> None:
    config = demo_model.DemoModelConfig()
    assert config.resolution >= 64 and config.latent_size >= 16 and config.vae_factor == 4
    fp16_bytes = 2 * _meta_parameter_count(config)
    tokenizer_bytes = sum(f.stat().st_size for f in demo_model.TOKENIZER_DIR.iterdir())
    assert fp16_bytes + tokenizer_bytes + 100_000 < demo_model.SIZE_BUDGET_BYTES
    schedule = demo_model.scheduler_config()
    assert (schedule["beta_schedule"], schedule["beta_start"], schedule["beta_end"]) == ("scaled_linear", 0.00085, 0.012)
    assert schedule["num_train_timesteps"] == 1000 and schedule["prediction_type"] == "v_prediction"
    assert schedule["rescale_betas_zero_snr"] and schedule["timestep_spacing"] == "trailing"
    assert demo_model.unet_config(config)["cross_attention_dim"] == demo_model.text_config(config)["hidden_size"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    components = demo_model.build_components(seed=3)
    path = tmp_path_factory.mktemp("demo") / "Stable-diffusion" / "easel-demo.safetensors"
    demo_model.export_model(components, path)
    return path, components


@pytest.mark.slow
def test_export_is_an_original_layout_sd1_checkpoint_under_budget(exported: tuple[Path, dict]) -> None:
    from modules.model_manager.safe_load import read_safetensors_header

    path, components = exported
    assert demo_model.exported_size_bytes(path) < demo_model.SIZE_BUDGET_BYTES
    tensors, _metadata = read_safetensors_header(path)
    keys = list(tensors)
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in keys)
    assert any(k.startswith("first_stage_model.decoder.up.") for k in keys)
    assert any(k.startswith("cond_stage_model.transformer.text_model.encoder.layers.") for k in keys)
    assert {dtype for _shape, dtype in tensors.values()} == {"F16"}
    index = (path.with_suffix(".config") / "model_index.json").read_text()
    assert '"_easel_family": "sd1"' in index

    model = demo_model.load_exported(path)
    assert model.family == "sd1" and model.vae_scale_factor == 4
    original = components["unet"].state_dict()
    for key, value in model.unet.state_dict().items():
        assert torch.equal(value, original[key].half().float()), key
    ids = model.tokenizer("a red circle").input_ids
    assert ids[0] == 49406 and ids[-1] == 49407 and len(ids) == 5  # the real CLIP vocabulary


@pytest.mark.slow
def test_easel_generates_with_the_exported_file(exported: tuple[Path, dict], tmp_path: Path) -> None:
    """Loaded by the model manager from models/Stable-diffusion, as a user's checkpoint is."""
    from modules import cmd_args, shared
    from modules.processing import StableDiffusionProcessingTxt2Img, process_images

    path, _ = exported
    models = tmp_path / "models"
    shutil.copytree(path.parent.parent, models)
    args = cmd_args.build_parser().parse_args(["--data-dir", str(tmp_path / "data"), "--models-dir", str(models)])
    shared.initialize(args, load_settings=False)
    try:
        shared.opts.sd_model_checkpoint = "easel-demo.safetensors"
        shared.opts.live_previews_enable = False
        p = StableDiffusionProcessingTxt2Img(prompt="a red circle", seed=1, steps=2, width=64, height=64,
                                             do_not_save_samples=True, do_not_save_grid=True)
        res = process_images(p)
        assert res.images[0].size == (64, 64)
        assert "Model: easel-demo" in res.infotexts[0]
    finally:
        shared.model_manager.close()


def test_training_noise_schedule_is_the_one_easel_samples_with() -> None:
    """The schedule the trainer uses equals diffusers' (what Easel's samplers build from the shipped
    scheduler config), including the zero-terminal-SNR rescale: the last step is pure noise."""
    from diffusers import DDPMScheduler

    from tools.demo import train

    for config in (demo_model.DemoModelConfig(), demo_model.DemoModelConfig(prediction_type="epsilon",
                                                                            zero_terminal_snr=False)):
        schedule = demo_model.scheduler_config(config)
        ours = train._alphas_cumprod(schedule)
        theirs = DDPMScheduler.from_config(schedule).alphas_cumprod
        if config.zero_terminal_snr:
            assert float(ours[-1]) == 0.0 and float(theirs[-1]) < 1e-6  # diffusers nudges it off 0
            ours, theirs = ours[:-1], theirs[:-1]
        else:
            assert float(ours[-1]) > 0.004  # SD 1.x's own schedule keeps 7% of the signal at the end
        assert torch.allclose(ours, theirs.float(), rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="v-prediction"):
        demo_model.scheduler_config(demo_model.DemoModelConfig(prediction_type="epsilon"))
