"""txt2img in the browser: generate, infotext, interrupt, two tabs at once, the ↙ button."""

from __future__ import annotations

import os
import re
import time
import zipfile
from pathlib import Path

from conftest import screenshot
from helpers import (
    field_value,
    generate,
    images_under,
    parameters_of,
    set_number,
    set_text,
    wait_for_new_image,
    wait_generation_done,
)

SERVER_ARGS = ["--api"]
# A stand-in xdg-open, for the 📂 button.
SERVER_ENV = {"PATH": f"{Path(__file__).parent / 'data' / 'fake-bin'}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_generate_saves_png_with_infotext(server, open_page):
    rec = open_page()
    page = rec.page
    # ui-config.json set 64x64 and 4 steps for the tiny model; the page must show them.
    assert field_value(page, "txt2img_width") == "64"
    assert field_value(page, "txt2img_steps") == "4"
    page.wait_for_selector("#model_status .model-status-ready", timeout=60_000)

    set_text(page, "txt2img_prompt", "a red apple on a table")
    set_text(page, "txt2img_neg_prompt", "blurry")
    set_number(page, "txt2img_seed", 1234)
    set_number(page, "txt2img_cfg_scale", 6.5)
    page.wait_for_function("document.querySelector('#txt2img_token_counter').innerText.includes('/75')")
    counter = page.locator("#txt2img_token_counter").inner_text()
    assert re.match(r"^\d+/75$", counter.strip()) and counter.strip() != "0/75"

    outputs = server.data_dir / "outputs" / "txt2img-images"
    before = images_under(outputs)
    generate(page, "txt2img")
    page.wait_for_selector("#txt2img_gallery img", timeout=30_000)

    saved = wait_for_new_image(outputs, before, server=server)
    text = parameters_of(saved)
    lines = text.split("\n")
    assert lines[0] == "a red apple on a table"
    assert lines[1] == "Negative prompt: blurry"
    assert "Steps: 4, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, Size: 64x64" in lines[2]
    assert "Model: tiny-sd1" in lines[2]
    shown = page.locator("#html_info_txt2img").inner_text()
    assert "Seed: 1234" in shown and "a red apple on a table" in shown
    assert (server.data_dir / "params.txt").read_text(encoding="utf8") == text

    page.wait_for_timeout(300)
    screenshot(page, "txt2img-after-generate")
    rec.check_clean()


def test_paste_button_reads_last_generation(server, open_page):
    page = open_page().page
    if not (server.data_dir / "params.txt").exists():
        set_text(page, "txt2img_prompt", "a lighthouse")
        set_number(page, "txt2img_seed", 77)
        generate(page, "txt2img")
        page.reload()
        page.wait_for_selector("#txt2img_generate")
    last = (server.data_dir / "params.txt").read_text(encoding="utf8")
    seed = re.search(r"Seed: (\d+)", last).group(1)
    page.locator("#txt2img_paste").click()
    page.wait_for_function(f"document.querySelector('#txt2img_seed input').value === '{seed}'", timeout=10_000)
    assert field_value(page, "txt2img_prompt") == last.split("\n")[0]


def test_interrupt_stops_a_long_job(server, open_page):
    rec = open_page()
    page = rec.page
    set_text(page, "txt2img_prompt", "a long job")
    set_number(page, "txt2img_steps", 150)
    set_number(page, "txt2img_width", 256)
    set_number(page, "txt2img_height", 256)
    outputs = server.data_dir / "outputs" / "txt2img-images"
    before = images_under(outputs)
    page.locator("#txt2img_generate").click()
    page.wait_for_function("(document.querySelector('#txt2img_progress')||{innerText:''}).innerText.includes('Step')",
                           timeout=60_000)
    progress_text = page.locator("#txt2img_progress").inner_text()
    assert re.search(r"Step \d+/150", progress_text), progress_text
    assert "%" in progress_text
    screenshot(page, "txt2img-progress")
    started = time.time()
    page.locator("#txt2img_interrupt").click()
    wait_generation_done(page, "txt2img", timeout=30_000)
    assert time.time() - started < 20
    time.sleep(0.5)
    assert images_under(outputs) == before, "an interrupted first image must not be saved"
    assert "Interrupted" in page.locator("#html_log_txt2img").inner_text()
    rec.check_clean()


def test_two_tabs_generate_at_once(server, open_page):
    one, two = open_page(), open_page()
    for rec, prompt, seed in ((one, "first tab prompt", 111), (two, "second tab prompt", 222)):
        set_text(rec.page, "txt2img_prompt", prompt)
        set_number(rec.page, "txt2img_seed", seed)
        set_number(rec.page, "txt2img_steps", 12)
    one.page.locator("#txt2img_generate").click()
    two.page.locator("#txt2img_generate").click()
    for rec, prompt, seed in ((one, "first tab prompt", 111), (two, "second tab prompt", 222)):
        wait_generation_done(rec.page, "txt2img")
        rec.page.wait_for_selector("#txt2img_gallery img", timeout=30_000)
        info = rec.page.locator("#html_info_txt2img").inner_text()
        assert prompt in info and f"Seed: {seed}" in info, info
        rec.check_clean()


def test_generate_forever_until_cancelled(server, open_page):
    rec = open_page()
    page = rec.page
    page.wait_for_selector("#model_status .model-status-ready", timeout=60_000)
    set_text(page, "txt2img_prompt", "again and again")
    outputs = server.data_dir / "outputs" / "txt2img-images"
    before = images_under(outputs)

    def new_count() -> int:
        return len([p for p in images_under(outputs) if p not in before])

    # Right-click on Generate opens the page's menu (not the browser's).
    page.locator("#txt2img_generate").click(button="right")
    menu = page.locator("#context-menu")
    assert menu.locator("li").all_inner_texts() == ["Generate forever", "Cancel generate forever"]
    screenshot(page, "generate-forever-menu", full_page=False)
    menu.get_by_text("Generate forever", exact=True).click()
    assert menu.count() == 0
    # One job after another, each started once the previous one ended.
    deadline = time.time() + 120
    while new_count() < 3 and time.time() < deadline:
        time.sleep(0.2)
    assert new_count() >= 3, f"{new_count()} images while generating forever\n{server.read_log()[-2000:]}"

    # Generate or Interrupt, whichever shows now: both have the menu.
    page.locator("#txt2img_generate_box button:visible").first.click(button="right")
    page.locator("#context-menu").get_by_text("Cancel generate forever", exact=True).click()
    time.sleep(3)  # a job already started ends normally
    wait_generation_done(page, "txt2img")
    settled = new_count()
    time.sleep(5)
    assert new_count() == settled, "Generate forever went on after it was cancelled"

    # Extension scripts add and remove entries of their own.
    page.evaluate("window.menuId = appendContextMenuOption('#txt2img_prompt', 'Say hi', () => { window.saidHi = 1; })")
    page.locator("#txt2img_prompt textarea").click(button="right")
    assert page.locator("#context-menu li").all_inner_texts() == ["Say hi"]
    page.locator("#context-menu").get_by_text("Say hi", exact=True).click()
    assert page.evaluate("window.saidHi") == 1
    page.evaluate("removeContextMenuOption(window.menuId)")
    page.locator("#txt2img_prompt textarea").click(button="right")
    assert page.locator("#context-menu").count() == 0
    rec.check_clean()


def test_save_and_zip_buttons(server, open_page):
    rec = open_page()
    page = rec.page
    set_text(page, "txt2img_prompt", "a saved boat")
    set_number(page, "txt2img_seed", 40)
    set_number(page, "txt2img_batch_size", 2)
    generate(page, "txt2img")
    page.wait_for_function("document.querySelectorAll('#txt2img_gallery .thumbnail-item').length === 3",
                           timeout=30_000)  # the grid, then the two pictures
    folder = server.data_dir / "log" / "images"

    # Nothing selected: Save writes all three, each with its infotext, and lists them for download.
    page.locator("#save_txt2img").click()
    _wait_saved(page)
    saved = sorted(folder.glob("*.png"))
    assert len(saved) == 3, saved
    assert [parameters_of(p).split("\n")[0] for p in saved] == ["a saved boat"] * 3
    assert "Seed: 41" in parameters_of(saved[2])
    assert len((folder / "log.csv").read_text(encoding="utf8").strip().splitlines()) == 4  # header + 3
    assert page.locator("#download_files_txt2img").is_visible()
    assert page.locator("#download_files_txt2img").inner_text().count(".png") == 3

    # The second picture selected: Zip saves that one and packs it.
    page.locator("#txt2img_gallery .thumbnail-item").nth(2).click()
    page.wait_for_function("document.querySelector('#html_info_txt2img').innerText.includes('Seed: 41')",
                           timeout=10_000)
    page.locator("#save_zip_txt2img").click()
    _wait_saved(page, ".zip")
    screenshot(page, "txt2img-saved")
    archives = list(folder.glob("*.zip"))
    assert len(archives) == 1 and len(list(folder.glob("*.png"))) == 4
    with zipfile.ZipFile(archives[0]) as archive:
        (name,) = archive.namelist()
        assert "Seed: 41" in parameters_of(folder / name)

    # 📂 shows the tab's output folder in the file manager (here a stand-in that notes the folder).
    outputs = server.data_dir / "outputs" / "txt2img-images"
    page.locator("#txt2img_open_folder").click()
    opened = outputs / "opened-by-xdg-open.txt"
    deadline = time.time() + 10
    while not opened.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert opened.read_text().strip() == str(outputs)
    rec.check_clean()


def _wait_saved(page, text: str = "Saved:") -> None:
    page.wait_for_function("([t]) => (document.querySelector('#html_log_txt2img') || {innerText: ''})"
                           ".innerText.includes(t)", arg=[text], timeout=30_000)
