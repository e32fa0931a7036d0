"""Command-line flags, with AUTOMATIC1111's names and meanings.

Extensions may add flags through `preload(parser)` before parsing, so the parser is built by a
function and parsed late. Unknown flags are an error that names the closest known flags.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shlex
import sys
from collections.abc import Sequence


class EaselArgumentParser(argparse.ArgumentParser):
    """ArgumentParser whose unknown-flag error suggests the known flags closest to the typo."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("unrecognized arguments:"):
            known = [opt for action in self._actions for opt in action.option_strings if opt.startswith("--")]
            hints = []
            for arg in message.split(":", 1)[1].split():
                if not arg.startswith("-"):
                    continue
                flag = arg.split("=", 1)[0]
                close = difflib.get_close_matches(flag, known, n=3, cutoff=0.6)
                if close:
                    hints.append(f"{flag}: did you mean {' or '.join(close)}?")
                else:
                    hints.append(f"{flag}: no such flag")
            if hints:
                message = message + "\n  " + "\n  ".join(hints)
        super().error(message)


def build_parser() -> EaselArgumentParser:
    p = EaselArgumentParser(prog="webui", description="Easel: a Stable Diffusion web UI.")
    add = p.add_argument

    # Folders
    add("--data-dir", type=str, default=None, help="root for models/, embeddings/, outputs/, config.json (default: the repo)")
    add("--models-dir", type=str, default=None, help="folder holding the model kinds (default: <data-dir>/models)")
    add("--ckpt", type=str, default=None, help="checkpoint to load at start (path); it is added to the list")
    add("--ckpt-dir", type=str, default=None, help="extra folder with Stable Diffusion checkpoints")
    add("--vae-dir", type=str, default=None, help="extra folder with VAE files")
    add("--vae-path", type=str, default=None, help="VAE file to use for every checkpoint")
    add("--lora-dir", type=str, default=None, help="folder with LoRA networks")
    add("--embeddings-dir", type=str, default=None, help="folder with textual inversion embeddings")
    add("--ui-config-file", type=str, default=None, help="UI defaults file (default: <data-dir>/ui-config.json)")
    add("--ui-settings-file", type=str, default=None, help="settings file (default: <data-dir>/config.json)")
    add("--styles-file", type=str, action="append", default=None, help="styles CSV file(s)")
    add("--localizations-dir", type=str, default=None,
        help="folder with UI translations, <name>.json (default: <data-dir>/localizations)")

    # Server
    add("--listen", action="store_true", help="serve on 0.0.0.0 so other hosts on the network can reach it")
    add("--port", type=int, default=None, help="port (default 7860, or 7861 with --nowebui)")
    add("--server-name", type=str, default=None, help="host name or address to bind")
    add("--share", action="store_true", help="public tunnel link (needs internet access)")
    add("--api", action="store_true", help="serve the /sdapi/v1 REST API beside the UI")
    add("--nowebui", action="store_true", help="serve only the API (default port 7861)")
    add("--api-auth", type=str, default=None, help='HTTP Basic credentials for the API, "user:pass[,user2:pass2]"')
    add("--api-log", nargs="?", const="info", default=None, help="log every API request (debug: include tracebacks)")
    add("--api-server-stop", action="store_true", help="enable server-stop/restart API routes")
    add("--gradio-auth", type=str, default=None, help='credentials for the UI, "user:pass[,user2:pass2]"')
    add("--gradio-auth-path", type=str, default=None, help="file with UI credentials, one user:pass per line")
    add("--cors-allow-origins", type=str, default=None, help="comma-separated origins allowed by CORS")
    add("--cors-allow-origins-regex", type=str, default=None, help="regex of origins allowed by CORS")
    add("--autolaunch", action="store_true", help="open the UI in the system browser at start")
    add("--theme", type=str, default=None, choices=["light", "dark"], help="UI theme")
    add("--enable-insecure-extension-access", action="store_true",
        help="allow extension management even when the server is reachable from other hosts")
    add("--timeout-keep-alive", type=int, default=30, help="uvicorn keep-alive timeout")

    # Devices and precision
    add("--precision", type=str, default="autocast", choices=["full", "half", "autocast"],
        help="full: fp32 everywhere; autocast: the device's best half type where it is safe")
    add("--no-half", action="store_true", help="keep the UNet and text encoder in fp32")
    add("--no-half-vae", action="store_true", help="keep the VAE in fp32")
    add("--upcast-sampling", action="store_true", help="accepted for compatibility; sampling math is fp32 already")
    add("--use-cpu", nargs="+", default=[], help="run these parts on the CPU: all, SD, VAE, ...")
    add("--device-id", type=str, default=None, help="CUDA device index to use")
    add("--medvram", action="store_true",
        help="keep the model in RAM and move each part (text encoders, UNet, VAE) to the GPU only while it runs")
    add("--medvram-sdxl", action="store_true", help="--medvram for SDXL models only")
    add("--lowvram", action="store_true",
        help="keep the model in RAM and move its layers to the GPU one at a time as they run (slow, least VRAM)")
    add("--disable-nan-check", action="store_true", help="skip the NaN check on decoded images")

    # Models
    add("--disable-safe-unpickle", action="store_true", help="load .ckpt/.pt files with the full (unsafe) unpickler")
    add("--no-hashing", action="store_true", help="do not compute checkpoint sha256 hashes")
    add("--no-download-sd-model", action="store_true", help="accepted for compatibility; Easel never downloads models")

    # Launch
    add("--skip-install", action="store_true", help="do not install requirements or run extension install.py")
    add("--skip-prepare-environment", action="store_true", help="skip all environment preparation")
    add("--skip-torch-cuda-test", action="store_true", help="accepted for compatibility")
    add("--reinstall-torch", action="store_true", help="reinstall torch")
    add("--update-all-extensions", action="store_true", help="git pull every extension at launch")
    add("--disable-all-extensions", action="store_true", help="load no extensions")
    add("--disable-extra-extensions", action="store_true", help="load only the built-in extensions")
    add("--exit", action="store_true", help="prepare the environment, then exit")
    add("--log-level", type=str, default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="log verbosity")
    add("--freeze-settings", action="store_true", help="refuse settings changes")
    add("--no-prompt-history", action="store_true", help="do not write params.txt")
    return p


def split_env_args(argv: Sequence[str] | None = None) -> list[str]:
    """argv plus COMMANDLINE_ARGS from the environment, as A1111's launcher merges them."""
    args = list(sys.argv[1:] if argv is None else argv)
    extra = os.environ.get("COMMANDLINE_ARGS", "")
    if extra.strip():
        args += shlex.split(extra)
    return args


def parse_args(argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    parser = parser or build_parser()
    return parser.parse_args(split_env_args(argv))


def defaults() -> argparse.Namespace:
    """The flag defaults, for library use and tests (no argv, no environment)."""
    return build_parser().parse_args([])


def is_non_local(opts: argparse.Namespace) -> bool:
    """True when the server is reachable from other hosts."""
    return bool(opts.share or opts.listen or opts.server_name)
