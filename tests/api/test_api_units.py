"""API building blocks without a server: auth checks, image codec, extras resizing, request models."""

from __future__ import annotations

import argparse
import base64
import io
import shutil
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from modules import cmd_args, shared
from modules.api import adapter, auth, codec, extras, listings
from modules.api.errors import ApiError
from modules.api.models import (
    ExtrasSingleImageRequest,
    StableDiffusionImg2ImgProcessingAPI,
    StableDiffusionTxt2ImgProcessingAPI,
)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_checks() -> None:
    creds = auth.parse_credentials("a:1, b:x:y")
    assert creds == [("a", "1"), ("b", "x:y")]
    assert auth.check_basic_auth(basic("a", "1"), creds)
    assert auth.check_basic_auth(basic("b", "x:y"), creds)
    assert not auth.check_basic_auth(basic("a", "x:y"), creds)
    assert not auth.check_basic_auth(basic("a", "12"), creds)
    assert not auth.check_basic_auth("Bearer abc", creds)
    assert not auth.check_basic_auth("Basic %%%", creds)
    assert not auth.check_basic_auth(None, creds)
    with pytest.raises(ValueError, match="user:password"):
        auth.parse_credentials("nopassword")
    assert auth.is_protected_path("/sdapi/v1/txt2img") and auth.is_protected_path("/internal/ping")
    assert not auth.is_protected_path("/") and not auth.is_protected_path("/gradio_api/queue/join")


def test_guard_limits_streamed_bodies_and_adds_process_time() -> None:
    app = FastAPI()

    @app.post("/sdapi/v1/echo")
    async def echo(body: dict) -> dict:
        return body

    app.add_middleware(auth.ApiGuard, credentials=[], max_body=lambda: 100)
    client = TestClient(app)
    r = client.post("/sdapi/v1/echo", json={"a": 1})
    assert r.status_code == 200 and "x-process-time" in r.headers
    assert client.post("/sdapi/v1/echo", json={"a": "x" * 200}).status_code == 413

    def chunks():  # no Content-Length: counted while read
        yield b'{"a": "'
        yield b"x" * 200
        yield b'"}'

    r = client.post("/sdapi/v1/echo", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 413)


def png_b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_codec_decodes_data_urls_and_refuses_bad_input() -> None:
    data = png_b64(Image.new("RGBA", (4, 3), (1, 2, 3, 4)))
    im = codec.decode_base64_to_image("data:image/png;base64," + data)
    assert im.size == (4, 3) and im.mode == "RGBA"
    for bad in ("", "!!!", base64.b64encode(b"plain text").decode(), "https://example.com/a.png",
                "data:image/png,rawbytes"):
        with pytest.raises(ApiError) as e:
            codec.decode_base64_to_image(bad, what="init_images[0]")
        assert e.value.status == 400 and "init_images[0]" in e.value.detail
    with pytest.raises(ApiError) as e:
        codec.decode_base64_to_image(data, max_pixels=10)
    assert e.value.status == 413
    text = "prompt\nSteps: 1"
    for fmt in ("png", "jpg", "webp"):
        from modules.infotext_utils import read_info_from_image

        out = Image.open(io.BytesIO(base64.b64decode(codec.encode_pil_to_base64(im, text, fmt=fmt))))
        assert read_info_from_image(out)[0] == text, fmt


def test_request_models_have_a1111_api_defaults_and_ignore_unknown_fields() -> None:
    t = StableDiffusionTxt2ImgProcessingAPI.model_validate({"unknown": 1, "seed": None, "styles": None})
    assert (t.steps, t.sampler_index, t.sampler_name, t.seed, t.styles, t.save_images, t.send_images) == (
        50, "Euler", None, -1, [], False, True)
    i = StableDiffusionImg2ImgProcessingAPI.model_validate({"inpainting_mask_invert": True})
    assert (i.inpainting_fill, i.inpaint_full_res, i.inpaint_full_res_padding, i.denoising_strength) == (0, True, 0, 0.75)
    assert int(i.inpainting_mask_invert) == 1
    assert adapter.sampler_for(StableDiffusionTxt2ImgProcessingAPI(sampler_index=0)) == "DPM++ 2M"
    assert adapter.sampler_for(StableDiffusionTxt2ImgProcessingAPI(sampler_name="Heun")) == "Heun"


def test_extras_resizing_rules() -> None:
    im = Image.new("RGB", (10, 20), "red")
    res = extras.run_extras(ExtrasSingleImageRequest(upscaler_1="Lanczos", upscaling_resize=1.5), im)
    assert res.image.size == (15, 30) and res.info["Postprocess upscaler"] == "Lanczos"
    res = extras.run_extras(ExtrasSingleImageRequest(upscaler_1="Nearest", resize_mode=1, upscaling_resize_w=30,
                                                     upscaling_resize_h=30, upscaling_crop=False), im)
    assert res.image.size == (30, 60)  # covers the target; not cropped
    res = extras.run_extras(ExtrasSingleImageRequest(upscaler_1="Nearest", resize_mode=1, upscaling_resize_w=30,
                                                     upscaling_resize_h=30), im)
    assert res.image.size == (30, 30)
    assert res.infotext == ("Postprocess upscale to: 30x30, Postprocess crop to: 30x30, "
                            "Postprocess upscaler: Nearest")
    with pytest.raises(ApiError) as e:
        extras.find_upscaler("ESRGAN_4x")
    assert e.value.status == 404 and "Lanczos" in e.value.detail


def test_cmd_flags_redact_secrets() -> None:
    args = cmd_args.build_parser().parse_args(["--api-auth", "u:p", "--gradio-auth", "a:b", "--gradio-auth-path",
                                               "/x/auth.txt"])
    flags = listings.cmd_flags(args)
    assert flags["api_auth"] == flags["gradio_auth"] == "<redacted>"
    assert flags["gradio_auth_path"] == "/x/auth.txt"
    flags = listings.cmd_flags(argparse.Namespace(my_token=None, listen=True))
    assert flags == {"my_token": None, "listen": True}


def test_no_checkpoint_is_a_clear_503(tmp_path: Path) -> None:
    args = cmd_args.build_parser().parse_args(["--data-dir", str(tmp_path), "--models-dir", str(tmp_path / "m")])
    shared.initialize(args)
    try:
        with pytest.raises(ApiError) as e:
            adapter.build_txt2img(StableDiffusionTxt2ImgProcessingAPI(width=64, height=64, steps=1))
        assert e.value.status == 503 and "Stable-diffusion" in e.value.detail
    finally:
        shared.model_manager.close()
        shutil.rmtree(tmp_path, ignore_errors=True)
