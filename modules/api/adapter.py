"""From API requests to processing objects, and from results back to A1111's response shape.

Everything that can be checked before a job is queued is checked here, in the request's thread:
sampler and schedule names, checkpoint/VAE overrides, scripts, image decoding, the pixel limit and
the engine's own range checks. A bad request is answered at once and never takes a queue slot.
"""

from __future__ import annotations

import logging
from typing import Any

from modules import shared
from modules.api import codec, scripts_bridge
from modules.api.errors import ApiError
from modules.api.models import (
    GenerationRequest,
    StableDiffusionImg2ImgProcessingAPI,
    StableDiffusionTxt2ImgProcessingAPI,
)
from modules.engine import samplers as engine_samplers
from modules.processing import (
    InvalidParameterError,
    StableDiffusionProcessing,
    StableDiffusionProcessingImg2Img,
    StableDiffusionProcessingTxt2Img,
)

log = logging.getLogger(__name__)

_SHARED_FIELDS = (
    "prompt", "negative_prompt", "styles", "seed", "subseed", "subseed_strength", "seed_resize_from_h",
    "seed_resize_from_w", "batch_size", "n_iter", "steps", "cfg_scale", "width", "height", "restore_faces",
    "tiling", "eta", "denoising_strength", "s_min_uncond", "s_churn", "s_tmax", "s_tmin", "s_noise",
    "override_settings", "override_settings_restore_afterwards", "disable_extra_networks", "comments",
)
_IMG2IMG_FIELDS = (
    "resize_mode", "image_cfg_scale", "mask_blur_x", "mask_blur_y", "mask_round", "inpainting_fill",
    "inpaint_full_res_padding", "initial_noise_multiplier", "include_init_images",
)
_NONE_NAMES = ("", "none")


def max_pixels() -> int:
    return int(getattr(shared.opts, "api_max_pixels", 16777216) or 16777216)


def sampler_for(req: GenerationRequest) -> str:
    """The requested sampler: `sampler_name`, else the legacy `sampler_index` (a name, or an index)."""
    if req.sampler_name:
        return req.sampler_name
    index = req.sampler_index
    if isinstance(index, int) and not isinstance(index, bool):
        names = engine_samplers.sampler_names()
        if not 0 <= index < len(names):
            raise ApiError(400, f"Sampler not found: sampler_index {index} is out of range 0..{len(names) - 1}",
                           "SamplerNotFound")
        return names[index]
    return str(index or "Euler")


def check_sampler(sampler: str, scheduler: str | None) -> None:
    try:
        engine_samplers.resolve(sampler, scheduler)
    except engine_samplers.UnknownSamplerError as e:
        raise ApiError(400, f"Sampler not found: {e}", "SamplerNotFound") from None


def check_overrides(overrides: dict[str, Any]) -> None:
    """Refuse override_settings naming a checkpoint or VAE that does not exist (404 with the known names)."""
    mm = shared.model_manager
    if mm is None:
        return
    ckpt = overrides.get("sd_model_checkpoint")
    if ckpt:
        mm.require_checkpoint(str(ckpt))
    vae = overrides.get("sd_vae")
    if vae and str(vae) not in ("Automatic", "None"):
        mm.find_vae(str(vae))


def check_model_available() -> None:
    mm = shared.model_manager
    if mm is not None and not mm.checkpoints():
        raise ApiError(503, f"no Stable Diffusion checkpoint found; put a .safetensors file into "
                            f"{shared.paths.sd_models_dir}", "NoModel")


def _check_unsupported(req: GenerationRequest) -> None:
    if getattr(req, "enable_hr", False):
        raise ApiError(400, "hires fix is not supported yet (enable_hr must be false)", "NotSupported")
    if req.refiner_checkpoint and req.refiner_checkpoint.strip().lower() not in _NONE_NAMES:
        raise ApiError(400, "the refiner is not supported yet (refiner_checkpoint must be empty)", "NotSupported")
    if req.restore_faces:
        raise ApiError(400, "face restoration is not supported yet (restore_faces must be false)", "NotSupported")
    if req.tiling:
        raise ApiError(400, "tiling is not supported yet (tiling must be false)", "NotSupported")


def _check_pixels(req: GenerationRequest) -> None:
    limit = max_pixels()
    total = int(req.width) * int(req.height) * max(1, int(req.batch_size))
    if total > limit:
        raise ApiError(413, f"{req.width}x{req.height} × batch size {req.batch_size} is {total} pixels, more than "
                            f"the {limit} a request may ask for (setting api_max_pixels)", "RequestTooLarge")


def _common_kwargs(req: GenerationRequest) -> dict[str, Any]:
    kw = {name: getattr(req, name) for name in _SHARED_FIELDS}
    kw["override_settings"] = dict(req.override_settings or {})
    kw["sampler_name"] = sampler_for(req)
    kw["scheduler"] = req.scheduler
    kw["do_not_save_samples"] = not req.save_images
    kw["do_not_save_grid"] = not req.save_images
    return kw


def _prepare(req: GenerationRequest, p: StableDiffusionProcessing, *, is_img2img: bool) -> StableDiffusionProcessing:
    selection = scripts_bridge.resolve_scripts(req.script_name, req.script_args, req.alwayson_scripts,
                                               is_img2img=is_img2img)
    p.is_api = True
    try:
        p.validate()
    except InvalidParameterError as e:
        raise ApiError(422, str(e), "InvalidParameterError") from None
    scripts_bridge.attach(p, selection)
    return p


def _precheck(req: GenerationRequest) -> None:
    _check_unsupported(req)
    _check_pixels(req)
    check_sampler(sampler_for(req), req.scheduler)
    check_overrides(req.override_settings or {})
    check_model_available()


def build_txt2img(req: StableDiffusionTxt2ImgProcessingAPI) -> StableDiffusionProcessingTxt2Img:
    """A txt2img processing object for the request; raises ApiError for anything refused up front."""
    _precheck(req)
    p = StableDiffusionProcessingTxt2Img(**_common_kwargs(req))
    return _prepare(req, p, is_img2img=False)  # type: ignore[return-value]


def build_img2img(req: StableDiffusionImg2ImgProcessingAPI) -> StableDiffusionProcessingImg2Img:
    """An img2img processing object: images decoded (base64 or data URLs, RGBA kept), mask, fields."""
    _precheck(req)
    if not req.init_images:
        raise ApiError(422, "init_images: img2img needs at least one init image", "InvalidParameterError")
    limit = max_pixels()
    init_images = [codec.decode_base64_to_image(data, what=f"init_images[{i}]", max_pixels=limit)
                   for i, data in enumerate(req.init_images)]
    mask = codec.decode_base64_to_image(req.mask, what="mask", max_pixels=limit) if req.mask else None
    latent_mask = (codec.decode_base64_to_image(req.latent_mask, what="latent_mask", max_pixels=limit)
                   if req.latent_mask else None)
    kw = _common_kwargs(req)
    kw.update({name: getattr(req, name) for name in _IMG2IMG_FIELDS})
    kw.update(
        init_images=init_images,
        mask=mask,
        latent_mask=latent_mask,
        mask_blur=req.mask_blur,
        inpaint_full_res=bool(req.inpaint_full_res),
        inpainting_mask_invert=int(req.inpainting_mask_invert),
    )
    p = StableDiffusionProcessingImg2Img(**kw)
    return _prepare(req, p, is_img2img=True)  # type: ignore[return-value]


def request_echo(req: GenerationRequest) -> dict[str, Any]:
    """`parameters` of the response: the request as parsed; img2img leaves the images out unless
    `include_init_images`, as A1111 does."""
    echo = req.model_dump()
    if isinstance(req, StableDiffusionImg2ImgProcessingAPI) and not req.include_init_images:
        echo["init_images"] = None
        echo["mask"] = None
    return echo


def response_images(processed: Any, *, send_images: bool) -> list[str]:
    """The result images as base64, each with its infotext (`opts.samples_format` as the format)."""
    if not send_images:
        return []
    fmt = str(getattr(shared.opts, "samples_format", "png") or "png")
    infotexts = list(getattr(processed, "infotexts", []) or [])
    out = []
    for i, image in enumerate(processed.images):
        text = infotexts[i] if i < len(infotexts) else None
        out.append(codec.encode_pil_to_base64(image, text, fmt=fmt))
    return out


def generation_response(req: GenerationRequest, p: StableDiffusionProcessing, processed: Any) -> dict[str, Any]:
    """`{images, parameters, info}` for a finished generation."""
    return {
        "images": response_images(processed, send_images=req.send_images),
        "parameters": request_echo(req),
        "info": processed.js(),
    }
