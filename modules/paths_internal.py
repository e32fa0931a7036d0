"""A1111's `modules.paths_internal` names, computed from the running instance's folders.

Extensions read `data_path`, `models_path`, `extensions_dir`, ... as module attributes. The values
follow `modules.shared.paths` (set from --data-dir / --models-dir by `shared.initialize`), so they
are looked up on access rather than fixed when this module is first imported.
"""

from __future__ import annotations

import os
from typing import Any

from modules.paths import script_path as _script_path

script_path: str = str(_script_path)
"""The repository root."""
modules_path: str = os.path.join(script_path, "modules")
sd_configs_path: str = os.path.join(script_path, "configs")
cwd: str = os.getcwd()

_DYNAMIC = {
    "data_path": lambda p: p.data_dir,
    "models_path": lambda p: p.models_dir,
    "extensions_dir": lambda p: p.extensions_dir,
    "extensions_builtin_dir": lambda p: p.extensions_builtin_dir,
    "config_states_dir": lambda p: p.data_dir / "config_states",
    "default_output_dir": lambda p: p.outputs_dir,
    "sd_model_file": lambda p: p.data_dir / "model.ckpt",
    "default_sd_model_file": lambda p: p.data_dir / "model.ckpt",
}


def __getattr__(name: str) -> Any:
    getter = _DYNAMIC.get(name)
    if getter is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from modules import shared

    return str(getter(shared.paths))


def __dir__() -> list[str]:
    return sorted([*globals(), *_DYNAMIC])
