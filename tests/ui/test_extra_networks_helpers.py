"""Extra-network card helpers, styles operations and paste-time style/LoRA handling, without a browser."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

from PIL import Image

from modules import ui_extra_networks as en
from modules.styles import StyleDatabase
from modules.ui import paste, tokens


def test_lora_tag_and_preferred_name():
    assert en.lora_tag("detail") == "<lora:detail:1>"
    assert en.lora_tag("detail", 0.7) == "<lora:detail:0.7>"
    assert en.lora_tag("detail", "0.750") == "<lora:detail:0.75>"
    assert en.format_weight(1.0) == "1" and en.format_weight(-0.0) == "0"
    # The alias unless the setting says Filename or the alias names another file.
    assert en.lora_prompt_name("file_v2", "Nice Alias", set(), "Alias from file") == "Nice Alias"
    assert en.lora_prompt_name("file_v2", "Nice Alias", set(), "Filename") == "file_v2"
    assert en.lora_prompt_name("file_v2", "other", {"other"}, "Alias from file") == "file_v2"


def test_preview_lookup_and_path_check(tmp_path):
    loras = tmp_path / "Lora"
    loras.mkdir()
    model = loras / "style.safetensors"
    model.write_bytes(b"x")
    assert en.find_preview(model) is None
    Image.new("RGB", (2, 2)).save(loras / "style.preview.png")
    assert en.find_preview(model) == loras / "style.preview.png"
    Image.new("RGB", (2, 2)).save(loras / "style.png")
    assert en.find_preview(model) == loras / "style.png"  # <stem>.png comes first

    listed = [str(model)]
    assert en.is_allowed_preview(loras / "style.png", listed)
    assert en.is_allowed_preview(str(loras / "sub" / ".." / "style.preview.png"), listed)
    # A picture of a file that is not listed, a file outside, a non-picture, a missing one: refused.
    Image.new("RGB", (2, 2)).save(loras / "unlisted.png")
    outside = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(outside)
    (loras / "style.json").write_text("{}")
    assert not en.is_allowed_preview(loras / "unlisted.png", listed)
    assert not en.is_allowed_preview(outside, listed)
    assert not en.is_allowed_preview(loras / "style.json", listed)
    assert not en.is_allowed_preview(loras / "style.webp", listed)
    assert not en.is_allowed_preview(str(loras / ".." / "secret.png"), listed)
    link = loras / "style.jpg"
    os.symlink(outside, link)
    # A link named as a preview beside the model is the user's own doing: it is followed.
    assert en.is_allowed_preview(link, listed)


def test_user_metadata_and_tooltip(tmp_path):
    model = tmp_path / "noted.safetensors"
    model.write_bytes(b"x")
    assert en.read_user_metadata(model) == {}
    (tmp_path / "noted.json").write_text(json.dumps({"activation text": "ink style", "preferred weight": 0.6}))
    user = en.read_user_metadata(model)
    assert user["activation text"] == "ink style"
    (tmp_path / "broken.safetensors").write_bytes(b"x")
    (tmp_path / "broken.json").write_text("{not json")
    assert en.read_user_metadata(tmp_path / "broken.safetensors") == {}
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": "8", "ss_base_model_version": "sdxl_base_v1-0",
            "ss_tag_frequency": json.dumps({"a": {"cat": 3, "dog": 9}, "b": {"cat": 7}})}
    tip = en.lora_tooltip("noted", str(model), meta, "SDXL", user)
    assert "Base: SDXL" in tip and "Network: networks.lora" in tip and "Dim: 8" in tip
    assert "Tags: cat, dog" in tip  # most frequent first (10 vs 9)
    assert "Activation text: ink style" in tip and tip.endswith(str(model))


def test_search_and_render_escapes_and_filters():
    items = [
        en.ExtraNetworkItem(page="lora", name="red-hat", filename="/m/Lora/chars/red-hat.safetensors",
                            prompt="<lora:red-hat:1>", search=["Crimson"], tooltip="a <b> tip"),
        en.ExtraNetworkItem(page="lora", name="blue's", filename="/m/Lora/blue's.safetensors",
                            prompt="<lora:blue's:1>", preview="/m/Lora/blue's.png"),
    ]
    assert en.matches(items[0], "RED") and en.matches(items[0], "chars crimson")
    assert not en.matches(items[0], "red blue")
    assert en.matches(items[1], "")
    html = en.render_cards(items, "txt2img", "lora", query="crimson")
    assert "data-prompt='&lt;lora:red-hat:1&gt;'" in html
    assert "a &lt;b&gt; tip" in html and "<b>" not in html
    assert "blue&#x27;s" in html and "blue's" not in html
    # The card that does not match the query is rendered hidden; the preview goes through the thumb route.
    red_card, blue_card = html.split("<div class='extra-network-card'")[1:]
    assert "display:none" in blue_card.split(">")[0] and "display:none" not in red_card.split(">")[0]
    assert "/sd_extra_networks/thumb?filename=/m/Lora/blue%27s.png&amp;mtime=" in html
    assert "No Lora files" in en.render_cards([], "txt2img", "lora")


def test_styles_apply_save_delete(tmp_path, monkeypatch):
    from modules.ui import styles_ui

    db = StyleDatabase(tmp_path / "styles.csv")
    monkeypatch.setattr(styles_ui, "_database", lambda: db)
    db.set_style("Warm", "warm light", "cold")
    assert styles_ui.apply_styles("a cat", "", ["Warm"]) == ("a cat, warm light", "cold", [])
    assert styles_ui.apply_styles("a cat", "x", []) == ("a cat", "x", [])
    assert styles_ui.save_style(" Ink ", "ink drawing", "color") == "Ink"
    assert "Ink,ink drawing,color" in (tmp_path / "styles.csv").read_text(encoding="utf-8-sig")
    assert styles_ui.delete_style("Ink") and not styles_ui.delete_style("Ink")
    assert "Ink" not in (tmp_path / "styles.csv").read_text(encoding="utf-8-sig")


def test_infer_styles_on_paste(tmp_path):
    db = StyleDatabase(tmp_path / "styles.csv")
    db.set_style("Warm", "warm light", "cold")
    params = {"Prompt": "a cat, warm light", "Negative prompt": "cold"}
    paste.infer_styles(params, "Apply if any", db)
    assert params == {"Prompt": "a cat", "Negative prompt": "", "Styles array": ["Warm"]}
    params = {"Prompt": "a cat, warm light", "Negative prompt": "cold"}
    paste.infer_styles(params, "Discard", db)
    assert params == {"Prompt": "a cat", "Negative prompt": ""}
    params = {"Prompt": "a dog", "Negative prompt": ""}
    paste.infer_styles(params, "Apply if any", db)
    assert "Styles array" not in params
    paste.infer_styles(params, "Apply", db)
    assert params["Styles array"] == []
    params = {"Prompt": "a cat, warm light", "Negative prompt": "cold"}
    paste.infer_styles(params, "Ignore", db)
    assert params["Prompt"] == "a cat, warm light"


def test_token_count_counts_embeddings_as_their_vectors():
    # A fake tokenizer: one id per word; "emb" is an embedding with 5 vectors.
    words: dict[str, int] = {}

    def tokenize(text: str) -> list[int]:
        return [words.setdefault(w, len(words) + 1) for w in text.replace(",", " ").split()]

    emb = SimpleNamespace(name="emb", vectors=5)
    emb_id = tokenize("emb")[0]

    class Vocab:
        def __len__(self) -> int:
            return 1

        def find(self, ids, i):  # type: ignore[no-untyped-def]
            return (emb, 1) if ids[i] == emb_id else None

    assert tokens.count_tokens("a cat emb", tokenize=tokenize) == (3, 75)
    assert tokens.count_tokens("a cat emb", tokenize=tokenize, vocabulary=Vocab()) == (7, 75)
