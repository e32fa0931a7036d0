"""The `/sdapi/v1` routes: A1111's paths, field names, defaults and response shapes.

Generations run as jobs on the one queue; a blocking call waits for its own job while progress,
interrupt and skip act on the running one (A1111's global view).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body, Query
from fastapi.concurrency import run_in_threadpool

from modules import shared
from modules.api import adapter, codec, errors, extras, listings, runner, scripts_bridge
from modules.api import models as m
from modules.api.errors import ApiError
from modules.jobs.queue import get_queue

log = logging.getLogger(__name__)

LATENT_UPSCALE_MODES = ["Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
                        "Latent (nearest)", "Latent (nearest-exact)"]


def _debug(args: argparse.Namespace) -> bool:
    return str(getattr(args, "api_log", "") or "").lower() == "debug"


def _model_manager() -> Any:
    mm = shared.model_manager
    if mm is None:
        raise ApiError(503, "the model manager is not initialised", "NotReady")
    return mm


def progress_payload(skip_current_image: bool) -> dict[str, Any]:
    """`/sdapi/v1/progress` from the global state (it mirrors the running job)."""
    state = shared.state
    running = get_queue().running
    base = {"state": state.dict(), "textinfo": state.textinfo, "current_image": None,
            "current_task": running.id if running is not None else None}
    if state.job_count == 0:
        return {"progress": 0.0, "eta_relative": 0.0, **base}
    progress = 0.01 + state.job_no / state.job_count
    if state.sampling_steps > 0:
        progress += state.sampling_step / state.sampling_steps / state.job_count
    progress = min(progress, 1.0)
    elapsed = time.time() - (state.time_start or time.time())
    eta = max(0.0, elapsed / progress - elapsed) if progress > 0 else 0.0
    if not skip_current_image and state.current_image is not None:
        base["current_image"] = codec.encode_pil_to_base64(state.current_image)
    return {"progress": progress, "eta_relative": eta, **base}


def _schedule(fn: Callable[[], None], delay: float = 0.3) -> None:
    """Run fn shortly, after the current response has gone out."""
    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.start()


def build_router(args: argparse.Namespace) -> APIRouter:
    debug = _debug(args)
    guard = errors.handled(debug)
    r = APIRouter(prefix="/sdapi/v1", tags=["sdapi"])

    # --- generation ---------------------------------------------------------------------------------
    @r.post("/txt2img", response_model=m.TextToImageResponse)
    @guard
    async def text2imgapi(txt2imgreq: m.StableDiffusionTxt2ImgProcessingAPI) -> Any:
        p = await run_in_threadpool(adapter.build_txt2img, txt2imgreq)
        job = runner.submit(p, job_id=txt2imgreq.force_task_id)
        processed = await runner.run(job)
        return await run_in_threadpool(adapter.generation_response, txt2imgreq, p, processed)

    @r.post("/img2img", response_model=m.ImageToImageResponse)
    @guard
    async def img2imgapi(img2imgreq: m.StableDiffusionImg2ImgProcessingAPI) -> Any:
        p = await run_in_threadpool(adapter.build_img2img, img2imgreq)
        job = runner.submit(p, job_id=img2imgreq.force_task_id)
        processed = await runner.run(job)
        return await run_in_threadpool(adapter.generation_response, img2imgreq, p, processed)

    @r.post("/extra-single-image", response_model=m.ExtrasSingleImageResponse)
    @guard
    async def extras_single_image_api(req: m.ExtrasSingleImageRequest) -> Any:
        def work() -> dict[str, Any]:
            image = codec.decode_base64_to_image(req.image, what="image", max_pixels=adapter.max_pixels())
            res = extras.run_extras(req, image)
            encoded = codec.encode_pil_to_base64(res.image, res.geninfo, extra_text=res.text_chunks())
            return {"html_info": f"<p>{res.infotext}</p>", "image": encoded}

        return await run_in_threadpool(work)

    @r.post("/extra-batch-images", response_model=m.ExtrasBatchImagesResponse)
    @guard
    async def extras_batch_images_api(req: m.ExtrasBatchImagesRequest) -> Any:
        def work() -> dict[str, Any]:
            out, info = [], ""
            for i, item in enumerate(req.imageList):
                image = codec.decode_base64_to_image(item.data, what=f"imageList[{i}]", max_pixels=adapter.max_pixels())
                res = extras.run_extras(req, image)
                out.append(codec.encode_pil_to_base64(res.image, res.geninfo, extra_text=res.text_chunks()))
                info = res.infotext
            return {"html_info": f"<p>{info}</p>", "images": out}

        return await run_in_threadpool(work)

    @r.post("/png-info", response_model=m.PNGInfoResponse)
    @guard
    async def pnginfoapi(req: m.PNGInfoRequest) -> Any:
        from modules.infotext_utils import parse_generation_parameters, read_info_from_image

        if not req.image.strip():
            return {"info": "", "items": {}, "parameters": {}}
        image = await run_in_threadpool(codec.decode_base64_to_image, req.image, what="image",
                                        max_pixels=adapter.max_pixels())
        geninfo, items = read_info_from_image(image)
        params = parse_generation_parameters(geninfo) if geninfo else {}
        return {"info": geninfo or "", "items": items, "parameters": params}

    # --- progress and control -----------------------------------------------------------------------
    @r.get("/progress", response_model=m.ProgressResponse)
    @guard
    async def progressapi(skip_current_image: bool = Query(False)) -> Any:
        return await run_in_threadpool(progress_payload, skip_current_image)

    @r.post("/interrupt")
    @guard
    async def interruptapi() -> Any:
        get_queue().interrupt_running()
        return {}

    @r.post("/skip")
    @guard
    async def skip() -> Any:
        get_queue().skip_running()
        return {}

    # --- settings -----------------------------------------------------------------------------------
    @r.get("/options")
    @guard
    async def get_config() -> Any:
        return listings._jsonable(shared.opts.as_dict())

    @r.post("/options")
    @guard
    async def set_config(req: dict[str, Any] = Body(...)) -> Any:
        if getattr(shared.cmd_opts, "freeze_settings", False):
            raise ApiError(403, "settings are frozen (--freeze-settings)", "SettingsFrozen")
        mm = _model_manager()
        ckpt = req.get("sd_model_checkpoint")
        if ckpt:
            info = await run_in_threadpool(mm.require_checkpoint, str(ckpt))
            await runner.run(runner.submit_task("load-checkpoint", lambda: mm.load(info), label=info.title))
        vae = req.get("sd_vae")
        if vae is not None and str(vae) not in ("Automatic", "None"):
            await run_in_threadpool(mm.find_vae, str(vae))
        for key, value in req.items():
            if key == "sd_model_checkpoint" and ckpt:
                continue  # the load set it to the checkpoint's full title
            shared.opts.set(key, value, is_api=True)
        if vae is not None:
            await runner.run(runner.submit_task("reload-vae", lambda: mm.reload_vae()))
        await run_in_threadpool(shared.opts.save)
        return None

    @r.get("/cmd-flags")
    @guard
    async def get_cmd_flags() -> Any:
        return listings.cmd_flags(shared.cmd_opts)

    # --- lists --------------------------------------------------------------------------------------
    @r.get("/samplers", response_model=list[m.SamplerItem])
    @guard
    async def get_samplers() -> Any:
        from modules import sd_samplers

        return sd_samplers.api_samplers()

    @r.get("/schedulers", response_model=list[m.SchedulerItem])
    @guard
    async def get_schedulers() -> Any:
        from modules import sd_schedulers

        return sd_schedulers.api_schedulers()

    @r.get("/upscalers", response_model=list[m.UpscalerItem])
    @guard
    async def get_upscalers() -> Any:
        return extras.upscaler_items()

    @r.get("/latent-upscale-modes", response_model=list[m.LatentUpscalerModeItem])
    @guard
    async def get_latent_upscale_modes() -> Any:
        return [{"name": name} for name in LATENT_UPSCALE_MODES]

    @r.get("/sd-models", response_model=list[m.SDModelItem])
    @guard
    async def get_sd_models() -> Any:
        return await run_in_threadpool(listings.sd_models)

    @r.get("/sd-vae", response_model=list[m.SDVaeItem])
    @guard
    async def get_sd_vaes() -> Any:
        return await run_in_threadpool(listings.sd_vaes)

    @r.get("/loras", response_model=list[m.LoraItem])
    @guard
    async def get_loras() -> Any:
        return await run_in_threadpool(listings.loras)

    @r.get("/embeddings", response_model=m.EmbeddingsResponse)
    @guard
    async def get_embeddings() -> Any:
        return await run_in_threadpool(listings.embeddings)

    @r.get("/hypernetworks")
    @guard
    async def get_hypernetworks() -> Any:
        return []

    @r.get("/face-restorers")
    @guard
    async def get_face_restorers() -> Any:
        return []

    @r.get("/realesrgan-models")
    @guard
    async def get_realesrgan_models() -> Any:
        return []

    @r.get("/prompt-styles", response_model=list[m.PromptStyleItem])
    @guard
    async def get_prompt_styles() -> Any:
        from modules import styles

        return await run_in_threadpool(lambda: styles.default_database().api_list())

    @r.get("/scripts", response_model=m.ScriptsList)
    @guard
    async def get_scripts_list() -> Any:
        return {"txt2img": scripts_bridge.script_names(False), "img2img": scripts_bridge.script_names(True)}

    @r.get("/script-info", response_model=list[m.ScriptInfo])
    @guard
    async def get_script_info() -> Any:
        return scripts_bridge.script_info()

    @r.get("/extensions", response_model=list[m.ExtensionItem])
    @guard
    async def get_extensions_list() -> Any:
        return await run_in_threadpool(listings.extensions)

    @r.get("/memory", response_model=m.MemoryResponse)
    @guard
    async def get_memory() -> Any:
        return await run_in_threadpool(listings.memory)

    # --- rescans and model control ------------------------------------------------------------------
    async def _refresh() -> None:
        await run_in_threadpool(_model_manager().refresh)

    @r.post("/refresh-checkpoints")
    @guard
    async def refresh_checkpoints() -> Any:
        await _refresh()
        return None

    @r.post("/refresh-vae")
    @guard
    async def refresh_vae() -> Any:
        await _refresh()
        return None

    @r.post("/refresh-loras")
    @guard
    async def refresh_loras() -> Any:
        from modules import networks

        await run_in_threadpool(networks.refresh_loras)
        return None

    @r.post("/refresh-embeddings")
    @guard
    async def refresh_embeddings() -> Any:
        from modules import textual_inversion

        await run_in_threadpool(textual_inversion.refresh_embeddings)
        return None

    @r.post("/unload-checkpoint")
    @guard
    async def unloadapi() -> Any:
        mm = _model_manager()
        await runner.run(runner.submit_task("unload-checkpoint", mm.unload))
        return {}

    @r.post("/reload-checkpoint")
    @guard
    async def reloadapi() -> Any:
        mm = _model_manager()
        await runner.run(runner.submit_task("reload-checkpoint", mm.reload))
        return {}

    # --- server control (opt-in) --------------------------------------------------------------------
    if getattr(args, "api_server_stop", False):
        @r.post("/server-kill")
        async def kill_webui() -> Any:
            _schedule(lambda: os._exit(0))
            return {}

        @r.post("/server-stop")
        async def stop_webui() -> Any:
            get_queue().interrupt_running()
            _schedule(lambda: os.kill(os.getpid(), signal.SIGTERM))  # uvicorn shuts down gracefully
            return {}

        @r.post("/server-restart")
        async def restart_webui() -> Any:
            # The server shuts down gracefully, then the process runs its command line again.
            from modules import restart

            if not restart.is_restartable():
                raise ApiError(409, "this server process cannot restart itself; restart it by hand",
                               "NotRestartable")
            get_queue().interrupt_running()
            restart.request_restart()
            return {}

    return r
