"""File hashes compatible with A1111's, and the on-disk cache that keeps them across restarts.

- Full sha256 of a file, streamed in 1 MiB blocks. Infotext shows its first 10 hex digits for
  checkpoints and VAEs ("Model hash", "VAE hash"), 12 for embeddings.
- The "addnet" hash kohya's tools and the LoRA infotext use: sha256 of a safetensors file's body,
  i.e. everything after the 8-byte length and the JSON header.
- The old 8-hex "model hash" that only reads 64 KiB at offset 1 MiB (older infotexts carry it).

Hashing a multi-GB checkpoint takes seconds, so results are cached in `<cache_dir>/hashes.json`,
keyed by "<kind>/<name>" titles as A1111 does, and trusted only while the file's absolute path,
size and modification time are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, BinaryIO

from modules.options import atomic_write_text

log = logging.getLogger(__name__)

BLOCK_SIZE = 1024 * 1024
CACHE_FILE_NAME = "hashes.json"
_CACHE_VERSION = 1
_SECTION_FULL = "hashes"
_SECTION_ADDNET = "hashes-addnet"


# --- hashing ------------------------------------------------------------------------------------


def _update_from_stream(h: Any, f: BinaryIO) -> None:
    while True:
        block = f.read(BLOCK_SIZE)
        if not block:
            break
        h.update(block)


def _folder_files(folder: Path) -> list[Path]:
    """Regular files of a model folder in a stable order (hidden files and folders left out)."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(Path(root) / n for n in names if not n.startswith("."))
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def calculate_sha256(filename: str | os.PathLike) -> str:
    """Full sha256 of a file (A1111's model hash). A diffusers model folder is hashed as the
    concatenation of its files' contents in relative-path order, so it gets one stable identity."""
    path = Path(filename)
    h = hashlib.sha256()
    if path.is_dir():
        for file in _folder_files(path):
            with open(file, "rb") as f:
                _update_from_stream(h, f)
        return h.hexdigest()
    with open(path, "rb") as f:
        _update_from_stream(h, f)
    return h.hexdigest()


def addnet_hash_safetensors(b: BinaryIO) -> str:
    """sha256 of a safetensors file's tensor data, skipping the 8-byte length and the header, which
    tools rewrite when they edit metadata (kohya's convention, used for "Lora hashes")."""
    b.seek(0)
    header_len = int.from_bytes(b.read(8), "little")
    b.seek(8 + header_len)
    h = hashlib.sha256()
    _update_from_stream(h, b)
    return h.hexdigest()


def calculate_addnet_hash(filename: str | os.PathLike) -> str:
    """The addnet hash of a .safetensors file; other formats have no header to skip and get the full
    file sha256."""
    path = Path(filename)
    if path.suffix.lower() != ".safetensors":
        return calculate_sha256(path)
    with open(path, "rb") as f:
        return addnet_hash_safetensors(f)


def old_model_hash(filename: str | os.PathLike) -> str:
    """A1111's first "model hash": 8 hex digits of the sha256 of 64 KiB read at offset 1 MiB.
    Collides easily; kept because old infotexts and API clients still name models by it."""
    path = Path(filename)
    if path.is_dir():
        weights = _largest_weights_file(path)
        if weights is None:
            return "NOFILE"
        path = weights
    try:
        with open(path, "rb") as f:
            f.seek(0x100000)
            return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
    except FileNotFoundError:
        return "NOFILE"


def _largest_weights_file(folder: Path) -> Path | None:
    """The UNet weights of a diffusers folder in practice: the biggest weights file in it."""
    candidates = [p for p in _folder_files(folder) if p.suffix.lower() in (".safetensors", ".bin", ".ckpt", ".pt")]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.stat().st_size, p.as_posix()))


# --- cache --------------------------------------------------------------------------------------


def file_signature(path: Path) -> tuple[int, int]:
    """(size, mtime_ns) identifying a file's content version; for folders summed / maxed over files."""
    if path.is_dir():
        size = 0
        mtime = 0
        for file in _folder_files(path):
            st = file.stat()
            size += st.st_size
            mtime = max(mtime, st.st_mtime_ns)
        return size, mtime
    st = path.stat()
    return st.st_size, st.st_mtime_ns


class HashCache:
    """Hashes of files by title, persisted as JSON and shared safely between threads.

    An entry is used only while the file at the same absolute path still has the recorded size and
    mtime. Two threads asking for the same uncached hash compute it once: the second waits.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, dict[str, Any]]] | None = None
        self._pending: dict[tuple[str, str, str], Future[str]] = {}

    # - storage -
    def _read_file(self) -> dict[str, dict[str, dict[str, Any]]]:
        try:
            with open(self.path, encoding="utf8") as f:
                raw = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            log.warning("hash cache %s could not be read (%s); starting a new one", self.path, e)
            return {}
        if not isinstance(raw, dict):
            return {}
        sections = {}
        for name in (_SECTION_FULL, _SECTION_ADDNET):
            section = raw.get(name)
            if isinstance(section, dict):
                sections[name] = {k: v for k, v in section.items() if isinstance(v, dict)}
        return sections

    def _loaded(self) -> dict[str, dict[str, dict[str, Any]]]:
        if self._data is None:
            self._data = self._read_file()
        return self._data

    def _save(self) -> None:
        # Another process (or instance) may have added entries since we read the file: merge them in
        # under ours so concurrent writers do not erase each other's work.
        data = self._loaded()
        on_disk = self._read_file()
        for name, section in on_disk.items():
            merged = dict(section)
            merged.update(data.get(name, {}))
            data[name] = merged
        payload = {"version": _CACHE_VERSION, **{k: data[k] for k in sorted(data)}}
        try:
            atomic_write_text(self.path, json.dumps(payload, indent=1, sort_keys=True))
        except OSError as e:
            log.warning("hash cache %s could not be written: %s", self.path, e)

    # - queries -
    def get(self, filename: str | os.PathLike, title: str, *, addnet: bool = False) -> str | None:
        """The cached hash, or None when unknown or when the file changed since it was hashed."""
        path = Path(filename).absolute()
        try:
            size, mtime = file_signature(path)
        except OSError:
            return None
        section = _SECTION_ADDNET if addnet else _SECTION_FULL
        with self._lock:
            entry = self._loaded().get(section, {}).get(title)
        if not entry:
            return None
        if entry.get("path") != str(path) or entry.get("size") != size or entry.get("mtime_ns") != mtime:
            return None
        value = entry.get("sha256")
        return value if isinstance(value, str) else None

    def put(self, filename: str | os.PathLike, title: str, value: str, *, addnet: bool = False) -> None:
        path = Path(filename).absolute()
        size, mtime = file_signature(path)
        section = _SECTION_ADDNET if addnet else _SECTION_FULL
        with self._lock:
            self._loaded().setdefault(section, {})[title] = {
                "path": str(path),
                "size": size,
                "mtime_ns": mtime,
                "sha256": value,
            }
            self._save()

    def sha256(self, filename: str | os.PathLike, title: str, *, addnet: bool = False) -> str:
        """The hash from the cache, else computed (once, however many threads ask) and cached."""
        cached = self.get(filename, title, addnet=addnet)
        if cached is not None:
            return cached
        key = (_SECTION_ADDNET if addnet else _SECTION_FULL, title, str(Path(filename).absolute()))
        with self._lock:
            pending = self._pending.get(key)
            owner = pending is None
            if owner:
                pending = Future()
                self._pending[key] = pending
        assert pending is not None
        if not owner:
            return pending.result()
        try:
            # Another thread may have finished this very hash between our cache miss and now.
            value = self.get(filename, title, addnet=addnet)
            if value is None:
                log.info("calculating %s hash of %s", "addnet" if addnet else "sha256", filename)
                value = calculate_addnet_hash(filename) if addnet else calculate_sha256(filename)
                self.put(filename, title, value, addnet=addnet)
        except BaseException as e:
            pending.set_exception(e)
            raise
        else:
            pending.set_result(value)
            return value
        finally:
            with self._lock:
                self._pending.pop(key, None)

    def titles(self, *, addnet: bool = False) -> Iterable[str]:
        with self._lock:
            return list(self._loaded().get(_SECTION_ADDNET if addnet else _SECTION_FULL, {}))


# --- the process-wide cache and A1111's function names -------------------------------------------

_caches: dict[Path, HashCache] = {}
_caches_lock = threading.Lock()


def cache_for(cache_dir: str | os.PathLike) -> HashCache:
    """The one HashCache object of a cache folder (shared so its lock covers every user)."""
    path = (Path(cache_dir) / CACHE_FILE_NAME).absolute()
    with _caches_lock:
        cache = _caches.get(path)
        if cache is None:
            cache = _caches[path] = HashCache(path)
        return cache


def cache_or_default(cache: HashCache | None) -> HashCache | None:
    """`cache` if given, else the instance's default cache (None before the app is initialised)."""
    if cache is not None:
        return cache
    try:
        return default_cache()
    except (AttributeError, RuntimeError):
        return None


def default_cache() -> HashCache:
    """The cache in the data root of this process (`shared.paths.cache_dir`)."""
    from modules import shared

    return cache_for(shared.paths.cache_dir)


def sha256_from_cache(filename: str | os.PathLike, title: str, use_addnet_hash: bool = False) -> str | None:
    """The cached hash of `filename` under `title` (e.g. "checkpoint/foo.safetensors"), or None."""
    return default_cache().get(filename, title, addnet=use_addnet_hash)


def sha256(filename: str | os.PathLike, title: str, use_addnet_hash: bool = False) -> str:
    """The hash of `filename`, from the cache or computed and cached. Callers honour --no-hashing
    themselves (this is also what they call when the user asks for a hash explicitly)."""
    return default_cache().sha256(filename, title, addnet=use_addnet_hash)
