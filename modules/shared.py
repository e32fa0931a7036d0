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
demo: Any = None
device: Any = None
hide_dirs = {"visible": True}
total_tqdm: Any = None


def initialize(args: argparse.Namespace | None = None, *, load_settings: bool = True) -> None:
    """Point the process at a data tree: flags, folders, settings, device policy, model manager."""
    global cmd_opts, paths, opts, state, model_manager, device
    from modules import devices
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
    raise AttributeError(f"module 'modules.shared' has no attribute {name!r}")
