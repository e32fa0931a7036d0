"""The one denoising loop, shared by txt2img, img2img, inpainting and second passes.

The modes differ only in what comes in: the starting latents (noise, or noised image latents), an
optional per-step blend that keeps known latents outside an inpainting mask, and optional extra
UNet input channels (the mask and masked-image latents of 9-channel inpainting models).

Classifier-free guidance runs the unconditional and conditional halves in one UNet batch
(unconditional first, as diffusers' pipelines do, so the results match them exactly). At CFG scale 1
the unconditional half is skipped. Interrupt and skip are checked before every step; a progress
callback sees every step and can ask for the current denoised estimate for previews. Extension
hooks (A1111's cfg_denoiser / cfg_denoised / cfg_after_cfg) are called from here, and the loop
uses whatever tensors they leave.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from modules.engine import offload
from modules.engine.conditioning import GuidancePlan, StepConditioning, TextConditioning
from modules.engine.model import DiffusionModel


class Interrupted(Exception):
    """Sampling stopped early because the user interrupted or skipped."""


@dataclass
class Guidance:
    """What steers the sampler: fixed conditioning (`cond`/`uncond`, one row per image) or a
    `plan` that changes with the step (prompt editing) and may guide an image by several weighted
    prompts (`a AND b`)."""

    cond: TextConditioning | None
    uncond: TextConditioning | None
    cfg_scale: float
    time_ids: torch.Tensor | None = None
    """SDXL micro-conditioning (B, 6): original size, crop top-left, target size"""
    plan: GuidancePlan | None = None

    def at(self, step: int, batch: int) -> StepConditioning:
        if self.plan is not None:
            return self.plan.at(step)
        assert self.cond is not None
        return StepConditioning(cond=self.cond, weights=[[(b, 1.0)] for b in range(batch)], uncond=self.uncond)

    def needs_uncond(self, step: StepConditioning) -> bool:
        """The unconditional half can be skipped at CFG 1 when every image's weights sum to 1."""
        if step.uncond is None:
            return False
        if self.cfg_scale != 1.0:
            return True
        return any(abs(sum(w for _r, w in ws) - 1.0) > 1e-6 for ws in step.weights)


@dataclass
class InpaintBlend:
    """Keep the known image outside the mask: after each step, latents outside the mask are replaced
    by the original latents noised to the next timestep (as diffusers' inpaint pipeline does)."""

    init_latents: torch.Tensor
    mask: torch.Tensor
    """(B, 1, h, w), 1 = repaint"""
    noise: torch.Tensor


@dataclass
class DenoiserParams:
    """What the cfg_denoiser hook sees and may replace (A1111's CFGDenoiserParams fields)."""

    x: torch.Tensor
    image_cond: torch.Tensor | None
    sigma: torch.Tensor
    sampling_step: int
    total_sampling_steps: int
    text_cond: torch.Tensor
    text_uncond: torch.Tensor | None
    denoiser: Any = None


@dataclass
class DenoisedParams:
    """cfg_denoised: the UNet output before guidance is combined (A1111's CFGDenoisedParams)."""

    x: torch.Tensor
    sampling_step: int
    total_sampling_steps: int
    inner_model: Any = None


@dataclass
class AfterCFGParams:
    """cfg_after_cfg: the guided prediction (A1111's AfterCFGCallbackParams)."""

    x: torch.Tensor
    sampling_step: int
    total_sampling_steps: int


@dataclass
class DenoiserHooks:
    on_denoiser: list[Callable[[DenoiserParams], None]] = field(default_factory=list)
    on_denoised: list[Callable[[DenoisedParams], None]] = field(default_factory=list)
    on_after_cfg: list[Callable[[AfterCFGParams], None]] = field(default_factory=list)


@dataclass
class StepInfo:
    step: int
    """0-based index of the step just finished"""
    total: int
    timestep: torch.Tensor
    latents: torch.Tensor
    _denoised: Callable[[], torch.Tensor]

    def denoised(self) -> torch.Tensor:
        """The model's current estimate of the clean latents (for previews)."""
        return self._denoised()


def _predicted_clean(model: DiffusionModel, x_in: torch.Tensor, out: torch.Tensor, t: torch.Tensor,
                     alphas_cumprod: torch.Tensor) -> torch.Tensor:
    # x_in is the scaled model input, in DDPM space for every scheduler, so this works for all of them.
    idx = int(torch.clamp(t.round().long(), 0, alphas_cumprod.shape[0] - 1))
    a = alphas_cumprod[idx]
    if model.prediction_type == "v_prediction":
        return a.sqrt() * x_in - (1 - a).sqrt() * out
    return (x_in - (1 - a).sqrt() * out) / a.sqrt()


def _alphas_cumprod(model: DiffusionModel) -> torch.Tensor:
    cached = model.extra.get("alphas_cumprod")
    if cached is None:
        # diffusers' own schedule from the model's keys, so trained betas and a zero-terminal-SNR
        # rescale are followed exactly as the samplers follow them (SD's schedule when unsaid).
        from diffusers import DDPMScheduler

        from modules.engine.samplers import MODEL_CONFIG_KEYS

        cfg = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
               **{k: v for k, v in model.scheduler_config.items() if k in MODEL_CONFIG_KEYS and v is not None}}
        cached = DDPMScheduler.from_config(cfg).alphas_cumprod.float()
        model.extra["alphas_cumprod"] = cached
    return cached


def sample(
    model: DiffusionModel,
    run: Any,
    latents: torch.Tensor,
    guidance: Guidance,
    *,
    image_conditioning: torch.Tensor | None = None,
    blend: InpaintBlend | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    hooks: DenoiserHooks | None = None,
) -> torch.Tensor:
    """Run the sampler from `latents` (already noised/scaled for the first timestep) to the end.

    `run` is a modules.engine.samplers.SamplerRun. Raises Interrupted if should_stop() turns true.
    """
    unet = model.unet
    device = model.device
    latents = latents.to(device=device, dtype=torch.float32)
    with offload.stage(model, "unet"):
        return _loop(model, unet, run, latents, guidance, image_conditioning, blend, on_step, should_stop, hooks)


def _loop(model: DiffusionModel, unet: Any, run: Any, latents: torch.Tensor, guidance: Guidance,
          image_conditioning: torch.Tensor | None, blend: InpaintBlend | None,
          on_step: Callable[[StepInfo], None] | None, should_stop: Callable[[], bool] | None,
          hooks: DenoiserHooks | None) -> torch.Tensor:
    dtype = model.dtype
    device = model.device
    timesteps = run.timesteps
    total = len(timesteps)
    batch = latents.shape[0]
    for i, t in enumerate(timesteps):
        if should_stop is not None and should_stop():
            raise Interrupted()

        step_cond = guidance.at(i, batch)
        use_uncond = guidance.needs_uncond(step_cond)
        simple = step_cond.one_row_per_image
        if simple:
            cond = step_cond.per_image_cond()
            image_rows = list(range(batch))
        else:
            pairs = [(b, r, w) for b, ws in enumerate(step_cond.weights) for r, w in ws]
            cond = step_cond.cond.select([r for _b, r, _w in pairs])
            image_rows = [b for b, _r, _w in pairs]
        uncond = step_cond.uncond

        x = latents
        text_cond = cond.embeds
        text_uncond = uncond.embeds if uncond is not None else None
        img_cond = image_conditioning
        if hooks is not None and hooks.on_denoiser:
            params = DenoiserParams(x, img_cond, t, i, total, text_cond, text_uncond)
            for fn in hooks.on_denoiser:
                fn(params)
            x, img_cond, text_cond, text_uncond = params.x, params.image_cond, params.text_cond, params.text_uncond

        # UNet batch: [uncond rows (one per image)] + [cond rows], as diffusers orders them
        x_cond = x if simple else x[image_rows]
        x_in = torch.cat([x, x_cond]) if use_uncond else x_cond
        embeds = torch.cat([text_uncond, text_cond]) if use_uncond else text_cond
        x_in = run.scale_model_input(x_in, t) if simple else _scale_rows(run, x_in, t, batch)
        unet_in = x_in
        if img_cond is not None:
            ic_cond = img_cond if simple else img_cond[image_rows]
            unet_in = torch.cat([x_in, torch.cat([img_cond, ic_cond]) if use_uncond else ic_cond], dim=1)

        added: dict[str, torch.Tensor] | None = None
        if model.is_sdxl:
            assert cond.pooled is not None and guidance.time_ids is not None
            pooled_in = torch.cat([uncond.pooled, cond.pooled]) if use_uncond and uncond is not None else cond.pooled
            rows = guidance.time_ids if simple else guidance.time_ids[image_rows]
            time_in = torch.cat([guidance.time_ids, rows]) if use_uncond else rows
            added = {"text_embeds": pooled_in.to(device=device, dtype=dtype),
                     "time_ids": time_in.to(device=device, dtype=dtype)}

        out = unet(
            unet_in.to(dtype),
            t,
            encoder_hidden_states=embeds.to(device=device, dtype=dtype),
            added_cond_kwargs=added,
            return_dict=False,
        )[0].float()

        if hooks is not None and hooks.on_denoised:
            dparams = DenoisedParams(out, i, total, unet)
            for fn in hooks.on_denoised:
                fn(dparams)
            out = dparams.x

        if simple:
            if use_uncond:
                out_uncond, out_cond = out.chunk(2)
                out = out_uncond + guidance.cfg_scale * (out_cond - out_uncond)
        else:
            out = _combine(out, step_cond.weights, batch, guidance.cfg_scale, use_uncond)
        if hooks is not None and hooks.on_after_cfg:
            aparams = AfterCFGParams(out, i, total)
            for fn in hooks.on_after_cfg:
                fn(aparams)
            out = aparams.x

        x_model = None
        if on_step is not None:
            # the scaled input of each image, for the preview's clean estimate (taken before stepping,
            # since schedulers advance their sigma index in step())
            x_model = x_in[:batch] if (simple or use_uncond) else _scale_rows(run, x, t, batch)
        latents = run.step(out, t, x)

        if blend is not None:
            known = blend.init_latents
            if i < total - 1:
                known = run.noise_to(blend.init_latents, blend.noise, timesteps[i + 1])
            latents = (1 - blend.mask) * known + blend.mask * latents

        if on_step is not None:
            final_out = out

            def denoised(x_model: torch.Tensor = x_model, final_out: torch.Tensor = final_out,
                         t: torch.Tensor = t) -> torch.Tensor:
                return _predicted_clean(model, x_model, final_out, t, _alphas_cumprod(model))

            on_step(StepInfo(i, total, t, latents, denoised))

    return latents


def _scale_rows(run: Any, x_in: torch.Tensor, t: torch.Tensor, batch: int) -> torch.Tensor:
    """scale_model_input for rows that are not whole copies of the batch (composable prompts).

    Scaling depends only on the timestep, so every row is scaled as the first image's is.
    """
    scaled = [run.scale_model_input(x_in[k:k + 1].expand(batch, *x_in.shape[1:]), t)[:1]
              for k in range(x_in.shape[0])]
    return torch.cat(scaled)


def _combine(out: torch.Tensor, weights: list[list[tuple[int, float]]], batch: int, cfg_scale: float,
             use_uncond: bool) -> torch.Tensor:
    """Composable guidance: uncond + cfg * sum_k w_k (cond_k - uncond), per image."""
    if use_uncond:
        out_uncond, out_cond = out[:batch], out[batch:]
    else:
        out_uncond, out_cond = None, out
    results = []
    k = 0
    for b, ws in enumerate(weights):
        if out_uncond is None:
            acc = torch.zeros_like(out_cond[0])
            for _r, w in ws:
                acc = acc + w * out_cond[k]
                k += 1
        else:
            acc = out_uncond[b].clone()
            for _r, w in ws:
                acc = acc + cfg_scale * w * (out_cond[k] - out_uncond[b])
                k += 1
        results.append(acc)
    return torch.stack(results)
