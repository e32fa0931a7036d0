"""Infotext: A1111's literal examples, writing, the tolerant reader, and storage in image files."""

from __future__ import annotations

import io
import json

import piexif
import piexif.helper
import pytest
from PIL import Image, PngImagePlugin

from modules import infotext_utils, shared
from modules.infotext_utils import (
    INFOTEXT_KEY_ORDER,
    build_infotext,
    order_params,
    parse_generation_parameters,
    quote,
    read_info_from_image,
    unquote,
)

# --- A1111's literal examples (reference §3.4) ---------------------------------------------------

EXAMPLE_1 = (
    "girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, heavy makeup, "
    "by Alphonse Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), detailed, intricate\n"
    "Negative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, disfigured, "
    "poorly drawn face, mutation, mutated, (extra_limb), (ugly), (poorly drawn hands), messy drawing\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b"
)

EXAMPLE_2 = (
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1741860054, Size: 512x512, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
)

CONTROLNET_3 = (
    "preprocessor: openpose, model: control_v11p_sd15_openpose [cab727d4], weight: 1, starting/ending: (0, 1), "
    "resize mode: Crop and Resize, pixel perfect: False, control mode: Balanced, preprocessor params: (512, 64, 64)"
)
EXAMPLE_3 = (
    "…prompt…\n"
    "Negative prompt: Neg1,Negative,\n"
    "Steps: 20, Sampler: DPM++ 2M SDE Karras, CFG scale: 7, Seed: 2647703743, Size: 768x768, Model hash: 72bd94132e, "
    "Model: CuteMix, Denoising strength: 0.7, "
    f"ControlNet 0: {json.dumps(CONTROLNET_3)}, "
    "Hires upscale: 2, Hires upscaler: Latent, TI hashes: \"Neg1: 339cc9210f70, Negative: 66a7279a88dd\", "
    "Version: v1.5.1"
)

EXAMPLE_4 = (
    "Steps: 60, Sampler: DPM++ 3M SDE, Schedule type: Karras, CFG scale: 7, Seed: 1736401068, Size: 896x1152, "
    "Model hash: 34d8e4c691, Model: smoothMixOldVerNoobai_ponyV3, Clip skip: 2, ADetailer model: face_yolov9c.pt, "
    "ADetailer prompt: \"detailed face\", ADetailer confidence: 0.3, ADetailer steps: 24, ADetailer CFG scale: 2.0, "
    "ADetailer version: 25.3.0, Lora hashes: \"Smooth Pony Booster: ad1599fe9152, JADE-XSTAR-XL-FINAL: 0790afc4176e\", …"
)

EXAMPLE_5 = (
    "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 3158555784, Size: 572x1024, "
    "Model hash: d64c08ec07, Model: divingIllustriousSemi_v10, Denoising strength: 0.7, Clip skip: 2, "
    "Hires Module 1: Use same choices, Hires CFG Scale: 7, Hires upscale: 2, Hires upscaler: Latent, "
    "Lora hashes: \"…: 4a806b3db7ab, …: bb10e9ffa412\", Version: f2.0.1v1.10.1-previous-665-gae278f79, "
    "Module 1: sdxlVAE_sdxlVAE"
)


@pytest.fixture
def opts(monkeypatch: pytest.MonkeyPatch):
    """Set settings for one test; they are restored afterwards."""

    def set_opts(**values: object) -> None:
        for key, value in values.items():
            monkeypatch.setitem(shared.opts.data, key, value)

    return set_opts


def test_example_1_docstring_infotext() -> None:
    res = parse_generation_parameters(EXAMPLE_1)
    assert res["Prompt"].startswith("girl with an artist's beret, determined")
    assert res["Prompt"].endswith("(coquettish), detailed, intricate")
    assert res["Negative prompt"].startswith("ugly, fat, obese")
    assert res["Negative prompt"].endswith("(poorly drawn hands), messy drawing")
    assert res["Steps"] == "20"
    assert res["Sampler"] == "Euler a"
    assert res["CFG scale"] == "7"
    assert res["Seed"] == "965400086"
    assert (res["Size-1"], res["Size-2"]) == ("512", "512")
    assert "Size" not in res
    assert res["Model hash"] == "45dee52b"
    assert res["Clip skip"] == "1"
    assert res["Emphasis"] == "Original"  # the prompt uses ((...))
    assert "Downcast alphas_cumprod" not in res  # no Version: no back-compat flags


def test_example_2_stock_v1_10_parses_and_rebuilds_byte_exact() -> None:
    res = parse_generation_parameters(EXAMPLE_2)
    assert res["Prompt"] == ""
    assert res["Negative prompt"] == ""
    assert res["Schedule type"] == "Karras"
    assert res["Model hash"] == "6ce0161689"
    assert res["Model"] == "v1-5-pruned-emaonly"
    assert res["Version"] == "v1.10.1"
    assert "Downcast alphas_cumprod" not in res
    base = {"Model hash": "6ce0161689", "Seed": 1741860054, "Steps": 20, "Sampler": "DPM++ 2M",
            "Size": "512x512", "CFG scale": 7, "Schedule type": "Karras", "Model": "v1-5-pruned-emaonly",
            "Clip skip": None, "RNG": None}
    assert build_infotext("", "", order_params(base, {}, version="v1.10.1", user=None)) == EXAMPLE_2


def test_example_3_quoted_values_with_commas_and_colons() -> None:
    res = parse_generation_parameters(EXAMPLE_3)
    assert res["Prompt"] == "…prompt…"
    assert res["Negative prompt"] == "Neg1,Negative,"
    assert res["ControlNet 0"] == CONTROLNET_3
    assert res["TI hashes"] == "Neg1: 339cc9210f70, Negative: 66a7279a88dd"
    assert res["Sampler"] == "DPM++ 2M SDE Karras"  # legacy combined name is left for the sampler module
    assert res["Hires upscale"] == "2"
    assert res["Denoising strength"] == "0.7"
    assert (res["Size-1"], res["Size-2"]) == ("768", "768")
    assert res["Downcast alphas_cumprod"] is True  # written by 1.5.1
    assert "Old prompt editing timelines" not in res  # no '[' in the prompt

    base = {"Steps": 20, "Sampler": "DPM++ 2M SDE Karras", "CFG scale": 7, "Seed": 2647703743, "Size": "768x768",
            "Model hash": "72bd94132e", "Model": "CuteMix", "Denoising strength": 0.7}
    extra = {"ControlNet 0": CONTROLNET_3, "Hires upscale": 2, "Hires upscaler": "Latent",
             "TI hashes": "Neg1: 339cc9210f70, Negative: 66a7279a88dd"}
    rebuilt = build_infotext("…prompt…", "Neg1,Negative,", order_params(base, extra, "v1.5.1", None))
    assert rebuilt == EXAMPLE_3


def test_example_4_civitai_sdxl_with_adetailer() -> None:
    res = parse_generation_parameters(EXAMPLE_4)
    assert res["Prompt"] == ""
    assert res["Clip skip"] == "2"
    assert res["ADetailer prompt"] == "detailed face"
    assert res["ADetailer CFG scale"] == "2.0"
    assert res["ADetailer version"] == "25.3.0"
    assert res["Lora hashes"] == "Smooth Pony Booster: ad1599fe9152, JADE-XSTAR-XL-FINAL: 0790afc4176e"
    assert (res["Size-1"], res["Size-2"]) == ("896", "1152")


def test_example_5_forge_variant() -> None:
    res = parse_generation_parameters(EXAMPLE_5)
    assert res["Version"] == "f2.0.1v1.10.1-previous-665-gae278f79"
    assert res["Module 1"] == "sdxlVAE_sdxlVAE"
    assert res["Hires Module 1"] == "Use same choices"
    assert res["Hires CFG Scale"] == "7"
    assert res["Lora hashes"] == "…: 4a806b3db7ab, …: bb10e9ffa412"
    # a version string that does not parse sets no back-compat flag
    assert "Downcast alphas_cumprod" not in res


# --- writing -----------------------------------------------------------------------------------

def test_quote_rule() -> None:
    assert quote("Euler a") == "Euler a"
    assert quote(7.5) == "7.5"
    assert quote("a, b") == '"a, b"'
    assert quote("a: b") == '"a: b"'
    assert quote("line\nbreak") == '"line\\nbreak"'
    assert quote('say "hi", ok') == '"say \\"hi\\", ok"'
    assert quote("日本, 語") == '"日本, 語"'  # not ASCII-escaped
    assert unquote('"a, b"') == "a, b"
    assert unquote("plain") == "plain"
    assert unquote('"broken') == '"broken'


def test_order_params_follows_a1111_rule() -> None:
    base = {"Seed": 1, "Steps": 20, "Size": "64x64", "Sampler": "Euler", "Custom base": "x"}
    extra = {"Hires upscale": 2, "Steps": 30, "Lora hashes": "a: 1"}
    ordered = order_params(base, extra, version="v1.10.1", user="bob")
    assert list(ordered) == ["Steps", "Sampler", "Seed", "Size", "Custom base", "Hires upscale", "Lora hashes",
                             "Version", "User"]
    assert ordered["Steps"] == 30  # extra value, base position
    assert list(order_params({}, {"Version": "old"}, None, None)) == []


def test_build_layout_rules() -> None:
    params = {"Steps": 20, "Tiling": "Tiling", "Clip skip": None, "Lora hashes": "a: 1, b: 2"}
    text = build_infotext("  a cat  ", "", params)
    # as in A1111 only the whole text is stripped: the prompt line keeps its inner trailing spaces
    assert text == 'a cat  \nSteps: 20, Tiling, Lora hashes: "a: 1, b: 2"'
    assert "Negative prompt" not in text
    with_neg = build_infotext("a", "b", {"Steps": 1})
    assert with_neg == "a\nNegative prompt: b\nSteps: 1"
    assert INFOTEXT_KEY_ORDER[:3] == ("Steps", "Sampler", "Schedule type")


ROUND_TRIP_CASES = [
    ("a cat, sitting: on a mat", ""),
    ('a "quoted" word, and more', 'neg "quoted", x: y'),
    ("first line\nsecond line, with comma\nthird: colon", "neg line 1\nneg line 2"),
    ("日本語のプロンプト, ✨ émoji 🎨", "негатив"),
    ("Steps: 5, not params", ""),
    ("(masterpiece:1.2), [blurry], \\(escaped\\)", "Negative prompt inside? no"),
]


@pytest.mark.parametrize(("prompt", "negative"), ROUND_TRIP_CASES)
def test_build_parse_round_trip(prompt: str, negative: str) -> None:
    extra = {
        "Hires prompt": 'hires, "q": v\nnext',
        "Lora hashes": "name one: abc123, name two: def456",
        "Custom/key-name": "ü, ö",
    }
    params = order_params({"Steps": 20, "Sampler": "Euler a", "CFG scale": 7.5, "Seed": 42, "Size": "640x384"},
                          extra, "v1.10.1", None)
    text = build_infotext(prompt, negative, params)
    res = parse_generation_parameters(text)
    assert res["Prompt"] == prompt
    assert res["Negative prompt"] == negative
    assert res["Steps"] == "20"
    assert res["CFG scale"] == "7.5"
    assert (res["Size-1"], res["Size-2"]) == ("640", "384")
    for key, value in extra.items():
        assert res[key] == value


def test_last_line_needs_three_pairs() -> None:
    res = parse_generation_parameters("a cat\nSteps: 20, Sampler: Euler")
    assert res["Prompt"] == "a cat\nSteps: 20, Sampler: Euler"
    assert "Steps" not in res
    assert "Sampler" not in res

    res = parse_generation_parameters("Steps: 5, Seed: 1 in prompt\nNegative prompt: bad\nSteps: 20, Seed: 3, CFG scale: 7")
    assert res["Prompt"] == "Steps: 5, Seed: 1 in prompt"
    assert res["Negative prompt"] == "bad"
    assert (res["Steps"], res["Seed"]) == ("20", "3")


def test_crlf_whitespace_and_multiline_negative() -> None:
    text = "  \r\n line one\r\nline two  \r\nNegative prompt: n1\r\nn2\r\nSteps: 20, Seed: 5, CFG scale: 7  \r\n\r\n"
    res = parse_generation_parameters(text)
    assert res["Prompt"] == "line one\nline two"
    assert res["Negative prompt"] == "n1\nn2"
    assert (res["Steps"], res["Seed"], res["CFG scale"]) == ("20", "5", "7")


def test_size_values_split() -> None:
    res = parse_generation_parameters(
        "p\nSteps: 1, Size: 640x448, Seed resize from: 256x320, Hires resize: 1024x768, Seed: 2")
    assert (res["Size-1"], res["Size-2"]) == ("640", "448")
    assert (res["Seed resize from-1"], res["Seed resize from-2"]) == ("256", "320")
    assert (res["Hires resize-1"], res["Hires resize-2"]) == ("1024", "768")


def test_defaults_for_absent_keys() -> None:
    res = parse_generation_parameters("plain prompt\nSteps: 20, Sampler: Euler, Seed: 1")
    expected = {
        "Clip skip": "1", "Hires resize-1": 0, "Hires resize-2": 0, "Hires sampler": "Use same sampler",
        "Hires schedule type": "Use same scheduler", "Hires checkpoint": "Use same checkpoint",
        "Hires prompt": "", "Hires negative prompt": "", "Mask mode": "Inpaint masked",
        "Masked content": "original", "Inpaint area": "Whole picture", "Masked area padding": 32,
        "RNG": "GPU", "Schedule type": "Automatic", "Schedule max sigma": 0, "Schedule min sigma": 0,
        "Schedule rho": 0, "VAE Encoder": "Full", "VAE Decoder": "Full", "FP8 weight": "Disable",
    }
    for key, value in expected.items():
        assert res[key] == value, key
    assert "Emphasis" not in res  # no brackets in the prompt
    assert "Cache FP16 weight for LoRA" not in res
    assert "Emphasis" not in parse_generation_parameters("\\(escaped\\) only\nSteps: 1, Seed: 1, CFG scale: 7")
    assert parse_generation_parameters("a\nNegative prompt: [bad]\nSteps: 1, Seed: 1, CFG scale: 7")["Emphasis"] == "Original"

    explicit = parse_generation_parameters("(x)\nSteps: 1, Seed: 1, RNG: CPU, Emphasis: No norm, FP8 weight: Enable for SDXL")
    assert explicit["RNG"] == "CPU"
    assert explicit["Emphasis"] == "No norm"
    assert explicit["Cache FP16 weight for LoRA"] is False


def test_old_first_pass_size_converted() -> None:
    auto = parse_generation_parameters("p\nSteps: 20, Size: 1024x768, First pass size: 0x0, Seed: 1")
    # A1111's old automatic first pass: about 512x512 pixels, rounded up to multiples of 64
    assert (auto["Size-1"], auto["Size-2"]) == (640, 448)
    assert (auto["Hires resize-1"], auto["Hires resize-2"]) == (1024, 768)

    explicit = parse_generation_parameters("p\nSteps: 20, Size: 1280x1024, First pass size: 640x512, Seed: 1")
    assert (explicit["Size-1"], explicit["Size-2"]) == (640, 512)
    assert (explicit["Hires resize-1"], explicit["Hires resize-2"]) == (1280, 1024)


def test_hypernet_and_backcompat_and_skip_fields() -> None:
    res = parse_generation_parameters("[a:b:5]\nSteps: 20, Sampler: DDIM, Seed: 1, Hypernet: anime, Version: v1.5.0")
    assert res["Prompt"] == "[a:b:5]<hypernet:anime:1.0>"
    assert res["Old prompt editing timelines"] is True
    assert res["Pad conds v0"] is True
    assert res["Downcast alphas_cumprod"] is True

    recent = parse_generation_parameters("a\nSteps: 20, Seed: 1, Refiner: x, Version: v1.7.0-300-gabcdef")
    assert "Downcast alphas_cumprod" not in recent
    assert recent["Refiner switch by sampling steps"] is True  # < 1.8.0 with a refiner

    skipped = parse_generation_parameters("a\nSteps: 20, Seed: 1, CFG scale: 7", skip_fields=["Seed", "Prompt"])
    assert "Seed" not in skipped
    assert "Prompt" not in skipped
    assert skipped["Steps"] == "20"


def test_skip_fields_default_from_settings(opts) -> None:
    opts(infotext_skip_pasting=["CFG scale"])
    assert "CFG scale" not in parse_generation_parameters("a\nSteps: 20, Seed: 1, CFG scale: 7")


def test_old_module_name_is_the_same_module() -> None:
    import modules.generation_parameters_copypaste as old
    from modules import generation_parameters_copypaste

    assert old is infotext_utils
    assert generation_parameters_copypaste is infotext_utils


def test_override_settings_from_infotext(opts) -> None:
    opts(CLIP_stop_at_last_layers=1, eta_noise_seed_delta=0)
    params = parse_generation_parameters("a\nSteps: 20, Seed: 1, Clip skip: 2, ENSD: 31337, Model hash: abc")
    overrides = infotext_utils.get_override_settings(params)
    assert ("Clip skip", "CLIP_stop_at_last_layers", 2) in overrides
    assert ("ENSD", "eta_noise_seed_delta", 31337) in overrides
    assert not any(key == "sd_model_checkpoint" for _, key, _ in overrides)  # auto-swap off by default
    assert infotext_utils.get_override_settings({"Clip skip": "1"}) == []  # same as current
    assert infotext_utils.create_override_settings_dict(["Clip skip: 2", "ENSD: 31337"]) == {
        "CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337}


def test_paste_field_registry() -> None:
    field = infotext_utils.PasteField("component", "Seed", api="seed")
    assert tuple(field) == ("component", "Seed")
    assert (field.label, field.api, field.function) == ("Seed", "seed", None)
    try:
        fields = [("c1", "Steps"), field]
        infotext_utils.add_paste_fields("txt2img", None, fields)
        assert all(isinstance(f, infotext_utils.PasteField) for f in infotext_utils.paste_fields["txt2img"]["fields"])
    finally:
        infotext_utils.reset()
    assert infotext_utils.paste_fields == {}


# --- storage -----------------------------------------------------------------------------------

INFOTEXT = 'a cat, 日本語 ✨\nNegative prompt: bad, "ugly"\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 16x16'


def _reopen(image: Image.Image, fmt: str, **kwargs: object) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    buf.seek(0)
    return Image.open(buf)


def _exif(comment: bytes) -> bytes:
    return piexif.dump({"Exif": {piexif.ExifIFD.UserComment: comment}})


USER_COMMENTS = {
    "piexif-unicode": piexif.helper.UserComment.dump(INFOTEXT, encoding="unicode"),
    "utf16-be": b"UNICODE\0" + INFOTEXT.encode("utf-16-be"),
    "utf16-le": b"UNICODE\0" + INFOTEXT.encode("utf-16-le"),
    "utf16-bom-le": b"UNICODE\0" + b"\xff\xfe" + INFOTEXT.encode("utf-16-le"),
    "utf16-bom-be": b"UNICODE\0" + b"\xfe\xff" + INFOTEXT.encode("utf-16-be"),
    "ascii-header-utf8": b"ASCII\0\0\0" + INFOTEXT.encode("utf-8"),
}


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
@pytest.mark.parametrize("variant", sorted(USER_COMMENTS))
def test_exif_user_comment_round_trip(fmt: str, variant: str) -> None:
    image = _reopen(Image.new("RGB", (16, 16), "red"), fmt, exif=_exif(USER_COMMENTS[variant]))
    geninfo, items = read_info_from_image(image)
    assert geninfo == INFOTEXT
    assert "exif" not in items
    assert parse_generation_parameters(geninfo)["Negative prompt"] == 'bad, "ugly"'


def test_little_endian_without_ascii_hint_still_reads() -> None:
    text = "ASCII only text, Steps: 20"
    raw = b"UNICODE\0" + text.encode("utf-16-le")
    assert infotext_utils.decode_user_comment(raw) == text
    assert infotext_utils.decode_user_comment(b"UNICODE\0" + text.encode("utf-16-be")) == text


def test_png_chunk_round_trip_keeps_other_chunks() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", INFOTEXT)
    info.add_text("extras", "Postprocess upscaler: R-ESRGAN 4x+")
    info.add_text("Software", "something")
    image = _reopen(Image.new("RGB", (16, 16)), "PNG", pnginfo=info, dpi=(72, 72))
    geninfo, items = read_info_from_image(image)
    assert geninfo == INFOTEXT
    assert items == {"extras": "Postprocess upscaler: R-ESRGAN 4x+", "Software": "something"}


def test_gif_comment_and_missing_info() -> None:
    image = _reopen(Image.new("P", (8, 8)), "GIF", comment=INFOTEXT.encode("utf-8"))
    assert read_info_from_image(image)[0] == INFOTEXT
    assert read_info_from_image(Image.new("RGB", (4, 4))) == (None, {})


def test_novelai_png_is_converted() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "NovelAI")
    info.add_text("Description", "1girl, solo")
    info.add_text("Comment", json.dumps({"uc": "lowres", "steps": 28, "sampler": "k_euler_ancestral",
                                         "scale": 11, "seed": 1234}))
    image = _reopen(Image.new("RGB", (64, 32)), "PNG", pnginfo=info)
    geninfo, _ = read_info_from_image(image)
    assert geninfo == ("1girl, solo\nNegative prompt: lowres\nSteps: 28, Sampler: Euler a, CFG scale: 11, "
                       "Seed: 1234, Size: 64x32, Clip skip: 2, ENSD: 31337")
