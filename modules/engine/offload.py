"""Model offloading for small GPUs: A1111's --medvram, --medvram-sdxl and --lowvram.

An offloaded model has two devices: the storage device, where its weights live between uses (CPU
RAM), and the execution device, where it computes (the GPU). Noise, latents and text embeddings are
made on the execution device (`DiffusionModel.device`); weights come over only while they are needed.

- medvram: a whole part (a text encoder, the UNet, the VAE) is placed on the execution device for its
  stage. The engine asks for it with `with offload.stage(model, "unet"):` around the denoising loop,
  and likewise around text encoding and VAE decode/encode. One part is there at a time, so peak VRAM
  is about the largest part instead of the sum. A stage opened inside another (a full live preview
  decoded between steps) puts the outer part back in storage for its duration.
- lowvram: every part is split into units of at most 1/`LOWVRAM_SPLIT` of its size (UNet blocks,
  encoder layers, ...). A unit is placed just before its forward and put back right after it, so only
  one unit's weights are on the execution device at a time, at the cost of moving every weight at
  every step. Stages do nothing then.
- medvram-sdxl: medvram for SDXL models, nothing for the others.

Placing keeps the storage tensors, and putting back re-points the parameters at them: no copy back,
and the very same bits as before. A weight changed while placed (the VAE upcast to fp32, an in-place
edit by an extension) is copied back instead; in-place edits are seen through the tensor's version
counter (edits through `.data` bypass it, so weights should be edited outside stages, as the network
merging does). The moved parameters stay the same `Parameter` objects, so whatever holds on to
layers (network merging, extensions) keeps working.

Under medvram a part called outside a stage (an extension calling `model.unet` itself) still works:
each of its top-level blocks is placed around its own forward, as in lowvram but coarser, with its
inputs moved to the execution device. A model computes in one thread at a time (the job queue runs
one job at a time); the lock here keeps the bookkeeping consistent, it does not make concurrent
forwards of one model safe.

Where the execution device is the CPU there is nothing to offload: the flags change nothing, which is
said once at start (`startup_note`).
"""

from __future__ import annotations

import argparse
import logging
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from modules.devices import DevicePolicy
    from modules.engine.model import DiffusionModel

log = logging.getLogger(__name__)

CPU = torch.device("cpu")
PARTS = ("text_encoder", "text_encoder_2", "unet", "vae")
"""the model parts an offloader manages, by their attribute name on DiffusionModel"""
LOWVRAM_SPLIT = 24
"""lowvram units hold at most 1/LOWVRAM_SPLIT of their part's bytes (unless a single layer is bigger)"""

Listener = Callable[[str, str], None]
"""called with ("load" | "offload", name) for every placement: a part name or "<part>.<unit path>" """


class OffloadMode(str, Enum):
    NONE = "none"
    MEDVRAM = "medvram"
    LOWVRAM = "lowvram"


@dataclass(frozen=True)
class OffloadPolicy:
    """What the flags ask for, and between which devices. Both devices are given, not looked up, so
    the logic runs (and is tested) with the CPU as execution device."""

    medvram: bool = False
    medvram_sdxl: bool = False
    lowvram: bool = False
    execution_device: torch.device = CPU
    storage_device: torch.device = CPU

    @property
    def active(self) -> bool:
        return self.lowvram or self.medvram or self.medvram_sdxl

    def mode_for(self, family: str | None) -> OffloadMode:
        """The mode for a model of `family` ('sd1', 'sd2', 'sdxl'; None: not known yet)."""
        if self.lowvram:
            return OffloadMode.LOWVRAM
        if self.medvram or (self.medvram_sdxl and family == "sdxl"):
            return OffloadMode.MEDVRAM
        return OffloadMode.NONE

    def builds_in_storage(self, family: str | None) -> bool:
        """Whether a model should be built on the storage device. A model whose family is not known
        before it is built goes there under --medvram-sdxl too: moving a non-SDXL model to the GPU
        afterwards is cheap, building an SDXL one on a small GPU might not fit."""
        return self.mode_for(family) is not OffloadMode.NONE or (family is None and self.medvram_sdxl)

    def offloader_for(self, family: str) -> Offloader | None:
        mode = self.mode_for(family)
        if mode is OffloadMode.NONE:
            return None
        return Offloader(mode, self.execution_device, self.storage_device)


def _flags(args: argparse.Namespace) -> list[str]:
    return [flag for flag in ("--medvram", "--medvram-sdxl", "--lowvram")
            if getattr(args, flag[2:].replace("-", "_"), False)]


def policy_from_args(args: argparse.Namespace, device_policy: DevicePolicy) -> OffloadPolicy:
    """The offload policy of the flags on this machine: inactive when the model runs on the CPU."""
    if device_policy.device.type == "cpu":
        return OffloadPolicy()
    return OffloadPolicy(
        medvram=bool(getattr(args, "medvram", False)),
        medvram_sdxl=bool(getattr(args, "medvram_sdxl", False)),
        lowvram=bool(getattr(args, "lowvram", False)),
        execution_device=device_policy.device,
        storage_device=CPU,
    )


def startup_note(args: argparse.Namespace, device_policy: DevicePolicy) -> str | None:
    """One line for the start-up log about the offload flags given, or None without any."""
    flags = _flags(args)
    if not flags:
        return None
    given = ", ".join(flags)
    if device_policy.device.type == "cpu":
        return f"{given}: no effect here: the model runs on the CPU, so its weights already live in RAM"
    policy = policy_from_args(args, device_policy)
    if policy.lowvram:
        how = "model layers move to the device one at a time as they run"
    elif policy.medvram:
        how = "text encoders, UNet and VAE stay in RAM and move to the device only while they run"
    else:
        how = "SDXL models' text encoders, UNet and VAE stay in RAM and move to the device only while they run"
    return f"{given}: {how} ({policy.execution_device})"


# --- moving a module's tensors and back ----------------------------------------------------------------
@dataclass
class _Moved:
    """One parameter or buffer placed on the execution device, and what to put back."""

    owner: torch.nn.Module
    name: str
    original: torch.Tensor
    """the parameter or buffer registered before placing (parameters keep their identity)"""
    stored: torch.Tensor
    """its data in storage"""
    placed: torch.Tensor
    """what the owner holds while placed: the same parameter re-pointed, or a new parameter or buffer
    where the devices cannot share a parameter object (e.g. "meta")"""
    placed_data: torch.Tensor
    version: int
    """the holder's version counter right after placing: an in-place edit changes it"""

    @property
    def is_param(self) -> bool:
        return isinstance(self.original, torch.nn.Parameter)


def _place(root: torch.nn.Module, device: torch.device) -> list[_Moved]:
    """Point every parameter and buffer of `root` at a copy on `device`, keeping the originals.
    Tensors already on `device` are left alone (and not recorded)."""
    moved: list[_Moved] = []
    done: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    """id of a tensor already placed (tied weights) -> (what its owners hold now, its placed data)"""
    # Outside inference mode: tensors made inside it could not be edited in place later (networks).
    with torch.inference_mode(False), torch.no_grad():
        for module in root.modules():
            for registry in (module._parameters, module._buffers):
                for name, tensor in list(registry.items()):
                    if tensor is None:
                        continue
                    previous = done.get(id(tensor))
                    if previous is not None:
                        holder, data = previous
                        if holder is not tensor:
                            registry[name] = holder  # type: ignore[assignment]
                            moved.append(_Moved(module, name, tensor, tensor.data, holder, data, holder._version))
                        continue
                    stored = tensor.data
                    data = stored.to(device)
                    if data is stored:
                        continue
                    if isinstance(tensor, torch.nn.Parameter) and torch._has_compatible_shallow_copy_type(tensor, data):
                        tensor.data = data  # the same Parameter object, now on the device
                        holder = tensor
                    elif isinstance(tensor, torch.nn.Parameter):
                        holder = torch.nn.Parameter(data, requires_grad=tensor.requires_grad)
                    else:
                        holder = data
                    registry[name] = holder  # type: ignore[assignment]
                    done[id(tensor)] = (holder, data)
                    moved.append(_Moved(module, name, tensor, stored, holder, data, holder._version))
    return moved


def _put_back(moved: list[_Moved]) -> None:
    """Undo `_place`: unchanged tensors go back to their originals, changed ones are copied back."""
    with torch.inference_mode(False), torch.no_grad():
        for m in moved:
            registry = m.owner._parameters if m.is_param else m.owner._buffers
            current = registry.get(m.name)
            target = m.stored.device
            unchanged = (current is m.placed and current.data_ptr() == m.placed_data.data_ptr()
                         and current.dtype == m.placed_data.dtype and current._version == m.version)
            if unchanged:
                if m.placed is m.original:
                    m.original.data = m.stored
                else:
                    registry[m.name] = m.original  # type: ignore[assignment]
            elif current is None:
                continue
            elif m.is_param and (current is m.original or current is m.placed):
                # edited while placed (the VAE upcast, an in-place change): keep the edit
                m.original.data = current.data.to(target)
                registry[m.name] = m.original  # type: ignore[assignment]
            elif isinstance(current, torch.nn.Parameter):  # replaced by another parameter: move that one
                if current.device != target:
                    current.data = current.data.to(target)
            else:
                registry[m.name] = current.to(target)


def _to_device(value: Any, device: torch.device) -> Any:
    """Tensors in (nested tuples, lists and dicts of) forward arguments, moved to `device`."""
    if isinstance(value, torch.Tensor):
        return value if value.device == device else value.to(device)
    kind = type(value)  # plain containers only: subclasses (named tuples, model outputs) pass as they are
    if kind is tuple:
        return tuple(_to_device(v, device) for v in value)
    if kind is list:
        return [_to_device(v, device) for v in value]
    if kind is dict:
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


# --- splitting a part into units -----------------------------------------------------------------------
def _nbytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def _has_tensors(module: torch.nn.Module) -> bool:
    return next(iter(module.parameters()), None) is not None or next(iter(module.buffers()), None) is not None


def _has_direct_tensors(module: torch.nn.Module) -> bool:
    return (any(p is not None for p in module._parameters.values())
            or any(b is not None for b in module._buffers.values()))


def split_units(part: torch.nn.Module, budget: int | None) -> list[tuple[str, torch.nn.Module]]:
    """Modules of `part` that together hold all its tensors, each placed as a whole around its forward.

    A module is a unit when it has tensors of its own (its forward may use them directly), has no
    children, or, below the part itself, is called as a whole (not a ModuleList/ModuleDict) and holds
    at most `budget` bytes. `budget` None: the part's top-level blocks.
    """
    units: list[tuple[str, torch.nn.Module]] = []

    def visit(module: torch.nn.Module, name: str, top: bool) -> None:
        children = list(module.named_children())
        container = isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict))
        small = budget is None or _nbytes(module) <= budget
        if _has_direct_tensors(module) or not children or (not top and not container and small):
            units.append((name, module))
            return
        for child_name, child in children:
            visit(child, f"{name}.{child_name}" if name else child_name, False)

    visit(part, "", True)
    return units


# --- the per-model offloader ---------------------------------------------------------------------------
@dataclass
class _UnitState:
    placements: int = 0
    moved: list[_Moved] = field(default_factory=list)
    stack: list[bool] = field(default_factory=list)
    """per forward call in progress: whether it placed the unit"""


@dataclass
class _Resident:
    name: str
    module: torch.nn.Module
    moved: list[_Moved]


class Offloader:
    """Places one model's parts on the execution device when they run. Attached to the model as
    `model.offload` (see `attach`); the engine reaches it through `stage()`."""

    def __init__(self, mode: OffloadMode, execution_device: torch.device | str,
                 storage_device: torch.device | str = CPU, *, split: int = LOWVRAM_SPLIT) -> None:
        if mode is OffloadMode.NONE:
            raise ValueError("an Offloader needs mode medvram or lowvram")
        if split < 1:
            raise ValueError(f"split must be at least 1, got {split}")
        self.mode = mode
        self.execution_device = torch.device(execution_device)
        self.storage_device = torch.device(storage_device)
        self.split = split
        self.listener: Listener | None = None
        """optional observer of every placement (tests, debugging)"""
        self._lock = threading.RLock()
        self._resident: dict[int, _Resident] = {}
        """medvram: parts placed by an open stage, by id of the part module"""
        self._hooked: weakref.WeakKeyDictionary[torch.nn.Module, list[Any]] = weakref.WeakKeyDictionary()

    def describe(self) -> str:
        return f"{self.mode.value}: {self.storage_device} -> {self.execution_device}"

    # --- hooks ---------------------------------------------------------------------------------------
    def prepare(self, model: DiffusionModel) -> None:
        """Hook the model's current parts (again after a part was swapped, e.g. another VAE)."""
        for name in PARTS:
            part = getattr(model, name, None)
            if part is not None:
                self._hook_part(name, part)

    def units(self, part: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        """The units of a part that are placed around their own forward."""
        budget = None if self.mode is OffloadMode.MEDVRAM else max(1, _nbytes(part) // self.split)
        return [(n, u) for n, u in split_units(part, budget) if _has_tensors(u)]

    def _hook_part(self, name: str, part: torch.nn.Module) -> None:
        with self._lock:
            if part in self._hooked:
                return
            handles: list[Any] = []
            for unit_name, unit in self.units(part):
                label = f"{name}.{unit_name}" if unit_name else name
                handles.extend(self._hook_unit(label, part, unit))
            self._hooked[part] = handles

    def _hook_unit(self, label: str, part: torch.nn.Module, unit: torch.nn.Module) -> list[Any]:
        state = _UnitState()
        part_id = id(part)
        device = self.execution_device

        def before(_module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            with self._lock:
                placing = part_id not in self._resident
                state.stack.append(placing)
                if placing:
                    state.placements += 1
                    if state.placements == 1:
                        state.moved = _place(unit, device)
                        self._emit("load", label)
            return _to_device(args, device), _to_device(kwargs, device)

        def after(_module: torch.nn.Module, _args: tuple, _output: Any) -> None:
            with self._lock:
                if not state.stack or not state.stack.pop():
                    return
                state.placements -= 1
                if state.placements == 0:
                    moved, state.moved = state.moved, []
                    _put_back(moved)
                    self._emit("offload", label)

        return [unit.register_forward_pre_hook(before, with_kwargs=True),
                unit.register_forward_hook(after, always_call=True)]

    # --- stages --------------------------------------------------------------------------------------
    @contextmanager
    def use(self, model: DiffusionModel, names: Sequence[str]) -> Iterator[None]:
        """The named parts on the execution device for the block (medvram); other placed parts go
        back to storage meanwhile and return after it."""
        parts = [(n, getattr(model, n)) for n in names if getattr(model, n, None) is not None]
        for name, part in parts:
            self._hook_part(name, part)
        if self.mode is not OffloadMode.MEDVRAM:
            yield
            return
        with self._lock:
            wanted = {id(part) for _n, part in parts}
            evicted = [(r.name, r.module) for key, r in list(self._resident.items()) if key not in wanted]
            for _name, module in evicted:
                self._put_back_part(module)
            loaded = [(name, part) for name, part in parts if id(part) not in self._resident]
            try:
                for name, part in loaded:
                    self._place_part(name, part)
                yield
            finally:
                for _name, part in loaded:
                    self._put_back_part(part)
                for name, module in evicted:
                    self._place_part(name, module)

    def _place_part(self, name: str, part: torch.nn.Module) -> None:
        self._resident[id(part)] = _Resident(name, part, _place(part, self.execution_device))
        self._emit("load", name)

    def _put_back_part(self, part: torch.nn.Module) -> None:
        resident = self._resident.pop(id(part), None)
        if resident is not None:
            _put_back(resident.moved)
            self._emit("offload", resident.name)

    def _emit(self, action: str, name: str) -> None:
        if self.listener is not None:
            self.listener(action, name)


def attach(model: DiffusionModel, offloader: Offloader) -> None:
    """Make `offloader` manage `model`, whose weights are on the offloader's storage device."""
    model.offload = offloader
    offloader.prepare(model)


@contextmanager
def stage(model: DiffusionModel, *names: str) -> Iterator[None]:
    """The named parts of `model` ready to run on `model.device` for the block; a no-op for a model
    that is not offloaded."""
    offloader = getattr(model, "offload", None)
    if offloader is None:
        yield
        return
    with offloader.use(model, names):
        yield
