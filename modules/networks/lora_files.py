"""LoRA files on disk: finding them, naming them, hashing them and reading their tensors.

Files are ``*.safetensors``, ``*.pt`` and ``*.ckpt`` anywhere under the LoRA folder (``--lora-dir``,
default ``models/Lora``) and the old ``models/LyCORIS`` folder. As in A1111 a network's name is the
file stem, its alias the ``ss_output_name`` kohya writes into the metadata, and the prompt may use
either; an alias that is also another file's name is not used, so every name reaches one file.

The hash that goes into infotext ("Lora hashes") is kohya's "addnet" hash: the sha256 of the file
after its safetensors header, first 12 hex digits, taken from ``sshs_model_hash`` in the metadata
when the trainer wrote it, else from the hash cache, else computed when asked for.

Parsed files are kept in a small LRU cache keyed by path, size and modification time, so a network
used in consecutive prompts is read once and an edited file is read again.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modules import hashes
from modules.model_manager import registry as model_registry
from modules.model_manager.safe_load import CheckpointReadError, read_state_dict
from modules.networks import lora_keys

log = logging.getLogger(__name__)

__all__ = [
    "LoraFile",
    "LoraRegistry",
    "ParsedNetwork",
    "read_network",
    "sd_version_of",
]

LORA_SUFFIXES = model_registry.LORA_SUFFIXES
DEFAULT_CACHE_SIZE = 4


def sd_version_of(metadata: dict[str, Any]) -> str:
    """'SDXL', 'SD2', 'SD1' or 'Unknown' from kohya's metadata (A1111 hides mismatched cards by it)."""
    base = str(metadata.get("ss_base_model_version", ""))
    if base.startswith("sdxl_"):
        return "SDXL"
    if str(metadata.get("ss_v2", "")) == "True":
        return "SD2"
    if metadata:
        return "SD1"
    return "Unknown"


@dataclass
class LoraFile:
    """One network file as the UI and the API list it."""

    name: str
    filename: str
    metadata: dict[str, Any] = field(default_factory=dict)
    hash: str | None = None
    """full addnet sha256 once known"""

    @property
    def alias(self) -> str:
        value = self.metadata.get("ss_output_name")
        return str(value) if value else self.name

    @property
    def is_safetensors(self) -> bool:
        return self.filename.lower().endswith(".safetensors")

    @property
    def sd_version(self) -> str:
        return sd_version_of(self.metadata)

    @property
    def shorthash(self) -> str | None:
        return self.hash[:12] if self.hash else None

    @property
    def hash_title(self) -> str:
        return f"lora/{self.name}"

    def signature(self) -> tuple[int, int]:
        return hashes.file_signature(Path(self.filename))

    def calculate_hash(self, cache: hashes.HashCache | None = None) -> str:
        """The addnet hash, from the cache or computed (reads the whole file once)."""
        if not self.hash:
            cache = cache or hashes.default_cache()
            self.hash = cache.sha256(self.filename, self.hash_title, addnet=self.is_safetensors)
        return self.hash

    def api_dict(self) -> dict[str, Any]:
        """One entry of ``GET /sdapi/v1/loras``."""
        return {"name": self.name, "alias": self.alias, "path": self.filename, "metadata": self.metadata}


@dataclass
class ParsedNetwork:
    """A network file's tensors grouped by the flat module name they change."""

    name: str
    filename: str
    signature: tuple[int, int]
    modules: dict[str, dict[str, torch.Tensor]]
    unknown_keys: list[str]

    @property
    def identity(self) -> tuple[str, tuple[int, int]]:
        return (self.filename, self.signature)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for params in self.modules.values() for t in params.values())


class _ParsedCache:
    """The last few parsed networks, by (path, size, mtime)."""

    def __init__(self, size: int = DEFAULT_CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, tuple[int, int]], ParsedNetwork] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, tuple[int, int]]) -> ParsedNetwork | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, net: ParsedNetwork) -> None:
        with self._lock:
            self._items[net.identity] = net
            self._items.move_to_end(net.identity)
            while len(self._items) > max(0, self.size):
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_parsed = _ParsedCache()


def set_cache_size(size: int) -> None:
    """How many parsed networks stay in memory (A1111's ``lora_in_memory_limit``)."""
    _parsed.size = max(0, int(size))


def read_network(file: LoraFile, *, allow_unsafe: bool = False) -> ParsedNetwork:
    """The parsed tensors of a network file (cached). Raises CheckpointReadError for unreadable files."""
    path = Path(file.filename)
    try:
        signature = hashes.file_signature(path)
    except OSError as e:
        raise CheckpointReadError(f"LoRA file not found: {path}") from e
    key = (str(path), signature)
    hit = _parsed.get(key)
    if hit is not None:
        return hit
    state_dict = read_state_dict(path, allow_unsafe=allow_unsafe)
    modules, unknown = lora_keys.group_by_module(state_dict)
    net = ParsedNetwork(name=file.name, filename=str(path), signature=signature, modules=modules,
                        unknown_keys=unknown)
    if unknown:
        log.debug("%s: %d keys belong to no layer: %s", path.name, len(unknown), unknown[:5])
    _parsed.put(net)
    return net


class LoraRegistry:
    """The LoRA files of some folders, looked up by name, alias or hash."""

    def __init__(self, folders: Sequence[str | Path], *, hash_cache: hashes.HashCache | None = None,
                 no_hashing: bool = False) -> None:
        self.folders = tuple(Path(f) for f in folders)
        self.hash_cache = hash_cache
        self.no_hashing = no_hashing
        self._lock = threading.RLock()
        self._files: dict[str, LoraFile] = {}
        self._aliases: dict[str, LoraFile] = {}
        self._scanned = False

    # --- scanning ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Rescan the folders (A1111: ``/sdapi/v1/refresh-loras``)."""
        found: dict[str, LoraFile] = {}
        cache = self._cache()
        for folder in self.folders:
            for path in model_registry.scan_files(folder, LORA_SUFFIXES):
                name = path.stem
                if name in found:
                    log.warning("two LoRA files are named %s; using %s", name, found[name].filename)
                    continue
                meta = model_registry.read_metadata(path)
                entry = LoraFile(name=name, filename=str(path), metadata=meta)
                known = meta.get("sshs_model_hash")
                if isinstance(known, str) and len(known) == 64:
                    entry.hash = known.lower()
                elif cache is not None:
                    entry.hash = cache.get(path, entry.hash_title, addnet=entry.is_safetensors)
                found[name] = entry
        aliases: dict[str, LoraFile] = dict(found)
        for entry in found.values():
            alias = entry.alias
            if alias != entry.name and alias not in found:
                aliases.setdefault(alias, entry)
        with self._lock:
            self._files = found
            self._aliases = aliases
            self._scanned = True

    def _ensure(self) -> None:
        if not self._scanned:
            self.refresh()

    def _cache(self) -> hashes.HashCache | None:
        return hashes.cache_or_default(self.hash_cache)

    # --- lookups ----------------------------------------------------------------------------------
    def files(self) -> list[LoraFile]:
        self._ensure()
        with self._lock:
            return list(self._files.values())

    def get(self, name: str) -> LoraFile | None:
        """By file stem first, then by alias (``ss_output_name``)."""
        self._ensure()
        with self._lock:
            return self._files.get(name) or self._aliases.get(name)

    def forbidden_aliases(self) -> set[str]:
        """Aliases that are also another file's name: those files must be named by their stem."""
        self._ensure()
        with self._lock:
            return {f.alias for f in self._files.values() if f.alias != f.name and f.alias in self._files}

    def hash_of(self, entry: LoraFile) -> str | None:
        """The addnet hash of `entry`, computed unless --no-hashing (then only a known one)."""
        if entry.hash or self.no_hashing:
            return entry.hash
        try:
            return entry.calculate_hash(self._cache())
        except OSError as e:
            log.warning("could not hash %s: %s", entry.filename, e)
            return None

    def find_by_hash(self, shorthash: str) -> LoraFile | None:
        """The file whose addnet hash starts with `shorthash` (12 hex digits in infotext)."""
        shorthash = shorthash.strip().lower()
        if not shorthash:
            return None
        files = self.files()
        for entry in files:
            if entry.hash and entry.hash.startswith(shorthash):
                return entry
        for entry in files:
            if not entry.hash and (h := self.hash_of(entry)) and h.startswith(shorthash):
                return entry
        return None

    def api_list(self) -> list[dict[str, Any]]:
        return [f.api_dict() for f in self.files()]
