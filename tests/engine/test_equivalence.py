"""Reference equivalence: Easel's loop against diffusers' own pipelines, same components and noise.

This is the guard-rail for every later speed-up: with the same UNet, VAE, text encoders, scheduler,
seed and starting noise, txt2img, img2img and inpainting must give what diffusers gives.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import (
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image
from tiny_models import build_components

from modules.engine import conditioning, denoise, noise, samplers, vae
from modules.engine.model import DiffusionModel

SAMPLERS = [("Euler a", "Automatic"), ("Euler", "Automatic"), ("DPM++ 2M", "Karras"), ("DDIM", "Automatic")]
SIZE = 64
STEPS = 6
ATOL = 2e-5


def model_from(arch: str, seed: int = 0) -> DiffusionModel:
    c = build_components(arch, seed)
    return DiffusionModel(family=c["family"], unet=c["unet"], vae=c["vae"], text_encoder=c["text_encoder"],
                          tokenizer=c["tokenizer"], text_encoder_2=c["text_encoder_2"], tokenizer_2=c["tokenizer_2"],
                          scheduler_config=c["scheduler_config"])


@pytest.fixture(scope="module")
def sd1() -> DiffusionModel:
    return model_from("sd1")


def scheduler_for(model: DiffusionModel, sampler: str, schedule: str):  # type: ignore[no-untyped-def]
    spec, sched = samplers.resolve(sampler, schedule)
    return spec, sched, samplers.build_scheduler(spec, sched, model.scheduler_config)


def gens(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def easel_txt2img(model: DiffusionModel, sampler: str, schedule: str, prompts: list[str], negatives: list[str],
                  seeds: list[int], cfg: float = 7.0) -> torch.Tensor:
    spec, sched = samplers.resolve(sampler, schedule)
    cond, uncond = conditioning.PromptEncoder(model).encode_pair(prompts, negatives)
    run = samplers.SamplerRun(spec, sched, model.scheduler_config, STEPS, seeds=seeds, device=torch.device("cpu"))
    f = model.vae_scale_factor
    x = noise.batch_noise(seeds, (4, SIZE // f, SIZE // f)) * run.init_noise_sigma
    time_ids = None
    if model.is_sdxl:
        time_ids = torch.tensor([[SIZE, SIZE, 0, 0, SIZE, SIZE]] * len(seeds), dtype=torch.float32)
    return denoise.sample(model, run, x, denoise.Guidance(cond, uncond, cfg, time_ids))


@pytest.mark.parametrize(("sampler", "schedule"), SAMPLERS)
def test_txt2img_matches_stable_diffusion_pipeline(sd1: DiffusionModel, sampler: str, schedule: str) -> None:
    _, _, scheduler = scheduler_for(sd1, sampler, schedule)
    pipe = StableDiffusionPipeline(vae=sd1.vae, text_encoder=sd1.text_encoder, tokenizer=sd1.tokenizer,
                                   unet=sd1.unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    seeds = [123, 124]
    ref = pipe(prompt=["a red circle"] * 2, negative_prompt=["blurry"] * 2, num_inference_steps=STEPS,
               guidance_scale=7.0, height=SIZE, width=SIZE, generator=gens(seeds), output_type="latent").images
    ours = easel_txt2img(sd1, sampler, schedule, ["a red circle"] * 2, ["blurry"] * 2, seeds)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=ATOL), (ours - ref).abs().max()


def test_decoded_pixels_match_the_pipeline(sd1: DiffusionModel) -> None:
    _, _, scheduler = scheduler_for(sd1, "Euler", "Automatic")
    pipe = StableDiffusionPipeline(vae=sd1.vae, text_encoder=sd1.text_encoder, tokenizer=sd1.tokenizer,
                                   unet=sd1.unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(prompt="a cat", num_inference_steps=STEPS, guidance_scale=7.0, height=SIZE, width=SIZE,
               generator=gens([5]), output_type="pt").images
    ours = vae.decode(sd1, easel_txt2img(sd1, "Euler", "Automatic", ["a cat"], [""], [5]))
    assert torch.allclose(ours, ref, atol=1e-4)


def test_cfg_one_skips_the_unconditional_half_and_matches(sd1: DiffusionModel) -> None:
    calls: list[int] = []
    handle = sd1.unet.register_forward_pre_hook(lambda mod, args, kwargs=None: calls.append(args[0].shape[0]))
    try:
        easel_txt2img(sd1, "Euler", "Automatic", ["a cat"], [""], [1], cfg=1.0)
    finally:
        handle.remove()
    assert calls and set(calls) == {1}
    _, _, scheduler = scheduler_for(sd1, "Euler", "Automatic")
    pipe = StableDiffusionPipeline(vae=sd1.vae, text_encoder=sd1.text_encoder, tokenizer=sd1.tokenizer,
                                   unet=sd1.unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(prompt="a cat", num_inference_steps=STEPS, guidance_scale=1.0, height=SIZE, width=SIZE,
               generator=gens([1]), output_type="latent").images
    assert torch.allclose(easel_txt2img(sd1, "Euler", "Automatic", ["a cat"], [""], [1], cfg=1.0), ref, atol=ATOL)


def test_prompt_embeddings_match_encode_prompt(sd1: DiffusionModel) -> None:
    pipe = StableDiffusionPipeline(vae=sd1.vae, text_encoder=sd1.text_encoder, tokenizer=sd1.tokenizer,
                                   unet=sd1.unet, scheduler=scheduler_for(sd1, "Euler", "Automatic")[2],
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    ref, ref_neg = pipe.encode_prompt("a photo of a cat, detailed", "cpu", 1, True, "ugly")
    cond, uncond = conditioning.PromptEncoder(sd1).encode_pair(["a photo of a cat, detailed"], ["ugly"])
    assert torch.equal(cond.embeds, ref)
    assert torch.equal(uncond.embeds, ref_neg)
    # clip skip 2 (A1111 numbering): the second-to-last layer's output through the final layer norm
    ids = sd1.tokenizer("a photo of a cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    hidden = sd1.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
    ref2 = sd1.text_encoder.final_layer_norm(hidden)
    skipped = conditioning.PromptEncoder(sd1, clip_skip=2).encode(["a photo of a cat"]).embeds
    assert torch.allclose(skipped, ref2)
    assert not torch.allclose(skipped, conditioning.PromptEncoder(sd1).encode(["a photo of a cat"]).embeds)


def test_sdxl_txt2img_matches_pipeline() -> None:
    model = model_from("sdxl", seed=3)
    _, _, scheduler = scheduler_for(model, "Euler a", "Automatic")
    pipe = StableDiffusionXLPipeline(vae=model.vae, text_encoder=model.text_encoder,
                                     text_encoder_2=model.text_encoder_2, tokenizer=model.tokenizer,
                                     tokenizer_2=model.tokenizer_2, unet=model.unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    # Embeddings: plain prompts encode exactly as diffusers' encode_prompt does.
    pe, ne, pp, npp = pipe.encode_prompt("a blue square", device="cpu", num_images_per_prompt=1,
                                         do_classifier_free_guidance=True, negative_prompt="red")
    cond, uncond = conditioning.PromptEncoder(model).encode_pair(["a blue square"], ["red"])
    assert torch.allclose(cond.embeds, pe) and torch.allclose(cond.pooled, pp)
    assert torch.allclose(uncond.embeds, ne) and torch.allclose(uncond.pooled, npp)
    ref = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, pooled_prompt_embeds=pp,
               negative_pooled_prompt_embeds=npp, num_inference_steps=STEPS, guidance_scale=5.0, height=SIZE,
               width=SIZE, generator=gens([9]), output_type="latent").images
    ours = easel_txt2img(model, "Euler a", "Automatic", ["a blue square"], ["red"], [9], cfg=5.0)
    assert torch.allclose(ours, ref, atol=ATOL), (ours - ref).abs().max()


def _image(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)


@pytest.mark.parametrize(("sampler", "schedule"), SAMPLERS)
def test_img2img_matches_img2img_pipeline(sd1: DiffusionModel, sampler: str, schedule: str) -> None:
    spec, sched, scheduler = scheduler_for(sd1, sampler, schedule)
    pipe = StableDiffusionImg2ImgPipeline(vae=sd1.vae, text_encoder=sd1.text_encoder, tokenizer=sd1.tokenizer,
                                          unet=sd1.unet, scheduler=scheduler, safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    init = vae.encode(sd1, _image(1))
    strength = 0.6
    ref = pipe(prompt="a house", image=init, strength=strength, num_inference_steps=STEPS, guidance_scale=7.0,
               generator=gens([77]), output_type="latent").images

    cond, uncond = conditioning.PromptEncoder(sd1).encode_pair(["a house"], [""])
    run = samplers.SamplerRun(spec, sched, sd1.scheduler_config, STEPS, seeds=[77], denoising_strength=strength,
                              device=torch.device("cpu"))
    x = run.add_noise(init, noise.batch_noise([77], init.shape[1:]))
    ours = denoise.sample(sd1, run, x, denoise.Guidance(cond, uncond, 7.0))
    assert torch.allclose(ours, ref, atol=ATOL), (ours - ref).abs().max()


def _mask() -> Image.Image:
    m = Image.new("L", (SIZE, SIZE), 0)
    m.paste(255, (16, 16, 48, 48))  # aligned with the latent grid, so nearest and bicubic agree
    return m


@pytest.mark.parametrize("arch", ["sd1", "sd1-inpaint"])
def test_inpaint_matches_inpaint_pipeline(arch: str) -> None:
    model = model_from(arch, seed=11)
    spec, sched, scheduler = scheduler_for(model, "DPM++ 2M", "Karras")
    pipe = StableDiffusionInpaintPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                          unet=model.unet, scheduler=scheduler, safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pixels = _image(2)
    mask_img = _mask()
    mask_px = torch.from_numpy(__import__("numpy").asarray(mask_img, dtype="float32") / 255.0)[None, None]
    init = vae.encode(model, pixels)
    masked_latents = vae.encode(model, pixels * (mask_px < 0.5))
    strength = 0.75
    ref = pipe(prompt="a red circle", image=init, mask_image=mask_img, masked_image_latents=masked_latents,
               strength=strength, num_inference_steps=STEPS, guidance_scale=7.0, height=SIZE, width=SIZE,
               generator=gens([5]), output_type="latent").images

    cond, uncond = conditioning.PromptEncoder(model).encode_pair(["a red circle"], [""])
    run = samplers.SamplerRun(spec, sched, model.scheduler_config, STEPS, seeds=[5], denoising_strength=strength,
                              device=torch.device("cpu"))
    eps = noise.batch_noise([5], init.shape[1:])
    x = run.add_noise(init, eps)
    small = torch.nn.functional.interpolate(mask_px, size=init.shape[2:])
    if model.is_inpaint:
        out = denoise.sample(model, run, x, denoise.Guidance(cond, uncond, 7.0),
                             image_conditioning=torch.cat([small, masked_latents], dim=1))
    else:
        out = denoise.sample(model, run, x, denoise.Guidance(cond, uncond, 7.0),
                             blend=denoise.InpaintBlend(init, small, eps))
    assert torch.allclose(out, ref, atol=ATOL), (out - ref).abs().max()
