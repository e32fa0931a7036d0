"""Offloading (--medvram / --lowvram): the policy, how parts are split and placed, and the stages.

The execution device is injectable. "meta" stands in for a GPU where only placement matters (a
module computes there without data, and putting back must give the very CPU tensors again); "cpu"
runs real models through the stages, where placing moves nothing and the recorded order is checked.
"""

from __future__ import annotations

import argparse
import copy
import functools

import pytest
import torch
from tiny_models import build_components

from modules import cmd_args
from modules.devices import DevicePolicy
from modules.engine import conditioning, denoise, offload, samplers, vae
from modules.engine.model import DiffusionModel
from modules.engine.offload import Offloader, OffloadMode, OffloadPolicy

CPU = torch.device("cpu")
META = torch.device("meta")
GPU_POLICY = DevicePolicy(torch.device("cuda", 0), torch.float16, torch.float16, torch.device("cuda", 0))
CPU_POLICY = DevicePolicy(CPU, torch.float32, torch.float32, CPU)


def args(*argv: str) -> argparse.Namespace:
    return cmd_args.build_parser().parse_args(list(argv))


@functools.cache
def _components(family: str) -> dict:
    return build_components(family, 3)


def tiny(family: str = "sd1") -> DiffusionModel:
    """A fresh model (its own modules, shared tokenizers) built from the same weights every time."""
    c = _components(family)
    own = {k: copy.deepcopy(c[k]) for k in ("unet", "vae", "text_encoder", "text_encoder_2")}
    return DiffusionModel(family=family, unet=own["unet"], vae=own["vae"], text_encoder=own["text_encoder"],
                          tokenizer=c["tokenizer"], scheduler_config=dict(c["scheduler_config"]),
                          text_encoder_2=own["text_encoder_2"], tokenizer_2=c.get("tokenizer_2"))


def offloaded(model: DiffusionModel, mode: OffloadMode, device: torch.device = CPU) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    offloader = Offloader(mode, device)
    offloader.listener = lambda action, name: events.append((action, name))
    offload.attach(model, offloader)
    return events


class Block(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(width)
        self.proj = torch.nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x))


class Net(torch.nn.Module):
    """A part with a stem holding a buffer of its own, a list of blocks and a head."""

    def __init__(self, width: int = 16, blocks: int = 4) -> None:
        super().__init__()
        self.stem = torch.nn.Linear(width, width)
        self.stem.register_buffer("offset", torch.ones(width))
        self.blocks = torch.nn.ModuleList(Block(width) for _ in range(blocks))
        self.head = torch.nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def fake_model(**parts: torch.nn.Module) -> DiffusionModel:
    return DiffusionModel(family="sd1", unet=parts.get("unet"), vae=parts.get("vae"),
                          text_encoder=parts.get("text_encoder"), tokenizer=None, scheduler_config={})


def tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def devices_of(module: torch.nn.Module) -> set[str]:
    return {t.device.type for t in (*module.parameters(), *module.buffers())}


# --- policy ---------------------------------------------------------------------------------------------
def test_flags_make_the_policy_and_the_cpu_ignores_them() -> None:
    assert offload.policy_from_args(args("--medvram"), CPU_POLICY) == OffloadPolicy()
    assert not offload.policy_from_args(args("--lowvram"), CPU_POLICY).active
    note = offload.startup_note(args("--medvram", "--lowvram"), CPU_POLICY)
    assert note is not None and "--medvram, --lowvram" in note and "no effect" in note
    assert offload.startup_note(args(), CPU_POLICY) is None

    policy = offload.policy_from_args(args("--medvram-sdxl"), GPU_POLICY)
    assert policy.execution_device == torch.device("cuda", 0) and policy.storage_device == CPU
    assert policy.mode_for("sdxl") is OffloadMode.MEDVRAM and policy.mode_for("sd1") is OffloadMode.NONE
    assert policy.builds_in_storage(None) and policy.builds_in_storage("sdxl") and not policy.builds_in_storage("sd2")
    assert policy.offloader_for("sd1") is None
    assert "SDXL" in (offload.startup_note(args("--medvram-sdxl"), GPU_POLICY) or "")

    both = offload.policy_from_args(args("--medvram", "--lowvram"), GPU_POLICY)
    assert both.mode_for("sd1") is OffloadMode.LOWVRAM  # the finer one wins, as in A1111
    med = offload.policy_from_args(args("--medvram"), GPU_POLICY)
    offloader = med.offloader_for("sd2")
    assert offloader is not None and offloader.mode is OffloadMode.MEDVRAM
    assert offloader.execution_device == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="medvram or lowvram"):
        Offloader(OffloadMode.NONE, CPU)


def test_units_cover_every_tensor_once_within_the_budget() -> None:
    net = Net(width=32, blocks=6)
    total = sum(p.numel() * p.element_size() for p in (*net.parameters(), *net.buffers()))
    budget = total // 12
    units = offload.split_units(net, budget)
    names = [n for n, _ in units]
    assert "stem" in names and "head" in names
    assert not any(isinstance(u, torch.nn.ModuleList) for _n, u in units)
    owned = [id(t) for _n, u in units for t in (*u.parameters(), *u.buffers())]
    assert sorted(owned) == sorted(id(t) for t in (*net.parameters(), *net.buffers()))
    for name, unit in units:
        size = sum(t.numel() * t.element_size() for t in (*unit.parameters(), *unit.buffers()))
        assert size <= budget or not list(unit.children()), name
    # medvram's fallback units are the top-level blocks (list entries, not the list)
    assert [n for n, _ in offload.split_units(net, None)] == ["stem", "blocks.0", "blocks.1", "blocks.2",
                                                             "blocks.3", "blocks.4", "blocks.5", "head"]


# --- placing on another device -------------------------------------------------------------------------
def test_medvram_stage_places_the_part_and_gives_back_the_same_tensors() -> None:
    unet, vae_part = Net(), Net()
    model = fake_model(unet=unet, vae=vae_part)
    before = tensors(unet)
    params = list(unet.parameters())
    pointers = [p.data_ptr() for p in params]
    events = offloaded(model, OffloadMode.MEDVRAM, META)
    assert model.device == META and model.storage_device == CPU and model.device_of(unet) == META

    with torch.inference_mode(), offload.stage(model, "unet"):
        assert devices_of(unet) == {"meta"} and devices_of(vae_part) == {"cpu"}
        out = unet(torch.zeros(1, 16, device=META))  # the engine makes inputs on the execution device
        assert out.device == META
    assert events == [("load", "unet"), ("offload", "unet")]
    assert devices_of(unet) == {"cpu"}
    assert list(unet.parameters()) == params and [p.data_ptr() for p in params] == pointers
    assert not any(p.is_inference() for p in unet.parameters())  # still editable in place (networks)
    after = tensors(unet)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_nested_stage_puts_the_outer_part_back_meanwhile() -> None:
    model = fake_model(unet=Net(), vae=Net(), text_encoder=Net())
    events = offloaded(model, OffloadMode.MEDVRAM, META)
    with offload.stage(model, "unet"):
        with offload.stage(model, "vae"):
            assert devices_of(model.unet) == {"cpu"} and devices_of(model.vae) == {"meta"}
        assert devices_of(model.unet) == {"meta"} and devices_of(model.vae) == {"cpu"}
        with offload.stage(model, "unet"):  # already there: nothing moves
            pass
    assert events == [("load", "unet"), ("offload", "unet"), ("load", "vae"), ("offload", "vae"),
                      ("load", "unet"), ("offload", "unet")]
    assert devices_of(model.unet) == devices_of(model.vae) == {"cpu"}
    with pytest.raises(RuntimeError, match="boom"), offload.stage(model, "text_encoder"):
        raise RuntimeError("boom")
    assert devices_of(model.text_encoder) == {"cpu"}  # put back even when the stage fails


def test_medvram_part_called_outside_a_stage_runs_block_by_block() -> None:
    unet = Net(blocks=2)
    model = fake_model(unet=unet, vae=Net())
    events = offloaded(model, OffloadMode.MEDVRAM, META)
    seen: list[set[str]] = []
    for block in unet.blocks:
        block.register_forward_pre_hook(lambda m, a: seen.append(devices_of(unet)))
    out = unet(torch.zeros(1, 16))  # a CPU input, as an extension calling the UNet itself might pass
    assert out.device == META
    assert [n for a, n in events if a == "load"] == ["unet.stem", "unet.blocks.0", "unet.blocks.1", "unet.head"]
    assert all(s == {"cpu", "meta"} for s in seen)  # only the running block was placed
    assert devices_of(unet) == {"cpu"}


def test_lowvram_places_one_unit_at_a_time() -> None:
    unet = Net(width=32, blocks=6)
    model = fake_model(unet=unet, vae=Net())
    events = offloaded(model, OffloadMode.LOWVRAM, META)
    placed_bytes: list[int] = []

    def record(*_args: object) -> None:
        placed_bytes.append(sum(t.numel() * t.element_size() for t in (*unet.parameters(), *unet.buffers())
                                if t.device.type == "meta"))

    for module in unet.modules():
        if not list(module.children()):
            module.register_forward_pre_hook(record)  # runs after the offloader's own pre-hook
    with offload.stage(model, "unet"):  # a no-op under lowvram
        out = unet(torch.zeros(1, 32))
    assert out.device == META and devices_of(unet) == {"cpu"}
    total = sum(t.numel() * t.element_size() for t in (*unet.parameters(), *unet.buffers()))
    largest_unit = max(sum(t.numel() * t.element_size() for t in (*u.parameters(), *u.buffers()))
                       for _n, u in model.offload.units(unet))
    assert 0 < max(placed_bytes) <= largest_unit < total // 4
    loads = [n for a, n in events if a == "load"]
    assert loads[0] == "unet.stem" and loads[-1] == "unet.head" and len(loads) > 8
    assert len(events) == 2 * len(loads) and all(a == "offload" for a, _n in events[1::2])


def test_a_weight_changed_while_placed_is_kept() -> None:
    def placed_copy(layer: torch.nn.Linear) -> tuple[torch.Tensor, list[offload._Moved]]:
        stored = layer.weight.data
        layer.weight.data = copy = stored.clone()  # as placing on another device re-points it
        return stored, [offload._Moved(layer, "weight", layer.weight, stored, layer.weight, copy,
                                       layer.weight._version)]

    layer = torch.nn.Linear(4, 4)
    stored, moved = placed_copy(layer)
    offload._put_back(moved)
    assert layer.weight.data_ptr() == stored.data_ptr()  # unchanged: the stored tensor itself, no copy

    stored, moved = placed_copy(layer)
    with torch.no_grad():
        layer.weight.add_(1.0)  # an in-place edit while placed
    offload._put_back(moved)
    assert torch.equal(layer.weight, stored + 1.0) and layer.weight.data_ptr() != stored.data_ptr()

    _stored, moved = placed_copy(layer)
    layer.to(torch.float64)  # re-pointed at new tensors, as the VAE's fp32 upcast does
    offload._put_back(moved)
    assert layer.weight.dtype == torch.float64


def test_parameters_that_cannot_change_device_in_place_are_swapped_and_restored() -> None:
    layer = torch.nn.Linear(4, 4)
    weight = layer.weight
    moved = offload._place(layer, META)  # CPU and meta tensors cannot share a Parameter object
    assert layer.weight is not weight and layer.weight.device == META and layer.bias.device == META
    offload._put_back(moved)
    assert layer.weight is weight and layer.weight.device == CPU


# --- the engine's stages on a real (tiny) model ---------------------------------------------------------
def run_all_stages(model: DiffusionModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    encoder = conditioning.PromptEncoder(model)
    cond, uncond = encoder.encode_pair(["a red cat"], [""])
    spec, sched = samplers.resolve("Euler", None)
    run = samplers.SamplerRun(spec, sched, model.scheduler_config, 3, seeds=[5], device=model.device)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5)) * run.init_noise_sigma
    time_ids = torch.tensor([[32, 32, 0, 0, 32, 32]], dtype=torch.float32) if model.is_sdxl else None
    guidance = denoise.Guidance(cond=cond, uncond=uncond, cfg_scale=5.0, time_ids=time_ids)
    out = denoise.sample(model, run, latents, guidance)
    images = vae.decode(model, out)
    return cond.embeds, out, images


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_medvram_stages_run_each_part_in_turn_with_identical_results(family: str) -> None:
    reference = run_all_stages(tiny(family))
    model = tiny(family)
    events = offloaded(model, OffloadMode.MEDVRAM)
    result = run_all_stages(model)
    assert all(torch.equal(a, b) for a, b in zip(reference, result, strict=True))
    encoders = [("load", "text_encoder"), ("offload", "text_encoder")]
    if family == "sdxl":
        encoders += [("load", "text_encoder_2"), ("offload", "text_encoder_2")]
    # the empty negative prompt is encoded on its own, after the positive one
    assert events == encoders * 2 + [("load", "unet"), ("offload", "unet"), ("load", "vae"), ("offload", "vae")]
    assert model.storage_device == CPU


def test_lowvram_runs_every_part_unit_by_unit_with_identical_results() -> None:
    reference = run_all_stages(tiny())
    model = tiny()
    events = offloaded(model, OffloadMode.LOWVRAM)
    result = run_all_stages(model)
    assert all(torch.equal(a, b) for a, b in zip(reference, result, strict=True))
    parts = [n.split(".")[0] for a, n in events if a == "load"]
    assert "." in events[0][1]  # units, never whole parts
    order = [p for i, p in enumerate(parts) if i == 0 or parts[i - 1] != p]
    assert order == ["text_encoder", "unet", "vae"]
    assert len(set(n for _a, n in events if n.startswith("unet."))) > 10


def test_a_live_preview_inside_the_denoising_loop_borrows_the_device() -> None:
    model = tiny()
    events = offloaded(model, OffloadMode.MEDVRAM)
    encoder = conditioning.PromptEncoder(model)
    cond, uncond = encoder.encode_pair(["a cat"], [""])
    events.clear()
    spec, sched = samplers.resolve("Euler", None)
    run = samplers.SamplerRun(spec, sched, model.scheduler_config, 2, seeds=[1], device=model.device)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * run.init_noise_sigma
    previews = []
    denoise.sample(model, run, latents, denoise.Guidance(cond=cond, uncond=uncond, cfg_scale=5.0),
                   on_step=lambda info: previews.append(vae.decode(model, info.denoised())))
    assert len(previews) == 2
    assert events == [("load", "unet"),
                      ("offload", "unet"), ("load", "vae"), ("offload", "vae"), ("load", "unet"),
                      ("offload", "unet"), ("load", "vae"), ("offload", "vae"), ("load", "unet"),
                      ("offload", "unet")]


def test_a_swapped_part_is_hooked_when_its_stage_opens() -> None:
    model = tiny()
    events = offloaded(model, OffloadMode.LOWVRAM)
    model.vae = copy.deepcopy(_components("sd1")["vae"])
    vae.decode(model, torch.zeros(1, 4, 8, 8))
    assert any(n.startswith("vae.") for _a, n in events)
