"""Scripts in the txt2img and img2img tabs, driven through the page: the built-in selectable scripts
(X/Y/Z plot, Prompt matrix, Prompts from file or textbox, SD upscale) and the test extension
ext_ui_script (an always-visible accordion whose value reaches the hooks, and controls it attaches
to Easel's widgets with before/after_component). One server for the whole module.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import make_data_dir, screenshot
from helpers import generate, images_under, parameters_of, set_number, set_text, wait_for_new_image
from PIL import Image
from server import EaselServer

EXTENSION = Path(__file__).resolve().parents[1] / "extensions" / "data" / "ext_ui_script"
TIMEOUT = 30_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EaselServer]:
    data = make_data_dir(tmp_path_factory.mktemp("easel-scripts-ui"))
    shutil.copytree(EXTENSION, data / "extensions" / "ext_ui_script")
    srv = EaselServer(data)
    srv.write_ui_config()
    srv.start()
    yield srv
    srv.stop()


def choose_script(page: object, tab: str, title: str) -> None:
    """Pick `title` in the tab's Script dropdown and wait for its controls to show."""
    page.locator(f"#{tab}_script_container #script_list input").click()
    page.locator("[role=option]", has_text=title).first.click()
    page.wait_for_function(
        "([tab, title]) => document.querySelector('#' + tab + '_script_container #script_list input').value === title",
        arg=[tab, title], timeout=TIMEOUT)


def ready_page(open_page) -> object:  # type: ignore[no-untyped-def]
    rec = open_page()
    rec.page.wait_for_selector("#model_status .model-status-ready", timeout=60_000)
    return rec


def new_images(folder: Path, before: list[Path], count: int, server: EaselServer) -> list[Path]:
    """The images saved under `folder` since `before`, once there are `count` of them."""
    deadline = time.time() + 30
    while True:
        new = [p for p in images_under(folder) if p not in before]
        if len(new) >= count or time.time() > deadline:
            assert len(new) == count, f"{len(new)} new images under {folder}, expected {count}\n{server.read_log()[-2000:]}"
            return new
        time.sleep(0.1)


def test_page_shows_script_list_extension_accordion_and_attachments(server, open_page):
    rec = ready_page(open_page)
    page = rec.page
    dropdown = page.locator("#txt2img_script_container #script_list input")
    assert dropdown.input_value() == "None"
    # Selectable scripts' controls stay hidden until chosen.
    assert page.locator("#script_txt2img_xyz_plot_x_values").count() == 0 or \
        not page.locator("#script_txt2img_xyz_plot_x_values").is_visible()
    # The extension's always-visible accordion, and what it attached through the component hooks.
    assert page.locator("#script_txt2img_ui_script_enabled").is_visible()
    assert page.locator("#ui_script_button").is_visible()  # Script.on_after_component(elem_id="txt2img_generate")
    assert "UI script saw CFG Scale" in page.locator("#ui_script_after_txt2img_cfg").inner_text()
    assert page.locator("#ui_script_callback_marker").count() == 1  # script_callbacks.on_before_component
    # The hook that raises was reported by name and skipped; the page was built all the same.
    log = server.read_log()
    assert "ext_ui_script" in log and "ui script hook fails on purpose" in log
    page.locator("#script_txt2img_ui_script_enabled .label-wrap").click()
    page.locator("#script_txt2img_ui_script_text").wait_for(state="visible", timeout=TIMEOUT)
    choose_script(page, "txt2img", "Prompt matrix")
    page.locator("#script_txt2img_prompt_matrix_put_at_start").wait_for(state="visible", timeout=TIMEOUT)
    choose_script(page, "txt2img", "X/Y/Z plot")
    page.locator("#script_txt2img_xyz_plot_x_values").wait_for(state="visible", timeout=TIMEOUT)
    page.locator("#script_txt2img_prompt_matrix_put_at_start").wait_for(state="hidden", timeout=TIMEOUT)
    page.wait_for_timeout(300)
    screenshot(page, "scripts-ui-txt2img")
    rec.check_clean()


def test_xyz_plot_grid_and_always_on_accordion_value(server, open_page):
    page = ready_page(open_page).page
    set_text(page, "txt2img_prompt", "a small boat")
    page.locator("#script_txt2img_ui_script_enabled .label-wrap").click()
    set_text(page, "script_txt2img_ui_script_text", "from-the-accordion")
    choose_script(page, "txt2img", "X/Y/Z plot")
    set_text(page, "script_txt2img_xyz_plot_x_values", "1,2")
    samples = server.data_dir / "outputs" / "txt2img-images"
    grids = server.data_dir / "outputs" / "txt2img-grids"
    before, before_grids = images_under(samples), images_under(grids)
    generate(page, "txt2img")

    shown = page.locator("#html_info_txt2img").inner_text()
    assert "Script: X/Y/Z plot" in shown and "X Type: Seed" in shown and "X Values:" in shown
    assert "UI script: from-the-accordion" in shown
    page.wait_for_selector("#txt2img_gallery img", timeout=TIMEOUT)
    grid_path = wait_for_new_image(grids, before_grids, server=server)
    grid_text = parameters_of(grid_path)
    assert "Script: X/Y/Z plot" in grid_text and "X Type: Seed" in grid_text and re.search(r"X Values: \"?1, 2", grid_text)
    with Image.open(grid_path) as grid:
        assert grid.width >= 2 * 64 and grid.height > 64
    cells = new_images(samples, before, 2, server)
    seeds = sorted(re.search(r"Seed: (\d+)", parameters_of(p)).group(1) for p in cells)
    assert seeds == ["1", "2"]
    assert all("UI script: from-the-accordion" in parameters_of(p) for p in cells)


def test_prompt_matrix_four_images_and_a_grid(server, open_page):
    page = ready_page(open_page).page
    set_text(page, "txt2img_prompt", "a cat|red|blue")
    set_number(page, "txt2img_seed", 9)
    choose_script(page, "txt2img", "Prompt matrix")
    samples = server.data_dir / "outputs" / "txt2img-images"
    grids = server.data_dir / "outputs" / "txt2img-grids"
    before, before_grids = images_under(samples), images_under(grids)
    generate(page, "txt2img")
    prompts = sorted(parameters_of(p).split("\n")[0] for p in new_images(samples, before, 4, server))
    assert prompts == ["a cat", "a cat, blue", "a cat, red", "a cat, red, blue"]
    grid_path = wait_for_new_image(grids, before_grids, server=server)
    with Image.open(grid_path) as grid:
        assert grid.width > 2 * 64 and grid.height > 2 * 64  # 2x2 cells plus the legend
    # Grid first, then the four pictures.
    page.wait_for_function("document.querySelectorAll('#txt2img_gallery .thumbnail-item').length === 5",
                           timeout=TIMEOUT)


def test_prompts_from_textbox_lines_with_their_own_seed(server, open_page):
    page = ready_page(open_page).page
    set_number(page, "txt2img_seed", 11)
    choose_script(page, "txt2img", "Prompts from file or textbox")
    set_text(page, "script_txt2img_prompts_from_file_or_textbox_prompt_txt",
             'a red house\n--prompt "a green tree" --seed 3')
    samples = server.data_dir / "outputs" / "txt2img-images"
    before = images_under(samples)
    generate(page, "txt2img")
    saved = [parameters_of(p) for p in new_images(samples, before, 2, server)]
    by_prompt = {text.split("\n")[0]: text for text in saved}
    assert set(by_prompt) == {"a red house", "a green tree"}
    assert "Seed: 11," in by_prompt["a red house"] and "Seed: 3," in by_prompt["a green tree"]


def test_sd_upscale_in_img2img(server, open_page, tmp_path):
    page = ready_page(open_page).page
    source = tmp_path / "input.png"
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype("uint8")).save(source)
    page.locator("#tab_img2img-button").click()
    page.locator("#img2img_image input[type=file]").first.set_input_files(str(source))
    page.locator("#img2img_image img").first.wait_for(state="visible", timeout=TIMEOUT)
    set_text(page, "img2img_prompt", "a mosaic")
    set_number(page, "img2img_seed", 4)
    choose_script(page, "img2img", "SD upscale")
    set_number(page, "script_sd_upscale_overlap", 16)
    page.locator("#script_sd_upscale_upscaler_index label", has_text="Lanczos").click()
    samples = server.data_dir / "outputs" / "img2img-images"
    before = images_under(samples)
    generate(page, "img2img")
    # The extension's after_component hook ran for this tab's own CFG slider too.
    assert "UI script saw CFG Scale" in page.locator("#ui_script_after_img2img_cfg").inner_text()
    saved = wait_for_new_image(samples, before, server=server)
    with Image.open(saved) as im:
        assert im.size == (128, 128)  # Scale Factor 2 (the default) of the 64x64 input
    text = parameters_of(saved)
    assert "SD upscale upscaler: Lanczos" in text and "SD upscale overlap: 16" in text
