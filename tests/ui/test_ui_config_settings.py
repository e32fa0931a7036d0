"""ui-config.json defaults, the settings page's value handling, and the built page's element ids."""

from __future__ import annotations

import json

import gradio as gr
import pytest

from modules import cmd_args, shared
from modules.ui.ui_config import UiConfig


def test_ui_config_records_defaults_and_applies_overrides(tmp_path):
    path = tmp_path / "ui-config.json"
    path.write_text(json.dumps({"txt2img/Sampling steps/value": 30, "txt2img/Width/maximum": 1024,
                                "txt2img/Sampler/value": "no such sampler"}))
    with gr.Blocks():
        with gr.Tab("txt2img") as tab:
            steps = gr.Slider(1, 150, value=20, step=1, label="Sampling steps")
            width = gr.Slider(64, 2048, value=512, step=8, label="Width")
            sampler = gr.Dropdown(["Euler", "DPM++ 2M"], value="DPM++ 2M", label="Sampler")
            gr.Textbox(visible=False, label="hidden")
        cfg = UiConfig(path)
        cfg.apply_tree("txt2img", tab)
        cfg.save()
    assert steps.value == 30 and width.maximum == 1024
    assert sampler.value == "DPM++ 2M"  # not a choice: the file's value is refused
    data = json.loads(path.read_text())
    assert data["txt2img/Width/value"] == 512 and data["txt2img/Width/step"] == 8
    assert "txt2img/hidden/value" not in data
    assert data["txt2img/Sampling steps/value"] == 30


def test_settings_cast_and_apply_save_config(instance):
    from modules.ui import settings

    assert settings.cast_setting("jpeg_quality", 90.0) == 90
    assert settings.cast_setting("samples_save", 1) is True
    assert settings.cast_setting("initial_noise_multiplier", "1.25") == 1.25
    message, changed = settings.apply_settings(["samples_format", "jpeg_quality", "samples_save"],
                                               ["jpg", 55.0, True])
    assert changed == ["samples_format", "jpeg_quality"]
    assert "2 settings changed" in message
    saved = json.loads((instance / "config.json").read_text())
    assert saved["samples_format"] == "jpg" and saved["jpeg_quality"] == 55


@pytest.mark.slow
def test_page_has_a1111_element_ids(instance):
    from modules.ui import ui

    demo = ui.create_ui(cmd_args.parse_args(["--data-dir", str(instance), "--api"]))
    config = demo.get_config_file()
    ids = {c["props"].get("elem_id") for c in config["components"]}
    wanted = ["txt2img_width", "txt2img_height", "img2img_width", "img2img_height", "img2img_image", "img2maskimg",
              "img_inpaint_base", "img_inpaint_mask", "txt2img_prompt", "txt2img_neg_prompt", "txt2img_generate",
              "img2img_prompt", "img2img_generate", "txt2img_gallery", "txt2img_interrupt", "txt2img_skip",
              "txt2img_steps", "txt2img_sampling", "txt2img_scheduler", "txt2img_cfg_scale", "txt2img_seed",
              "txt2img_batch_count", "txt2img_batch_size", "generation_info_txt2img", "html_info_txt2img",
              "tab_txt2img", "tab_img2img", "tab_pnginfo", "tab_settings", "setting_sd_model_checkpoint",
              "setting_samples_format", "footer"]
    assert not [w for w in wanted if w not in ids]
    # No checkpoint in this data folder: the top bar says where to put one.
    status = next(c for c in config["components"] if c["props"].get("elem_id") == "model_status")
    assert str(shared.paths.sd_models_dir) in status["props"]["value"]
    # First start writes ui-config.json with A1111's defaults.
    ui_config = json.loads((instance / "ui-config.json").read_text())
    assert ui_config["txt2img/Sampling steps/value"] == 20
    assert ui_config["txt2img/Sampling method/value"] == "DPM++ 2M"
    assert ui_config["img2img/Denoising strength/value"] == 0.75
    assert ui_config["img2img/Mask blur/value"] == 4
    assert ui_config["img2img/Masked content/value"] == "original"
    assert ui_config["img2img/Only masked padding, pixels/value"] == 32
