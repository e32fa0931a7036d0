"""Samplers and schedule types: A1111 names, diffusers configs, and the per-image sampling run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
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

from modules import sd_samplers, sd_schedulers
from modules.engine import samplers as S

# diffusers' DPM++ SDE builds its Brownian tree from the exact smallest sigma, which torchsde rounds
# up to 6 decimals and then warns (harmlessly: it clamps) when that sigma is queried.
pytestmark = pytest.mark.filterwarnings("ignore:Should have ta>=t0:UserWarning")

ROOT = Path(__file__).resolve().parents[2]
SD1_CONFIG = json.loads((ROOT / "configs" / "sd1" / "scheduler" / "scheduler_config.json").read_text())
SHAPE = (4, 8, 8)

COMBOS = [(spec.name, sched) for spec in S.SAMPLERS for sched in ("automatic", *spec.supported_schedules)]
COMBOS_SPECS = [(S.SAMPLERS_BY_NAME[n], s) for n, s in COMBOS]


def fake_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A deterministic, per-sample stand-in for the UNet."""
    return 0.1 * x + torch.sin(torch.as_tensor(t, dtype=torch.float32))


def start_noise(seed: int, generator: torch.Generator | None = None) -> torch.Tensor:
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    return torch.randn((1, *SHAPE), generator=g)


def run_loop(run: S.SamplerRun, x: torch.Tensor, *, cfg_copies: int = 2) -> torch.Tensor:
    """Drive a SamplerRun the way the denoising loop does (guidance doubles the UNet input)."""
    b = x.shape[0]
    for t in run.timesteps:
        x_in = run.scale_model_input(torch.cat([x] * cfg_copies), t)
        x = run.step(fake_model(x_in[:b], t), t, x)
    return x


# --- names ----------------------------------------------------------------------------------------
def test_sampler_list_is_a1111s_order_and_names() -> None:
    assert S.sampler_names() == [
        "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "Euler a", "Euler", "LMS",
        "Heun", "DPM2", "DPM2 a", "DDIM", "PLMS", "UniPC", "LCM",
    ]
    assert [(s.name, s.label) for s in S.SCHEDULES] == [
        ("automatic", "Automatic"), ("uniform", "Uniform"), ("karras", "Karras"), ("exponential", "Exponential"),
        ("sgm_uniform", "SGM Uniform"), ("beta", "Beta"),
    ]


@pytest.mark.parametrize("spec", S.SAMPLERS, ids=lambda s: s.name)
def test_names_and_aliases_resolve_in_any_case(spec: S.SamplerSpec) -> None:
    for name in (spec.name, *spec.aliases):
        for variant in (name, name.upper(), name.lower(), f"  {name} "):
            assert S.resolve(variant, None)[0] is spec


@pytest.mark.parametrize(("requested", "schedule", "expected"), [
    ("DPM++ 2M Karras", None, ("DPM++ 2M", "karras")),
    ("DPM++ 2M", None, ("DPM++ 2M", "karras")),
    ("dpm++ 2m karras", "Exponential", ("DPM++ 2M", "karras")),  # the name's schedule wins, as in A1111
    ("DPM++ 2M", "Exponential", ("DPM++ 2M", "exponential")),
    ("DPM++ SDE Karras", None, ("DPM++ SDE", "karras")),
    ("DPM++ 2M SDE Karras", None, ("DPM++ 2M SDE", "karras")),
    ("DPM++ 2M SDE Exponential", None, ("DPM++ 2M SDE", "exponential")),
    ("DPM++ 2M SDE", "automatic", ("DPM++ 2M SDE", "exponential")),
    ("DPM2 a Karras", None, ("DPM2 a", "karras")),
    ("Euler a", None, ("Euler a", "automatic")),
    ("Euler a", "Automatic", ("Euler a", "automatic")),
    ("k_euler_a", "", ("Euler a", "automatic")),
    ("k_dpmpp_2m", None, ("DPM++ 2M", "karras")),
    ("k_lms_ka", None, ("LMS", "karras")),
    ("k_dpmpp_2m_sde_exp", None, ("DPM++ 2M SDE", "exponential")),
    ("Euler SGMUniform", None, ("Euler", "sgm_uniform")),
    ("DPM++ 2M SGM Uniform", None, ("DPM++ 2M", "sgm_uniform")),
    ("euler", "sgm uniform", ("Euler", "sgm_uniform")),
    ("Heun", "UNIFORM", ("Heun", "uniform")),
    ("LMS", "beta", ("LMS", "beta")),
    ("DDIM", None, ("DDIM", "automatic")),
    ("UniPC", "Karras", ("UniPC", "karras")),
])
def test_resolve_splits_legacy_names_and_applies_defaults(requested: str, schedule: str | None,
                                                          expected: tuple[str, str]) -> None:
    spec, sched = S.resolve(requested, schedule)
    assert (spec.name, sched.name) == expected


def test_unknown_names_raise_listing_the_choices() -> None:
    with pytest.raises(S.UnknownSamplerError) as info:
        S.resolve("DPM fast", None)
    assert "DPM fast" in str(info.value) and "DPM++ 2M" in str(info.value) and "Euler a" in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(S.UnknownSamplerError) as info:
        S.resolve("Euler", "Polyexponential")
    assert "Polyexponential" in str(info.value) and "Karras" in str(info.value) and "SGM Uniform" in str(info.value)
    with pytest.raises(S.UnknownSamplerError):
        S.resolve(None, None)
    with pytest.raises(S.UnknownSamplerError):
        S.resolve("Karras", None)  # a schedule label alone is no sampler


@pytest.mark.parametrize(("sampler", "schedule"), [("Euler a", "Karras"), ("LCM", "Exponential"), ("DDIM", "Uniform"),
                                                   ("DPM++ 2S a", "SGM Uniform")])
def test_unsupported_schedule_falls_back_or_raises_when_strict(sampler: str, schedule: str) -> None:
    spec, sched = S.resolve(sampler, schedule)
    assert sched is S.effective_schedule(spec, S.AUTOMATIC)
    with pytest.raises(S.UnsupportedScheduleError, match=sampler.replace("+", r"\+")):
        S.resolve(sampler, schedule, strict=True)


def test_infotext_fields_follow_a1111() -> None:
    def fields(sampler: str, schedule: str | None) -> dict[str, str]:
        spec, sched = S.resolve(sampler, schedule)
        return S.infotext_fields(spec, sched, schedule)

    assert fields("DPM++ 2M", "Automatic") == {"Sampler": "DPM++ 2M", "Schedule type": "Karras"}
    assert fields("DPM++ 2M", None) == {"Sampler": "DPM++ 2M", "Schedule type": "Karras"}
    assert fields("DPM++ 2M SDE", "Automatic") == {"Sampler": "DPM++ 2M SDE", "Schedule type": "Exponential"}
    assert fields("Euler a", "Automatic") == {"Sampler": "Euler a", "Schedule type": "Automatic"}
    assert fields("Euler a", None) == {"Sampler": "Euler a"}
    assert fields("Euler", "uniform") == {"Sampler": "Euler", "Schedule type": "Uniform"}
    assert fields("DPM++ 2M Karras", None) == {"Sampler": "DPM++ 2M", "Schedule type": "Karras"}
    # a schedule the sampler cannot follow is recorded as what ran
    assert fields("Euler a", "Karras") == {"Sampler": "Euler a", "Schedule type": "Automatic"}


# --- A1111's module faces ----------------------------------------------------------------------------
def test_get_sampler_and_scheduler_has_a1111_semantics() -> None:
    get = sd_samplers.get_sampler_and_scheduler
    assert get("DPM++ 2M Karras", None) == ("DPM++ 2M", "Automatic")
    assert get("DPM++ 2M Karras", None, convert_automatic=False) == ("DPM++ 2M", "Karras")
    assert get("DPM++ SDE Karras", "Automatic") == ("DPM++ SDE", "Automatic")
    assert get("DPM++ 2M SDE Karras", None) == ("DPM++ 2M SDE", "Karras")
    assert get("Euler a", "Karras") == ("Euler a", "Karras")
    assert get("euler A", "sgm_uniform") == ("Euler a", "SGM Uniform")
    assert get("k_dpmpp_2m_ka", None) == ("DPM++ 2M", "Automatic")
    # lenient where A1111 is: unknown sampler -> the default one, unknown schedule -> Automatic
    assert get("DPM fast", "nonsense") == ("DPM++ 2M", "Automatic")
    assert get("DPM fast Exponential", None) == ("DPM++ 2M", "Exponential")
    assert get(None, None) == ("DPM++ 2M", "Automatic")
    assert sd_samplers.get_sampler_from_infotext({"Sampler": "DPM2 a Karras"}) == "DPM2 a"
    assert sd_samplers.get_scheduler_from_infotext({"Sampler": "Euler", "Schedule type": "Karras"}) == "Karras"
    # Karras is DPM++ 2M's default, so it reads back as Automatic, which differs from the first pass's label
    assert sd_samplers.get_hr_sampler_and_scheduler(
        {"Sampler": "Euler", "Schedule type": "Karras", "Hires sampler": "DPM++ 2M"}) == ("DPM++ 2M", "Automatic")
    assert sd_samplers.get_hr_sampler_and_scheduler(
        {"Sampler": "Euler", "Schedule type": "Karras", "Hires sampler": "Heun"}) == ("Heun", "Use same scheduler")
    assert sd_samplers.get_hr_sampler_and_scheduler({"Sampler": "Euler", "Schedule type": "Karras"}) == (
        "Use same sampler", "Use same scheduler")


def test_sd_samplers_lists_and_lookups() -> None:
    assert [x.name for x in sd_samplers.all_samplers] == S.sampler_names()
    assert sd_samplers.samplers is sd_samplers.all_samplers
    assert sd_samplers.samplers_map["k_euler_a"] == "Euler a"
    assert sd_samplers.samplers_map["dpm++ 2m"] == "DPM++ 2M"
    assert sd_samplers.find_sampler_config("k_dpm_2_a").name == "DPM2 a"
    assert sd_samplers.find_sampler_config("dpm++ 2m").options["scheduler"] == "karras"
    assert sd_samplers.find_sampler_config(None).name == "DPM++ 2M"
    assert sd_samplers.find_sampler_config("nope") is None
    assert sd_samplers.find_sampler_config("Heun").total_steps(20) == 40
    assert sd_samplers.find_sampler_config("Euler").total_steps(20) == 20
    assert sd_samplers.visible_sampler_names(hidden=["PLMS", "DDIM"]) == [
        n for n in S.sampler_names() if n not in ("PLMS", "DDIM")]
    model = SimpleNamespace(scheduler_config={**SD1_CONFIG, "prediction_type": "v_prediction"})
    scheduler = sd_samplers.find_sampler_config("DPM++ 2M").constructor(model)
    assert isinstance(scheduler, DPMSolverMultistepScheduler)
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.use_karras_sigmas


def test_api_listings_have_a1111_shape() -> None:
    items = sd_samplers.api_samplers()
    assert items[0] == {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"], "options": {"scheduler": "karras"}}
    by_name = {x["name"]: x for x in items}
    assert by_name["Euler a"]["aliases"] == ["k_euler_a", "k_euler_ancestral"]
    assert by_name["Heun"]["options"] == {"second_order": "True"}
    assert all(isinstance(v, str) for x in items for v in x["options"].values())
    schedulers = sd_schedulers.api_schedulers()
    assert schedulers[0] == {"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": -1,
                             "need_inner_model": False}
    karras = next(x for x in schedulers if x["name"] == "karras")
    assert karras["default_rho"] == 7.0
    assert next(x for x in schedulers if x["name"] == "sgm_uniform")["aliases"] == ["SGMUniform"]
    assert set(sd_schedulers.schedulers_map) >= {"karras", "Karras", "sgm_uniform", "SGM Uniform"}


def test_schedule_functions_match_the_schedules_diffusers_builds() -> None:
    for name, function in (("karras", sd_schedulers.karras_sigmas), ("exponential", sd_schedulers.exponential_sigmas),
                           ("beta", sd_schedulers.beta_sigmas)):
        sched = S.build_scheduler(S.SAMPLERS_BY_NAME["Euler"], S.SCHEDULES_BY_NAME[name], SD1_CONFIG)
        sched.set_timesteps(10)
        expected = function(10, sched.sigmas[-2].item(), sched.sigmas[0].item())
        torch.testing.assert_close(sched.sigmas.float(), expected.float(), rtol=1e-4, atol=1e-5)


# --- configs --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "cls", "expected"), [
    ("DPM++ 2M", DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                               "use_karras_sigmas": True}),
    ("DPM++ SDE", DPMSolverSDEScheduler, {"use_karras_sigmas": True}),
    ("DPM++ 2M SDE", DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "solver_order": 2,
                                                   "use_exponential_sigmas": True}),
    ("DPM++ 2M SDE Heun", DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun"}),
    ("DPM++ 2S a", DPMSolverSinglestepScheduler, {"solver_order": 2, "use_karras_sigmas": True}),
    ("Euler a", EulerAncestralDiscreteScheduler, {"timestep_spacing": "linspace"}),
    ("Euler", EulerDiscreteScheduler, {"timestep_spacing": "linspace", "use_karras_sigmas": False}),
    ("LMS", LMSDiscreteScheduler, {"timestep_spacing": "linspace"}),
    ("Heun", HeunDiscreteScheduler, {"timestep_spacing": "linspace"}),
    ("DPM2", KDPM2DiscreteScheduler, {"use_karras_sigmas": True}),
    ("DPM2 a", KDPM2AncestralDiscreteScheduler, {"use_karras_sigmas": True}),
    ("DDIM", DDIMScheduler, {"clip_sample": False, "set_alpha_to_one": False, "timestep_spacing": "leading",
                             "steps_offset": 1}),
    ("PLMS", PNDMScheduler, {"skip_prk_steps": True, "timestep_spacing": "leading"}),
    ("UniPC", UniPCMultistepScheduler, {"timestep_spacing": "linspace"}),
    ("LCM", LCMScheduler, {}),
])
def test_each_sampler_maps_to_its_diffusers_scheduler(name: str, cls: type, expected: dict) -> None:
    spec, sched = S.resolve(name, None)
    scheduler = S.build_scheduler(spec, sched, SD1_CONFIG)
    assert type(scheduler) is cls
    for key, value in expected.items():
        assert scheduler.config[key] == value, key


def test_model_config_supplies_betas_and_prediction_type_only() -> None:
    model_config = {
        "_class_name": "PNDMScheduler", "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
        "num_train_timesteps": 1000, "prediction_type": "v_prediction", "steps_offset": 1,
        "timestep_spacing": "leading", "use_karras_sigmas": True, "rescale_betas_zero_snr": False,
        "clip_sample": True, "skip_prk_steps": True,
    }
    expected_alphas = torch.cumprod(1 - torch.linspace(0.0001, 0.02, 1000, dtype=torch.float32), 0)
    for spec, sched_name in COMBOS_SPECS:
        config = S.scheduler_config(spec, S.SCHEDULES_BY_NAME[sched_name], model_config)
        assert set(config) <= S._init_params(spec.scheduler_class)
        assert config["prediction_type"] == "v_prediction"
        assert config["beta_schedule"] == "linear" and config["beta_start"] == 0.0001
        assert "_class_name" not in config
        if "clip_sample" in config:  # the model's clip_sample never reaches a latent-space sampler
            assert config["clip_sample"] is False
    for spec in S.SAMPLERS:
        scheduler = S.build_scheduler(spec, S.AUTOMATIC, model_config)
        assert scheduler.config.prediction_type == "v_prediction"
        torch.testing.assert_close(scheduler.alphas_cumprod.float(), expected_alphas)
    # the model's spacing and sigma options are not taken: A1111's samplers decide those
    euler = S.scheduler_config(S.SAMPLERS_BY_NAME["Euler"], S.AUTOMATIC, model_config)
    assert euler["timestep_spacing"] == "linspace" and "use_karras_sigmas" not in euler


@pytest.mark.parametrize(("name", "schedule"), COMBOS)
def test_each_supported_schedule_reaches_the_scheduler(name: str, schedule: str) -> None:
    spec = S.SAMPLERS_BY_NAME[name]
    sched = S.SCHEDULES_BY_NAME[schedule]
    config = S.scheduler_config(spec, sched, SD1_CONFIG)
    applied = S.effective_schedule(spec, sched)
    main_keys = {"karras": "use_karras_sigmas", "exponential": "use_exponential_sigmas", "beta": "use_beta_sigmas"}
    if applied.name in main_keys:
        assert config[main_keys[applied.name]] is True
    if applied.name == "sgm_uniform":
        assert config["timestep_spacing"] == "trailing"
    if applied.name == "uniform" and "timestep_spacing" in S._init_params(spec.scheduler_class):
        assert config["timestep_spacing"] == "linspace"


def test_trained_betas_and_zero_snr_configs_build() -> None:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64).pow(2).tolist()
    config = {"trained_betas": betas, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
              "rescale_betas_zero_snr": True}
    for name in ("Euler", "DDIM", "DPM++ 2M", "UniPC"):
        scheduler = S.build_scheduler(S.SAMPLERS_BY_NAME[name], S.SCHEDULES_BY_NAME["sgm_uniform"], config)
        assert scheduler.config.rescale_betas_zero_snr is True
        assert scheduler.alphas_cumprod[-1] < 1e-6  # zero terminal SNR


_ZERO_SNR = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "prediction_type": "v_prediction", "rescale_betas_zero_snr": True}


@pytest.mark.parametrize(("sampler", "schedule", "expected"), [
    ("DPM++ 2M", None, "sgm_uniform"),
    ("DPM++ 2M", "Automatic", "sgm_uniform"),
    ("Euler a", "Automatic", "sgm_uniform"),
    ("DPM++ 2M", "Karras", "karras"),  # a choice is kept
    ("DPM++ 2M Karras", None, "karras"),
    ("DPM++ 2S a", "Automatic", "karras"),  # cannot follow trailing spacing: its own default stays
])
def test_automatic_schedule_on_zero_snr_models_is_trailing(sampler: str, schedule: str | None, expected: str) -> None:
    spec, sched = S.resolve(sampler, schedule)
    automatic = S.requests_automatic(sampler, schedule)
    assert S.schedule_for_model(spec, sched, _ZERO_SNR, automatic=automatic).name == expected
    plain = {k: v for k, v in _ZERO_SNR.items() if k != "rescale_betas_zero_snr"}
    assert S.schedule_for_model(spec, sched, plain, automatic=automatic) == sched


def test_low_denoising_on_a_zero_snr_model_starts_at_low_noise_only_when_trailing() -> None:
    # why Automatic avoids Karras there: sigma_max is clamped to 4096, so step 14 of 20 is still at 6.6
    def first_sigma(schedule: str) -> float:
        run = S.SamplerRun(S.SAMPLERS_BY_NAME["DPM++ 2M"], S.SCHEDULES_BY_NAME[schedule], _ZERO_SNR, 20, seeds=[1],
                           denoising_strength=0.3, device=torch.device("cpu"))
        assert run.sigmas is not None
        return float(run.sigmas[run._begin_index])

    assert first_sigma("karras") > 5
    assert first_sigma("sgm_uniform") < 1


def test_build_scheduler_hands_out_independent_copies() -> None:
    spec, sched = S.resolve("DPM2", None)
    a = S.build_scheduler(spec, sched, SD1_CONFIG)
    b = S.build_scheduler(spec, sched, SD1_CONFIG)
    a.set_timesteps(5)
    assert a is not b and len(b.timesteps) != len(a.timesteps)
    direct = KDPM2DiscreteScheduler.from_config(S.scheduler_config(spec, sched, SD1_CONFIG))
    direct.set_timesteps(5)
    torch.testing.assert_close(a.sigmas, direct.sigmas)
    torch.testing.assert_close(a.timesteps, direct.timesteps)


# --- sampling runs --------------------------------------------------------------------------------
def reference_run(spec: S.SamplerSpec, schedule: S.ScheduleSpec, steps: int, seed: int, delta: int, eta: float,
                  strength: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """diffusers' scheduler driven directly, as diffusers' pipelines drive it with a per-image generator.

    Returns (start latents, visited timesteps, final latents)."""
    scheduler = S.build_scheduler(spec, schedule, SD1_CONFIG, noise_seed=seed)
    scheduler.set_timesteps(spec.scheduler_steps(steps))
    timesteps = scheduler.timesteps
    generator = torch.Generator().manual_seed(seed + delta)
    # With no delta the pipeline's generator first draws the image's initial noise, then the step noise.
    noise = start_noise(seed, generator if delta == 0 else None)
    if strength is None:
        x = noise * scheduler.init_noise_sigma
    else:
        init_timestep = min(int(steps * strength), steps)
        t_start = max(steps - init_timestep, 0)
        begin = t_start * spec.timestep_stride
        timesteps = timesteps[begin:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        x = scheduler.add_noise(init_image(), noise, timesteps[:1])
    start = x.clone()
    params = S._method_params(spec.scheduler_class, "step")
    kwargs = {}
    if "generator" in params:
        kwargs["generator"] = generator
    if "eta" in params:
        kwargs["eta"] = eta
    for t in timesteps:
        x_in = scheduler.scale_model_input(x, t)
        x = scheduler.step(fake_model(x_in, t), t, x, **kwargs).prev_sample
    return start, timesteps, x


def init_image() -> torch.Tensor:
    return torch.linspace(-1, 1, 4 * 8 * 8).reshape(1, *SHAPE)


@pytest.mark.parametrize(("name", "schedule"), COMBOS)
def test_run_matches_diffusers_scheduler_for_one_image(name: str, schedule: str) -> None:
    spec = S.SAMPLERS_BY_NAME[name]
    sched = S.effective_schedule(spec, S.SCHEDULES_BY_NAME[schedule])
    seed, delta = 1234, 0
    start, timesteps, expected = reference_run(spec, sched, 4, seed, delta, eta=0.0)
    run = S.SamplerRun(spec, sched, SD1_CONFIG, 4, seeds=[seed], eta=0.0, noise_seed_delta=delta, device="cpu")
    torch.testing.assert_close(run.timesteps, timesteps)
    x = start_noise(seed) * run.init_noise_sigma
    torch.testing.assert_close(x, start)
    torch.testing.assert_close(run_loop(run, x), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("name", "delta", "eta"), [("Euler a", 31337, 0.0), ("DPM2 a", 5, 0.0), ("LCM", 7, 0.0),
                                                    ("DPM++ 2M SDE", 1, 0.0), ("DPM++ 2S a", 2, 0.0),
                                                    ("DDIM", 0, 0.6), ("DDIM", 3, 0.6)])
def test_run_matches_diffusers_with_noise_seed_delta_and_eta(name: str, delta: int, eta: float) -> None:
    spec, sched = S.resolve(name, None)
    start, _, expected = reference_run(spec, sched, 4, 99, delta, eta=eta)
    run = S.SamplerRun(spec, sched, SD1_CONFIG, 4, seeds=[99], eta=eta, noise_seed_delta=delta, device="cpu")
    assert run.stochastic
    torch.testing.assert_close(run_loop(run, start.clone()), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["Euler", "Euler a", "Heun", "DPM2 a", "DPM++ 2M", "DPM++ SDE", "DPM++ 2S a",
                                  "DDIM", "PLMS", "UniPC", "LCM", "LMS"])
def test_img2img_truncates_and_noises_like_diffusers(name: str) -> None:
    spec, sched = S.resolve(name, None)
    start, timesteps, expected = reference_run(spec, sched, 6, 5, 0, eta=0.0, strength=0.5)
    run = S.SamplerRun(spec, sched, SD1_CONFIG, 6, seeds=[5], denoising_strength=0.5, eta=0.0, device="cpu")
    torch.testing.assert_close(run.timesteps, timesteps)
    assert run.sampler_steps == 3
    x = run.add_noise(init_image(), start_noise(5))
    torch.testing.assert_close(x, start)
    torch.testing.assert_close(run_loop(run, x), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", S.sampler_names())
def test_batch_gives_each_image_its_own_trajectory(name: str) -> None:
    spec, sched = S.resolve(name, None)
    seeds = [11, 12, 13]
    starts = [start_noise(s) for s in seeds]
    batch = S.SamplerRun(spec, sched, SD1_CONFIG, 4, seeds=seeds, eta=0.3, device="cpu")
    together = run_loop(batch, torch.cat(starts) * batch.init_noise_sigma)
    for i, seed in enumerate(seeds):
        alone = S.SamplerRun(spec, sched, SD1_CONFIG, 4, seeds=[seed], eta=0.3, device="cpu")
        single = run_loop(alone, starts[i] * alone.init_noise_sigma)
        torch.testing.assert_close(together[i:i + 1], single, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["Euler a", "DPM++ SDE", "DPM++ 2M SDE", "LCM"])
def test_stochastic_samplers_draw_per_image_noise(name: str) -> None:
    spec, sched = S.resolve(name, None)
    same_start = torch.cat([start_noise(1)] * 2)
    run = S.SamplerRun(spec, sched, SD1_CONFIG, 4, seeds=[1, 2], device="cpu")
    out = run_loop(run, same_start * run.init_noise_sigma)
    assert not torch.allclose(out[0], out[1])
    assert run.generators is None or all(g.device.type == "cpu" for g in run.generators)


def test_deterministic_samplers_share_one_scheduler_and_match_per_image_stepping() -> None:
    spec, sched = S.resolve("DPM++ 2M", None)
    run = S.SamplerRun(spec, sched, SD1_CONFIG, 5, seeds=[1, 2, 3], device="cpu")
    assert not run.stochastic and len(run.schedulers) == 1
    starts = torch.cat([start_noise(s) for s in (1, 2, 3)]) * run.init_noise_sigma
    batched = run_loop(run, starts)
    for i in range(3):
        alone = S.SamplerRun(spec, sched, SD1_CONFIG, 5, seeds=[i], device="cpu")
        torch.testing.assert_close(batched[i:i + 1], run_loop(alone, starts[i:i + 1]), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("name", "evaluations"), [("Euler", 10), ("Heun", 19), ("DPM2", 19), ("DPM2 a", 19),
                                                   ("DPM++ SDE", 19), ("DPM++ 2S a", 19), ("PLMS", 11),
                                                   ("DPM++ 2M", 10), ("LCM", 10)])
def test_loop_length_and_progress(name: str, evaluations: int) -> None:
    spec, sched = S.resolve(name, None)
    run = S.SamplerRun(spec, sched, SD1_CONFIG, 10, seeds=[0], device="cpu")
    assert run.num_steps == evaluations
    assert run.sampling_step(run.num_steps - 1) == 10
    assert [run.sampling_step(i) for i in range(run.num_steps)] == sorted(run.sampling_step(i)
                                                                          for i in range(run.num_steps))


def test_img2img_strength_edges() -> None:
    spec, sched = S.resolve("Euler", None)
    tiny = S.SamplerRun(spec, sched, SD1_CONFIG, 20, seeds=[0], denoising_strength=0.01, device="cpu")
    assert tiny.num_steps == 1 and tiny.sampler_steps == 1  # diffusers would refuse; A1111 runs one step
    full = S.SamplerRun(spec, sched, SD1_CONFIG, 20, seeds=[0], denoising_strength=1.0, device="cpu")
    txt = S.SamplerRun(spec, sched, SD1_CONFIG, 20, seeds=[0], device="cpu")
    torch.testing.assert_close(full.timesteps, txt.timesteps)
    with pytest.raises(ValueError):
        S.SamplerRun(spec, sched, SD1_CONFIG, 20, seeds=[0], denoising_strength=-0.5, device="cpu")
    with pytest.raises(ValueError):
        S.SamplerRun(spec, sched, SD1_CONFIG, 0, seeds=[0], device="cpu")


def test_noise_to_matches_the_schedulers_add_noise() -> None:
    spec, sched = S.resolve("Euler", None)
    run = S.SamplerRun(spec, sched, SD1_CONFIG, 6, seeds=[0, 1], denoising_strength=0.5, device="cpu")
    init, noise = torch.cat([init_image()] * 2), torch.cat([start_noise(0), start_noise(1)])
    x = run.add_noise(init, noise)
    x = run.step(fake_model(run.scale_model_input(x, run.timesteps[0]), run.timesteps[0]), run.timesteps[0], x)
    sigma = run.sigmas[run.schedulers[0].step_index]
    torch.testing.assert_close(run.noise_to(init, noise, run.timesteps[1]), init + noise * sigma)


def test_eta_comes_from_settings_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from modules import shared

    monkeypatch.setattr(shared, "opts", SimpleNamespace(eta_ddim=0.4))
    spec, sched = S.resolve("DDIM", None)
    run = S.SamplerRun(spec, sched, SD1_CONFIG, 4, seeds=[0], device="cpu")
    assert run.eta == 0.4 and run.stochastic and run.generators is not None
    euler_a = S.SamplerRun(*S.resolve("Euler a", None), SD1_CONFIG, 4, seeds=[0], eta=0.5, device="cpu")
    assert euler_a.eta is None  # diffusers' ancestral samplers fix eta at 1


def test_lcm_accepts_more_steps_than_its_distillation_grid() -> None:
    spec, sched = S.resolve("LCM", None)
    run = S.SamplerRun(spec, sched, SD1_CONFIG, 60, seeds=[0], device="cpu")
    assert run.num_steps == 60 and len(set(run.timesteps.tolist())) == 60


def clean_target() -> torch.Tensor:
    return torch.linspace(-1, 1, 4 * 8 * 8).reshape(1, *SHAPE)


def oracle(prediction_type: str):  # type: ignore[no-untyped-def]
    """A perfect denoiser for a one-point data set: what an ideal UNet would predict."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    log_sigmas = (((1 - torch.cumprod(1 - betas, 0)) / torch.cumprod(1 - betas, 0)) ** 0.5).log()
    x0 = clean_target().double()

    def model(x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = float(t)
        lo = int(t)
        hi = min(lo + 1, 999)
        log_sigma = (1 - (t - lo)) * log_sigmas[lo] + (t - lo) * log_sigmas[hi]
        alpha = 1 / (1 + log_sigma.exp() ** 2)
        eps = (x_in.double() - alpha.sqrt() * x0) / (1 - alpha).sqrt()
        if prediction_type == "v_prediction":
            return (alpha.sqrt() * eps - (1 - alpha).sqrt() * x0).float()
        return eps.float()

    return model


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_every_sampler_denoises_with_an_ideal_model(prediction_type: str) -> None:
    model = oracle(prediction_type)
    config = {**SD1_CONFIG, "prediction_type": prediction_type}
    for spec in S.SAMPLERS:
        run = S.SamplerRun(spec, S.effective_schedule(spec, S.AUTOMATIC), config, 8, seeds=[3], eta=0.0, device="cpu")
        x = start_noise(3) * run.init_noise_sigma
        for t in run.timesteps:
            x = run.step(model(run.scale_model_input(x, t), t), t, x)
        # samplers that stop at the smallest training sigma (DDIM, PLMS, UniPC) keep a trace of noise
        tolerance = 0.15 if spec.name in ("DDIM", "PLMS", "UniPC") else 1e-3
        assert (x - clean_target()).abs().max() < tolerance, spec.name


def test_preview_schedule_follows_the_model_scheduler_config() -> None:
    """The clean-picture estimate behind live previews uses the model's own schedule: SD's when the
    config says nothing else, and a zero-terminal-SNR rescale when the config asks for one."""
    from types import SimpleNamespace

    from modules.engine.denoise import _alphas_cumprod

    sd = _alphas_cumprod(SimpleNamespace(scheduler_config={}, extra={}))
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    assert torch.allclose(sd, torch.cumprod(1 - betas, 0).float(), rtol=1e-5)
    zero = _alphas_cumprod(SimpleNamespace(scheduler_config={"rescale_betas_zero_snr": True}, extra={}))
    assert float(zero[-1]) < 1e-6 < float(sd[-1]) and abs(float(zero[0]) - float(sd[0])) < 1e-6
