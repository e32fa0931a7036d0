"""What the API lists about the installation: models, VAEs, LoRAs, embeddings, extensions, memory,
and the command-line flags (without credentials).
"""

from __future__ import annotations

import argparse
import configparser
import os
import re
from pathlib import Path
from typing import Any

import torch

from modules import shared

# Flags whose values are secrets: never sent, only whether they are set (A1111 issue #17411).
SECRET_FLAGS = {"api_auth", "gradio_auth", "ngrok", "ngrok_options"}
_SECRET_NAME = re.compile(r"(pass(word)?|secret|token|auth)(?!_path)", re.IGNORECASE)
REDACTED = "<redacted>"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def cmd_flags(args: argparse.Namespace) -> dict[str, Any]:
    """`vars(cmd_opts)` with credentials replaced by a marker (None stays None: "not set")."""
    out = {}
    for key, value in vars(args).items():
        secret = key in SECRET_FLAGS or bool(_SECRET_NAME.search(key))
        out[key] = (REDACTED if value else value) if secret else _jsonable(value)
    return out


def sd_models() -> list[dict[str, Any]]:
    mm = shared.model_manager
    if mm is None:
        return []
    return [{"title": i.title, "model_name": i.model_name, "hash": i.shorthash, "sha256": i.sha256,
             "filename": i.filename, "config": None} for i in mm.checkpoints()]


def sd_vaes() -> list[dict[str, Any]]:
    mm = shared.model_manager
    if mm is None:
        return []
    return [{"model_name": v.name, "filename": v.filename} for v in mm.vaes()]


def loras() -> list[dict[str, Any]]:
    """`/sdapi/v1/loras`: name, alias (`ss_output_name`), path and metadata of each LoRA file."""
    from modules import networks

    return networks.list_loras()


def embeddings() -> dict[str, dict[str, Any]]:
    """`/sdapi/v1/embeddings`: {loaded, skipped} for the model in service."""
    from modules import textual_inversion

    return textual_inversion.list_embeddings()



def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


def _git_details(folder: Path) -> dict[str, Any]:
    """Remote, branch and commit of an extension's git checkout, read from .git without running git."""
    git = folder / ".git"
    out: dict[str, Any] = {"remote": None, "branch": None, "commit_hash": None, "commit_date": None}
    if not git.is_dir():
        return out
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref:"):
            ref = head[4:].strip()
            out["branch"] = ref.rsplit("/", 1)[-1]
            ref_file = git / ref
            if ref_file.is_file():
                out["commit_hash"] = ref_file.read_text().strip()
            elif (git / "packed-refs").is_file():
                for line in (git / "packed-refs").read_text().splitlines():
                    if line.endswith(" " + ref):
                        out["commit_hash"] = line.split(" ", 1)[0]
        else:
            out["commit_hash"] = head
        config = configparser.ConfigParser()
        config.read(git / "config")
        if config.has_option('remote "origin"', "url"):
            out["remote"] = config.get('remote "origin"', "url")
        if out["commit_hash"]:
            out["commit_date"] = int(os.path.getmtime(git / "HEAD"))
    except (OSError, configparser.Error):
        pass
    return out


def extensions() -> list[dict[str, Any]]:
    """Folders under extensions/ and extensions-builtin/, with their git details and enabled state."""
    disabled = set(getattr(shared.opts, "disabled_extensions", None) or [])
    mode = getattr(shared.opts, "disable_all_extensions", "none")
    out = []
    for root, builtin in ((shared.paths.extensions_builtin_dir, True), (shared.paths.extensions_dir, False)):
        if not Path(root).is_dir():
            continue
        for folder in sorted(Path(root).iterdir(), key=lambda p: p.name.lower()):
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            git = _git_details(folder)
            enabled = folder.name not in disabled and mode != "all" and not (mode == "extra" and not builtin)
            commit = git["commit_hash"]
            out.append({"name": folder.name, "remote": git["remote"], "branch": git["branch"],
                        "commit_hash": commit, "version": commit[:8] if commit else "",
                        "commit_date": git["commit_date"], "enabled": enabled})
    return out


def _meminfo() -> dict[str, int]:
    values = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    values[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return values


def _process_rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def memory() -> dict[str, Any]:
    """`/sdapi/v1/memory`: RAM (used = this process, as A1111 reports it) and CUDA statistics."""
    info = _meminfo()
    total = info.get("MemTotal") or (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    used = _process_rss()
    ram = {"free": max(0, total - used), "used": used, "total": total}
    if torch.cuda.is_available():
        try:
            free, cuda_total = torch.cuda.mem_get_info()
            stats = torch.cuda.memory_stats()
            cuda = {
                "system": {"free": free, "used": cuda_total - free, "total": cuda_total},
                "active": {"current": stats.get("active_bytes.all.current", 0),
                           "peak": stats.get("active_bytes.all.peak", 0)},
                "allocated": {"current": stats.get("allocated_bytes.all.current", 0),
                              "peak": stats.get("allocated_bytes.all.peak", 0)},
                "reserved": {"current": stats.get("reserved_bytes.all.current", 0),
                             "peak": stats.get("reserved_bytes.all.peak", 0)},
                "inactive": {"current": stats.get("inactive_split_bytes.all.current", 0),
                             "peak": stats.get("inactive_split_bytes.all.peak", 0)},
                "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
            }
        except RuntimeError as e:
            cuda = {"error": str(e)}
    else:
        cuda = {"error": "unavailable"}
    return {"ram": ram, "cuda": cuda}
