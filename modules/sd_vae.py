"""A1111's `modules.sd_vae` names, over the process's model manager.

The VAE setting (`sd_vae`) holds "Automatic", "None" or a VAE file name. "Automatic" takes a VAE
named like the checkpoint (`foo.vae.safetensors` beside `foo.safetensors`, or `models/VAE/foo.pt`)
and otherwise the checkpoint's own; "None" always the checkpoint's own. `--vae-path` overrides all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modules.engine.model import DiffusionModel
from modules.model_manager.manager import VAE_AUTOMATIC, VAE_NONE, VaeNotFoundError
from modules.model_manager.registry import CheckpointInfo
from modules.sd_models import _manager, _manager_or_none

__all__ = [
    "VaeNotFoundError",
    "VaeResolution",
    "find_vae_near_checkpoint",
    "get_loaded_vae_hash",
    "get_loaded_vae_name",
    "refresh_vae_list",
    "reload_vae_weights",
    "resolve_vae",
    "unspecified",
    "vae_dict",
]

automatic = VAE_AUTOMATIC
"""the setting value that picks a VAE named like the checkpoint, else the checkpoint's own"""
none = VAE_NONE
"""the setting value for the checkpoint's own VAE"""

unspecified: Any = object()
"""default of `reload_vae_weights(vae_file=...)`: resolve from the settings"""


class _VaeDictView(Mapping[str, str]):
    """VAE file name -> absolute path, read live from the manager (A1111's `vae_dict`)."""

    def _data(self) -> dict[str, str]:
        manager = _manager_or_none()
        return {} if manager is None else {v.name: v.filename for v in manager.vaes()}

    def __getitem__(self, key: str) -> str:
        return self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __repr__(self) -> str:
        return f"vae_dict({self._data()!r})"


vae_dict: Mapping[str, str] = _VaeDictView()


@dataclass(frozen=True)
class VaeResolution:
    """A1111's record: `vae` is a file path or None (the checkpoint's own), `source` says why."""

    vae: str | None = None
    source: str | None = None
    resolved: bool = True

    def tuple(self) -> tuple[str | None, str | None]:
        return self.vae, self.source


def refresh_vae_list() -> None:
    """Rescan the VAE (and other model) folders."""
    _manager().refresh()


def _checkpoint_info(checkpoint_file: str | os.PathLike | CheckpointInfo) -> CheckpointInfo:
    if isinstance(checkpoint_file, CheckpointInfo):
        return checkpoint_file
    manager = _manager()
    info = manager.get_checkpoint(str(Path(checkpoint_file).absolute()))
    return info if info is not None else CheckpointInfo(checkpoint_file, hash_cache=manager.hash_cache)


def find_vae_near_checkpoint(checkpoint_file: str | os.PathLike) -> str | None:
    """The first VAE whose file name starts with the checkpoint's stem, or None."""
    near = _manager().registry.vaes_near_checkpoint(checkpoint_file)
    return near[0].filename if near else None


def resolve_vae(checkpoint_file: str | os.PathLike | CheckpointInfo) -> VaeResolution:
    """Which VAE the settings give this checkpoint (None: its own)."""
    resolution = _manager().resolve_vae(_checkpoint_info(checkpoint_file))
    return VaeResolution(resolution.vae.filename if resolution.vae else None, resolution.source)


def reload_vae_weights(sd_model: Any = None, vae_file: Any = unspecified) -> DiffusionModel | None:
    """Swap the VAE of the model in service: to what the settings resolve to by default, to the
    checkpoint's own with `vae_file=None`, or to the given file."""
    manager = _manager()
    if vae_file is unspecified:
        return manager.reload_vae()
    if vae_file is None:
        return manager.reload_vae(VAE_NONE)
    return manager.reload_vae(str(vae_file))


def _loaded_model() -> DiffusionModel | None:
    manager = _manager_or_none()
    return None if manager is None else manager.current_model(load=False)


def get_loaded_vae_name() -> str | None:
    """File name of the external VAE in use, None for the checkpoint's own (infotext "VAE")."""
    model = _loaded_model()
    return None if model is None else model.vae_name


def get_loaded_vae_hash() -> str | None:
    """10-hex sha256 of the external VAE in use (infotext "VAE hash")."""
    model = _loaded_model()
    return None if model is None else model.vae_hash


def __getattr__(name: str) -> Any:
    # A1111 module globals that describe the loaded model; computed when read.
    if name == "loaded_vae_file":
        model = _loaded_model()
        if model is None or model.vae_name is None:
            return None
        return model.extra.get("vae_file")
    if name == "base_vae":
        model = _loaded_model()
        return None if model is None else model.baked_vae
    raise AttributeError(f"module 'modules.sd_vae' has no attribute {name!r}")
