"""Merging networks into a loaded model's weights, and taking them out again exactly.

Why merge rather than wrap layers (PEFT adapters, forward hooks): a merged network costs nothing per
denoising step, works for every layer kind the file targets, and gives each network its own text
encoder and UNet multipliers (``<lora:name:te:unet>``). Exact removal comes from keeping a copy of
every original weight a network touches: restoring copies it back, so the base weights are
bit-identical after any sequence of network sets, whatever the dtype.

The applied set persists between generations (re-merging the same set each time would waste
seconds on a real model); `NetworkApplier.apply` with another set restores the touched weights and
merges the new set, and an empty set restores the model. The text encoder's state goes into
``model.extra["text_encoder_state"]``, which the conditioning cache keys on, so a prompt encoded
under one set of networks is never reused under another.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from modules.engine.model import DiffusionModel
from modules.networks import lora_keys
from modules.networks.lora_files import ParsedNetwork
from modules.networks.lora_weights import UnsupportedModuleError, module_delta

log = logging.getLogger(__name__)

__all__ = ["AppliedNetwork", "ApplyReport", "NetworkApplier", "applier_for"]

TEXT_ENCODER_STATE_KEY = "text_encoder_state"


@dataclass(frozen=True)
class AppliedNetwork:
    """A network with its multipliers, as one entry of the set to apply."""

    network: ParsedNetwork
    te_multiplier: float = 1.0
    unet_multiplier: float = 1.0

    @property
    def key(self) -> tuple:
        return (self.network.identity, float(self.te_multiplier), float(self.unet_multiplier))


@dataclass
class NetworkMatch:
    """The modules of one network that fit a model, and what did not fit."""

    targets: list[tuple[lora_keys.Target, dict[str, torch.Tensor]]]
    missing: list[str] = field(default_factory=list)
    """module names the model has no layer for"""
    unsupported: list[str] = field(default_factory=list)
    """modules whose tensors are of an unknown kind or do not fit the layer"""

    @property
    def touches_text_encoder(self) -> bool:
        return any(t.component == lora_keys.TEXT_ENCODER for t, _ in self.targets)


@dataclass
class ApplyReport:
    """What `NetworkApplier.apply` did, for the run's warnings."""

    changed: bool
    layers: int = 0
    incompatible: list[str] = field(default_factory=list)
    """names of networks none of whose modules fit the model"""
    partial: dict[str, int] = field(default_factory=dict)
    """network name -> number of its modules that did not fit"""
    seconds: float = 0.0


@dataclass
class _Backup:
    module: torch.nn.Module
    weight: torch.Tensor
    bias: torch.Tensor | None


class NetworkApplier:
    """Owns the network state of one model: the applied set and the original weights it replaced."""

    def __init__(self, model: DiffusionModel, *, backup_device: torch.device | str | None = None) -> None:
        self.model = model
        self.backup_device = torch.device(backup_device) if backup_device is not None else None
        self._backups: dict[str, _Backup] = {}
        self._applied: tuple = ()
        self._applied_names: list[str] = []
        self._matches: dict[tuple, NetworkMatch] = {}
        self._lock = threading.RLock()

    # --- queries -------------------------------------------------------------------------------------
    @property
    def applied(self) -> list[str]:
        """Names of the networks currently merged, in order."""
        return list(self._applied_names)

    @property
    def is_clean(self) -> bool:
        return not self._backups

    def match(self, network: ParsedNetwork) -> NetworkMatch:
        """The layers of this model a network changes (cached per network file version)."""
        key = network.identity
        hit = self._matches.get(key)
        if hit is not None:
            return hit
        index = lora_keys.module_index(self.model)
        result = NetworkMatch(targets=[])
        for name, params in network.modules.items():
            target = index.find(name)
            if target is None:
                result.missing.append(name)
                continue
            result.targets.append((target, params))
        self._matches[key] = result
        if len(self._matches) > 32:
            self._matches.pop(next(iter(self._matches)))
        return result

    # --- changing weights ----------------------------------------------------------------------------
    def apply(self, networks: Sequence[AppliedNetwork]) -> ApplyReport:
        """Make `networks` (and only them) the merged set. A no-op when that set is already merged."""
        import time

        with self._lock:
            wanted = tuple(n.key for n in networks)
            if wanted == self._applied:
                return ApplyReport(changed=False, layers=len(self._backups))
            start = time.perf_counter()
            report = ApplyReport(changed=True)
            deltas: dict[str, tuple[torch.nn.Module, torch.Tensor, torch.Tensor | None]] = {}
            te_state: list[tuple] = []
            with torch.no_grad():
                for entry in networks:
                    self._accumulate(entry, deltas, report, te_state)
                self._write(deltas)
            self._applied = wanted
            self._applied_names = [n.network.name for n in networks]
            self.model.extra[TEXT_ENCODER_STATE_KEY] = tuple(te_state) or None
            report.layers = len(deltas)
            report.seconds = time.perf_counter() - start
            return report

    def restore(self) -> None:
        """Put every original weight back and forget the applied set."""
        self.apply(())

    def _accumulate(self, entry: AppliedNetwork, deltas: dict, report: ApplyReport, te_state: list) -> None:
        net = entry.network
        match = self.match(net)
        bad = 0
        used_te = False
        for target, params in match.targets:
            multiplier = entry.te_multiplier if target.component == lora_keys.TEXT_ENCODER else entry.unet_multiplier
            if multiplier == 0:
                continue
            weight = target.module.weight
            bias = getattr(target.module, "bias", None)
            try:
                delta = module_delta(params, weight.shape, device=weight.device,
                                     bias_shape=None if bias is None else bias.shape)
            except (UnsupportedModuleError, RuntimeError, KeyError) as e:
                bad += 1
                log.debug("%s: %s not applied: %s", net.name, target.path, e)
                continue
            have = deltas.get(target.path)
            w = delta.weight * multiplier
            b = None if delta.bias is None else delta.bias * multiplier
            if have is None:
                deltas[target.path] = (target.module, w, b)
            else:
                hb = have[2]
                nb = b if hb is None else (hb if b is None else hb + b)
                deltas[target.path] = (target.module, have[1] + w, nb)
            used_te = used_te or target.component == lora_keys.TEXT_ENCODER
        fitting = len(match.targets) - bad
        if fitting == 0 and (match.targets or match.missing or net.unknown_keys or not net.modules):
            report.incompatible.append(net.name)
        elif bad + len(match.missing):
            report.partial[net.name] = bad + len(match.missing)
        if used_te:
            te_state.append((net.identity, float(entry.te_multiplier)))

    def _backup_of(self, path: str, module: torch.nn.Module) -> _Backup:
        b = self._backups.get(path)
        if b is None:
            device = self.backup_device or module.weight.device
            bias = getattr(module, "bias", None)
            b = _Backup(module, module.weight.detach().to(device, copy=True),
                        None if bias is None else bias.detach().to(device, copy=True))
            self._backups[path] = b
        return b

    def _write(self, deltas: dict[str, tuple[torch.nn.Module, torch.Tensor, torch.Tensor | None]]) -> None:
        # Layers changed before but not now go back to their originals; their copies are dropped.
        for path in [p for p in self._backups if p not in deltas]:
            b = self._backups.pop(path)
            b.module.weight.copy_(b.weight)
            if b.bias is not None:
                b.module.bias.copy_(b.bias)
        for path, (module, dw, db) in deltas.items():
            b = self._backup_of(path, module)
            weight = module.weight
            base = b.weight.to(weight.device, non_blocking=True)
            if dw.dtype == weight.dtype:
                torch.add(base, dw, out=weight)  # one pass, no temporary
            else:
                # half-precision weights: add in fp32 and round once
                weight.copy_((base.to(dw.dtype) + dw).to(weight.dtype))
            if b.bias is not None:
                bias = module.bias
                base_b = b.bias.to(bias.device)
                if db is not None:
                    bias.copy_((base_b.to(db.dtype) + db).to(bias.dtype))
                else:
                    bias.copy_(base_b)


def applier_for(model: DiffusionModel) -> NetworkApplier:
    """The model's applier, created on first use. Backups stay on the CPU for models on an
    accelerator (device memory is the scarce one there), on the model's device otherwise."""
    applier = model.extra.get("network_applier")
    if not isinstance(applier, NetworkApplier):
        device = model.device
        applier = NetworkApplier(model, backup_device="cpu" if device.type != "cpu" else None)
        model.extra["network_applier"] = applier
    return applier
