"""Built-in scripts and an extension's settings through a real server's /sdapi/v1 API."""

from __future__ import annotations

import base64
import io
import json
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from api_server import Server, write_models

DATA = Path(__file__).parent / "data"
SMALL = {"width": 64, "height": 64, "steps": 2, "prompt": "a cat | red", "seed": 3}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("ext_http")
    models = write_models(root / "models")
    for name in ("ext_demo", "ext_broken"):
        shutil.copytree(DATA / name, root / "data" / "extensions" / name)
    server = Server(root / "data", models, "--demo-ext-flag", "from-cli")
    yield server
    server.stop()


@pytest.mark.slow
def test_scripts_over_http(srv: Server) -> None:
    lists = srv.get("/sdapi/v1/scripts").json()
    assert lists["txt2img"] == ["prompt matrix", "prompts from file or textbox", "x/y/z plot"]
    assert "sd upscale" in lists["img2img"]
    info = srv.get("/sdapi/v1/script-info").json()
    assert any(i["name"] == "demo always on" and i["is_alwayson"] for i in info)
    assert srv.get("/sdapi/v1/options").json()["demo_ext_option"] == "hello"

    r = srv.post("/sdapi/v1/txt2img", json={**SMALL, "script_name": "Prompt Matrix", "script_args": []})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["all_prompts"] == ["a cat", "a cat, red"]
    assert len(r.json()["images"]) == 3

    r = srv.post("/sdapi/v1/txt2img", json={**SMALL, "prompt": "a dog", "script_name": "x/y/z plot",
                                            "script_args": [4, "1-2"],
                                            "alwayson_scripts": {"Demo always on": {"args": [True, "api-tag"]}}})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert "X Type: Steps" in info["infotexts"][0] and "Demo tag: api-tag" in info["infotexts"][0]

    r = srv.post("/sdapi/v1/txt2img", json={**SMALL, "script_name": "prompts from file or textbox",
                                            "script_args": [False, False, "start", "one\n--prompt two --steps 1"]})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["all_prompts"] == ["one a cat | red", "two a cat | red"]

    source = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 90, 160)).save(source, format="PNG")
    r = srv.post("/sdapi/v1/img2img", json={**SMALL, "init_images": [base64.b64encode(source.getvalue()).decode()],
                                            "denoising_strength": 0.3, "script_name": "sd upscale",
                                            "script_args": ["", 16, 1, 2.0]})  # Lanczos, twice the size
    assert r.status_code == 200, r.text
    with Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))) as im:
        assert im.size == (128, 128)
    assert "SD upscale overlap: 16" in json.loads(r.json()["info"])["infotexts"][0]
    assert "broken on purpose" in srv.log()  # the failing extension was reported, the server works
