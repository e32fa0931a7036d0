"""Importing Python files that live outside the package: extension scripts and preload.py files.

A1111 imports every `scripts/*.py` as a module of its own (named after the file, not placed in any
package), and calls each enabled extension's `preload(parser)` before the command line is parsed so
extensions can add flags. Both happen here.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

from modules import errors

log = logging.getLogger(__name__)


def load_module(path: str | os.PathLike) -> ModuleType:
    """Execute the file at `path` as a fresh module named after it and return the module."""
    path = os.fspath(path)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs: dataclasses and pickling look the defining module up by name.
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        if previous is not None:
            sys.modules[name] = previous
        else:
            sys.modules.pop(name, None)
    return module


def preload_extensions(extension_paths: Iterable[Path], parser: argparse.ArgumentParser) -> list[str]:
    """Call `preload(parser)` of each extension folder that has a preload.py; returns the names of
    the extensions whose preload failed (each is reported with its traceback, the others go on)."""
    failed: list[str] = []
    for ext in extension_paths:
        preload = Path(ext) / "preload.py"
        if not preload.is_file():
            continue
        try:
            module = load_module(preload)
            if hasattr(module, "preload"):
                module.preload(parser)
        except Exception:
            errors.report(f"Error running preload() for extension {Path(ext).name}", exc_info=True)
            failed.append(Path(ext).name)
    return failed


def _enabled_extension_folders(args: argparse.Namespace) -> list[Path]:
    from modules import launch_utils
    from modules.paths import Paths

    paths = Paths.from_args(args)
    settings = launch_utils.read_settings(paths.config_file)
    found = launch_utils.list_extensions(paths.extensions_dir, paths.extensions_builtin_dir, settings, args)
    return [e.path for e in found]


def parser_with_extensions(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The flag parser with the flags of every enabled extension's preload.py added.

    Which extensions are enabled depends on flags (--data-dir, --disable-all-extensions) and on
    config.json, so the command line is first read leniently with Easel's own flags only.
    """
    from modules import cmd_args

    parser = cmd_args.build_parser()
    try:
        early, _unknown = parser.parse_known_args(list(argv))
    except SystemExit:
        return parser  # let the full parse report the problem
    preload_extensions(_enabled_extension_folders(early), parser)
    parser.easel_preloaded = True  # type: ignore[attr-defined]
    return parser


def parse_args_with_extensions(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    """argv (plus COMMANDLINE_ARGS) parsed by the parser extended by extensions' preload.py."""
    from modules import cmd_args, shared

    full = cmd_args.split_env_args(argv)
    parser = parser_with_extensions(full)
    shared.parser = parser
    return parser.parse_args(full), parser


def fill_missing_defaults(parser: argparse.ArgumentParser, namespace: argparse.Namespace) -> list[str]:
    """Give `namespace` the default of every flag of `parser` it lacks (flags an extension's
    preload added after the namespace was parsed); returns the names filled in."""
    added = []
    for action in parser._actions:
        dest = action.dest
        if dest in ("help",) or dest is argparse.SUPPRESS or hasattr(namespace, dest):
            continue
        setattr(namespace, dest, action.default)
        added.append(dest)
    return added


def load_extensions() -> None:
    """At start-up, before the UI and the API are built: find the extensions, give flags that their
    preload.py adds (when the command line was parsed without them) their defaults in
    `shared.cmd_opts`, and import every enabled extension's scripts (`scripts.load_scripts`)."""
    from modules import cmd_args, extensions, scripts, shared

    extensions.list_extensions()
    parser = shared.parser
    if not getattr(parser, "easel_preloaded", False):
        parser = cmd_args.build_parser()
        preload_extensions([Path(e.path) for e in extensions.active()], parser)
        parser.easel_preloaded = True  # type: ignore[attr-defined]
        shared.parser = parser
    fill_missing_defaults(parser, shared.cmd_opts)
    scripts.load_scripts()
