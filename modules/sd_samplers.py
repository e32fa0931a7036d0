"""A1111's `modules.sd_samplers`: the sampler list extensions import, and A1111's name handling.

The samplers themselves live in `modules.engine.samplers.SAMPLERS`; here they take A1111's
`SamplerData` shape. A `SamplerData.constructor(model)` returns the diffusers scheduler that
implements the sampler for that model (with the sampler's default schedule type), not one of
A1111's k-diffusion sampler objects.

`get_sampler_and_scheduler` follows A1111's lenient rules because it reads infotexts and old
settings: an unknown sampler becomes the default one, an unknown schedule type becomes Automatic.
Generation uses `modules.engine.samplers.resolve`, which refuses unknown names instead.
"""

from __future__ import annotations

import functools
from collections import namedtuple
from collections.abc import Iterable
from typing import Any

from modules.engine import samplers as engine_samplers

SamplerDataTuple = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])


class SamplerData(SamplerDataTuple):
    """(name, constructor, aliases, options), as in A1111."""

    def total_steps(self, steps: int) -> int:
        """Model evaluations A1111 counts for `steps` sampling steps (second-order samplers do two)."""
        if self.options.get("second_order", False):
            steps = steps * 2
        return steps


def _constructor(spec: engine_samplers.SamplerSpec, model: Any) -> Any:
    schedule = engine_samplers.effective_schedule(spec, engine_samplers.AUTOMATIC)
    return engine_samplers.build_scheduler(spec, schedule, model.scheduler_config)


all_samplers: list[SamplerData] = [
    SamplerData(spec.name, functools.partial(_constructor, spec), list(spec.aliases), dict(spec.options))
    for spec in engine_samplers.SAMPLERS
]
all_samplers_map: dict[str, SamplerData] = {x.name: x for x in all_samplers}
samplers: list[SamplerData] = all_samplers
samplers_for_img2img: list[SamplerData] = all_samplers
samplers_map: dict[str, str] = {n.lower(): x.name for x in all_samplers for n in (x.name, *x.aliases)}
"""lower-cased names and aliases -> sampler name"""


def find_sampler_config(name: str | None) -> SamplerData | None:
    """The sampler called `name` (name or alias, any case); the default sampler for None."""
    if name is None:
        return all_samplers[0]
    spec = engine_samplers.find_sampler(name)
    return all_samplers_map[spec.name] if spec is not None else None


def visible_sampler_names(hidden: Iterable[str] | None = None) -> list[str]:
    """Sampler names for dropdowns, without those in `hidden` (default: the `hide_samplers` setting, if any)."""
    if hidden is None:
        from modules import shared

        hidden = getattr(shared.opts, "hide_samplers", None) or []
    hidden_set = set(hidden)
    return [x.name for x in samplers if x.name not in hidden_set]


def get_sampler_and_scheduler(sampler_name: str | None, scheduler_name: str | None, *,
                              convert_automatic: bool = True) -> tuple[str, str]:
    """(sampler name, schedule type label) for a possibly legacy pair, with A1111's rules.

    A trailing schedule type in the sampler name ("DPM++ 2M Karras") is split off and wins over
    `scheduler_name`. With `convert_automatic`, a schedule type equal to the sampler's default
    becomes "Automatic". Unknown samplers give the default sampler, unknown schedule types
    Automatic. Names are matched in any case.
    """
    name = sampler_name or all_samplers[0].name
    try:
        found_schedule = engine_samplers.find_schedule(scheduler_name)
    except engine_samplers.UnknownSamplerError:
        found_schedule = engine_samplers.AUTOMATIC
    try:
        spec, from_name = engine_samplers.parse_sampler_name(name)
    except engine_samplers.UnknownSamplerError:
        base, from_name = engine_samplers.split_schedule_suffix(name)
        spec = engine_samplers.find_sampler(base) or engine_samplers.SAMPLERS[0]
    if from_name is not None:
        found_schedule = from_name
    if convert_automatic and spec.default_schedule == found_schedule.name:
        found_schedule = engine_samplers.AUTOMATIC
    return spec.name, found_schedule.label


def get_sampler_from_infotext(d: dict[str, Any]) -> str:
    return get_sampler_and_scheduler(d.get("Sampler"), d.get("Schedule type"))[0]


def get_scheduler_from_infotext(d: dict[str, Any]) -> str:
    return get_sampler_and_scheduler(d.get("Sampler"), d.get("Schedule type"))[1]


def get_hr_sampler_and_scheduler(d: dict[str, Any]) -> tuple[str, str]:
    """The hires pass's (sampler, schedule type) from infotext fields, "Use same ..." where they match the first pass."""
    hr_sampler = d.get("Hires sampler", "Use same sampler")
    sampler = d.get("Sampler") if hr_sampler == "Use same sampler" else hr_sampler
    hr_scheduler = d.get("Hires schedule type", "Use same scheduler")
    scheduler = d.get("Schedule type") if hr_scheduler == "Use same scheduler" else hr_scheduler

    sampler, scheduler = get_sampler_and_scheduler(sampler, scheduler)
    sampler = sampler if sampler != d.get("Sampler") else "Use same sampler"
    scheduler = scheduler if scheduler != d.get("Schedule type") else "Use same scheduler"
    return sampler, scheduler


def get_hr_sampler_from_infotext(d: dict[str, Any]) -> str:
    return get_hr_sampler_and_scheduler(d)[0]


def get_hr_scheduler_from_infotext(d: dict[str, Any]) -> str:
    return get_hr_sampler_and_scheduler(d)[1]


def api_samplers() -> list[dict[str, Any]]:
    """The items of `GET /sdapi/v1/samplers`, in A1111's shape (option values as strings, as A1111's
    response model renders them)."""
    return [
        {"name": x.name, "aliases": list(x.aliases), "options": {k: str(v) for k, v in x.options.items()}}
        for x in all_samplers
    ]
