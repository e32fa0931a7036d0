"""UI helper functions, without a browser: auth, casting, tokens, paste mapping, progress, masks."""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import pytest
from PIL import Image

from modules.ui import common, output, paste, progress, tokens
from modules.ui.img2img import MissingInputError, inputs_for_mode, mask_from_layers


def test_auth_pairs_from_flag_and_file(tmp_path):
    assert common.parse_auth_pairs("alice:secret, bob:pa:ss") == [("alice", "secret"), ("bob", "pa:ss")]
    creds = tmp_path / "auth.txt"
    creds.write_text("carol:x1\n\ndave:y2\n")
    args = argparse.Namespace(gradio_auth="alice:secret", gradio_auth_path=str(creds))
    assert common.gradio_auth(args) == [("alice", "secret"), ("carol", "x1"), ("dave", "y2")]
    assert common.gradio_auth(argparse.Namespace(gradio_auth=None, gradio_auth_path=None)) is None
    with pytest.raises(ValueError):
        common.parse_auth_pairs("nocolon")


def test_cast_like_and_html_escaping():
    assert common.cast_like("number", "20", integer=True) == 20
    assert common.cast_like("number", "4.5") == 4.5
    assert common.cast_like("checkbox", "True") is True
    assert common.cast_like("checkbox", "false") is False
    assert common.cast_like("multichoice", '["a", "b"]') == ["a", "b"]
    with pytest.raises(ValueError):
        common.cast_like("number", "many")
    assert common.plaintext_to_html("a <b>\nc") == "<p>a &lt;b&gt;<br>\nc</p>"


def _words(text: str) -> list[int]:
    return list(range(len(text.split())))


def test_token_count_rules():
    assert tokens.count_tokens("one two three", tokenize=_words) == (3, 75)
    # Emphasis brackets and weights are not tokens; extra-network references are removed.
    assert tokens.count_tokens("(one two:1.3) [three] <lora:x:0.5>", tokenize=_words) == (3, 75)
    # AND parts count separately: the largest is shown.
    assert tokens.count_tokens("a b c AND d e", tokenize=_words) == (3, 75)
    # BREAK pads the current chunk.
    assert tokens.count_tokens("a b BREAK c", tokenize=_words) == (76, 150)
    # Prompt editing: the longest variant over the steps.
    assert tokens.count_tokens("a [b c d:e:5]", steps=10, tokenize=_words) == (4, 75)
    assert tokens.count_tokens(" ".join(["w"] * 80), tokenize=_words) == (80, 150)


def test_token_count_with_the_bundled_tokenizer():
    used, capacity = tokens.count_tokens("a red apple")
    assert (used, capacity) == (3, 75)
    assert tokens.token_counter_html("a red apple") .endswith(">3/75</span>")


def test_paste_values_from_infotext():
    text = ("a castle\nNegative prompt: fog\nSteps: 17, Sampler: DPM++ 2M Karras, CFG scale: 4.5, Seed: 42, "
            "Size: 128x96, Variation seed: 9, Variation seed strength: 0.25, Clip skip: 2, Model hash: 0123456789")
    params = paste.parse_for_paste(text)
    specs = [
        ("text", False, "Prompt"), ("text", False, "Negative prompt"), ("number", True, "Steps"),
        ("choice", False, paste.sampler_from_params), ("choice", False, paste.scheduler_from_params),
        ("number", False, "CFG scale"), ("number", True, "Size-1"), ("number", True, "Size-2"),
        ("number", True, "Seed"), ("checkbox", False, paste.seed_extras_from_params),
        ("number", True, "Variation seed"), ("number", False, "Variation seed strength"),
        ("number", True, "Denoising strength"),
    ]
    values = paste.field_values(params, specs)
    assert values[:12] == ["a castle", "fog", 17, "DPM++ 2M", "Automatic", 4.5, 128, 96, 42, True, 9, 0.25]
    assert values[12] is paste.MISSING
    # Clip skip differs from the setting and is offered; the checkpoint is not swapped by default.
    assert paste.override_choices(params) == ["Clip skip: 2"]
    assert paste.seed_extras_from_params({"Seed": "1"}) is False


def test_gallery_item_and_infotext_selection():
    info = json.dumps({"infotexts": ["grid text", "first", "second"], "index_of_first_image": 1,
                       "all_seeds": [10, 11], "seed": 10})
    assert output.infotext_for(info, None) == "first"
    assert output.infotext_for(info, 2) == "second"
    assert output.seed_for(info, None) == 10
    assert output.seed_for(info, 2) == 11
    assert output.seed_for("", None) is None
    assert paste.gallery_item(["g", "a", "b"], None, info) == "a"
    assert paste.gallery_item(["g", "a", "b"], 2, info) == "b"
    assert paste.gallery_item([], None, info) is None


def test_progress_text():
    assert progress.format_eta(75) == "01:15"
    assert progress.format_eta(3725) == "1:02:05"
    prog = SimpleNamespace(step=5, steps=20, job_no=0, job_count=2, fraction=0.125)
    job = SimpleNamespace(status="running", progress=prog, eta=lambda: 30.0)
    view = progress.describe(job, 0)
    assert view.text == "Batch 1/2 · Step 5/20 · 12% · ETA 00:30"
    assert "width:12.5%" in view.html()
    queued = SimpleNamespace(status="queued", progress=prog, eta=lambda: None)
    assert progress.describe(queued, 3).text == "Waiting in queue (position 3)..."


def test_mask_from_painted_layers_and_missing_inputs():
    layer = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 128), (8, 8, 16, 16))
    mask = mask_from_layers((32, 32), [layer])
    assert mask.getbbox() == (8, 8, 16, 16)
    assert mask.getpixel((10, 10)) == 255 and mask.getpixel((0, 0)) == 0

    base = Image.new("RGBA", (32, 32), (10, 20, 30, 255))
    image, got = inputs_for_mode(1, None, {"background": base, "layers": [layer], "composite": base}, None, None)
    assert image.mode == "RGB" and got.getbbox() == (8, 8, 16, 16)
    with pytest.raises(MissingInputError, match="nothing is masked"):
        inputs_for_mode(1, None, {"background": base, "layers": [], "composite": base}, None, None)
    with pytest.raises(MissingInputError, match="no image"):
        inputs_for_mode(0, None, None, None, None)
    with pytest.raises(MissingInputError, match="both an image and a mask"):
        inputs_for_mode(2, None, None, base, None)
    upload_mask = Image.new("L", (32, 32), 0)
    upload_mask.paste(255, (0, 0, 4, 4))
    _, got = inputs_for_mode(2, None, None, base, upload_mask)
    assert got.getbbox() == (0, 0, 4, 4)
