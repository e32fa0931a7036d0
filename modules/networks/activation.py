"""Networks named in a run's prompts: finding, merging, warning and recording them.

`activate(p, model)` is what processing calls for each batch, after the ``<lora:...>`` tags are
taken out of the prompts (`modules.extra_networks.parse_prompts`) and before the conditioning is
built. It makes exactly the networks of the batch's first prompt the merged set (so a network not
named again is taken out), reports unknown or unusable names as a warning on the run
(``p.comment``) and in the log, and writes A1111's ``Lora hashes`` infotext value.

`infotext_pasted` is the paste-side counterpart: it rewrites ``<lora:name:`` in a pasted prompt to
the local file that has the hash the infotext recorded for ``name``.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

from modules.engine.model import DiffusionModel
from modules.extra_networks import LoraParams
from modules.model_manager.safe_load import CheckpointReadError
from modules.networks.lora import AppliedNetwork, applier_for
from modules.networks.lora_files import LoraFile, LoraRegistry, read_network, set_cache_size

log = logging.getLogger(__name__)

__all__ = [
    "activate",
    "deactivate",
    "default_registry",
    "infotext_pasted",
    "list_loras",
    "lora_hashes_value",
    "lora_name_for_hash",
    "parse_lora_hashes",
    "refresh_loras",
]

LORA_KINDS = ("lora", "lyco")
_re_lora_name = re.compile(r"<lora:([^:>]+):")

_registry: LoraRegistry | None = None
_registry_key: tuple | None = None
_registry_lock = threading.Lock()


def _opt(name: str, default: Any) -> Any:
    from modules import shared

    return getattr(shared.opts, name, default)


def default_registry() -> LoraRegistry:
    """The LoRA files of this instance: ``--lora-dir`` (default ``models/Lora``) and ``models/LyCORIS``."""
    global _registry, _registry_key
    from modules import shared

    folders = (Path(shared.paths.lora_dir), Path(shared.paths.models_dir) / "LyCORIS")
    no_hashing = bool(getattr(shared.cmd_opts, "no_hashing", False))
    key = (folders, no_hashing, Path(shared.paths.cache_dir))
    with _registry_lock:
        if _registry is None or _registry_key != key:
            _registry = LoraRegistry(folders, no_hashing=no_hashing)
            _registry_key = key
        return _registry


def list_loras() -> list[dict[str, Any]]:
    """``GET /sdapi/v1/loras``: [{name, alias, path, metadata}]."""
    return default_registry().api_list()


def refresh_loras() -> list[dict[str, Any]]:
    """``POST /sdapi/v1/refresh-loras``: rescan the folders; returns the new list."""
    registry = default_registry()
    registry.refresh()
    return registry.api_list()


def _warn(p: Any, message: str) -> None:
    comments = getattr(p, "comments", None) or {}
    if message in comments:
        return
    log.warning(message)
    p.comment(message)


def _infotext_name(name: str) -> str:
    return name.replace(":", "").replace(",", "")


def lora_hashes_value(pairs: list[tuple[str, str]]) -> str | None:
    """``"name: hash12, ..."`` as A1111 writes ``Lora hashes`` (``:`` and ``,`` dropped from names)."""
    seen: dict[str, str] = {}
    for name, shorthash in pairs:
        if shorthash:
            seen[_infotext_name(name)] = shorthash
    return ", ".join(f"{k}: {v}" for k, v in seen.items()) or None


def activate(p: Any, model: DiffusionModel) -> list[str]:
    """Merge the networks the batch's prompts name (only those); returns the names merged."""
    data = getattr(p, "extra_network_data", None) or {}
    requests: list[LoraParams] = []
    for kind, entries in data.items():
        if kind not in LORA_KINDS:
            names = ", ".join(sorted({f"<{kind}:{e.items[0]}>" for e in entries if e.items}))
            _warn(p, f"extra networks of kind {kind!r} are not supported: {names}")
            continue
        for params in entries:
            try:
                requests.append(LoraParams.from_params(params))
            except ValueError as e:
                _warn(p, str(e))
    if getattr(p, "disable_extra_networks", False):
        requests = []
    extra = _opt("sd_lora", "None")
    if isinstance(extra, str) and extra not in ("", "None") and all(r.name != extra for r in requests):
        requests.append(LoraParams(name=extra))
    set_cache_size(int(_opt("lora_in_memory_limit", 4) or 0) or 4)

    registry = default_registry()
    from modules import shared

    allow_unsafe = bool(getattr(shared.cmd_opts, "disable_safe_unpickle", False))
    chosen: list[tuple[LoraParams, LoraFile, AppliedNetwork]] = []
    missing: list[str] = []
    for req in requests:
        entry = registry.get(req.name)
        if entry is None:
            missing.append(req.name)
            continue
        try:
            net = read_network(entry, allow_unsafe=allow_unsafe)
        except CheckpointReadError as e:
            _warn(p, f"LoRA {req.name} could not be read: {e}")
            continue
        if req.dyn_dim is not None:
            log.info("LoRA %s: dyn=%s is ignored (the full rank is applied)", req.name, req.dyn_dim)
        chosen.append((req, entry, AppliedNetwork(net, req.te_multiplier, req.unet_multiplier)))
    if missing:
        _warn(p, "Networks not found: " + ", ".join(f"<lora:{name}>" for name in missing))

    report = applier_for(model).apply([c[2] for c in chosen])
    if report.incompatible:
        _warn(p, "Networks not compatible with this model: "
              + ", ".join(f"<lora:{name}>" for name in report.incompatible))
    for name, count in report.partial.items():
        log.info("LoRA %s: %d of its layers do not fit this model and were left out", name, count)
    if report.changed:
        log.debug("networks %s merged into %d layers in %.2fs", [c[0].name for c in chosen], report.layers,
                  report.seconds)

    params = getattr(p, "extra_generation_params", None)
    if params is not None:
        value = None
        if _opt("lora_add_hashes_to_infotext", True):
            pairs = []
            for req, entry, _applied in chosen:
                if entry.name in report.incompatible:
                    continue
                full = registry.hash_of(entry)
                if full:
                    pairs.append((req.name, full[:12]))
            value = lora_hashes_value(pairs)
        if value:
            params["Lora hashes"] = value
        else:
            params.pop("Lora hashes", None)
    return [c[0].name for c in chosen if c[1].name not in report.incompatible]


def deactivate(model: DiffusionModel) -> None:
    """Take every network out of `model` (its weights become the checkpoint's again, bit for bit)."""
    applier_for(model).restore()


# --- pasting ---------------------------------------------------------------------------------------------
def parse_lora_hashes(value: str) -> dict[str, str]:
    """``"name: hash, name2: hash2"`` -> {name: hash}."""
    out: dict[str, str] = {}
    for part in (value or "").split(","):
        name, sep, shorthash = part.partition(":")
        if sep and name.strip() and shorthash.strip():
            out[name.strip()] = shorthash.strip().lower()
    return out


def lora_name_for_hash(shorthash: str) -> str | None:
    """The name to write in a prompt for the local LoRA with this addnet hash (12 hex), or None.

    The alias (``ss_output_name``) is preferred unless another file has it as its name, as A1111's
    default "Alias from file" setting does.
    """
    registry = default_registry()
    entry = registry.find_by_hash(shorthash)
    if entry is None:
        return None
    if _opt("lora_preferred_name", "Alias from file") == "Filename":
        return entry.name
    return entry.name if entry.alias in registry.forbidden_aliases() else entry.alias


def infotext_pasted(infotext: str, params: dict[str, Any]) -> None:
    """A1111's ``on_infotext_pasted`` hook for networks: ``<lora:their-name:`` in the pasted prompt
    becomes ``<lora:local-name:`` for each name whose ``Lora hashes`` entry matches a local file."""
    hashes = parse_lora_hashes(str(params.get("Lora hashes") or ""))
    prompt = params.get("Prompt")
    if not hashes or not isinstance(prompt, str):
        return

    def replace(m: re.Match[str]) -> str:
        shorthash = hashes.get(_infotext_name(m.group(1)))
        if not shorthash:
            return m.group(0)
        local = lora_name_for_hash(shorthash)
        return f"<lora:{local}:" if local else m.group(0)

    params["Prompt"] = _re_lora_name.sub(replace, prompt)
