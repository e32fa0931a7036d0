"""The objects A1111 extensions reach through `modules.shared`: cmd_opts, opts, state, sd_model.

Easel's own code receives what it needs explicitly where it can; this module is the one place the
process-wide instances live, set up by `initialize()` (the server and the tests call it; importing
this module has no effect beyond building default objects).
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

from modules import cmd_args
from modules.options import OptionHTML, OptionInfo, Options, options_section  # noqa: F401  (A1111 names)
from modules.paths import Paths
from modules.shared_options import options_templates
from modules.shared_state import State

if TYPE_CHECKING:
    from modules.model_manager.manager import ModelManager

log = logging.getLogger(__name__)

cmd_opts: argparse.Namespace = cmd_args.defaults()
paths: Paths = Paths.from_args(cmd_opts)
opts: Options = Options(options_templates)
state: State = State()
model_manager: ModelManager | None = None
"""Set by `initialize()`; owns the checkpoint list and the loaded models."""

# A1111 names that some extensions read directly.
parser = cmd_args.build_parser()
"""the flag parser; with extensions' preload.py flags once the server parsed its command line"""
demo: Any = None
device: Any = None
hide_dirs = {"visible": True}
total_tqdm: Any = None
xformers_available = False
batch_cond_uncond = True
parallel_processing_allowed = True
restricted_opts: set[str] = set()
tab_names: list[str] = []
"""the titles of the page's top-level tabs, once the page is built"""


def _list_checkpoint_tiles(use_short: bool = False) -> list[str]:
    """Checkpoint titles for dropdowns (A1111's shared.list_checkpoint_tiles)."""
    if model_manager is None:
        return []
    return [c.title for c in model_manager.checkpoints()]


def _refresh_checkpoints() -> None:
    if model_manager is not None:
        model_manager.refresh()


def natural_sort_key(s: str) -> list[Any]:
    """Sort key that orders "img2" before "img10" (A1111's shared.natural_sort_key)."""
    import re

    return [int(text) if text.isdigit() else text.lower() for text in re.split(r"(\d+)", s)]


def listfiles(dirname: str) -> list[str]:
    """Files of a folder (not dot-files), in natural order, as full paths."""
    import os

    names = [f for f in sorted(os.listdir(dirname), key=natural_sort_key) if not f.startswith(".")]
    return [os.path.join(dirname, f) for f in names if os.path.isfile(os.path.join(dirname, f))]


def initialize(args: argparse.Namespace | None = None, *, load_settings: bool = True) -> None:
    """Point the process at a data tree: flags, folders, settings, device policy, model manager."""
    global cmd_opts, paths, opts, state, model_manager, device
    from modules import devices
    from modules.engine import offload
    from modules.model_manager.manager import ModelManager

    cmd_opts = args if args is not None else cmd_args.defaults()
    paths = Paths.from_args(cmd_opts)
    opts = Options(options_templates)
    if load_settings:
        opts.load(paths.config_file)
    else:
        opts.filename = paths.config_file
    state = State()
    policy = devices.select_policy(cmd_opts)
    devices.apply_policy(policy)
    device = policy.device
    model_manager = ModelManager(paths=paths, opts=opts, cmd_opts=cmd_opts, policy=policy)
    log.info("device policy: %s", policy.describe())
    offload_note = offload.startup_note(cmd_opts, policy)
    if offload_note is not None:
        log.info(offload_note)


def require_model_manager() -> ModelManager:
    """The model manager, or a clear error when `initialize()` has not run."""
    if model_manager is None:
        raise RuntimeError("the model manager is not initialised (modules.shared.initialize() was not called)")
    return model_manager


def __getattr__(name: str) -> Any:
    # `shared.sd_model` is the model in service, loaded on first use as in A1111.
    if name == "sd_model":
        if model_manager is None:
            return None
        return model_manager.current_model(load=True)
    if name == "prompt_styles":
        from modules import styles

        return styles.default_database()
    if name == "sd_upscalers":
        from modules import upscaler

        return upscaler.sd_upscalers()
    if name == "config_filename":
        return str(paths.config_file)
    if name == "models_path":
        return str(paths.models_dir)
    if name in ("list_checkpoint_tiles", "refresh_checkpoints"):
        return _list_checkpoint_tiles if name == "list_checkpoint_tiles" else _refresh_checkpoints
    raise AttributeError(f"module 'modules.shared' has no attribute {name!r}")
