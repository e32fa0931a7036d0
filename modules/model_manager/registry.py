"""What model files exist: checkpoints, VAEs, LoRAs and embeddings found in the model folders.

Checkpoints are single files (`.safetensors`, `.ckpt`, `.pt`) or diffusers folders (model_index.json
plus weights). A `<stem>.config/` folder beside a file is its diffusers config override, never a
model of its own; `*.vae.*` files among the checkpoints are VAEs. Each checkpoint becomes a
`CheckpointInfo` with A1111's attribute names, so its titles ("sub/foo.safetensors [abcdef0123]"),
aliases and hashes match what users, infotexts and API clients already use.

Listing never computes a full sha256 (that reads the whole file); it takes the hash from the cache
when one is there. `CheckpointInfo.calculate_shorthash()` computes it on demand.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules import hashes
from modules.model_manager.safe_load import CheckpointReadError, read_safetensors_header

log = logging.getLogger(__name__)

DEMO_CHECKPOINT = "easel-demo.safetensors"
"""The small model Easel ships in models/Stable-diffusion (tools/demo): the default only when alone."""
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt")
VAE_SUFFIXES = (".safetensors", ".ckpt", ".pt")
LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")
EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors")
CONFIG_FOLDER_SUFFIX = ".config"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
_VAE_MARK = re.compile(r"\.vae\.(safetensors|ckpt|pt)$", re.IGNORECASE)
_HASH_SUFFIX = re.compile(r"\s*\[[^\]]+\]\s*$")


def is_vae_filename(name: str) -> bool:
    """`foo.vae.safetensors` and the like: VAEs kept among the checkpoints."""
    return bool(_VAE_MARK.search(name))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """A safetensors file's `__metadata__`, with JSON-looking values decoded (kohya stores nested
    data that way). Read from the header only; {} for other formats or unreadable files."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return {}
    try:
        _, meta = read_safetensors_header(path)
    except CheckpointReadError as e:
        log.warning("could not read metadata of %s: %s", path, e)
        return {}
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if isinstance(value, str) and value[:1] in ("{", "["):
            try:
                out[key] = json.loads(value)
                continue
            except json.JSONDecodeError:
                pass
        out[key] = value
    return out


def is_diffusers_folder(path: Path) -> bool:
    """A folder holding a whole diffusers model: model_index.json and at least one weights file in
    its component subfolders. `<stem>.config/` override folders have no weights and don't count."""
    if path.name.lower().endswith(CONFIG_FOLDER_SUFFIX) or not (path / "model_index.json").is_file():
        return False
    for child in path.iterdir():
        if child.is_dir() and not child.name.startswith("."):
            for f in child.iterdir():
                if f.is_file() and f.suffix.lower() in _WEIGHT_SUFFIXES:
                    return True
    return False


# --- records ------------------------------------------------------------------------------------


class CheckpointInfo:
    """One checkpoint, with A1111's attribute names.

    `name` is the path relative to the checkpoint folder it was found in (forward slashes);
    `title` is "name [shorthash]" once the sha256 is known, else the name alone.
    """

    def __init__(
        self,
        filename: str | os.PathLike,
        root: str | os.PathLike | None = None,
        *,
        hash_cache: hashes.HashCache | None = None,
        no_hashing: bool = False,
    ) -> None:
        path = Path(filename).absolute()
        self.filename: str = str(path)
        self.is_diffusers: bool = path.is_dir()
        self.is_safetensors: bool = path.suffix.lower() == ".safetensors"
        self._hash_cache = hash_cache
        self._no_hashing = no_hashing

        root_path = Path(root).absolute() if root is not None else _default_root_for(path)
        if root_path is not None and path.is_relative_to(root_path) and path != root_path:
            self.name: str = path.relative_to(root_path).as_posix()
        else:
            self.name = path.name
        stem_source = self.name if self.is_diffusers else os.path.splitext(self.name)[0]
        self.name_for_extra: str = path.name if self.is_diffusers else path.stem
        self.model_name: str = stem_source.replace("/", "_").replace("\\", "_")

        self.file_signature: tuple[int, int] | None = _signature_or_none(path)
        """(size, mtime_ns) when listed: tells a rescan whether the file is still the same"""
        self.hash: str = hashes.old_model_hash(path)
        self.sha256: str | None = self._cache().get(path, self.hash_title)
        self.metadata: dict[str, Any] = read_metadata(path) if self.is_safetensors else {}
        self.config_dir_override: Path | None = None
        if not self.is_diffusers:
            override = path.parent / f"{path.stem}{CONFIG_FOLDER_SUFFIX}"
            if (override / "model_index.json").is_file():
                self.config_dir_override = override
        self._update_titles()

    # - names -
    @property
    def hash_title(self) -> str:
        """The hash cache key, as A1111 names it."""
        return f"checkpoint/{self.name}"

    @property
    def shorthash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None

    def _update_titles(self) -> None:
        short = self.shorthash
        self.title: str = f"{self.name} [{short}]" if short else self.name
        self.short_title: str = f"{self.name_for_extra} [{short}]" if short else self.name_for_extra
        ids = [self.hash, self.model_name, self.title, self.name, self.name_for_extra, f"{self.name} [{self.hash}]"]
        if short and self.sha256:
            ids += [short, self.sha256, f"{self.name} [{short}]", f"{self.name_for_extra} [{short}]"]
        self.ids: list[str] = list(dict.fromkeys(ids))

    def _cache(self) -> hashes.HashCache:
        return self._hash_cache if self._hash_cache is not None else hashes.default_cache()

    # - hashing -
    def calculate_shorthash(self) -> str | None:
        """Compute (or fetch from the cache) the full sha256; returns the 10-hex short hash.
        With --no-hashing only a cached value is used."""
        if self.sha256 is None:
            cache = self._cache()
            value = cache.get(self.filename, self.hash_title)
            if value is None and not self._no_hashing:
                value = cache.sha256(self.filename, self.hash_title)
            if value is None:
                return None
            self.sha256 = value
            self._update_titles()
        return self.shorthash

    def register(self) -> None:
        """Add this checkpoint to the process's model list (A1111 API for merge/convert tools)."""
        from modules import shared

        if shared.model_manager is not None:
            shared.model_manager.registry.add(self)

    # - convenience -
    @property
    def path(self) -> Path:
        return Path(self.filename)

    def user_metadata(self) -> dict[str, Any]:
        """The `<stem>.json` file A1111 keeps beside a checkpoint (user notes, preferred VAE)."""
        path = self.path
        meta_file = path.with_name(path.name + ".json") if self.is_diffusers else path.with_suffix(".json")
        try:
            with open(meta_file, encoding="utf8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def __repr__(self) -> str:
        return f"CheckpointInfo({self.title!r})"


def _signature_or_none(path: Path) -> tuple[int, int] | None:
    try:
        return hashes.file_signature(path)
    except OSError:
        return None


def _default_root_for(path: Path) -> Path | None:
    """The checkpoint folder of this process that holds `path` (for infos built without a root)."""
    try:
        from modules import shared

        dirs: Sequence[Path] = shared.paths.ckpt_dirs
    except (ImportError, AttributeError):
        return None
    for d in dirs:
        d = d.absolute()
        if path.is_relative_to(d):
            return d
    return None


@dataclass(frozen=True)
class VaeInfo:
    """A VAE file. `name` is its file name (how settings and infotext name it)."""

    filename: str
    name: str

    @property
    def path(self) -> Path:
        return Path(self.filename)

    @property
    def stem(self) -> str:
        """The name without `.vae.<ext>` / `.<ext>`."""
        match = _VAE_MARK.search(self.name)
        return self.name[: match.start()] if match else os.path.splitext(self.name)[0]

    @property
    def hash_title(self) -> str:
        return f"vae/{self.name}"


# --- scanning -----------------------------------------------------------------------------------


def _walk(root: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    """os.walk following links, skipping hidden folders and links back into visited folders."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield Path(dirpath), dirnames, sorted(filenames)


def _sort_key(name: str, filename: str) -> tuple[str, str, str]:
    return name.lower(), name, filename


def scan_checkpoints(
    ckpt_dirs: Iterable[Path],
    *,
    extra_files: Iterable[Path] = (),
    hash_cache: hashes.HashCache | None = None,
    no_hashing: bool = False,
) -> list[CheckpointInfo]:
    """All checkpoints under the folders (recursively) plus `extra_files` (--ckpt), sorted by name."""
    found: dict[str, CheckpointInfo] = {}

    def add(path: Path, root: Path | None) -> None:
        real = os.path.realpath(path)
        if real in found:
            return
        try:
            found[real] = CheckpointInfo(path, root, hash_cache=hash_cache, no_hashing=no_hashing)
        except OSError as e:
            log.warning("skipping checkpoint %s: %s", path, e)

    roots = [Path(d).absolute() for d in ckpt_dirs]
    for root in roots:
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in _walk(root):
            # Folders that are not places to look for checkpoints: config overrides, diffusers models.
            keep = []
            for d in dirnames:
                sub = dirpath / d
                if d.lower().endswith(CONFIG_FOLDER_SUFFIX):
                    continue
                if is_diffusers_folder(sub):
                    add(sub, root)
                    continue
                keep.append(d)
            dirnames[:] = keep
            for fn in filenames:
                if fn.lower().endswith(CHECKPOINT_SUFFIXES) and not is_vae_filename(fn):
                    add(dirpath / fn, root)

    for extra in extra_files:
        extra = Path(extra).absolute()
        if extra.is_file() or is_diffusers_folder(extra):
            owner = next((r for r in roots if extra.is_relative_to(r)), None)
            add(extra, owner if owner is not None else extra.parent)
        else:
            log.warning("checkpoint %s given with --ckpt does not exist", extra)

    return sorted(found.values(), key=lambda i: _sort_key(i.name, i.filename))


def scan_vaes(vae_dirs: Iterable[Path], ckpt_dirs: Iterable[Path]) -> list[VaeInfo]:
    """VAE files: everything in the VAE folders, plus `*.vae.*` files among the checkpoints. Names
    are file names; when two files share one, the first found keeps it (checkpoint folders first)."""
    files: list[Path] = []
    for root in ckpt_dirs:
        root = Path(root).absolute()
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in _walk(root):
            dirnames[:] = [d for d in dirnames if not d.lower().endswith(CONFIG_FOLDER_SUFFIX)]
            files.extend(dirpath / fn for fn in filenames if is_vae_filename(fn))
    for root in vae_dirs:
        root = Path(root).absolute()
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in _walk(root):
            dirnames[:] = [d for d in dirnames if not d.lower().endswith(CONFIG_FOLDER_SUFFIX)]
            files.extend(dirpath / fn for fn in filenames if fn.lower().endswith(VAE_SUFFIXES))

    by_name: dict[str, VaeInfo] = {}
    seen: set[str] = set()
    for f in files:
        real = os.path.realpath(f)
        if real in seen:
            continue
        seen.add(real)
        if f.name in by_name:
            log.warning("VAE name %s is used by %s and %s; the first is used", f.name, by_name[f.name].filename, f)
            continue
        by_name[f.name] = VaeInfo(filename=str(f), name=f.name)
    return sorted(by_name.values(), key=lambda v: (v.name.lower(), v.name))


def scan_files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """Files with the given suffixes under a folder, recursively, sorted case-insensitively."""
    folder = Path(folder).absolute()
    if not folder.is_dir():
        return []
    out = []
    for dirpath, _dirnames, filenames in _walk(folder):
        out.extend(dirpath / fn for fn in filenames if fn.lower().endswith(tuple(suffixes)))
    return sorted(out, key=lambda p: (p.relative_to(folder).as_posix().lower(), p.as_posix()))


# --- the registry -------------------------------------------------------------------------------


@dataclass
class ModelRegistry:
    """The current lists of model files, rescanned by `refresh()`; lookups by any alias."""

    ckpt_dirs: tuple[Path, ...]
    vae_dirs: tuple[Path, ...]
    lora_dir: Path
    embeddings_dir: Path
    hash_cache: hashes.HashCache
    extra_checkpoints: tuple[Path, ...] = ()
    no_hashing: bool = False
    checkpoints: list[CheckpointInfo] = field(default_factory=list)
    vaes: list[VaeInfo] = field(default_factory=list)
    loras: list[Path] = field(default_factory=list)
    embeddings: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()

    def refresh(self) -> None:
        checkpoints = scan_checkpoints(
            self.ckpt_dirs,
            extra_files=self.extra_checkpoints,
            hash_cache=self.hash_cache,
            no_hashing=self.no_hashing,
        )
        vaes = scan_vaes(self.vae_dirs, self.ckpt_dirs)
        loras = scan_files(self.lora_dir, LORA_SUFFIXES)
        embeddings = scan_files(self.embeddings_dir, EMBEDDING_SUFFIXES)
        with self._lock:
            # Keep the objects of unchanged files: a loaded model's info then stays the listed one,
            # with whatever hash was computed for it meanwhile.
            old = {i.filename: i for i in self.checkpoints}
            merged = []
            for info in checkpoints:
                prev = old.get(info.filename)
                if prev is not None and info.file_signature is not None and prev.file_signature == info.file_signature:
                    if prev.sha256 is None and info.sha256 is not None:
                        prev.sha256 = info.sha256
                        prev._update_titles()
                    prev.metadata = info.metadata
                    prev.config_dir_override = info.config_dir_override
                    merged.append(prev)
                else:
                    merged.append(info)
            self.checkpoints = merged
            self.vaes = vaes
            self.loras = loras
            self.embeddings = embeddings

    def add(self, info: CheckpointInfo) -> None:
        with self._lock:
            self.checkpoints = [i for i in self.checkpoints if i.filename != info.filename] + [info]
            self.checkpoints.sort(key=lambda i: _sort_key(i.name, i.filename))

    # - lookups -
    def aliases(self) -> dict[str, CheckpointInfo]:
        """Every id of every checkpoint -> its info; the earlier checkpoint wins a shared id."""
        out: dict[str, CheckpointInfo] = {}
        with self._lock:
            infos = list(self.checkpoints)
        for info in infos:
            for alias in info.ids:
                out.setdefault(alias, info)
        return out

    def find_checkpoint(self, query: str) -> CheckpointInfo | None:
        """Resolve a title, name, stem, model_name, hash (10-hex short, full sha256, old 8-hex),
        "name [hash]" form or path; then, like A1111, the shortest title containing the query."""
        if not query:
            return None
        query = str(query).strip()
        with self._lock:
            infos = list(self.checkpoints)
        # Titles and names first: another file's stem or hash must not shadow an exact name.
        for info in infos:
            if query in (info.title, info.name):
                return info
        aliases = self.aliases()
        if query in aliases:
            return aliases[query]

        # A path to the file.
        as_path = os.path.realpath(query) if os.path.isabs(query) else None
        if as_path is not None:
            for info in infos:
                if os.path.realpath(info.filename) == as_path:
                    return info

        # A longer prefix of a known sha256 than the 10-hex short hash.
        lowered = query.lower()
        if re.fullmatch(r"[0-9a-f]{8,64}", lowered):
            for info in infos:
                if info.sha256 and info.sha256.startswith(lowered):
                    return info

        # "name [hash]" where the bracketed hash is stale or of the other kind: trust the hash first.
        bracket = re.search(r"\[([0-9a-fA-F]{8,64})\]\s*$", query)
        if bracket:
            h = bracket.group(1).lower()
            for info in infos:
                if info.hash == h or (info.sha256 and info.sha256.startswith(h)):
                    return info

        def shortest(candidates: list[CheckpointInfo]) -> CheckpointInfo | None:
            return min(candidates, key=lambda i: (len(i.title), i.title)) if candidates else None

        stripped = _HASH_SUFFIX.sub("", query)
        for needle in dict.fromkeys((query, stripped)):
            if not needle:
                continue
            found = shortest([i for i in infos if needle in i.title])
            if found is not None:
                return found
        for needle in dict.fromkeys((query.lower(), stripped.lower())):
            if not needle:
                continue
            found = shortest([i for i in infos if needle in i.title.lower()])
            if found is not None:
                return found
        return None

    def find_vae(self, name: str) -> VaeInfo | None:
        """A VAE by file name, stem or path."""
        with self._lock:
            vaes = list(self.vaes)
        for v in vaes:
            if name in (v.name, v.filename):
                return v
        for v in vaes:
            if name in (v.stem, os.path.splitext(v.name)[0]):
                return v
        if os.path.isabs(name):
            real = os.path.realpath(name)
            for v in vaes:
                if os.path.realpath(v.filename) == real:
                    return v
        return None

    def vaes_near_checkpoint(self, checkpoint_file: str | os.PathLike) -> list[VaeInfo]:
        """VAEs whose file name starts with the checkpoint's stem (A1111's "near checkpoint" rule);
        exact stem matches (`foo.vae.pt`, `foo.safetensors`) come before longer names (`foo-v2.pt`)."""
        path = Path(checkpoint_file)
        stem = path.name if path.is_dir() else path.stem
        with self._lock:
            vaes = list(self.vaes)
        matches = [v for v in vaes if v.name.startswith(stem)]
        return sorted(matches, key=lambda v: v.stem != stem)


def is_demo_checkpoint(info: CheckpointInfo) -> bool:
    """Whether `info` is the demo model Easel ships (by its file name at the top of a checkpoint folder)."""
    return info.name == DEMO_CHECKPOINT
