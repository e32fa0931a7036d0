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
from modules.model_manager.registry import read_metadata
from modules.model_manager.safe_load import CheckpointReadError, read_safetensors_header

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
    """`/sdapi/v1/loras`: name and alias are the file stem (A1111's default naming), with metadata."""
    mm = shared.model_manager
    if mm is None:
        return []
    out = []
    for path in mm.loras():
        metadata = read_metadata(path) if path.suffix.lower() == ".safetensors" else {}
        out.append({"name": path.stem, "alias": path.stem, "path": str(path), "metadata": metadata})
    return out


def _embedding_vectors(path: Path) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Tensor shapes of an embedding file and its training details, without loading big data."""
    if path.suffix.lower() == ".safetensors":
        shapes, meta = read_safetensors_header(path)
        return {k: v[0] for k, v in shapes.items()}, dict(meta)
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict):
        raise CheckpointReadError(f"{path} does not hold an embedding")
    details = {k: data.get(k) for k in ("step", "sd_checkpoint", "sd_checkpoint_name")}
    params = data.get("string_to_param")
    if isinstance(params, dict) and params:
        tensors = {str(k): v for k, v in params.items()}
    elif "emb_params" in data:
        tensors = {"emb_params": data["emb_params"]}
    else:
        tensors = {str(k): v for k, v in data.items() if isinstance(v, torch.Tensor)}
    return {k: list(v.shape) for k, v in tensors.items() if isinstance(v, torch.Tensor)}, details


def _text_dims() -> set[int] | None:
    """Embedding widths the model in service accepts (None when no model is loaded)."""
    mm = shared.model_manager
    model = mm.current_model(load=False) if mm is not None else None
    if model is None:
        return None
    dims = set()
    for encoder in (getattr(model, "text_encoder", None), getattr(model, "text_encoder_2", None)):
        hidden = getattr(getattr(encoder, "config", None), "hidden_size", None)
        if hidden:
            dims.add(int(hidden))
    return dims or None


def embeddings() -> dict[str, dict[str, Any]]:
    """`/sdapi/v1/embeddings`: files whose width fits the model in service are "loaded", the others
    (and unreadable files) "skipped"; with no model loaded every readable file counts as loaded."""
    mm = shared.model_manager
    loaded: dict[str, Any] = {}
    skipped: dict[str, Any] = {}
    if mm is None:
        return {"loaded": loaded, "skipped": skipped}
    dims = _text_dims()
    for path in mm.embeddings():
        try:
            shapes, details = _embedding_vectors(path)
        except Exception:  # a broken file is listed as skipped, never breaks the listing
            skipped[path.stem] = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 0,
                                  "vectors": 0}
            continue
        first = next(iter(shapes.values()), [0, 0])
        width = int(first[-1]) if first else 0
        vectors = int(first[0]) if len(first) > 1 else 1
        step = details.get("step")
        item = {"step": int(step) if isinstance(step, (int, str)) and str(step).isdigit() else None,
                "sd_checkpoint": _str_or_none(details.get("sd_checkpoint")),
                "sd_checkpoint_name": _str_or_none(details.get("sd_checkpoint_name")),
                "shape": width, "vectors": vectors}
        widths = {int(s[-1]) for s in shapes.values() if s}
        fits = dims is None or bool(widths & dims)
        (loaded if fits else skipped)[path.stem] = item
    return {"loaded": loaded, "skipped": skipped}


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
