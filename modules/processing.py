"""Generation jobs in A1111's shape: `StableDiffusionProcessingTxt2Img` / `...Img2Img` and
`process_images(p) -> Processed`.

A processing object holds the request (field names as A1111's API), collects what the run decides
(all_prompts, all_seeds, ...), and drives the engine: conditioning, initial latents, the one
denoising loop, decoding, compositing, saving and infotext. Script hooks (A1111's Script lifecycle)
are called at the same points A1111 calls them when `p.scripts` is set.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from modules import devices, extra_networks, images, infotext_utils, masking, shared
from modules.engine import conditioning, denoise, noise, samplers, vae
from modules.engine.model import DiffusionModel
from modules.version import VERSION

log = logging.getLogger(__name__)

opt_C = 4
opt_f = 8

MIN_SIZE, MAX_SIZE = 64, 4096
MAX_STEPS = 150
MAX_CFG = 30.0


class InvalidParameterError(ValueError):
    """A request value outside what the engine accepts; the message names the value and the range."""


class NoModelError(RuntimeError):
    """No checkpoint is available to generate with."""


def get_fixed_seed(seed: Any) -> int:
    """-1, None or '' -> a random seed (A1111: randrange(4294967294)); else the int value."""
    if seed is None or seed == "":
        seed = -1
    if isinstance(seed, str):
        try:
            seed = int(float(seed))
        except ValueError:
            seed = -1
    seed = int(seed)
    if seed == -1:
        return int(random.randrange(4294967294))
    return seed


def fix_seed(p: StableDiffusionProcessing) -> None:
    if not isinstance(p.seed, list):  # a list gives each image its seed (prompt matrix, scripts)
        p.seed = get_fixed_seed(p.seed)
    p.subseed = get_fixed_seed(p.subseed)


def _format_number(v: Any) -> Any:
    """7.0 -> 7 so infotext reads as A1111's UI writes it; other values unchanged."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


@dataclass(repr=False)
class StableDiffusionProcessing:
    sd_model: Any = None
    outpath_samples: str | None = None
    outpath_grids: str | None = None
    prompt: str | list[str] = ""
    prompt_for_display: str | None = None
    negative_prompt: str | list[str] = ""
    styles: list[str] | None = None
    seed: int | list[int] = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    seed_enable_extras: bool = True
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    extra_generation_params: dict[str, Any] | None = None
    overlay_images: list | None = None
    eta: float | None = None
    do_not_reload_embeddings: bool = False
    denoising_strength: float | None = None
    ddim_discretize: str | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    sampler_index: int | None = None
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    token_merging_ratio: float = 0.0
    token_merging_ratio_hr: float = 0.0
    disable_extra_networks: bool = False
    firstpass_image: Any = None
    comments: dict[str, Any] | None = None

    # Filled by the run (A1111 names).
    scripts: Any = field(default=None, init=False)
    """the tab's ScriptRunner (modules.scripts) when scripts take part in this run"""
    script_args: Any = field(default=None, init=False)
    """the runner's flat argument list: slot 0 the selected script (1-based, 0 = none), then each script's slice"""
    scripts_setup_complete: bool = field(default=False, init=False)
    all_prompts: list[str] = field(default_factory=list, init=False)
    all_negative_prompts: list[str] = field(default_factory=list, init=False)
    all_seeds: list[int] = field(default_factory=list, init=False)
    all_subseeds: list[int] = field(default_factory=list, init=False)
    all_hr_prompts: list[str] = field(default_factory=list, init=False)
    all_hr_negative_prompts: list[str] = field(default_factory=list, init=False)
    prompts: list[str] = field(default_factory=list, init=False)
    negative_prompts: list[str] = field(default_factory=list, init=False)
    seeds: list[int] = field(default_factory=list, init=False)
    subseeds: list[int] = field(default_factory=list, init=False)
    iteration: int = field(default=0, init=False)
    batch_index: int = field(default=0, init=False)
    main_prompt: str = field(default="", init=False)
    main_negative_prompt: str = field(default="", init=False)
    is_hr_pass: bool = field(default=False, init=False)
    is_api: bool = field(default=False, init=False)
    user: str | None = field(default=None, init=False)
    sd_model_name: str | None = field(default=None, init=False)
    sd_model_hash: str | None = field(default=None, init=False)
    sd_vae_name: str | None = field(default=None, init=False)
    sd_vae_hash: str | None = field(default=None, init=False)
    sampler: Any = field(default=None, init=False)
    schedule: Any = field(default=None, init=False)
    clip_skip: int = field(default=1, init=False)
    job_timestamp: str = field(default="", init=False)
    cached_c: list = field(default_factory=lambda: [None, None], init=False)
    cached_uc: list = field(default_factory=lambda: [None, None], init=False)
    extra_network_data: dict = field(default_factory=dict, init=False)
    step_callback: Any = field(default=None, init=False)
    """optional callable(StepInfo) for per-job progress (the job queue sets it)"""

    def __post_init__(self) -> None:
        if self.extra_generation_params is None:
            self.extra_generation_params = {}
        if self.styles is None:
            self.styles = []
        if self.override_settings is None:
            self.override_settings = {}
        if self.comments is None:
            self.comments = {}
        if not self.seed_enable_extras:
            self.subseed = -1
            self.subseed_strength = 0.0
            self.seed_resize_from_h = 0
            self.seed_resize_from_w = 0

    # --- A1111 conveniences ---------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return "txt2img"

    def comment(self, text: str) -> None:
        self.comments[text] = 1

    @property
    def sd_checkpoint_info(self) -> Any:
        return getattr(self.sd_model, "sd_checkpoint_info", None)

    # --- validation -----------------------------------------------------------------------------------
    def validate(self) -> None:
        def check_range(name: str, value: Any, lo: float, hi: float) -> None:
            if value is None or not (lo <= value <= hi):
                raise InvalidParameterError(f"{name} is {value!r}; it must be between {lo:g} and {hi:g}")

        for name in ("width", "height"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise InvalidParameterError(f"{name} is {v!r}; it must be a whole number of pixels")
            check_range(name, v, MIN_SIZE, MAX_SIZE)
            if v % 8:
                raise InvalidParameterError(f"{name} is {v}; it must be a multiple of 8 (e.g. {v - v % 8} or {v - v % 8 + 8})")
        check_range("steps", self.steps, 1, MAX_STEPS)
        check_range("cfg_scale", self.cfg_scale, 0, MAX_CFG)
        check_range("batch_size", self.batch_size, 1, 64)
        check_range("n_iter", self.n_iter, 1, 10000)
        check_range("subseed_strength", self.subseed_strength, 0, 1)
        if self.denoising_strength is not None:
            check_range("denoising_strength", self.denoising_strength, 0, 1)

    # --- prompts and seeds ----------------------------------------------------------------------------
    def setup_prompts(self) -> None:
        n = self.batch_size * self.n_iter
        if isinstance(self.prompt, list):
            self.all_prompts = list(self.prompt)
        else:
            self.all_prompts = [self.prompt] * n
        if isinstance(self.negative_prompt, list):
            self.all_negative_prompts = list(self.negative_prompt)
        else:
            self.all_negative_prompts = [self.negative_prompt] * len(self.all_prompts)
        if len(self.all_prompts) != len(self.all_negative_prompts):
            raise InvalidParameterError(
                f"{len(self.all_prompts)} prompts but {len(self.all_negative_prompts)} negative prompts were given")
        if self.styles:
            from modules import styles

            database = styles.default_database()
            self.all_prompts = [database.apply_styles_to_prompt(x, self.styles) for x in self.all_prompts]
            self.all_negative_prompts = [database.apply_negative_styles_to_prompt(x, self.styles)
                                         for x in self.all_negative_prompts]
        self.main_prompt = self.all_prompts[0]
        self.main_negative_prompt = self.all_negative_prompts[0]

    def setup_seeds(self) -> None:
        n = len(self.all_prompts)
        if isinstance(self.seed, list):
            self.all_seeds = [int(s) for s in self.seed]
            self.seed = self.all_seeds[0]
        else:
            self.all_seeds = [int(self.seed) + (i if self.subseed_strength == 0 else 0) for i in range(n)]
        self.all_subseeds = [int(self.subseed) + i for i in range(n)]

    # --- the run (overridden by the modes) ------------------------------------------------------------
    def init(self, model: DiffusionModel) -> None:
        """Prepare mode-specific inputs once per run."""

    def sample(self, model: DiffusionModel, guidance: denoise.Guidance, seeds: list[int], subseeds: list[int],
               should_stop: Any) -> torch.Tensor:
        raise NotImplementedError

    def postprocess_image(self, image: Image.Image, index_in_run: int) -> Image.Image:
        return image

    def close(self) -> None:
        self.sampler = None

    def latent_shape(self, model: DiffusionModel) -> tuple[int, int, int]:
        f = model.vae_scale_factor
        return (model.latent_channels, self.height // f, self.width // f)

    def seed_resize_latent(self, model: DiffusionModel) -> tuple[int, int] | None:
        if self.seed_resize_from_h > 0 and self.seed_resize_from_w > 0:
            f = model.vae_scale_factor
            return (self.seed_resize_from_h // f, self.seed_resize_from_w // f)
        return None

    def make_noise(self, model: DiffusionModel, seeds: list[int], subseeds: list[int]) -> torch.Tensor:
        return noise.batch_noise(
            seeds,
            self.latent_shape(model),
            subseeds=subseeds,
            subseed_strength=self.subseed_strength,
            seed_resize_from=self.seed_resize_latent(model),
            device=model.device,
        )

    def sampler_run(self, model: DiffusionModel, seeds: list[int], denoising_strength: float | None = None) -> Any:
        return samplers.SamplerRun(
            self.sampler,
            self.schedule,
            model.scheduler_config,
            self.steps,
            seeds=seeds,
            denoising_strength=denoising_strength,
            eta=self.eta,
            noise_seed_delta=int(shared.opts.eta_noise_seed_delta or 0),
            device=model.device,
        )


def inpaint_conditioning(model: DiffusionModel, pixels: torch.Tensor, masks: torch.Tensor,
                         weight: float = 1.0) -> torch.Tensor:
    """The extra UNet input of 9-channel inpainting models (diffusers' layout): the mask at latent size,
    then the latents of the picture with the masked part blanked (pixels in -1..1, masks in 0..1 at
    pixel size; `weight` < 1 blanks the masked part only partly)."""
    keep = (masks < 0.5).to(pixels.dtype)
    masked = pixels * (1.0 - weight * (1.0 - keep))
    masked_latents = vae.encode(model, masked, auto_fp32=bool(shared.opts.auto_vae_precision))
    h, w = masked_latents.shape[2], masked_latents.shape[3]
    small = torch.nn.functional.interpolate(masks, size=(h, w))
    return torch.cat([small.to(masked_latents), masked_latents], dim=1)


@dataclass(repr=False)
class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    firstphase_width: int = 0
    firstphase_height: int = 0

    @property
    def mode(self) -> str:
        return "txt2img"

    def sample(self, model: DiffusionModel, guidance: denoise.Guidance, seeds: list[int], subseeds: list[int],
               should_stop: Any) -> torch.Tensor:
        run = self.sampler_run(model, seeds)
        x = self.make_noise(model, seeds, subseeds) * run.init_noise_sigma
        img_cond = None
        if model.is_inpaint:
            # An inpainting UNet asked for a whole new picture: everything is masked, nothing is kept.
            blank = torch.zeros(len(seeds), 3, self.height, self.width)
            img_cond = inpaint_conditioning(model, blank, torch.ones(len(seeds), 1, self.height, self.width))
        return denoise.sample(model, run, x, guidance, image_conditioning=img_cond,
                              on_step=_step_reporter(self, model), should_stop=should_stop,
                              hooks=_denoiser_hooks(self))


@dataclass(repr=False)
class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    init_images: list | None = None
    resize_mode: int = 0
    denoising_strength: float | None = 0.75
    image_cfg_scale: float | None = None
    mask: Any = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: Any = None
    include_init_images: bool = False

    image_mask: Any = field(default=None, init=False)
    init_latent: Any = field(default=None, init=False)
    plans: list = field(default_factory=list, init=False)
    color_corrections: Any = field(default=None, init=False)
    image_conditioning: Any = field(default=None, init=False)
    nmask: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mask_blur is not None:
            self.mask_blur_x = self.mask_blur_y = int(self.mask_blur)
        if self.initial_noise_multiplier is None:
            self.initial_noise_multiplier = float(shared.opts.initial_noise_multiplier)

    @property
    def mode(self) -> str:
        return "img2img"

    def validate(self) -> None:
        super().validate()
        if not self.init_images:
            raise InvalidParameterError("img2img needs at least one init image")
        for i, im in enumerate(self.init_images):
            if not isinstance(im, Image.Image):
                raise InvalidParameterError(f"init image {i} is not an image ({type(im).__name__})")
        if self.resize_mode not in (0, 1, 2, 3):
            raise InvalidParameterError(f"resize_mode is {self.resize_mode!r}; it must be 0, 1, 2 or 3")
        if self.inpainting_fill not in (0, 1, 2, 3):
            raise InvalidParameterError(f"inpainting_fill is {self.inpainting_fill!r}; it must be 0, 1, 2 or 3")
        if self.mask is not None and not isinstance(self.mask, Image.Image):
            raise InvalidParameterError(f"mask is not an image ({type(self.mask).__name__})")

    def init(self, model: DiffusionModel) -> None:
        n_images = len(self.init_images)
        if n_images > self.batch_size:
            raise InvalidParameterError(
                f"{n_images} init images were given for batch size {self.batch_size}; give at most {self.batch_size}")
        if 1 < n_images < self.batch_size:
            self.batch_size = n_images  # as A1111: a short list of images sets the batch size
        self.image_mask = self.mask
        if self.mask is not None:
            self._note_inpaint_params()
        self.plans = []
        prepared: list[Image.Image] = []
        latent_masks: list[Image.Image] = []
        for im in self.init_images:
            if self.mask is not None:
                plan = masking.plan_inpaint(
                    im, self.mask, width=self.width, height=self.height, resize_mode=self.resize_mode,
                    mask_blur_x=self.mask_blur_x, mask_blur_y=self.mask_blur_y,
                    invert=bool(self.inpainting_mask_invert), full_res=bool(self.inpaint_full_res),
                    full_res_padding=int(self.inpaint_full_res_padding), inpainting_fill=int(self.inpainting_fill),
                    round_mask=bool(self.mask_round), latent_mask=self.latent_mask)
                self.plans.append(plan)
                prepared.append(plan.init_image)
                if plan.comment:
                    self.comment(plan.comment)
                # No latent mask: "Only masked" met an empty mask and the image runs as plain img2img.
                latent_masks.append(plan.latent_mask if plan.latent_mask is not None
                                    else Image.new("L", plan.init_image.size, 255))
            else:
                prepared.append(masking.plan_img2img(im, width=self.width, height=self.height,
                                                     resize_mode=self.resize_mode))
        self._prepared = prepared
        self._latent_masks = latent_masks
        pixels = vae.from_pil(prepared)
        self.init_latent = vae.encode(model, pixels, auto_fp32=bool(shared.opts.auto_vae_precision))
        if latent_masks:
            h, w = self.init_latent.shape[2], self.init_latent.shape[3]
            lm = torch.stack([
                torch.from_numpy(np.asarray(m.convert("L").resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0)
                for m in latent_masks
            ])[:, None]
            if self.mask_round:
                lm = lm.round()
            self.nmask = lm.to(model.device)
        if model.is_inpaint:
            # Without a mask an inpainting UNet sees the whole picture as masked. The "Inpainting
            # conditioning mask strength" setting softens the blanking (1: blank, 0: keep the source).
            if latent_masks:
                masks = torch.stack([torch.from_numpy(np.asarray(m.convert("L"), dtype=np.float32) / 255.0)
                                     for m in latent_masks])[:, None]
            else:
                masks = torch.ones(pixels.shape[0], 1, *pixels.shape[2:])
            weight = float(shared.opts.inpainting_mask_weight)
            if weight != 1.0:
                self.extra_generation_params["Conditional mask weight"] = weight
            self.image_conditioning = inpaint_conditioning(model, pixels, masks, weight=weight)

    def _note_inpaint_params(self) -> None:
        """Inpainting settings in the infotext, under A1111's keys (written only where they differ from
        the defaults a reader assumes: Mask mode "Inpaint masked", Masked content "original", Inpaint
        area "Whole picture")."""
        extra = self.extra_generation_params
        if self.mask_blur_x == self.mask_blur_y:
            if self.mask_blur_x > 0:
                extra["Mask blur"] = self.mask_blur_x
        else:
            extra["Mask blur x"] = self.mask_blur_x
            extra["Mask blur y"] = self.mask_blur_y
        if self.inpainting_mask_invert:
            extra["Mask mode"] = "Inpaint not masked"
        fill_names = {0: "fill", 1: "original", 2: "latent noise", 3: "latent nothing"}
        if self.inpainting_fill != 1:
            extra["Masked content"] = fill_names[int(self.inpainting_fill)]
        if self.inpaint_full_res:
            extra["Inpaint area"] = "Only masked"
            extra["Masked area padding"] = self.inpaint_full_res_padding

    def _batch_slice(self, t: torch.Tensor | None, index: int, count: int) -> torch.Tensor | None:
        if t is None:
            return None
        if t.shape[0] == 1:
            return t.expand(count, *t.shape[1:]).contiguous()
        if t.shape[0] == self.batch_size:
            return t
        return t[index:index + count]

    def sample(self, model: DiffusionModel, guidance: denoise.Guidance, seeds: list[int], subseeds: list[int],
               should_stop: Any) -> torch.Tensor:
        count = len(seeds)
        start = self.iteration * self.batch_size
        init = self._batch_slice(self.init_latent, start, count)
        nmask = self._batch_slice(self.nmask, start, count)
        img_cond = self._batch_slice(self.image_conditioning, start, count)
        eps = self.make_noise(model, seeds, subseeds)

        if nmask is not None:
            if self.inpainting_fill == 2:  # latent noise
                init = init * (1 - nmask) + eps * nmask
            elif self.inpainting_fill == 3:  # latent nothing
                init = init * (1 - nmask)

        strength = float(self.denoising_strength if self.denoising_strength is not None else 0.75)
        run = self.sampler_run(model, seeds, denoising_strength=strength)
        start_noise = eps * float(self.initial_noise_multiplier or 1.0)
        x = run.add_noise(init, start_noise)
        blend = None
        if nmask is not None and not model.is_inpaint:
            blend = denoise.InpaintBlend(init_latents=init, mask=nmask, noise=start_noise)
        return denoise.sample(model, run, x, guidance, image_conditioning=img_cond, blend=blend,
                              on_step=_step_reporter(self, model), should_stop=should_stop,
                              hooks=_denoiser_hooks(self))

    def postprocess_image(self, image: Image.Image, index_in_run: int) -> Image.Image:
        if not self.plans:
            return image
        plan = self.plans[index_in_run % len(self.plans)] if len(self.plans) > 1 else self.plans[0]
        return masking.apply_overlay(image, plan)


# --- results -------------------------------------------------------------------------------------------
class Processed:
    def __init__(self, p: StableDiffusionProcessing, images_list: list[Image.Image], seed: int = -1, info: str = "",
                 subseed: int | None = None, all_prompts: list[str] | None = None,
                 all_negative_prompts: list[str] | None = None, all_seeds: list[int] | None = None,
                 all_subseeds: list[int] | None = None, index_of_first_image: int = 0,
                 infotexts: list[str] | None = None, comments: str = "") -> None:
        self.images = images_list
        self.prompt = p.prompt
        self.negative_prompt = p.negative_prompt
        self.seed = seed
        self.subseed = subseed
        self.subseed_strength = p.subseed_strength
        self.info = info
        self.comments = "".join(f"{c}\n" for c in p.comments) if p.comments else comments
        self.width = p.width
        self.height = p.height
        self.sampler_name = p.sampler_name
        self.scheduler = p.scheduler
        self.cfg_scale = p.cfg_scale
        self.image_cfg_scale = getattr(p, "image_cfg_scale", None)
        self.steps = p.steps
        self.batch_size = p.batch_size
        self.restore_faces = p.restore_faces
        self.face_restoration_model = None
        self.sd_model_name = p.sd_model_name
        self.sd_model_hash = p.sd_model_hash
        self.sd_vae_name = p.sd_vae_name
        self.sd_vae_hash = p.sd_vae_hash
        self.seed_resize_from_w = p.seed_resize_from_w
        self.seed_resize_from_h = p.seed_resize_from_h
        self.denoising_strength = p.denoising_strength
        self.extra_generation_params = p.extra_generation_params
        self.index_of_first_image = index_of_first_image
        self.styles = p.styles
        self.job_timestamp = p.job_timestamp or shared.state.job_timestamp
        self.clip_skip = p.clip_skip
        self.eta = p.eta
        self.is_using_inpainting_conditioning = bool(getattr(p, "image_conditioning", None) is not None)
        self.all_prompts = all_prompts or p.all_prompts or [p.prompt]
        self.all_negative_prompts = all_negative_prompts or p.all_negative_prompts or [p.negative_prompt]
        self.all_seeds = all_seeds or p.all_seeds or [seed]
        self.all_subseeds = all_subseeds or p.all_subseeds or [subseed]
        self.infotexts = infotexts or [info]
        self.version = VERSION

    def js(self) -> str:
        obj = {
            "prompt": self.all_prompts[0] if self.all_prompts else self.prompt,
            "all_prompts": self.all_prompts,
            "negative_prompt": self.all_negative_prompts[0] if self.all_negative_prompts else self.negative_prompt,
            "all_negative_prompts": self.all_negative_prompts,
            "seed": self.seed,
            "all_seeds": self.all_seeds,
            "subseed": self.subseed,
            "all_subseeds": self.all_subseeds,
            "subseed_strength": self.subseed_strength,
            "width": self.width,
            "height": self.height,
            "sampler_name": self.sampler_name,
            "cfg_scale": self.cfg_scale,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "restore_faces": self.restore_faces,
            "face_restoration_model": self.face_restoration_model,
            "sd_model_name": self.sd_model_name,
            "sd_model_hash": self.sd_model_hash,
            "sd_vae_name": self.sd_vae_name,
            "sd_vae_hash": self.sd_vae_hash,
            "seed_resize_from_w": self.seed_resize_from_w,
            "seed_resize_from_h": self.seed_resize_from_h,
            "denoising_strength": self.denoising_strength,
            "extra_generation_params": {k: v for k, v in self.extra_generation_params.items() if not callable(v)},
            "index_of_first_image": self.index_of_first_image,
            "infotexts": self.infotexts,
            "styles": self.styles,
            "job_timestamp": self.job_timestamp,
            "clip_skip": self.clip_skip,
            "is_using_inpainting_conditioning": self.is_using_inpainting_conditioning,
            "version": self.version,
        }
        return json.dumps(obj, default=str)

    def infotext(self, p: StableDiffusionProcessing, index: int) -> str:
        return create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, index=index)


# --- infotext ------------------------------------------------------------------------------------------
def create_infotext(p: StableDiffusionProcessing, all_prompts: list[str], all_seeds: list[int],
                    all_subseeds: list[int], comments: Any = None, iteration: int = 0, position_in_batch: int = 0,
                    use_main_prompt: bool = False, index: int | None = None,
                    all_negative_prompts: list[str] | None = None) -> str:
    """The A1111 infotext for image `index` of the run (A1111's signature)."""
    if index is None:
        index = position_in_batch + iteration * p.batch_size
    if all_negative_prompts is None:
        all_negative_prompts = p.all_negative_prompts
    opts = shared.opts
    index = min(index, len(all_prompts) - 1)

    schedule_label = None
    if p.sampler is not None:
        fields = samplers.infotext_fields(p.sampler, p.schedule, p.scheduler)
        sampler_label = fields.get("Sampler", p.sampler_name)
        schedule_label = fields.get("Schedule type")
    else:
        sampler_label = p.sampler_name

    uses_vae_file = bool(p.sd_vae_name)
    base: dict[str, Any] = {
        "Steps": p.steps,
        "Sampler": sampler_label,
        "Schedule type": schedule_label,
        "CFG scale": _format_number(p.cfg_scale),
        "Image CFG scale": getattr(p, "image_cfg_scale", None),
        "Seed": all_seeds[index] if all_seeds else p.seed,
        "Face restoration": None,
        "Size": f"{p.width}x{p.height}",
        "Model hash": p.sd_model_hash if opts.add_model_hash_to_info else None,
        "Model": p.sd_model_name if opts.add_model_name_to_info else None,
        "VAE hash": p.sd_vae_hash if (uses_vae_file and opts.add_vae_hash_to_info) else None,
        "VAE": p.sd_vae_name if (uses_vae_file and opts.add_vae_name_to_info) else None,
        "Variation seed": None if p.subseed_strength == 0 else all_subseeds[index],
        "Variation seed strength": None if p.subseed_strength == 0 else _format_number(p.subseed_strength),
        "Seed resize from": (None if p.seed_resize_from_w <= 0 or p.seed_resize_from_h <= 0
                             else f"{p.seed_resize_from_w}x{p.seed_resize_from_h}"),
        "Denoising strength": (_format_number(p.denoising_strength)
                               if isinstance(p, StableDiffusionProcessingImg2Img) else None),
        "Clip skip": None if p.clip_skip <= 1 else p.clip_skip,
        "ENSD": None if not opts.eta_noise_seed_delta else opts.eta_noise_seed_delta,
        "RNG": opts.randn_source if opts.randn_source != "GPU" else None,
    }
    extra: dict[str, Any] = {}
    for k, v in (p.extra_generation_params or {}).items():
        if callable(v):
            v = v(p, index)  # A1111: values may be functions of the image
        elif isinstance(v, list):
            v = v[index] if index < len(v) else None
        extra[k] = v
    version = VERSION if opts.add_version_to_infotext else None
    params = infotext_utils.order_params(base, extra, version, p.user)
    prompt = p.main_prompt if use_main_prompt else all_prompts[index]
    negative = all_negative_prompts[index] if all_negative_prompts else ""
    return infotext_utils.build_infotext(prompt, negative, params)


# --- running -------------------------------------------------------------------------------------------
def _step_reporter(p: StableDiffusionProcessing, model: DiffusionModel):  # type: ignore[no-untyped-def]
    state = shared.state
    opts = shared.opts

    def on_step(info: denoise.StepInfo) -> None:
        state.sampling_step = info.step + 1
        state.sampling_steps = info.total
        state.current_latent = info.latents
        every = int(opts.show_progress_every_n_steps or 0)
        if opts.live_previews_enable and every > 0 and (info.step + 1) % every == 0 and info.step + 1 < info.total:
            try:
                if opts.show_progress_type == "Full":
                    preview = vae.to_pil(vae.decode(model, info.denoised()[:1]))[0]
                else:
                    preview = vae.approx_preview(model, info.denoised())
                state.set_current_image(preview)
            except Exception:  # a preview must never break a generation
                log.exception("live preview failed")
        if p.step_callback is not None:
            p.step_callback(info)

    return on_step


def _denoiser_hooks(p: StableDiffusionProcessing) -> denoise.DenoiserHooks | None:
    hooks = getattr(p, "denoiser_hooks", None)
    if hooks is not None:
        return hooks
    try:
        from modules import script_callbacks
    except ImportError:
        return None
    return script_callbacks.denoiser_hooks() if hasattr(script_callbacks, "denoiser_hooks") else None


def _run_script_hook(p: StableDiffusionProcessing, name: str, *args: Any, **kwargs: Any) -> None:
    if p.scripts is not None and hasattr(p.scripts, name):
        getattr(p.scripts, name)(p, *args, **kwargs)


def samples_dir(mode: str) -> str:
    """Where pictures of `mode` ("txt2img", "img2img") are saved, as the settings give it now."""
    return _resolve_output_dir(None, f"outdir_{mode}_samples")


def _resolve_output_dir(configured: str | None, fallback_key: str) -> str:
    opts = shared.opts
    value = configured or opts.outdir_samples or getattr(opts, fallback_key)
    path = Path(value)
    if not path.is_absolute():
        path = shared.paths.data_dir / path
    return str(path)


def ensure_model() -> DiffusionModel:
    """The model named by opts.sd_model_checkpoint, loaded and in service, with the chosen VAE."""
    mm = shared.model_manager
    if mm is None:
        raise NoModelError("the model manager is not initialised")
    want = shared.opts.sd_model_checkpoint
    model = mm.ensure(want) if hasattr(mm, "ensure") else mm.current_model(load=True)
    if model is None:
        raise NoModelError(
            f"no Stable Diffusion checkpoint found; put a .safetensors file into {shared.paths.sd_models_dir}")
    return model


def apply_override_settings(overrides: dict[str, Any]) -> dict[str, Any]:
    """Set options for one run; returns the previous values to restore."""
    opts = shared.opts
    stored: dict[str, Any] = {}
    for k, v in (overrides or {}).items():
        if k not in opts:
            log.warning("override_settings: unknown option %s ignored", k)
            continue
        stored[k] = getattr(opts, k)
        opts.set(k, v, run_callbacks=False)
    return stored


def restore_settings(stored: dict[str, Any]) -> None:
    for k, v in stored.items():
        shared.opts.set(k, v, run_callbacks=False)


def process_images(p: StableDiffusionProcessing) -> Processed:
    """Run a generation job and return its images and metadata."""
    state = shared.state
    owns_state = not state.job  # called directly, not from the job queue: this call is the job
    if owns_state:
        state.begin(job=p.mode)
    try:
        processed = _run_selected_script(p)
        if processed is not None:
            return processed
        stored = apply_override_settings(p.override_settings or {})
        try:
            return process_images_inner(p)
        finally:
            if p.override_settings_restore_afterwards:
                restore_settings(stored)
    finally:
        if owns_state:
            state.end()


def _run_selected_script(p: StableDiffusionProcessing) -> Processed | None:
    """Scripts' setup() once per request, then the selected script's run() in place of the plain
    generation (A1111 calls both before process_images; here every entry point, UI, API or queue,
    gets them by setting p.scripts / p.script_args). A script's own process_images calls run plainly."""
    runner = p.scripts
    if runner is None:
        return None
    from modules import scripts

    if not p.scripts_setup_complete:
        p.scripts_setup_complete = True
        if hasattr(runner, "setup_scrips"):
            runner.setup_scrips(p, is_ui=not p.is_api)
    if scripts.in_selectable_run() or not hasattr(runner, "run"):
        return None
    return runner.run(p, *(p.script_args or ()))


def process_images_inner(p: StableDiffusionProcessing) -> Processed:
    opts = shared.opts
    state = shared.state
    p.validate()

    if p.sampler_name is None and p.sampler_index is not None:
        names = [s.name for s in samplers.SAMPLERS]
        if 0 <= int(p.sampler_index) < len(names):
            p.sampler_name = names[int(p.sampler_index)]
    p.sampler, p.schedule = samplers.resolve(p.sampler_name or samplers.DEFAULT_SAMPLER, p.scheduler)
    automatic_schedule = samplers.requests_automatic(p.sampler_name, p.scheduler)
    p.sampler_name = p.sampler.name

    # A model handed in on p.sd_model (benchmarks, scripts) is used as is, unless the run asks to switch.
    if isinstance(p.sd_model, DiffusionModel) and "sd_model_checkpoint" not in (p.override_settings or {}):
        model = p.sd_model
    else:
        model = ensure_model()
    p.sd_model = model
    p.schedule = samplers.schedule_for_model(p.sampler, p.schedule, model.scheduler_config,
                                             automatic=automatic_schedule)
    info = model.sd_checkpoint_info
    p.sd_model_name = getattr(info, "name_for_extra", None) or getattr(info, "model_name", None)
    p.sd_model_hash = model.sd_model_hash
    p.sd_vae_name = model.vae_name
    p.sd_vae_hash = model.vae_hash
    p.clip_skip = int(opts.CLIP_stop_at_last_layers or 1)
    if p.outpath_samples is None:
        p.outpath_samples = samples_dir(p.mode)
    if p.outpath_grids is None:
        p.outpath_grids = _resolve_output_dir(opts.outdir_grids, f"outdir_{p.mode}_grids")

    fix_seed(p)
    p.setup_prompts()
    p.setup_seeds()
    _run_script_hook(p, "before_process")
    _run_script_hook(p, "process")

    p.job_timestamp = state.job_timestamp
    state.job_count = p.n_iter
    encoder = conditioning.PromptEncoder(model, clip_skip=p.clip_skip, emphasis=str(opts.emphasis or "Original"),
                                         comma_padding_backtrack=int(opts.comma_padding_backtrack or 0))

    output_images: list[Image.Image] = []
    infotexts: list[str] = []
    should_stop = lambda: state.interrupted or state.skipped  # noqa: E731

    with torch.inference_mode():
        p.init(model)
        for n in range(p.n_iter):
            p.iteration = n
            if state.interrupted or state.stopping_generation:
                break
            state.job = f"Batch {n + 1} out of {p.n_iter}"
            lo, hi = n * p.batch_size, (n + 1) * p.batch_size
            p.prompts = p.all_prompts[lo:hi]
            p.negative_prompts = p.all_negative_prompts[lo:hi]
            p.seeds = p.all_seeds[lo:hi]
            p.subseeds = p.all_subseeds[lo:hi]
            if not p.prompts:
                break
            _run_script_hook(p, "before_process_batch", batch_number=n, prompts=p.prompts, seeds=p.seeds,
                             subseeds=p.subseeds)
            _run_script_hook(p, "process_batch", batch_number=n, prompts=p.prompts, seeds=p.seeds,
                             subseeds=p.subseeds)

            p.prompts, p.extra_network_data = extra_networks.parse_prompts(p.prompts)
            _activate_extra_networks(p, model)
            plan = conditioning.GuidancePlan(encoder, p.prompts, p.negative_prompts, steps=p.steps)
            if opts.emphasis != "Original" and plan.uses_emphasis:
                p.extra_generation_params["Emphasis"] = opts.emphasis
            time_ids = None
            if model.is_sdxl:
                time_ids = torch.tensor([[p.height, p.width, 0, 0, p.height, p.width]] * len(p.prompts),
                                        dtype=torch.float32)
            guidance = denoise.Guidance(cond=None, uncond=None, cfg_scale=float(p.cfg_scale), time_ids=time_ids,
                                        plan=plan)
            try:
                latents = p.sample(model, guidance, p.seeds, p.subseeds, should_stop)
            except denoise.Interrupted:
                if state.skipped and not state.interrupted:
                    state.skipped = False
                    state.nextjob()
                    continue
                break

            decoded = vae.decode(model, latents, auto_fp32=bool(opts.auto_vae_precision))
            _run_script_hook(p, "postprocess_batch", images=decoded, batch_number=n)
            decoded_list = list(decoded)
            if p.scripts is not None and hasattr(p.scripts, "postprocess_batch_list"):
                from modules.scripts import PostprocessBatchListArgs

                batch_list = PostprocessBatchListArgs(decoded_list)
                p.scripts.postprocess_batch_list(p, batch_list, batch_number=n)
                decoded_list = list(batch_list.images)
            pil_images = vae.to_pil(torch.stack(decoded_list)) if decoded_list else []
            for i, image in enumerate(pil_images):
                p.batch_index = i
                index = min(lo + i, len(p.all_prompts) - 1)  # a script may have added images to the batch
                if p.scripts is not None and hasattr(p.scripts, "postprocess_image"):
                    from modules.scripts import PostprocessImageArgs

                    pp = PostprocessImageArgs(image)
                    p.scripts.postprocess_image(p, pp)
                    image = pp.image
                image = p.postprocess_image(image, index)
                text = create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, index=index)
                if opts.samples_save and not p.do_not_save_samples:
                    images.save_image(image, p.outpath_samples, "", p.all_seeds[index], p.all_prompts[index],
                                      opts.samples_format, info=text, p=p)
                output_images.append(image)
                infotexts.append(text)
            state.nextjob()

    if model.device.type == "cuda":
        devices.torch_gc()
    index_of_first_image = 0
    unwanted_grid = len(output_images) < 2 and opts.grid_only_if_multiple
    if output_images and not unwanted_grid and not p.do_not_save_grid and (opts.return_grid or opts.grid_save):
        grid = images.image_grid(output_images, p.batch_size)
        grid_text = create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, use_main_prompt=True, index=0)
        if opts.return_grid:
            output_images.insert(0, grid)
            infotexts.insert(0, grid_text)
            index_of_first_image = 1
        if opts.grid_save:
            images.save_image(grid, p.outpath_grids, "grid", p.all_seeds[0], p.all_prompts[0], opts.grid_format,
                              info=grid_text, short_filename=not opts.grid_extended_filename, p=p, grid=True)

    if infotexts and not shared.cmd_opts.no_prompt_history:
        _write_params_txt(infotexts[min(index_of_first_image, len(infotexts) - 1)])

    res = Processed(
        p, output_images, p.all_seeds[0] if p.all_seeds else p.seed,
        infotexts[0] if infotexts else "",
        subseed=p.all_subseeds[0] if p.all_subseeds else None,
        index_of_first_image=index_of_first_image, infotexts=infotexts,
    )
    _run_script_hook(p, "postprocess", res)
    p.close()
    return res


def _activate_extra_networks(p: StableDiffusionProcessing, model: DiffusionModel) -> None:
    """Before the batch's conditioning is built: merge the LoRAs its first prompt names (and take
    out those it no longer names), make the embeddings folder resolve in prompts, and record
    ``Lora hashes`` / ``TI hashes`` for the infotext. Unknown or unusable networks leave a warning
    on the run (p.comment) and in the log; the generation goes on without them."""
    from modules import networks, textual_inversion

    networks.activate(p, model)
    vocabulary = textual_inversion.attach(model, textual_inversion.default_database(),
                                          refresh=not p.do_not_reload_embeddings)
    used = vocabulary.used_in([*p.prompts, *p.negative_prompts], model.tokenizer)
    ti_hashes = textual_inversion.ti_hashes_value(used)
    if ti_hashes and getattr(shared.opts, "textual_inversion_add_hashes_to_infotext", True):
        p.extra_generation_params["TI hashes"] = ti_hashes
    else:
        p.extra_generation_params.pop("TI hashes", None)


def _write_params_txt(text: str) -> None:
    """The last generation's infotext, read by the UI's paste button when the prompt is empty."""
    from modules.options import atomic_write_text

    try:
        atomic_write_text(shared.paths.data_dir / "params.txt", text)
    except OSError as e:
        log.warning("could not write params.txt: %s", e)


__all__ = [
    "InvalidParameterError",
    "NoModelError",
    "Processed",
    "StableDiffusionProcessing",
    "StableDiffusionProcessingImg2Img",
    "StableDiffusionProcessingTxt2Img",
    "create_infotext",
    "fix_seed",
    "get_fixed_seed",
    "opt_C",
    "opt_f",
    "process_images",
]
