"""Extra networks, styles and attention editing in the browser: the card pages list LoRAs, embeddings
and checkpoints, search filters them, clicks insert tags, previews are served only for model files,
Ctrl+Up/Down edits weights, and styles are applied to a generation and saved to styles.csv."""

from __future__ import annotations

import csv
import json
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import ARTIFACTS, make_data_dir, screenshot
from helpers import field_value, generate, images_under, parameters_of, set_number, set_text, wait_for_new_image
from PIL import Image
from safetensors.torch import save_file
from server import REPO, EaselServer

LORA = "tiny-detail"
NOTED_LORA = "tiny-noted"
EMBEDDING = "tinyemb"


def write_networks(data: Path) -> None:
    """Two tiny LoRAs for tiny-sd1 (one with a preview, one with the user's notes) and an embedding."""
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO / "tests" / "networks"))
    try:
        import tiny_models
        from lora_factory import kohya_state_dict, lora_tensors, save_lora
    finally:
        del sys.path[:2]
    parts = tiny_models.build_components("sd1", 0)
    model = SimpleNamespace(unet=parts["unet"], text_encoder=parts["text_encoder"], text_encoder_2=None)
    loras = data / "models" / "Lora"
    save_lora(loras / f"{LORA}.safetensors", kohya_state_dict(lora_tensors(model, seed=1, scale=0.2), alpha=4.0),
              metadata={"ss_output_name": LORA, "ss_network_module": "networks.lora", "ss_network_dim": "4",
                        "ss_base_model_version": "sd_v1",
                        "ss_tag_frequency": json.dumps({"set": {"red hat": 5, "blue sky": 2}})})
    Image.new("RGB", (96, 128), (200, 60, 40)).save(loras / f"{LORA}.png")
    save_lora(loras / f"{NOTED_LORA}.safetensors", kohya_state_dict(lora_tensors(model, seed=2, scale=0.2)))
    (loras / f"{NOTED_LORA}.json").write_text(json.dumps({"activation text": "noted style",
                                                          "preferred weight": 0.7}))
    embeddings = data / "embeddings"
    embeddings.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": torch.randn(2, 32)}, str(embeddings / f"{EMBEDDING}.safetensors"))
    (data / "styles.csv").write_text("name,prompt,negative_prompt\nGolden,\"golden hour light\",\"dark\"\n",
                                     encoding="utf8")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[EaselServer]:
    data = make_data_dir(tmp_path_factory.mktemp("easel-networks"), inpaint=True)
    write_networks(data)
    srv = EaselServer(data)
    srv.write_ui_config()
    srv.start()
    yield srv
    srv.stop()
    if "Traceback" in srv.read_log():
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(srv.log_path, ARTIFACTS / "test_extra_networks-server.log")


def prompt_value(page: object, tab: str = "txt2img") -> str:
    return page.locator(f"#{tab}_prompt textarea").input_value()


def open_networks(page: object, tab: str, page_id: str) -> None:
    page.locator(f"#{tab}_settings_tabs button[role=tab]", has_text={
        "lora": "Lora", "textual_inversion": "Textual Inversion", "checkpoints": "Checkpoints"}[page_id]).click()
    page.wait_for_selector(f"#{tab}_{page_id}_cards .extra-network-card", timeout=15_000)


def visible_names(page: object, tab: str, page_id: str) -> list[str]:
    return page.eval_on_selector_all(
        f"#{tab}_{page_id}_cards .extra-network-card",
        "cards => cards.filter(c => c.style.display !== 'none').map(c => c.dataset.name)")


def test_cards_search_insert_and_preview(server, open_page):
    rec = open_page()
    page = rec.page
    open_networks(page, "txt2img", "lora")
    assert visible_names(page, "txt2img", "lora") == [LORA, NOTED_LORA]
    card = page.locator(f"#txt2img_lora_cards .extra-network-card[data-name='{LORA}']")
    tooltip = card.get_attribute("title")
    assert "Network: networks.lora" in tooltip and "Base: SD1" in tooltip and "red hat" in tooltip

    # The preview picture loads (the browser got it from the thumb route).
    page.wait_for_function(
        f"(() => {{ const i = document.querySelector(\"#txt2img_lora_cards [data-name='{LORA}'] img\");"
        " return i && i.complete && i.naturalWidth === 96; })()", timeout=10_000)
    src = card.locator("img").get_attribute("src")
    assert src.startswith("/sd_extra_networks/thumb?filename=")

    # Search filters by name.
    search = page.locator("#txt2img_lora_extra_search textarea, #txt2img_lora_extra_search input").first
    search.fill("noted")
    assert visible_names(page, "txt2img", "lora") == [NOTED_LORA]
    search.fill("")
    assert visible_names(page, "txt2img", "lora") == [LORA, NOTED_LORA]
    screenshot(page, "extra-networks-lora", full_page=False)

    # Clicking inserts the tag; the noted LoRA brings its weight and activation text; a second click removes.
    set_text(page, "txt2img_prompt", "")
    card.click()
    assert prompt_value(page) == f"<lora:{LORA}:1>"
    page.locator(f"#txt2img_lora_cards .extra-network-card[data-name='{NOTED_LORA}']").click()
    assert prompt_value(page) == f"<lora:{LORA}:1> <lora:{NOTED_LORA}:0.7> noted style"
    page.locator(f"#txt2img_lora_cards .extra-network-card[data-name='{NOTED_LORA}']").click()
    assert prompt_value(page) == f"<lora:{LORA}:1>"

    open_networks(page, "txt2img", "textual_inversion")
    assert visible_names(page, "txt2img", "textual_inversion") == [EMBEDDING]
    page.locator(f"#txt2img_textual_inversion_cards .extra-network-card[data-name='{EMBEDDING}']").click()
    assert prompt_value(page) == f"<lora:{LORA}:1> {EMBEDDING}"

    open_networks(page, "txt2img", "checkpoints")
    assert sorted(visible_names(page, "txt2img", "checkpoints")) == ["tiny-sd1", "tiny-sd1-inpaint"]
    screenshot(page, "extra-networks-checkpoints", full_page=False)
    # A checkpoint card switches the checkpoint as the top bar's dropdown does (and back again).
    config = server.data_dir / "config.json"
    for name in ("tiny-sd1-inpaint", "tiny-sd1"):
        page.locator(f"#txt2img_checkpoints_cards .extra-network-card[data-name='{name}']").click()
        page.wait_for_function(
            f"document.querySelector('#setting_sd_model_checkpoint input').value === '{name}.safetensors'",
            timeout=10_000)
        assert json.loads(config.read_text())["sd_model_checkpoint"] == f"{name}.safetensors"
        page.wait_for_function(f"opts.sd_model_checkpoint === '{name}.safetensors'", timeout=10_000)  # page scripts see it
    rec.check_clean()

    # The route serves the preview beside a listed file and nothing else.
    preview = server.data_dir / "models" / "Lora" / f"{LORA}.png"
    with urllib.request.urlopen(server.url + src, timeout=10) as r:
        assert r.status == 200 and r.headers["content-type"] == "image/png"
    outside = server.data_dir / "outside.png"
    Image.new("RGB", (4, 4)).save(outside)
    for path in (outside, server.data_dir / "config.json", Path(str(preview.parent / ".." / "Lora" / "x.png"))):
        url = f"{server.url}/sd_extra_networks/thumb?filename={urllib.parse.quote(str(path))}"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url, timeout=10)
        assert err.value.code in (403, 404)


def test_refresh_lists_new_lora(server, open_page):
    page = open_page().page
    open_networks(page, "txt2img", "lora")
    loras = server.data_dir / "models" / "Lora"
    shutil.copy(loras / f"{LORA}.safetensors", loras / "added-later.safetensors")
    try:
        page.locator("#txt2img_lora_extra_refresh").click()
        page.wait_for_selector("#txt2img_lora_cards .extra-network-card[data-name='added-later']", timeout=15_000)
    finally:
        (loras / "added-later.safetensors").unlink()


def test_ctrl_up_down_edits_weights(server, open_page):
    page = open_page().page
    box = page.locator("#txt2img_prompt textarea")
    box.fill("a red cat, sitting")
    box.evaluate("b => b.setSelectionRange(2, 9)")  # "red cat"
    box.press("Control+ArrowUp")
    assert box.input_value() == "a (red cat:1.1), sitting"
    box.press("Control+ArrowUp")
    assert box.input_value() == "a (red cat:1.2), sitting"
    box.press("Control+ArrowDown")
    box.press("Control+ArrowDown")
    assert box.input_value() == "a red cat, sitting"
    # No selection: the word under the cursor.
    box.evaluate("b => b.setSelectionRange(13, 13)")  # inside "sitting"
    box.press("Control+ArrowDown")
    assert box.input_value() == "a red cat, (sitting:0.9)"
    # Cursor inside a weighted group changes that weight.
    box.evaluate("b => b.setSelectionRange(14, 14)")
    box.press("Control+ArrowUp")
    assert box.input_value() == "a red cat, sitting"
    # Inside a LoRA tag: its weight.
    box.fill("<lora:x:0.8> cat")
    box.evaluate("b => b.setSelectionRange(3, 3)")
    box.press("Control+ArrowUp")
    assert box.input_value() == "<lora:x:0.9> cat"
    neg = page.locator("#txt2img_neg_prompt textarea")
    neg.fill("blurry")
    neg.evaluate("b => b.setSelectionRange(0, 6)")
    neg.press("Control+ArrowUp")
    assert neg.input_value() == "(blurry:1.1)"
    # Gradio saw the edit: the token counter follows the new text.
    page.wait_for_function("document.querySelector('#txt2img_negative_token_counter').innerText.trim() !== '0/75'")


def test_styles_apply_to_generation_and_save(server, open_page):
    rec = open_page()
    page = rec.page
    page.wait_for_selector("#model_status .model-status-ready", timeout=60_000)
    set_text(page, "txt2img_prompt", "a quiet harbour")
    set_number(page, "txt2img_seed", 5)
    page.locator("#txt2img_styles input").click()
    page.locator("[role=option]", has_text="Golden").first.click()
    page.keyboard.press("Escape")
    # Close the dropdown for good (a click elsewhere) so the Generate click is not spent closing it,
    # and let the page settle before reading the infotext that generate() compares against.
    page.locator("#txt2img_neg_prompt textarea").click()
    page.wait_for_timeout(500)
    page.wait_for_selector("#model_status .model-status-ready", timeout=60_000)
    outputs = server.data_dir / "outputs" / "txt2img-images"
    before = images_under(outputs)
    generate(page, "txt2img")
    text = parameters_of(wait_for_new_image(outputs, before, server=server))
    assert text.split("\n")[0] == "a quiet harbour, golden hour light"
    assert text.split("\n")[1] == "Negative prompt: dark"
    assert field_value(page, "txt2img_prompt") == "a quiet harbour"

    # 📋 writes the selected style into the prompts and clears the selection.
    page.locator("#txt2img_style_apply").click()
    page.wait_for_function("document.querySelector('#txt2img_prompt textarea').value.includes('golden hour')")
    assert field_value(page, "txt2img_prompt") == "a quiet harbour, golden hour light"
    assert field_value(page, "txt2img_neg_prompt") == "dark"

    # 🖌️ -> name -> 💾 saves the current prompts as a style in styles.csv.
    set_text(page, "txt2img_prompt", "oil painting, thick brush strokes")
    set_text(page, "txt2img_neg_prompt", "photo")
    page.locator("#txt2img_styles_edit_button").click()
    name_box = page.locator("#txt2img_edit_style_name input")
    name_box.wait_for(state="visible", timeout=10_000)
    name_box.fill("Oil")
    name_box.press("Enter")
    page.locator("#txt2img_edit_style_save").click()
    page.wait_for_function("document.querySelector('#txt2img_edit_style_note').innerText.includes('Saved')",
                           timeout=10_000)
    screenshot(page, "styles-editor", full_page=False)
    with open(server.data_dir / "styles.csv", encoding="utf-8-sig", newline="") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert rows["Oil"]["prompt"] == "oil painting, thick brush strokes"
    assert rows["Oil"]["negative_prompt"] == "photo"
    assert rows["Golden"]["prompt"] == "golden hour light"
    rec.check_clean()
