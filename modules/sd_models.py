"""A1111's `modules.sd_models` names, over the process's model manager (`shared.model_manager`).

Extensions and scripts written for A1111 list checkpoints through `checkpoints_list`, resolve names
with `get_closet_checkpoint_match` and switch with `reload_model_weights`; these work here on the
same CheckpointInfo records the rest of Easel uses. `checkpoints_list` and `checkpoint_aliases` are
live read-only views: they always show the manager's current list.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from modules import hashes
from modules.engine.model import DiffusionModel
from modules.model_manager.manager import CheckpointNotFoundError, ModelManager
from modules.model_manager.registry import CheckpointInfo, read_metadata
from modules.model_manager.safe_load import read_state_dict as _read_state_dict

__all__ = [
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "checkpoint_aliases",
    "checkpoint_tiles",
    "checkpoints_list",
    "get_closet_checkpoint_match",
    "list_models",
    "load_model",
    "model_data",
    "model_hash",
    "read_metadata_from_safetensors",
    "read_state_dict",
    "reload_model_weights",
    "select_checkpoint",
    "unload_model_weights",
]


def _manager() -> ModelManager:
    from modules import shared

    return shared.require_model_manager()


def _manager_or_none() -> ModelManager | None:
    from modules import shared

    return shared.model_manager


class _CheckpointsView(Mapping[str, CheckpointInfo]):
    """title -> CheckpointInfo, in list order, read live from the manager."""

    def _data(self) -> dict[str, CheckpointInfo]:
        manager = _manager_or_none()
        return {} if manager is None else {i.title: i for i in manager.checkpoints()}

    def __getitem__(self, key: str) -> CheckpointInfo:
        return self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __repr__(self) -> str:
        return f"checkpoints_list({list(self._data())!r})"


class _AliasesView(Mapping[str, CheckpointInfo]):
    """Every alias (title, name, stem, hashes...) -> CheckpointInfo, read live from the manager."""

    def _data(self) -> dict[str, CheckpointInfo]:
        manager = _manager_or_none()
        if manager is None:
            return {}
        manager.checkpoints()  # scans on first use
        return manager.registry.aliases()

    def __getitem__(self, key: str) -> CheckpointInfo:
        return self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())


checkpoints_list: Mapping[str, CheckpointInfo] = _CheckpointsView()
checkpoint_aliases: Mapping[str, CheckpointInfo] = _AliasesView()


class _ModelData:
    """A1111's `model_data`: `sd_model` (the model in service, loaded on first use) and
    `loaded_sd_models`."""

    @property
    def sd_model(self) -> DiffusionModel | None:
        manager = _manager_or_none()
        return None if manager is None else manager.current_model(load=True)

    @property
    def loaded_sd_models(self) -> list[DiffusionModel]:
        manager = _manager_or_none()
        return [] if manager is None else manager.loaded_models()

    def get_sd_model(self) -> DiffusionModel | None:
        return self.sd_model


model_data = _ModelData()


def list_models() -> None:
    """Rescan the checkpoint (and VAE, LoRA, embedding) folders."""
    _manager().refresh()


def checkpoint_tiles(use_short: bool = False) -> list[str]:
    """The titles shown in the checkpoint dropdown."""
    return [i.short_title if use_short else i.title for i in _manager().checkpoints()]


def get_closet_checkpoint_match(search_string: str) -> CheckpointInfo | None:
    """Resolve a title, name, hash or partial name to a checkpoint (A1111's spelling of the name)."""
    return _manager().get_checkpoint(search_string)


def model_hash(filename: str | os.PathLike) -> str:
    """The old 8-hex model hash (64 KiB at offset 1 MiB); "NOFILE" for a missing file."""
    return hashes.old_model_hash(filename)


def select_checkpoint() -> CheckpointInfo:
    """The checkpoint to use when none is named: --ckpt, the setting, else the first one."""
    manager = _manager()
    info = manager.default_checkpoint()
    if info is None:
        raise CheckpointNotFoundError(f"no checkpoint found: put a .safetensors (or .ckpt) Stable Diffusion model "
                                      f"in {manager.paths.sd_models_dir}")
    return info


def load_model(checkpoint_info: CheckpointInfo | str | None = None, already_loaded_state_dict: Any = None) -> DiffusionModel:
    """Load a checkpoint (the selected one by default) and put it in service."""
    manager = _manager()
    return manager.load(checkpoint_info if checkpoint_info is not None else select_checkpoint())


def reload_model_weights(sd_model: Any = None, info: CheckpointInfo | str | None = None,
                         forced_reload: bool = False) -> DiffusionModel:
    """Switch to `info`, or to the checkpoint the settings select (A1111 calls this when the
    `sd_model_checkpoint` setting changes); a model already loaded is reused unless `forced_reload`."""
    manager = _manager()
    return manager.load(info if info is not None else select_checkpoint(), force=forced_reload)


def unload_model_weights(sd_model: Any = None, info: Any = None) -> None:
    """Take the model out of service and free its memory (A1111's unload-checkpoint)."""
    _manager().unload()


def read_state_dict(checkpoint_file: str | os.PathLike, print_global_state: bool = False,
                    map_location: str | torch.device | None = None) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors, read safely unless --disable-safe-unpickle (merge tools use this)."""
    from modules import shared

    sd = _read_state_dict(checkpoint_file, allow_unsafe=bool(getattr(shared.cmd_opts, "disable_safe_unpickle", False)))
    if map_location is not None and str(map_location) != "cpu":
        sd = {k: v.to(map_location) for k, v in sd.items()}
    return sd


def read_metadata_from_safetensors(filename: str | os.PathLike) -> dict[str, Any]:
    """The `__metadata__` of a safetensors file (JSON-looking values decoded), from its header."""
    return read_metadata(filename)
