"""Samplers and schedule types under A1111's names, built on diffusers' schedulers.

A1111 users pick a "Sampling method" (DPM++ 2M, Euler a, ...) and a "Schedule type" (Automatic,
Karras, ...). Each sampler here is one diffusers scheduler class with a few fixed settings; each
schedule type is a handful of diffusers config keys. A scheduler is configured in layers, the way
SD.Next does it:

1. from the model's own scheduler config, only what describes the model: the betas, the number of
   training timesteps, the prediction type (so v-prediction models stay v-prediction), the steps
   offset and zero-terminal-SNR rescaling;
2. the sampler's fixed settings (solver type and order, DDIM's clipping, ...);
3. the schedule type's settings (Karras sigmas, trailing spacing, ...);
4. every key the scheduler's constructor does not accept is dropped.

How each sampler relates to A1111's k-diffusion / timestep samplers is noted beside its entry in
`SAMPLERS`. The schedules:

- Uniform: timesteps evenly spaced from T-1 to 0 (diffusers "linspace"). This is what k-diffusion's
  `DiscreteSchedule.get_sigmas(n)` samples (t = linspace(T-1, 0, n)); diffusers interpolates sigma
  linearly between training timesteps where k-diffusion interpolates log-sigma, a relative
  difference below 1e-4 for SD's schedule.
- Karras, Exponential: the same formulas as k-diffusion (rho 7; log-linear), from the model's full
  sigma range.
- SGM Uniform: diffusers "trailing" spacing, t = T-1 - i*T/n; A1111 uses t = (T-1)(1 - i/n), less
  than one training timestep away.
- Beta: Beta(0.6, 0.6) quantiles spread between the sigma range, as A1111's beta scheduler does.

A sampler that cannot honour a schedule type (diffusers' Euler ancestral has no Karras sigmas,
DDIM and PLMS only step correctly on their own grid or SGM Uniform's, LCM has its own timestep
grid) falls back to its own spacing, as A1111 does for its timestep samplers (DDIM, PLMS, UniPC
ignore the schedule type there); `resolve(..., strict=True)` raises instead.

`SamplerRun` is what the denoising loop drives. Samplers that draw noise get one diffusers
scheduler per image, so that every image's random trajectory depends only on its own seed (same
seed, same picture at any batch size).
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

log = logging.getLogger(__name__)

_CPU = torch.device("cpu")

MODEL_CONFIG_KEYS: tuple[str, ...] = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "steps_offset",
    "rescale_betas_zero_snr",
)
"""The keys taken from a model's scheduler config: they describe the model, not the sampling method."""

NOISE_NONE = "none"
NOISE_GENERATOR = "generator"
"""fresh Gaussian noise each step, drawn from the image's own CPU generator"""
NOISE_BROWNIAN = "brownian"
"""noise from a Brownian tree the scheduler keeps, seeded with the image's seed (DPM++ SDE)"""


DEFAULT_SAMPLER = "DPM++ 2M"
"""used when a request names no sampler (A1111's UI default and fallback)"""


class UnknownSamplerError(ValueError):
    """A sampler or schedule type name that matches nothing Easel offers."""


class UnsupportedScheduleError(ValueError):
    """A schedule type the chosen sampler cannot follow (only raised when asked to be strict)."""


def _frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule type: A1111's name and label, and the diffusers config keys that produce it."""

    name: str
    """A1111's snake_case name (`karras`)"""
    label: str
    """what the UI shows and infotext records (`Karras`)"""
    aliases: tuple[str, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=_frozen)

    @property
    def is_automatic(self) -> bool:
        return self.name == "automatic"

    def __hash__(self) -> int:  # names are unique; the kwargs mapping itself is not hashable
        return hash(("schedule", self.name))


@dataclass(frozen=True)
class SamplerSpec:
    """A sampling method: A1111's name and aliases, and the diffusers scheduler that implements it."""

    name: str
    aliases: tuple[str, ...]
    scheduler_class: type[SchedulerMixin]
    fixed_kwargs: Mapping[str, Any]
    """settings that make the scheduler this sampler (layered over the model's config)"""
    default_schedule: str | None
    """the schedule "Automatic" means for this sampler (A1111's `scheduler` option); None: its own spacing"""
    supported_schedules: tuple[str, ...]
    stochastic: bool
    """draws fresh noise at every step (DDIM does too when eta > 0)"""
    noise: str
    """where per-step noise comes from: NOISE_NONE, NOISE_GENERATOR or NOISE_BROWNIAN"""
    evaluations_per_step: int = 1
    """model evaluations per sampling step (2 for A1111's second-order samplers)"""
    substeps: int = 1
    """scheduler timesteps per sampling step: 2 where a diffusers single-step solver stands in for a
    second-order sampler whose diffusers class counts each evaluation as its own step"""
    eta_option: str | None = None
    """the setting that holds this sampler's eta, when diffusers lets eta vary (DDIM)"""
    eta_default: float = 0.0
    options: Mapping[str, Any] = field(default_factory=_frozen)
    """A1111's sampler option flags (`scheduler`, `second_order`, `uses_ensd`, `brownian_noise`, ...)"""

    @property
    def second_order(self) -> bool:
        return self.evaluations_per_step > 1

    @property
    def timestep_stride(self) -> int:
        """Scheduler timesteps per sampling step; img2img truncation cuts the timesteps at a multiple of it."""
        return int(getattr(self.scheduler_class, "order", 1)) * self.substeps

    def scheduler_steps(self, steps: int) -> int:
        """The step count handed to the scheduler's `set_timesteps` for `steps` sampling steps."""
        return steps * self.substeps - (self.substeps - 1)

    def supports(self, schedule: ScheduleSpec) -> bool:
        return schedule.is_automatic or schedule.name in self.supported_schedules

    def __hash__(self) -> int:  # names are unique; the kwargs mappings themselves are not hashable
        return hash(("sampler", self.name))


# --- schedule types (A1111's order) ---------------------------------------------------------------
# Karras, Exponential and Beta take their sigma range from the schedule's end points, so they pin
# "linspace" spacing: the range is then the model's full one (t = T-1 .. 0), as in k-diffusion.
AUTOMATIC = ScheduleSpec("automatic", "Automatic")
SCHEDULES: list[ScheduleSpec] = [
    AUTOMATIC,
    ScheduleSpec("uniform", "Uniform", kwargs=_frozen({"timestep_spacing": "linspace"})),
    ScheduleSpec("karras", "Karras", kwargs=_frozen({"use_karras_sigmas": True, "timestep_spacing": "linspace"})),
    ScheduleSpec("exponential", "Exponential",
                 kwargs=_frozen({"use_exponential_sigmas": True, "timestep_spacing": "linspace"})),
    ScheduleSpec("sgm_uniform", "SGM Uniform", aliases=("SGMUniform",),
                 kwargs=_frozen({"timestep_spacing": "trailing"})),
    ScheduleSpec("beta", "Beta", kwargs=_frozen({"use_beta_sigmas": True, "timestep_spacing": "linspace"})),
]
SCHEDULES_BY_NAME: dict[str, ScheduleSpec] = {s.name: s for s in SCHEDULES}

_ALL_SCHEDULES = ("uniform", "karras", "exponential", "sgm_uniform", "beta")
_SPACING_ONLY = ("uniform", "sgm_uniform")
# diffusers' DDIM and PLMS step to `t - T // n`, which only matches evenly spaced timesteps that are
# T // n apart: leading (their own) and trailing (SGM Uniform). Linspace steps are (T-1)/(n-1) apart,
# so "Uniform" would skip part of each step; A1111 ignores the schedule type for these samplers.
_TIMESTEP_SAMPLER_SCHEDULES = ("sgm_uniform",)

# The fixed settings of A1111's k-diffusion samplers: their "Automatic" without a default schedule is
# uniform spacing, and a schedule type, when given, replaces it.
_K_SPACING = {"timestep_spacing": "linspace"}
_DPMPP_MULTISTEP = {
    "solver_order": 2,
    "solver_type": "midpoint",  # k-diffusion's 2M update: (1 + 1/2r) D0 - (1/2r) D1, diffusers' midpoint form
    "lower_order_final": True,
    "euler_at_final": False,
    "final_sigmas_type": "zero",  # the last step lands on sigma 0, where k-diffusion returns the denoised value
    "thresholding": False,
    **_K_SPACING,
}

SAMPLERS: list[SamplerSpec] = [
    SamplerSpec(
        "DPM++ 2M", ("k_dpmpp_2m",), DPMSolverMultistepScheduler,
        _frozen({**_DPMPP_MULTISTEP, "algorithm_type": "dpmsolver++"}),
        default_schedule="karras", supported_schedules=_ALL_SCHEDULES, stochastic=False, noise=NOISE_NONE,
        options=_frozen({"scheduler": "karras"}),
    ),
    # k-diffusion's sample_dpmpp_sde, ported by diffusers with the same Brownian-tree noise. The tree
    # lives inside the scheduler, seeded with the image's seed (as A1111 seeds it), and is stepped on
    # the CPU so its noise does not depend on the device; that costs ~10 ms per image per step for
    # 64x64 latents on a small CPU, more at SDXL sizes.
    SamplerSpec(
        "DPM++ SDE", ("k_dpmpp_sde",), DPMSolverSDEScheduler, _frozen(_K_SPACING),
        default_schedule="karras", supported_schedules=_ALL_SCHEDULES, stochastic=True, noise=NOISE_BROWNIAN,
        evaluations_per_step=2,
        options=_frozen({"scheduler": "karras", "second_order": True, "brownian_noise": True}),
    ),
    # diffusers' SDE variant of DPM-Solver++(2M) has k-diffusion's update (eta 1). Its per-step noise is
    # Gaussian from the image's generator, where k-diffusion queries a Brownian tree: the same noise
    # statistics, but a seed's picture changes more with the step count than in A1111. (A CPU
    # Brownian tree costs 10-400 ms per image per step, far more than the step itself.)
    SamplerSpec(
        "DPM++ 2M SDE", ("k_dpmpp_2m_sde",), DPMSolverMultistepScheduler,
        _frozen({**_DPMPP_MULTISTEP, "algorithm_type": "sde-dpmsolver++"}),
        default_schedule="exponential", supported_schedules=_ALL_SCHEDULES, stochastic=True, noise=NOISE_GENERATOR,
        options=_frozen({"scheduler": "exponential", "uses_ensd": True}),
    ),
    SamplerSpec(
        "DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), DPMSolverMultistepScheduler,
        _frozen({**_DPMPP_MULTISTEP, "algorithm_type": "sde-dpmsolver++", "solver_type": "heun"}),
        default_schedule="exponential", supported_schedules=_ALL_SCHEDULES, stochastic=True, noise=NOISE_GENERATOR,
        options=_frozen({"scheduler": "exponential", "uses_ensd": True, "solver_type": "heun"}),
    ),
    # diffusers has no ancestral DPM-Solver++(2S). The closest is its single-step solver at order 2
    # in the SDE variant: the same two-evaluation step (first-order to a midpoint, second-order to
    # the next sigma) with fresh noise each step, so results change with the seed's noise as 2S a's
    # do. Given 2n-1 timesteps it alternates first/second order: n-1 two-evaluation steps between
    # the Karras nodes of an n-step schedule and a last first-order step to sigma 0, the evaluation
    # count and node sigmas of A1111's 2S a (the midpoints differ slightly: Karras-spaced there,
    # log-sigma midpoints in k-diffusion; and the noise enters as SDE noise, not ancestrally).
    SamplerSpec(
        "DPM++ 2S a", ("k_dpmpp_2s_a",), DPMSolverSinglestepScheduler,
        _frozen({"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "midpoint",
                 "lower_order_final": True, "final_sigmas_type": "zero", "thresholding": False}),
        # the single-step solver has no timestep_spacing: its own spacing is uniform-like, and SGM
        # Uniform is not available
        default_schedule="karras", supported_schedules=("uniform", "karras", "exponential", "beta"),
        stochastic=True, noise=NOISE_GENERATOR, evaluations_per_step=2, substeps=2,
        options=_frozen({"scheduler": "karras", "uses_ensd": True, "second_order": True}),
    ),
    # eta is 1 (A1111's default eta_ancestral); diffusers' ancestral Euler takes no sigma schedule options.
    SamplerSpec(
        "Euler a", ("k_euler_a", "k_euler_ancestral"), EulerAncestralDiscreteScheduler, _frozen(_K_SPACING),
        default_schedule=None, supported_schedules=_SPACING_ONLY, stochastic=True, noise=NOISE_GENERATOR,
        options=_frozen({"uses_ensd": True}),
    ),
    SamplerSpec(
        "Euler", ("k_euler",), EulerDiscreteScheduler,
        _frozen({**_K_SPACING, "interpolation_type": "linear", "final_sigmas_type": "zero"}),
        default_schedule=None, supported_schedules=_ALL_SCHEDULES, stochastic=False, noise=NOISE_NONE,
    ),
    SamplerSpec(
        "LMS", ("k_lms",), LMSDiscreteScheduler, _frozen(_K_SPACING),
        default_schedule=None, supported_schedules=_ALL_SCHEDULES, stochastic=False, noise=NOISE_NONE,
    ),
    SamplerSpec(
        "Heun", ("k_heun",), HeunDiscreteScheduler, _frozen({**_K_SPACING, "clip_sample": False}),
        default_schedule=None, supported_schedules=_ALL_SCHEDULES, stochastic=False, noise=NOISE_NONE,
        evaluations_per_step=2, options=_frozen({"second_order": True}),
    ),
    # A1111 also drops the next-to-last sigma for DPM2 / DPM2 a; diffusers' KDPM2 schedulers do not.
    SamplerSpec(
        "DPM2", ("k_dpm_2",), KDPM2DiscreteScheduler, _frozen(_K_SPACING),
        default_schedule="karras", supported_schedules=_ALL_SCHEDULES, stochastic=False, noise=NOISE_NONE,
        evaluations_per_step=2, options=_frozen({"scheduler": "karras", "second_order": True}),
    ),
    SamplerSpec(
        "DPM2 a", ("k_dpm_2_a",), KDPM2AncestralDiscreteScheduler, _frozen(_K_SPACING),
        default_schedule="karras", supported_schedules=_ALL_SCHEDULES, stochastic=True, noise=NOISE_GENERATOR,
        evaluations_per_step=2,
        options=_frozen({"scheduler": "karras", "uses_ensd": True, "second_order": True}),
    ),
    # A1111's DDIM: "leading" timesteps plus the model's steps_offset (range(0, T, T//n) + 1), the
    # final alpha of timestep 0, no x0 clipping; eta from the "Eta for DDIM" setting.
    SamplerSpec(
        "DDIM", ("ddim",), DDIMScheduler,
        _frozen({"timestep_spacing": "leading", "clip_sample": False, "set_alpha_to_one": False,
                 "thresholding": False}),
        default_schedule=None, supported_schedules=_TIMESTEP_SAMPLER_SCHEDULES, stochastic=False,
        noise=NOISE_GENERATOR, eta_option="eta_ddim", eta_default=0.0,
    ),
    SamplerSpec(
        "PLMS", ("plms",), PNDMScheduler,
        _frozen({"timestep_spacing": "leading", "skip_prk_steps": True, "set_alpha_to_one": False}),
        default_schedule=None, supported_schedules=_TIMESTEP_SAMPLER_SCHEDULES, stochastic=False, noise=NOISE_NONE,
    ),
    # A1111's UniPC defaults: variant bh1, order 3, lower order final, time-uniform steps, ending at
    # the smallest training sigma (t = 1/T) rather than at 0. (diffusers' bh1 also breaks down with a
    # final sigma of 0: its last step divides by an infinite log-SNR step and returns NaN.)
    SamplerSpec(
        "UniPC", ("unipc",), UniPCMultistepScheduler,
        _frozen({"solver_order": 3, "solver_type": "bh1", "lower_order_final": True, "predict_x0": True,
                 "final_sigmas_type": "sigma_min", "thresholding": False, **_K_SPACING}),
        default_schedule=None, supported_schedules=_ALL_SCHEDULES, stochastic=False, noise=NOISE_NONE,
    ),
    # LCM steps on its own distillation grid; schedule types do not apply.
    SamplerSpec(
        "LCM", ("k_lcm",), LCMScheduler, _frozen({"clip_sample": False, "thresholding": False}),
        default_schedule=None, supported_schedules=(), stochastic=True, noise=NOISE_GENERATOR,
        options=_frozen({"uses_ensd": True}),
    ),
]
# Not offered: A1111's DPM fast, DPM adaptive, Restart and DDIM CFG++ have no diffusers scheduler;
# DPM++ 3M SDE would be diffusers' third-order sde-dpmsolver++, whose second-difference term does not
# vanish as the step shrinks (its coefficient tends to -1 where k-diffusion's tends to 0).
SAMPLERS_BY_NAME: dict[str, SamplerSpec] = {s.name: s for s in SAMPLERS}


# --- names ------------------------------------------------------------------------------------------
def _key(text: str) -> str:
    return " ".join(str(text).split()).casefold()


_SAMPLER_LOOKUP: dict[str, SamplerSpec] = {
    _key(n): spec for spec in reversed(SAMPLERS) for n in (spec.name, *spec.aliases)
}
_SCHEDULE_LOOKUP: dict[str, ScheduleSpec] = {
    _key(n): sched for sched in reversed(SCHEDULES) for n in (sched.name, sched.label, *sched.aliases)
}

# A1111 before 1.9 had one entry per sampler and schedule, with aliases like k_dpmpp_2m_ka (Karras)
# and k_dpmpp_2m_sde_exp (Exponential).
_LEGACY_ALIAS_SUFFIXES: dict[str, str] = {"_ka": "karras", "_exp": "exponential"}


def sampler_names() -> list[str]:
    return [s.name for s in SAMPLERS]


def schedule_labels() -> list[str]:
    return [s.label for s in SCHEDULES]


def find_sampler(name: str) -> SamplerSpec | None:
    """The sampler called `name` (a name or alias, any case), or None."""
    return _SAMPLER_LOOKUP.get(_key(name)) if name else None


def find_schedule(name: str | None) -> ScheduleSpec:
    """The schedule type called `name` (name, label or alias, any case); empty means Automatic."""
    if name is None or not str(name).strip():
        return AUTOMATIC
    found = _SCHEDULE_LOOKUP.get(_key(name))
    if found is None:
        raise UnknownSamplerError(
            f"unknown schedule type {name!r}; choose one of: {', '.join(schedule_labels())}"
        )
    return found


def split_schedule_suffix(name: str) -> tuple[str, ScheduleSpec | None]:
    """Split a legacy combined name ("DPM++ 2M Karras") into its sampler part and schedule type.

    A trailing " <label|name|alias>" of a schedule type is stripped, any case. Names without one
    come back unchanged with None.
    """
    text = " ".join(str(name).split())
    folded = text.casefold()
    # longest first: "DPM++ 2M SGM Uniform" ends in "Uniform" too
    options = sorted(((option, sched) for sched in SCHEDULES for option in (sched.label, sched.name, *sched.aliases)),
                     key=lambda pair: -len(pair[0]))
    for option, sched in options:
        suffix = " " + option.casefold()
        if folded.endswith(suffix) and len(folded) > len(suffix):
            return text[: -len(suffix)], sched
    return text, None


def parse_sampler_name(name: str) -> tuple[SamplerSpec, ScheduleSpec | None]:
    """The sampler a name stands for, and the schedule type a legacy combined name carries.

    Accepts names and aliases in any case ("euler a", "k_euler_a"), legacy combined names
    ("DPM++ 2M Karras", "k_dpmpp_2m_ka"). Raises UnknownSamplerError listing the names on offer.
    """
    spec = find_sampler(name)
    if spec is not None:
        return spec, None
    base, sched = split_schedule_suffix(name)
    if sched is not None:
        spec = find_sampler(base)
        if spec is not None:
            return spec, sched
    key = _key(name)
    for suffix, sched_name in _LEGACY_ALIAS_SUFFIXES.items():
        if key.endswith(suffix):
            spec = find_sampler(key[: -len(suffix)])
            if spec is not None:
                return spec, SCHEDULES_BY_NAME[sched_name]
    raise UnknownSamplerError(f"unknown sampler {name!r}; choose one of: {', '.join(sampler_names())}")


def effective_schedule(sampler: SamplerSpec, schedule: ScheduleSpec) -> ScheduleSpec:
    """Automatic becomes the sampler's default schedule type where it has one."""
    if schedule.is_automatic and sampler.default_schedule:
        return SCHEDULES_BY_NAME[sampler.default_schedule]
    return schedule


def requests_automatic(sampler_name: str | None, schedule: str | None) -> bool:
    """Whether a request leaves the schedule type to Easel: Automatic (or none) and no legacy
    combined name ("DPM++ 2M Karras") that carries one."""
    if not find_schedule(schedule).is_automatic:
        return False
    try:
        return parse_sampler_name(str(sampler_name or DEFAULT_SAMPLER))[1] is None
    except UnknownSamplerError:
        return False


def schedule_for_model(sampler: SamplerSpec, schedule: ScheduleSpec, model_scheduler_config: Mapping[str, Any], *,
                       automatic: bool) -> ScheduleSpec:
    """The schedule type to run when the request left it to Automatic, given the model.

    A model trained to zero terminal SNR has an infinite last sigma, which diffusers clamps to
    4096. Sigma-spaced schedules (Karras, exponential, beta) then spend half of 20 steps above
    sigma 20, where the picture is still pure noise, and img2img's denoising strength stops saying
    how much is kept: 0.3 under Karras starts at sigma 6.6 and redraws the picture. Such models are
    sampled on trailing timesteps (SGM Uniform: steps evenly spaced in time, the first at the
    pure-noise end), as the zero-SNR schedule is meant to be, wherever the sampler can follow it.
    A schedule type the user chose is kept.
    """
    if not automatic or not model_scheduler_config.get("rescale_betas_zero_snr"):
        return schedule
    trailing = SCHEDULES_BY_NAME["sgm_uniform"]
    return trailing if sampler.supports(trailing) else schedule


def resolve(sampler_name: str | None, schedule: str | None, *, strict: bool = False) -> tuple[SamplerSpec, ScheduleSpec]:
    """Turn a requested sampler and schedule type into specs, A1111-style.

    A legacy combined name's schedule ("DPM++ 2M Karras") wins over `schedule`, as in A1111.
    Automatic becomes the sampler's default schedule type (Karras for DPM++ 2M) or stays Automatic
    (the sampler's own spacing). A schedule the sampler cannot follow falls back to Automatic
    (logged), or raises UnsupportedScheduleError when `strict`. There is no default sampler here:
    None raises UnknownSamplerError, so callers choose their own default (the UI's DPM++ 2M, the
    API's Euler).
    """
    if sampler_name is None or not str(sampler_name).strip():
        raise UnknownSamplerError(f"no sampler given; choose one of: {', '.join(sampler_names())}")
    spec, from_name = parse_sampler_name(sampler_name)
    requested = find_schedule(schedule)
    if from_name is not None:
        requested = from_name
    chosen = effective_schedule(spec, requested)
    if not spec.supports(chosen):
        if strict:
            allowed = ", ".join(["Automatic", *(SCHEDULES_BY_NAME[n].label for n in spec.supported_schedules)])
            raise UnsupportedScheduleError(
                f"sampler {spec.name!r} cannot use schedule type {chosen.label!r}; it supports: {allowed}"
            )
        log.info("sampler %s cannot follow the %s schedule type; using its own spacing", spec.name, chosen.label)
        chosen = effective_schedule(spec, AUTOMATIC)
    return spec, chosen


def infotext_fields(sampler: SamplerSpec, schedule: ScheduleSpec, requested_schedule_label: str | None) -> dict[str, str]:
    """A1111's `Sampler` and `Schedule type` infotext values.

    `Schedule type` is the label of the schedule type that applied (Karras for DPM++ 2M under
    Automatic). When none applied (the sampler used its own spacing) it is "Automatic" if a schedule
    type was asked for, as A1111's UI always sends one, and absent if none was (an API request that
    left `scheduler` out). Where a requested schedule type fell back to the sampler's own spacing
    this records "Automatic", what actually ran, so pasting the infotext reproduces the picture.
    """
    fields = {"Sampler": sampler.name}
    applied = effective_schedule(sampler, schedule)
    if not applied.is_automatic:
        fields["Schedule type"] = applied.label
    elif requested_schedule_label is not None and str(requested_schedule_label).strip():
        fields["Schedule type"] = AUTOMATIC.label
    return fields


# --- building schedulers ----------------------------------------------------------------------------
@functools.cache
def _init_params(cls: type) -> frozenset[str]:
    return frozenset(p for p in inspect.signature(cls.__init__).parameters if p != "self")


@functools.cache
def _method_params(cls: type, method: str) -> frozenset[str]:
    return frozenset(p for p in inspect.signature(getattr(cls, method)).parameters if p != "self")


def scheduler_config(sampler: SamplerSpec, schedule: ScheduleSpec, model_scheduler_config: Mapping[str, Any]) -> dict[str, Any]:
    """The layered config for `sampler` under `schedule` (see the module docstring), filtered to
    what the scheduler's constructor accepts."""
    schedule = effective_schedule(sampler, schedule)
    if not sampler.supports(schedule):
        raise UnsupportedScheduleError(f"sampler {sampler.name!r} cannot use schedule type {schedule.label!r}")
    config: dict[str, Any] = {k: model_scheduler_config[k] for k in MODEL_CONFIG_KEYS if k in model_scheduler_config}
    config.update(sampler.fixed_kwargs)
    config.update(schedule.kwargs)
    accepted = _init_params(sampler.scheduler_class)
    return {k: v for k, v in config.items() if k in accepted}


def _hashable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and tensors (trained_betas)
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


@functools.lru_cache(maxsize=64)
def _template(cls: type[SchedulerMixin], frozen_config: tuple[tuple[str, Any], ...]) -> SchedulerMixin:
    # Some constructors are slow (KDPM2 lays out a 1000-step Karras schedule in Python, ~0.3 s), so a
    # configured scheduler is kept per class and config and handed out as copies. Nothing ever steps
    # or re-times the template itself.
    return cls.from_config(dict(frozen_config))


def _set_noise_seed(scheduler: SchedulerMixin, seed: int) -> None:
    # What the constructor does with `noise_sampler_seed`, applied to a copy (the tree is grown lazily
    # at the first step from this value).
    scheduler.register_to_config(noise_sampler_seed=seed)
    scheduler.noise_sampler_seed = seed
    scheduler.noise_sampler = None


def build_scheduler(sampler: SamplerSpec, schedule: ScheduleSpec, model_scheduler_config: Mapping[str, Any], *,
                    noise_seed: int | None = None) -> SchedulerMixin:
    """A fresh diffusers scheduler for `sampler` / `schedule` on a model with `model_scheduler_config`.

    `noise_seed` seeds the Brownian tree of schedulers that keep one inside (DPM++ SDE). Eta is not
    a constructor setting in diffusers (DDIM takes it per step), so it belongs to `SamplerRun`.
    """
    config = scheduler_config(sampler, schedule, model_scheduler_config)
    scheduler = copy.deepcopy(_template(sampler.scheduler_class, _hashable(config)))
    if noise_seed is not None and "noise_sampler_seed" in _init_params(sampler.scheduler_class):
        _set_noise_seed(scheduler, int(noise_seed))
    return scheduler


def _seed_value(seed: int) -> int:
    # the same wrap-around as modules.engine.noise, so any int a user types is a valid generator seed
    return int(seed) & 0xFFFF_FFFF_FFFF_FFFF


def _eta_setting(key: str, default: float) -> float:
    # Only reached when the caller leaves eta to the settings; imported here so the engine does not
    # depend on the process-wide settings otherwise.
    from modules import shared

    value = getattr(shared.opts, key, default)
    return float(default if value is None else value)


class SamplerRun:
    """One batch's sampling state: the timesteps to visit and the diffusers scheduler(s) that step.

    Scheduler arithmetic is per sample, so stepping each image's slice with its own scheduler gives
    the same numbers as stepping the batch with one. Samplers that draw noise do that, so each image
    draws its per-step noise from its own source (the UNet still runs batched in the loop);
    deterministic ones step the batch with a single scheduler. Per-step noise:

    - generator samplers (Euler a, DPM2 a, DPM++ 2S a, DPM++ 2M SDE, DPM++ 2M SDE Heun, LCM, and
      DDIM with eta > 0): each image has a CPU generator. With `noise_seed_delta` 0 it is seeded with the image's seed and first advanced past
      one latent-sized draw, so it continues where the image's initial noise left off: the stream
      diffusers' pipelines use with per-image generators, and A1111's CPU RNG. A generator restarted
      at the seed would repeat the initial noise as the first step's noise. With a delta (A1111's
      ENSD) it is a fresh generator seeded `seed + delta`, as in A1111.
    - DPM++ SDE: each image's scheduler grows a Brownian tree seeded with the image's seed (as A1111
      seeds it; ENSD does not touch it), on the CPU.

    Noise is drawn on the CPU and moved to the latents' device, so a seed gives the same picture on
    any device. `scale_model_input` and `step` must be called once per timestep, in order.
    """

    def __init__(
        self,
        sampler: SamplerSpec,
        schedule: ScheduleSpec,
        model_scheduler_config: Mapping[str, Any],
        steps: int,
        *,
        seeds: Sequence[int],
        denoising_strength: float | None = None,
        eta: float | None = None,
        noise_seed_delta: int = 0,
        device: torch.device | str,
    ) -> None:
        if int(steps) < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if not seeds:
            raise ValueError("a sampler run needs one seed per image; got none")
        if denoising_strength is not None and denoising_strength < 0:
            raise ValueError(f"denoising strength must not be negative, got {denoising_strength}")
        self.sampler = sampler
        self.schedule = effective_schedule(sampler, schedule)
        self.steps = int(steps)
        self.seeds = [int(s) for s in seeds]
        self.device = torch.device(device)
        self.noise_seed_delta = int(noise_seed_delta or 0)
        self.denoising_strength = denoising_strength
        self._model_config = dict(model_scheduler_config)

        cls = sampler.scheduler_class
        self._step_params = _method_params(cls, "step")
        self._tree_in_scheduler = "noise_sampler_seed" in _init_params(cls)
        # A scheduler that grows its Brownian tree on the device of the sample it is given steps on
        # the CPU, so its noise does not depend on the device.
        self._scheduler_device = _CPU if self._tree_in_scheduler else self.device

        if sampler.eta_option is not None:
            self.eta: float | None = float(eta) if eta is not None else _eta_setting(sampler.eta_option, sampler.eta_default)
        else:
            self.eta = None  # diffusers fixes it (ancestral samplers: 1, A1111's default)

        # Deterministic samplers step the whole batch with one scheduler (identical numbers, no per-image
        # cost); samplers that draw noise get one scheduler per image, copies of the first.
        self.stochastic = sampler.stochastic or bool(self.eta)
        """draws noise at every step (one scheduler per image)"""
        first = self._make_scheduler(self.seeds[0])
        self.schedulers: list[SchedulerMixin] = [first]
        if self.stochastic:
            for seed in self.seeds[1:]:
                sched = copy.deepcopy(first)
                if self._tree_in_scheduler:
                    _set_noise_seed(sched, _seed_value(seed))
                self.schedulers.append(sched)

        # img2img: start part-way, as diffusers' StableDiffusionImg2ImgPipeline.get_timesteps does;
        # at least one step, as A1111 runs for very low strengths (diffusers would refuse)
        if denoising_strength is None:
            t_start = 0
        else:
            init_timestep = max(min(int(self.steps * float(denoising_strength)), self.steps), 1)
            t_start = max(self.steps - init_timestep, 0)
        self._begin_index = t_start * sampler.timestep_stride
        for sched in self.schedulers:
            if hasattr(sched, "set_begin_index"):
                sched.set_begin_index(self._begin_index)
        self.timesteps: torch.Tensor = first.timesteps[self._begin_index:].to(self.device)
        self.sampler_steps = self.steps - t_start
        """sampling steps this run makes (fewer than `steps` for img2img)"""
        self.num_steps = len(self.timesteps)
        """loop iterations = model evaluations"""
        self.init_noise_sigma = float(first.init_noise_sigma)

        self.generators: list[torch.Generator] | None = None
        self._generators_primed = True
        if sampler.noise == NOISE_GENERATOR and self.stochastic and "generator" in self._step_params:
            delta = self.noise_seed_delta
            self.generators = [torch.Generator(_CPU).manual_seed(_seed_value(s + delta)) for s in self.seeds]
            self._generators_primed = delta != 0
        self._denoised: list[torch.Tensor] | None = None

    # --- construction -----------------------------------------------------------------------------
    def _make_scheduler(self, seed: int) -> SchedulerMixin:
        sched = build_scheduler(self.sampler, self.schedule, self._model_config, noise_seed=_seed_value(seed))
        n = self.sampler.scheduler_steps(self.steps)
        kwargs: dict[str, Any] = {}
        # LCM picks its steps from a 50-step distillation grid; beyond that, widen the grid instead of failing
        original = getattr(sched.config, "original_inference_steps", None)
        if original is not None and n > int(original) and "original_inference_steps" in _method_params(type(sched), "set_timesteps"):
            kwargs["original_inference_steps"] = n
        sched.set_timesteps(n, device=self._scheduler_device, **kwargs)
        return sched

    # --- what the loop calls ------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return len(self.seeds)

    def sampling_step(self, i: int) -> int:
        """Sampling steps done after loop iteration `i` (0-based), for progress shown as A1111 counts it."""
        if self.num_steps == 0:
            return self.sampler_steps
        return min(self.sampler_steps, round((i + 1) * self.sampler_steps / self.num_steps))

    def scale_model_input(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The UNet input for timestep `t`. Accepts the batch or whole copies of it (rows
        [img0..imgB-1, img0..imgB-1] for classifier-free guidance)."""
        b = self.batch_size
        if latents.shape[0] % b:
            raise ValueError(f"latents have {latents.shape[0]} rows, not a multiple of the batch size {b}")
        if len(self.schedulers) == 1:
            return self.schedulers[0].scale_model_input(latents, t)
        copies = latents.shape[0] // b
        grouped = latents.reshape(copies, b, *latents.shape[1:])
        parts = [sched.scale_model_input(grouped[:, i], t) for i, sched in enumerate(self.schedulers)]
        return torch.stack(parts, dim=1).reshape(latents.shape)

    def step(self, model_output: torch.Tensor, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Advance every image one timestep; returns the latents for the next timestep."""
        b = self.batch_size
        if latents.shape[0] != b or model_output.shape[0] != b:
            raise ValueError(
                f"step expects {b} rows (one per image); got latents {tuple(latents.shape)}, "
                f"model output {tuple(model_output.shape)}"
            )
        if not self._generators_primed:
            self._prime_generators(latents.shape[1:])

        if len(self.schedulers) == 1:
            prev, clean = self._step_one(0, model_output, t, latents)
            self._denoised = [clean] if clean is not None else None
        else:
            results: list[torch.Tensor] = []
            denoised: list[torch.Tensor] | None = []
            for i in range(b):
                prev_i, clean_i = self._step_one(i, model_output[i:i + 1], t, latents[i:i + 1])
                results.append(prev_i)
                if denoised is not None and clean_i is not None:
                    denoised.append(clean_i)
                else:
                    denoised = None
            prev = torch.cat([r.to(latents.device) for r in results])
            self._denoised = denoised
        return prev.to(device=latents.device, dtype=latents.dtype)

    def _step_one(self, i: int, model_output: torch.Tensor, t: torch.Tensor,
                  latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        sched = self.schedulers[i]
        if self._scheduler_device != self.device:
            model_output = model_output.to(self._scheduler_device, torch.float32)
            latents = latents.to(self._scheduler_device, torch.float32)
        output = sched.step(model_output, t, latents, return_dict=True, **self._step_kwargs(i))
        clean = getattr(output, "pred_original_sample", None)
        if clean is None:
            clean = getattr(output, "denoised", None)
        return output.prev_sample, clean

    @property
    def denoised(self) -> torch.Tensor | None:
        """The scheduler's estimate of the clean latents at the last step, where it reports one."""
        if not self._denoised:
            return None
        parts = [d.to(self.device) for d in self._denoised]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def add_noise(self, init_latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """img2img's start: the clean latents noised to the first visited timestep (as diffusers'
        img2img pipeline does)."""
        if self.num_steps == 0:
            return init_latents
        t = self.timesteps[:1].repeat(init_latents.shape[0])
        return self.schedulers[0].add_noise(init_latents, noise, t)

    def noise_to(self, init_latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The clean latents noised to timestep `t` (the next one, for inpainting's per-step blend),
        as diffusers' inpaint pipeline does."""
        timesteps = torch.as_tensor(t, device=self.timesteps.device).reshape(1)
        return self.schedulers[0].add_noise(init_latents, noise, timesteps)

    @property
    def sigmas(self) -> torch.Tensor | None:
        """The full sigma schedule of schedulers that have one (k-diffusion style), else None."""
        sigmas = getattr(self.schedulers[0], "sigmas", None)
        return sigmas if isinstance(sigmas, torch.Tensor) else None

    # --- noise --------------------------------------------------------------------------------------
    def _prime_generators(self, image_shape: torch.Size) -> None:
        assert self.generators is not None
        for g in self.generators:
            torch.randn(tuple(image_shape), generator=g, device=_CPU, dtype=torch.float32)
        self._generators_primed = True

    def _step_kwargs(self, i: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.generators is not None:
            kwargs["generator"] = self.generators[i]
        if self.eta is not None and "eta" in self._step_params:
            kwargs["eta"] = self.eta
        return kwargs
