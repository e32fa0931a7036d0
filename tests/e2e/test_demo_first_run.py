"""A fresh install with no checkpoint of its own: the shipped demo model is the one in use, the size
sliders start at its 64x64 (not A1111's 512x512, which ui-config.json still records), and Generate
draws the prompted colours. Choosing another checkpoint puts the configured size back; choosing the
demo model again brings its size back."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tiny_models
from conftest import screenshot
from helpers import field_value, generate, images_under, parameters_of, set_number, set_text, wait_for_new_image
from PIL import Image
from server import EaselServer

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "Stable-diffusion" / "easel-demo.safetensors"
TIMEOUT = 20_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EaselServer]:
    data = tmp_path_factory.mktemp("easel-first-run")
    folder = data / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    os.symlink(SHIPPED, folder / SHIPPED.name)
    os.symlink(SHIPPED.with_suffix(".config"), folder / "easel-demo.config", target_is_directory=True)
    srv = EaselServer(data)  # no config.json, no ui-config.json: what a first start sees
    srv.start()
    yield srv
    srv.stop()


def _wait_value(page: object, elem_id: str, value: str) -> None:
    page.wait_for_function(
        "([id, v]) => { const box = document.querySelector('#' + id + ' input[type=number]');"
        " return box !== null && box.value === v; }", arg=[elem_id, value], timeout=TIMEOUT)


def _wait_sizes(page: object, value: str) -> None:
    """Both tabs' width and height show `value` (a tab's controls are in the page once it is shown)."""
    for tab in ("img2img", "txt2img"):
        page.locator(f"#tab_{tab}-button").click()
        for side in ("width", "height"):
            _wait_value(page, f"{tab}_{side}", value)


def _choose_checkpoint(page: object, title_start: str) -> None:
    page.locator("#setting_sd_model_checkpoint input").first.click()
    page.locator("[role=option]", has_text=title_start).first.click()


def test_first_run_draws_with_the_demo_model_at_its_size(server: EaselServer, open_page) -> None:
    rec = open_page()
    page = rec.page
    _wait_sizes(page, "64")
    assert "easel-demo" in field_value(page, "setting_sd_model_checkpoint")
    ui_config = json.loads((server.data_dir / "ui-config.json").read_text())
    assert ui_config["txt2img/Width/value"] == 512  # the demo's size is not saved as a default

    set_text(page, "txt2img_prompt", "a big red circle on a blue background")
    set_number(page, "txt2img_seed", 5)
    outputs = server.data_dir / "outputs"
    before = images_under(outputs)
    generate(page, "txt2img")
    path = wait_for_new_image(outputs, before, server=server)
    shot = screenshot(page, "demo-first-run")
    if os.environ.get("EASEL_UPDATE_SCREENSHOT"):  # refresh the README's picture on request only
        shutil.copy(shot, REPO / "docs" / "screenshot.png")
    assert "Seed: 5, Size: 64x64" in parameters_of(path) and "Model: easel-demo" in parameters_of(path)
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    red = (pixels[:, 0] > 150) & (pixels[:, 1] < 100) & (pixels[:, 2] < 100)
    blue = (pixels[:, 2] > 150) & (pixels[:, 0] < 100)
    assert red.mean() > 0.03 and blue.mean() > 0.3, (red.mean(), blue.mean())

    # Another checkpoint (added and found by the refresh button) gets the configured 512 back.
    tiny_models.write_single_file(server.data_dir / "models" / "Stable-diffusion", "tiny-sd1", "sd1", 0)
    page.locator("#refresh_sd_model_checkpoint").click()
    page.wait_for_timeout(1000)
    _choose_checkpoint(page, "tiny-sd1")
    _wait_sizes(page, "512")
    # The page scripts' `opts` follow the quicksettings choice.
    page.wait_for_function("opts.sd_model_checkpoint === 'tiny-sd1.safetensors'", timeout=TIMEOUT)
    _choose_checkpoint(page, "easel-demo")
    _wait_sizes(page, "64")
    rec.check_clean()
