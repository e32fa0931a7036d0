"""A1111's `modules.sd_schedulers`: the schedule types, as extensions and API clients see them.

The schedule types themselves (and how each maps onto diffusers) live in
`modules.engine.samplers.SCHEDULES`; this module gives them A1111's record shape. `function` is the
sigma formula for the types that are pure formulas (Karras, Exponential, Beta), with k-diffusion's
signature, for extensions that compute a schedule themselves. Uniform and SGM Uniform are defined
on A1111's k-diffusion model wrapper (`need_inner_model`), which Easel does not have, so their
`function` is None; Easel's engine never calls these functions, it lets diffusers lay out sigmas.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from modules.engine import samplers as engine_samplers


@dataclass
class Scheduler:
    name: str
    label: str
    function: Callable[..., torch.Tensor] | None = None
    default_rho: float = -1
    need_inner_model: bool = False
    aliases: list[str] | None = None


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Karras et al. (2022): n sigmas evenly spaced in sigma^(1/rho), then 0."""
    ramp = torch.linspace(0, 1, n, device=device)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential_sigmas(n: int, sigma_min: float, sigma_max: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """n sigmas evenly spaced in log-sigma, then 0."""
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, device=device).exp())


def beta_sigmas(n: int, sigma_min: float, sigma_max: float, inner_model: Any = None,
                device: torch.device | str = "cpu", alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """Lee et al. (2024), "Beta Sampling is All You Need": Beta(alpha, beta) quantiles of the sigma
    range, then 0. `inner_model` is accepted for A1111's signature and not used."""
    import numpy as np
    from scipy import stats

    quantiles = stats.beta.ppf(1 - np.linspace(0, 1, n), alpha, beta)
    sigmas = torch.tensor([sigma_min + q * (sigma_max - sigma_min) for q in quantiles], dtype=torch.float32)
    return _append_zero(sigmas).to(device)


# A1111's extra attributes for each schedule type Easel offers.
_A1111_FIELDS: dict[str, dict[str, Any]] = {
    "uniform": {"need_inner_model": True},
    "karras": {"function": karras_sigmas, "default_rho": 7.0},
    "exponential": {"function": exponential_sigmas},
    "sgm_uniform": {"need_inner_model": True},
    "beta": {"function": beta_sigmas, "need_inner_model": True},
}

schedulers: list[Scheduler] = [
    Scheduler(s.name, s.label, aliases=list(s.aliases) or None, **_A1111_FIELDS.get(s.name, {}))
    for s in engine_samplers.SCHEDULES
]
schedulers_map: dict[str, Scheduler] = {**{s.name: s for s in schedulers}, **{s.label: s for s in schedulers}}


def api_schedulers() -> list[dict[str, Any]]:
    """The items of `GET /sdapi/v1/schedulers`, in A1111's shape."""
    return [
        {
            "name": s.name,
            "label": s.label,
            "aliases": list(s.aliases) if s.aliases else None,
            "default_rho": s.default_rho,
            "need_inner_model": s.need_inner_model,
        }
        for s in schedulers
    ]
