"""The /sdapi/v1 API and the jobs API over HTTP against one real server process (tiny models)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from api_server import Server, write_models
from PIL import Image, PngImagePlugin
from safetensors.torch import save_file

SMALL = {"width": 64, "height": 64, "steps": 2, "prompt": "a red circle"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("sdapi")
    models = write_models(root / "models")
    server = Server(root / "data", models, settings={"queue_max_size": 8, "api_max_request_mb": 1})
    yield server
    server.stop()


def b64png(image: Image.Image, text: dict[str, str] | None = None) -> str:
    buf = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    image.save(buf, format="PNG", pnginfo=info)
    return base64.b64encode(buf.getvalue()).decode()


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def pixels(b64: str) -> np.ndarray:
    return np.asarray(decode(b64).convert("RGB"), dtype=np.int16)


def outputs(srv: Server) -> list[Path]:
    out = srv.data_dir / "outputs"
    return sorted(p for p in out.rglob("*") if p.is_file()) if out.exists() else []


def assert_clean_error(r: requests.Response, status: int, *words: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"error", "detail", "body", "errors"}
    assert "Traceback" not in r.text
    for w in words:
        assert w.lower() in r.text.lower(), (w, r.text)
    return body


# --- generation -------------------------------------------------------------------------------------


def test_txt2img_a1111_defaults_info_and_png_chunk(srv: Server) -> None:
    r = srv.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 42, "negative_prompt": "blurry"})
    assert r.status_code == 200, r.text
    assert float(r.headers["x-process-time"]) >= 0
    body = r.json()
    assert set(body) == {"images", "parameters", "info"}
    info = json.loads(body["info"])
    for key in ("prompt", "all_prompts", "negative_prompt", "seed", "all_seeds", "subseed", "all_subseeds", "width",
                "height", "sampler_name", "cfg_scale", "steps", "batch_size", "clip_skip", "sd_model_name",
                "sd_model_hash", "sd_vae_name", "infotexts", "job_timestamp", "index_of_first_image", "version"):
        assert key in info, key
    assert info["sampler_name"] == "Euler"  # the API's default, through sampler_index
    assert info["seed"] == 42 and info["all_seeds"] == [42] and info["steps"] == 2
    assert body["parameters"]["sampler_index"] == "Euler" and body["parameters"]["steps"] == 2
    assert len(body["images"]) == 1
    image = decode(body["images"][0])
    assert image.size == (64, 64)
    assert image.info["parameters"] == info["infotexts"][0]
    assert "Negative prompt: blurry" in image.info["parameters"]
    assert outputs(srv) == []  # save_images defaults to false


def test_legacy_a1111_payload_with_overrides_grid_and_saving(srv: Server) -> None:
    payload = {
        **SMALL, "seed": 7, "batch_size": 2, "n_iter": 1, "sampler_index": "Euler a", "firstphase_width": 0,
        "firstphase_height": 0, "enable_hr": False, "hr_scale": 2, "hr_upscaler": None, "denoising_strength": 0,
        "s_churn": 0, "s_tmax": None, "s_tmin": 0, "s_noise": 1, "eta": None, "restore_faces": False,
        "tiling": False, "styles": ["no such style"], "subseed": -1, "subseed_strength": 0, "cfg_scale": 5,
        "override_settings": {"CLIP_stop_at_last_layers": 2}, "save_images": True, "some_future_field": [1, 2],
        "script_args": [], "sampler_name": None,
    }
    r = srv.post("/sdapi/v1/txt2img", json=payload)
    assert r.status_code == 200, r.text
    body = r.json()
    info = json.loads(body["info"])
    assert info["sampler_name"] == "Euler a"
    assert info["clip_skip"] == 2 and "Clip skip: 2" in info["infotexts"][-1]
    assert info["all_seeds"] == [7, 8]
    assert len(body["images"]) == 3 and info["index_of_first_image"] == 1  # the grid comes first when saving
    assert decode(body["images"][0]).size == (128, 64)
    assert srv.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 1  # restored afterwards
    names = [p.name for p in outputs(srv) if p.suffix == ".png"]
    assert sum(n.endswith("-7.png") or n.endswith("-8.png") for n in names) == 2
    assert any(n.startswith("grid-") for n in names)


def test_batch_without_saving_returns_the_images_alone(srv: Server) -> None:
    r = srv.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 3, "batch_size": 2, "steps": 1})
    info = json.loads(r.json()["info"])
    assert len(r.json()["images"]) == 2 and info["index_of_first_image"] == 0


def test_send_images_false_and_schedulers_by_name_or_label(srv: Server) -> None:
    for scheduler in ("karras", "KARRAS", "Karras"):
        r = srv.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1, "sampler_name": "dpm++ 2m",
                                                 "scheduler": scheduler, "send_images": False})
        assert r.status_code == 200, r.text
        assert r.json()["images"] == []
        text = json.loads(r.json()["info"])["infotexts"][0]
        assert "Sampler: DPM++ 2M" in text and "Schedule type: Karras" in text


def test_img2img_rgba_data_url_mask_and_echo(srv: Server) -> None:
    init = Image.new("RGBA", (64, 64), (200, 30, 30, 255))
    init.paste((0, 0, 0, 0), (0, 0, 32, 64))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    payload = {**SMALL, "seed": 11, "init_images": ["data:image/png;base64," + b64png(init)], "mask": b64png(mask),
               "denoising_strength": 0.6, "inpainting_mask_invert": True, "mask_blur": 2, "inpainting_fill": 1,
               "inpaint_full_res": False, "resize_mode": 0, "initial_noise_multiplier": 1.0}
    r = srv.post("/sdapi/v1/img2img", json=payload)
    assert r.status_code == 200, r.text
    body = r.json()
    assert decode(body["images"][0]).size == (64, 64)
    assert body["parameters"]["init_images"] is None and body["parameters"]["mask"] is None
    assert json.loads(body["info"])["denoising_strength"] == 0.6
    r = srv.post("/sdapi/v1/img2img", json={**payload, "mask": None, "inpainting_mask_invert": 0,
                                             "include_init_images": True, "steps": 1})
    assert r.status_code == 200, r.text
    assert r.json()["parameters"]["init_images"][0].startswith("data:image/png")


def test_png_info_reads_what_txt2img_wrote(srv: Server) -> None:
    image_b64 = srv.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 99, "steps": 1}).json()["images"][0]
    r = srv.post("/sdapi/v1/png-info", json={"image": "data:image/png;base64," + image_b64})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["info"].startswith("a red circle\nSteps: 1")
    assert body["parameters"]["Seed"] == 99 or body["parameters"]["Seed"] == "99"
    assert body["parameters"]["Prompt"] == "a red circle"
    plain = b64png(Image.new("RGB", (8, 8)), {"other": "x"})
    body = srv.post("/sdapi/v1/png-info", json={"image": plain}).json()
    assert body["info"] == "" and body["items"] == {"other": "x"}


# --- concurrency, progress, interrupt ------------------------------------------------------------------


def test_eight_concurrent_txt2img_requests(srv: Server) -> None:
    results: dict[int, dict] = {}

    def call(seed: int) -> None:
        r = requests.post(srv.url + "/sdapi/v1/txt2img", json={**SMALL, "seed": seed}, timeout=300)
        results[seed] = {"status": r.status_code, **(r.json() if r.status_code == 200 else {"text": r.text})}

    seeds = list(range(1000, 1008))
    threads = [threading.Thread(target=call, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert all(results[s]["status"] == 200 for s in seeds), results
    for s in seeds:
        assert json.loads(results[s]["info"])["all_seeds"] == [s]
    arrays = [pixels(results[s]["images"][0]) for s in seeds]
    assert len({a.tobytes() for a in arrays}) == 8
    again = srv.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 1003}).json()
    assert np.array_equal(pixels(again["images"][0]), arrays[3])


def _start_long(srv: Server, **extra) -> tuple[threading.Thread, dict]:  # type: ignore[no-untyped-def]
    box: dict = {}

    def call() -> None:
        t0 = time.time()
        r = requests.post(srv.url + "/sdapi/v1/txt2img", json={**SMALL, "steps": 150, "seed": 5, **extra},
                          timeout=300)
        box.update(status=r.status_code, body=r.json(), elapsed=time.time() - t0)

    thread = threading.Thread(target=call)
    thread.start()
    return thread, box


def _wait_for_steps(srv: Server, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        p = srv.get("/sdapi/v1/progress").json()
        if p["state"]["sampling_step"] >= 2:
            return p
        time.sleep(0.05)
    raise AssertionError("the job never started sampling")


def test_progress_and_interrupt_of_a_running_job(srv: Server) -> None:
    idle = srv.get("/sdapi/v1/progress").json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0
    thread, box = _start_long(srv)
    p = _wait_for_steps(srv)
    assert 0 < p["progress"] < 1 and p["state"]["sampling_steps"] == 150 and p["state"]["job_count"] == 1
    assert p["current_task"]
    assert srv.post("/sdapi/v1/interrupt").status_code == 200
    thread.join(60)
    assert box["status"] == 200
    assert box["body"]["images"] == []  # stopped before the one image was finished
    assert srv.post("/sdapi/v1/skip").status_code == 200  # nothing running: harmless
    r = srv.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 8, "steps": 1})
    assert r.status_code == 200 and len(r.json()["images"]) == 1  # the next job is not interrupted


def test_skip_moves_on_to_the_next_batch(srv: Server) -> None:
    thread, box = _start_long(srv, n_iter=2, steps=60)
    _wait_for_steps(srv)
    srv.post("/sdapi/v1/skip")
    thread.join(120)
    assert box["status"] == 200
    info = json.loads(box["body"]["info"])
    assert len(box["body"]["images"]) == 1 and info["all_seeds"] == [5, 6]


# --- the jobs API -------------------------------------------------------------------------------------


def _wait_job(srv: Server, job_id: str, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        view = srv.get(f"/api/v1/jobs/{job_id}").json()
        if view["status"] in ("done", "failed", "cancelled"):
            return view
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_jobs_api_lifecycle_with_event_stream(srv: Server) -> None:
    r = srv.post("/api/v1/jobs", json={**SMALL, "seed": 21, "steps": 12})
    assert r.status_code == 202, r.text
    created = r.json()
    assert created["kind"] == "txt2img" and created["status"] in ("queued", "running")
    events: list[tuple[str, dict]] = []
    with requests.get(srv.url + created["urls"]["events"], stream=True, timeout=120) as stream:
        event = None
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
    kinds = [e for e, _ in events]
    assert kinds[0] == "status" and events[-1][1]["status"] == "done"
    assert "progress" in kinds and "preview" in kinds
    steps = [d["step"] for e, d in events if e == "progress"]
    assert steps == sorted(steps) and steps[-1] == 12
    preview = next(d for e, d in events if e == "preview")
    assert decode(preview["image"]).size[0] > 0
    view = srv.get(f"/api/v1/jobs/{created['id']}").json()
    assert view["status"] == "done" and view["position"] is None and view["progress"] == 1.0
    assert json.loads(view["result"]["info"])["all_seeds"] == [21]
    assert decode(view["result"]["images"][0]).size == (64, 64)
    listed = srv.get("/api/v1/jobs").json()
    assert any(j["id"] == created["id"] for j in listed)
    assert srv.delete(f"/api/v1/jobs/{created['id']}").status_code == 409  # finished already


def test_jobs_api_img2img_and_cancel_queued_and_running(srv: Server) -> None:
    running = srv.post("/api/v1/jobs", json={**SMALL, "steps": 150, "seed": 1}).json()
    init = b64png(Image.new("RGB", (64, 64), "blue"))
    queued = srv.post("/api/v1/jobs", json={**SMALL, "init_images": [init], "steps": 1}).json()
    assert queued["kind"] == "img2img"
    assert srv.get(f"/api/v1/jobs/{queued['id']}").json()["position"] >= 1
    r = srv.delete(f"/api/v1/jobs/{queued['id']}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    _wait_for_steps(srv)
    assert srv.get(f"/api/v1/jobs/{running['id']}").json()["status"] == "running"
    srv.delete(f"/api/v1/jobs/{running['id']}")
    assert _wait_job(srv, running["id"])["status"] == "cancelled"
    assert srv.get(f"/api/v1/jobs/{queued['id']}").json()["status"] == "cancelled"
    assert_clean_error(srv.get("/api/v1/jobs/nope"), 404, "nope")
    done = srv.post("/api/v1/jobs?kind=img2img", json={**SMALL, "init_images": [init], "steps": 1}).json()
    assert _wait_job(srv, done["id"])["status"] == "done"


def test_full_queue_answers_503(srv: Server) -> None:
    running = srv.post("/api/v1/jobs", json={**SMALL, "steps": 150}).json()
    _wait_for_steps(srv)
    waiting = [srv.post("/api/v1/jobs", json={**SMALL, "steps": 1}) for _ in range(8)]
    assert all(r.status_code == 202 for r in waiting)
    assert_clean_error(srv.post("/api/v1/jobs", json={**SMALL, "steps": 1}), 503, "queue is full")
    assert_clean_error(srv.post("/sdapi/v1/txt2img", json={**SMALL, "steps": 1}), 503, "queue is full")
    for r in waiting:
        srv.delete(f"/api/v1/jobs/{r.json()['id']}")
    srv.delete(f"/api/v1/jobs/{running['id']}")
    _wait_job(srv, running["id"])


# --- settings and model control -------------------------------------------------------------------------


def test_options_switch_checkpoint_by_name_and_hash(srv: Server) -> None:
    models = srv.get("/sdapi/v1/sd-models").json()
    by_name = {m["model_name"]: m for m in models}
    assert set(by_name) == {"tiny-sd1", "tiny-other"}
    assert srv.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd1"}).status_code == 200
    assert srv.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("tiny-sd1.safetensors")
    info = json.loads(srv.post("/sdapi/v1/txt2img", json={**SMALL, "steps": 1}).json()["info"])
    assert info["sd_model_name"] == "tiny-sd1"
    # tiny-other was loaded at start (first in the list), so its hash is known: switch by hash
    other_hash = next(m for m in srv.get("/sdapi/v1/sd-models").json() if m["model_name"] == "tiny-other")["hash"]
    assert other_hash and len(other_hash) == 10
    assert srv.post("/sdapi/v1/options", json={"sd_model_checkpoint": other_hash}).status_code == 200
    info = json.loads(srv.post("/sdapi/v1/txt2img", json={**SMALL, "steps": 1}).json()["info"])
    assert info["sd_model_name"] == "tiny-other" and info["sd_model_hash"] == other_hash
    assert_clean_error(srv.post("/sdapi/v1/options", json={"sd_model_checkpoint": "nope"}), 404, "nope", "tiny-sd1")
    assert_clean_error(srv.post("/sdapi/v1/options", json={"sd_vae": "nope.pt"}), 404, "nope.pt", "tiny-vae")
    # a plain option round-trips and is saved to config.json
    assert srv.post("/sdapi/v1/options", json={"jpeg_quality": 81}).status_code == 200
    assert srv.get("/sdapi/v1/options").json()["jpeg_quality"] == 81
    assert json.loads((srv.data_dir / "config.json").read_text())["jpeg_quality"] == 81
    # per-request override of the checkpoint, restored afterwards
    r = srv.post("/sdapi/v1/txt2img", json={**SMALL, "steps": 1, "override_settings": {
        "sd_model_checkpoint": "tiny-sd1"}})
    assert json.loads(r.json()["info"])["sd_model_name"] == "tiny-sd1"
    assert srv.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("tiny-other")


def test_unload_reload_and_refreshes(srv: Server) -> None:
    assert srv.post("/sdapi/v1/unload-checkpoint").status_code == 200
    assert srv.post("/sdapi/v1/reload-checkpoint").status_code == 200
    for path in ("refresh-checkpoints", "refresh-vae", "refresh-loras", "refresh-embeddings"):
        assert srv.post(f"/sdapi/v1/{path}").status_code == 200, path
    assert srv.post("/sdapi/v1/txt2img", json={**SMALL, "steps": 1}).status_code == 200


def test_listings(srv: Server) -> None:
    samplers = srv.get("/sdapi/v1/samplers").json()
    assert {"Euler", "Euler a", "DPM++ 2M"} <= {s["name"] for s in samplers}
    assert all(set(s) == {"name", "aliases", "options"} for s in samplers)
    schedulers = srv.get("/sdapi/v1/schedulers").json()
    assert {"name": "karras", "label": "Karras"}.items() <= next(s for s in schedulers if s["name"] == "karras").items()
    assert [u["name"] for u in srv.get("/sdapi/v1/upscalers").json()] == ["None", "Lanczos", "Nearest"]
    assert {"name": "Latent"} in srv.get("/sdapi/v1/latent-upscale-modes").json()
    vaes = srv.get("/sdapi/v1/sd-vae").json()
    assert [v["model_name"] for v in vaes] == ["tiny-vae.safetensors"]
    for path in ("hypernetworks", "face-restorers", "prompt-styles"):
        assert srv.get(f"/sdapi/v1/{path}").json() == [], path
    scripts = srv.get("/sdapi/v1/scripts").json()
    assert {"x/y/z plot", "prompt matrix", "prompts from file or textbox"} <= set(scripts["txt2img"])
    assert "sd upscale" in scripts["img2img"] and "sd upscale" not in scripts["txt2img"]
    info = {(i["name"], i["is_img2img"]): i for i in srv.get("/sdapi/v1/script-info").json()}
    assert info[("x/y/z plot", False)]["is_alwayson"] is False and info[("x/y/z plot", False)]["args"]
    assert isinstance(srv.get("/sdapi/v1/extensions").json(), list)
    memory = srv.get("/sdapi/v1/memory").json()
    assert memory["ram"]["total"] > memory["ram"]["used"] > 0 and "cuda" in memory
    flags = srv.get("/sdapi/v1/cmd-flags").json()
    assert flags["nowebui"] is True and flags["api_auth"] is None
    options = srv.get("/sdapi/v1/options").json()
    assert options["samples_format"] == "png" and "sd_model_checkpoint" in options


def test_loras_and_embeddings_follow_the_folders(srv: Server) -> None:
    assert srv.get("/sdapi/v1/loras").json() == []
    lora_dir = srv.data_dir.parent / "models" / "Lora"
    lora_dir.mkdir(parents=True, exist_ok=True)
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 4)}, str(lora_dir / "my_style.safetensors"),
              metadata={"ss_output_name": "mystyle"})
    emb_dir = srv.data_dir / "embeddings"
    emb_dir.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": torch.zeros(3, 32)}, str(emb_dir / "tok.safetensors"))
    assert srv.post("/sdapi/v1/refresh-loras").status_code == 200
    loras = srv.get("/sdapi/v1/loras").json()
    # the alias is the network's own name from its metadata (ss_output_name), as A1111 lists it
    assert loras == [{"name": "my_style", "alias": "mystyle", "path": str(lora_dir / "my_style.safetensors"),
                      "metadata": {"ss_output_name": "mystyle"}}]
    embeddings = srv.get("/sdapi/v1/embeddings").json()
    item = {**embeddings["loaded"], **embeddings["skipped"]}["tok"]
    assert item["vectors"] == 3 and item["shape"] == 32


# --- extras -----------------------------------------------------------------------------------------


def test_extras_resize_keeps_parameters_and_adds_extras_chunk(srv: Server) -> None:
    src = b64png(Image.new("RGB", (32, 24), "green"), {"parameters": "a prompt\nSteps: 3, Seed: 1"})
    r = srv.post("/sdapi/v1/extra-single-image", json={"image": src, "upscaler_1": "lanczos", "upscaling_resize": 2})
    assert r.status_code == 200, r.text
    out = decode(r.json()["image"])
    assert out.size == (64, 48)
    assert out.info["parameters"] == "a prompt\nSteps: 3, Seed: 1"
    assert "Postprocess upscale by: 2" in out.info["extras"] and "Lanczos" in out.info["extras"]
    r = srv.post("/sdapi/v1/extra-single-image", json={
        "image": src, "resize_mode": 1, "upscaling_resize_w": 40, "upscaling_resize_h": 40, "upscaling_crop": True,
        "upscaler_1": "Nearest", "upscaler_2": "Lanczos", "extras_upscaler_2_visibility": 0.5})
    assert decode(r.json()["image"]).size == (40, 40)
    r = srv.post("/sdapi/v1/extra-single-image", json={"image": src, "upscaler_1": "None"})
    assert decode(r.json()["image"]).size == (32, 24)
    r = srv.post("/sdapi/v1/extra-batch-images", json={
        "imageList": [{"data": src, "name": "a.png"}, {"data": src, "name": "b.png"}],
        "upscaler_1": "Nearest", "upscaling_resize": 1.5})
    assert r.status_code == 200, r.text
    assert [decode(i).size for i in r.json()["images"]] == [(48, 36), (48, 36)]
    assert_clean_error(srv.post("/sdapi/v1/extra-single-image", json={"image": src, "upscaler_1": "R-ESRGAN 4x+"}),
                       404, "R-ESRGAN 4x+", "Lanczos", "Nearest")


# --- bad input -------------------------------------------------------------------------------------


def test_bad_input_is_answered_and_the_server_keeps_serving(srv: Server) -> None:
    before = outputs(srv)
    r = srv.post("/sdapi/v1/txt2img", data="{not json", headers={"Content-Type": "application/json"})
    assert_clean_error(r, 422, "json")
    r = srv.post("/sdapi/v1/txt2img", json={**SMALL, "steps": "many"})
    body = assert_clean_error(r, 422, "body.steps")
    assert body["detail"][0]["loc"] == ["body", "steps"]
    assert_clean_error(srv.post("/sdapi/v1/txt2img", json={**SMALL, "width": 65}), 422, "width", "multiple of 8")
    assert_clean_error(srv.post("/sdapi/v1/txt2img", json={**SMALL, "sampler_name": "Nope"}), 400, "Nope", "Euler a")
    assert_clean_error(srv.post("/sdapi/v1/txt2img", json={**SMALL, "scheduler": "wobbly"}), 400, "wobbly", "Karras")
    assert_clean_error(srv.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": {
        "sd_model_checkpoint": "missing-model"}}), 404, "missing-model", "tiny-sd1")
    assert_clean_error(srv.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": {"sd_vae": "gone.pt"}}),
                       404, "gone.pt")
    assert_clean_error(srv.post("/sdapi/v1/txt2img", json={**SMALL, "enable_hr": True}), 400, "hires fix")
    assert_clean_error(srv.post("/sdapi/v1/txt2img", json={**SMALL, "script_name": "No such script"}), 422,
                       "No such script")
    assert_clean_error(srv.post("/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": {"ControlNet": {"args": []}}}),
                       422, "ControlNet")
    assert_clean_error(srv.post("/sdapi/v1/txt2img", json={**SMALL, "width": 4096, "height": 4096, "batch_size": 2}),
                       413, "api_max_pixels")
    big = {**SMALL, "prompt": "x" * (1024 * 1024 + 10)}
    assert_clean_error(srv.post("/sdapi/v1/txt2img", json=big), 413, "api_max_request_mb")
    assert_clean_error(srv.post("/sdapi/v1/img2img", json={**SMALL, "init_images": ["%%%not base64%%%"]}), 400,
                       "init_images[0]", "base64")
    junk = base64.b64encode(b"hello, not an image").decode()
    assert_clean_error(srv.post("/sdapi/v1/img2img", json={**SMALL, "init_images": [junk]}), 400, "init_images[0]")
    assert_clean_error(srv.post("/sdapi/v1/img2img", json={**SMALL, "init_images": []}), 422, "init image")
    assert_clean_error(srv.post("/sdapi/v1/png-info", json={"image": junk}), 400)
    assert_clean_error(srv.post("/api/v1/jobs", json={**SMALL, "cfg_scale": "high"}), 422, "body.cfg_scale")
    assert outputs(srv) == before
    assert srv.post("/sdapi/v1/txt2img", json={**SMALL, "steps": 1}).status_code == 200


def test_openapi_docs_and_closed_cors(srv: Server) -> None:
    assert srv.get("/docs").status_code == 200 and srv.get("/redoc").status_code == 200
    spec = srv.get("/openapi.json").json()
    assert "/sdapi/v1/txt2img" in spec["paths"] and "/api/v1/jobs" in spec["paths"]
    r = srv.get("/sdapi/v1/samplers", headers={"Origin": "http://evil.test"})
    assert "access-control-allow-origin" not in r.headers
    assert srv.post("/sdapi/v1/server-stop").status_code == 404  # only with --api-server-stop
