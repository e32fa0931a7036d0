"""PNG Info round trip into txt2img fields; Settings Apply persists across a restart."""

from __future__ import annotations

import json

from conftest import screenshot
from helpers import field_value, set_text
from PIL import Image
from PIL.PngImagePlugin import PngInfo

INFOTEXT = ("a castle on a hill, (sunset:1.2)\n"
            "Negative prompt: fog, rain\n"
            "Steps: 17, Sampler: Euler a, Schedule type: Automatic, CFG scale: 4.5, Seed: 424242, Size: 128x96, "
            "Model hash: 0123456789, Model: other, Variation seed: 99, Variation seed strength: 0.3, "
            "Clip skip: 2, Version: v1.10.1")


def test_png_info_send_to_txt2img_fills_the_fields(server, open_page, tmp_path):
    rec = open_page()
    page = rec.page
    png = tmp_path / "with-info.png"
    meta = PngInfo()
    meta.add_text("parameters", INFOTEXT)
    meta.add_text("Comment", "made for a test")
    Image.new("RGB", (128, 96), (40, 90, 160)).save(png, pnginfo=meta)

    page.locator("#tab_pnginfo-button").click()
    page.locator("#pnginfo_image input[type=file]").first.set_input_files(str(png))
    page.wait_for_function("document.querySelector('#pnginfo_html_info').innerText.includes('424242')",
                           timeout=20_000)
    shown = page.locator("#pnginfo_html_info").inner_text()
    assert "Comment" in shown and "made for a test" in shown
    screenshot(page, "pnginfo")

    page.locator("#pnginfo_send_to_txt2img").click()
    page.wait_for_function("(document.querySelector('#txt2img_seed input')||{}).value === '424242'", timeout=20_000)
    assert field_value(page, "txt2img_prompt") == "a castle on a hill, (sunset:1.2)"
    assert field_value(page, "txt2img_neg_prompt") == "fog, rain"
    assert field_value(page, "txt2img_steps") == "17"
    assert field_value(page, "txt2img_cfg_scale") == "4.5"
    assert field_value(page, "txt2img_width") == "128"
    assert field_value(page, "txt2img_height") == "96"
    assert field_value(page, "txt2img_sampling") == "Euler a"
    assert field_value(page, "txt2img_scheduler") == "Automatic"
    assert field_value(page, "txt2img_subseed") == "99"
    assert field_value(page, "txt2img_subseed_strength") == "0.3"
    assert page.locator("#txt2img_subseed_show input").is_checked()
    # Clip skip differs from the setting: offered as an override. The checkpoint is not swapped
    # (disable_weights_auto_swap is on by default).
    overrides = page.locator("#txt2img_override_settings").inner_text()
    assert "Clip skip: 2" in overrides and "Model hash" not in overrides
    assert page.locator("#tab_txt2img").is_visible()
    screenshot(page, "pnginfo-sent-to-txt2img")

    page.locator("#tab_pnginfo-button").click()
    page.locator("#pnginfo_send_to_img2img").click()
    page.wait_for_function("(document.querySelector('#img2img_seed input')||{}).value === '424242'", timeout=20_000)
    assert page.locator("#img2img_image img").count() >= 1
    rec.check_clean()


def test_settings_apply_persists_across_restart(server, open_page):
    rec = open_page()
    page = rec.page
    page.locator("#tab_settings-button").click()
    set_text(page, "setting_samples_filename_pattern", "[seed]-[steps]-custom")
    page.locator("#settings_submit").click()
    page.wait_for_function("document.querySelector('#settings_result').innerText.includes('samples_filename_pattern')",
                           timeout=20_000)
    config = json.loads((server.data_dir / "config.json").read_text())
    assert config["samples_filename_pattern"] == "[seed]-[steps]-custom"
    ui_config = json.loads((server.data_dir / "ui-config.json").read_text())
    assert ui_config["txt2img/Sampling steps/maximum"] == 150
    assert ui_config["img2img/Denoising strength/value"] == 0.75

    server.restart()
    rec2 = open_page()
    rec2.page.locator("#tab_settings-button").click()
    assert field_value(rec2.page, "setting_samples_filename_pattern") == "[seed]-[steps]-custom"
    assert json.loads((server.data_dir / "config.json").read_text())["samples_filename_pattern"] == \
        "[seed]-[steps]-custom"
    screenshot(rec2.page, "settings")
    rec.check_clean()
    rec2.check_clean()
