"""Textual-inversion embeddings: learned token vectors used by writing a file's stem in a prompt.

Files live in the embeddings folder (``--embeddings-dir``, default ``<data>/embeddings``), as
``.pt``, ``.bin`` or ``.safetensors`` in any of the layouts in circulation:

- A1111's training output: ``{"string_to_param": {"*": tensor(n, dim)}, "name", "step",
  "sd_checkpoint", "sd_checkpoint_name", ...}`` (``.pt``), or ``{"emb_params": tensor}``;
- diffusers' / the concepts library's ``{"<token>": tensor(dim) or (n, dim)}`` (``.bin``);
- SDXL pairs ``{"clip_l": (n, 768), "clip_g": (n, 1280)}`` (``.safetensors``).

An embedding is usable with a model whose text encoder width(s) match its vectors; the others are
listed as skipped (``/sdapi/v1/embeddings``). `EmbeddingDatabase.vocabulary(model)` gives the
conditioning engine what it needs to find embeddings in a prompt: for each usable embedding, the
token ids its name tokenizes to (longest match wins, as in A1111) and its vectors per encoder.
`attach(model)` puts that vocabulary where `PromptEncoder` looks for it, ``model.extra["embeddings"]``.

Infotext's ``TI hashes`` lists the embeddings a run used with the first 12 hex digits of each
file's sha256.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modules import hashes, prompt_parser
from modules.engine.model import DiffusionModel
from modules.model_manager import registry as model_registry
from modules.model_manager.safe_load import CheckpointReadError, read_pickle

log = logging.getLogger(__name__)

__all__ = [
    "Embedding",
    "EmbeddingDatabase",
    "EmbeddingFormatError",
    "EmbeddingVocabulary",
    "attach",
    "embedding_from_data",
    "load_embedding_file",
    "ti_hashes_value",
]

EMBEDDING_SUFFIXES = model_registry.EMBEDDING_SUFFIXES
VOCABULARY_KEY = "embeddings"


class EmbeddingFormatError(ValueError):
    """A file that holds no embedding in any known layout."""


@dataclass
class Embedding:
    """One embedding: its vectors for the first text encoder and, for SDXL pairs, the second."""

    name: str
    vec: torch.Tensor
    """(vectors, width) for the first (or only) text encoder (SDXL: ``clip_l``)"""
    vec_2: torch.Tensor | None = None
    """(vectors, width) for SDXL's second encoder (``clip_g``)"""
    filename: str | None = None
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    hash: str | None = None

    @property
    def vectors(self) -> int:
        return int(self.vec.shape[0])

    @property
    def shape(self) -> int:
        """Width as A1111 reports it: the sum of both encoders' widths for an SDXL pair."""
        return int(self.vec.shape[-1]) + (int(self.vec_2.shape[-1]) if self.vec_2 is not None else 0)

    @property
    def shorthash(self) -> str | None:
        return self.hash[:12] if self.hash else None

    def vectors_for(self, encoder_index: int) -> torch.Tensor:
        """The vectors for text encoder 0 or 1 (what the conditioning engine substitutes)."""
        if encoder_index == 0:
            return self.vec
        if self.vec_2 is None:
            raise ValueError(f"embedding {self.name} has no vectors for a second text encoder")
        return self.vec_2

    def fits(self, widths: Sequence[int]) -> bool:
        """True when the embedding has vectors of the right width for each of the model's encoders."""
        if len(widths) == 1:
            return self.vec_2 is None and int(self.vec.shape[-1]) == widths[0]
        return (self.vec_2 is not None and int(self.vec.shape[-1]) == widths[0]
                and int(self.vec_2.shape[-1]) == widths[1])

    def api_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "sd_checkpoint": self.sd_checkpoint,
            "sd_checkpoint_name": self.sd_checkpoint_name,
            "shape": self.shape,
            "vectors": self.vectors,
        }


def _as_2d(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().to(torch.float32)
    return t.unsqueeze(0) if t.dim() == 1 else t.reshape(-1, t.shape[-1])


def _opt_int(v: Any) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def embedding_from_data(data: Any, name: str, filename: str | None = None) -> Embedding:
    """An Embedding from a loaded file's contents in any supported layout."""
    if not isinstance(data, dict):
        raise EmbeddingFormatError(f"{name}: the file holds a {type(data).__name__}, not an embedding")
    meta = {"step": _opt_int(data.get("step")), "sd_checkpoint": _opt_str(data.get("sd_checkpoint")),
            "sd_checkpoint_name": _opt_str(data.get("sd_checkpoint_name"))}
    if "string_to_param" in data:
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)  # saved as a ParameterDict by old versions
        tensors = [v for v in dict(params).values() if isinstance(v, torch.Tensor)]
        if len(tensors) != 1:
            raise EmbeddingFormatError(f"{name}: string_to_param holds {len(tensors)} tensors, expected 1")
        return Embedding(name, _as_2d(tensors[0]), filename=filename, **meta)
    if isinstance(data.get("clip_l"), torch.Tensor) and isinstance(data.get("clip_g"), torch.Tensor):
        vec, vec_2 = _as_2d(data["clip_l"]), _as_2d(data["clip_g"])
        if vec.shape[0] != vec_2.shape[0]:
            raise EmbeddingFormatError(f"{name}: clip_l has {vec.shape[0]} vectors but clip_g {vec_2.shape[0]}")
        return Embedding(name, vec, vec_2, filename=filename, **meta)
    if isinstance(data.get("emb_params"), torch.Tensor):
        return Embedding(name, _as_2d(data["emb_params"]), filename=filename, **meta)
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(tensors) == 1 and len(data) == 1:
        return Embedding(name, _as_2d(next(iter(tensors.values()))), filename=filename, **meta)
    raise EmbeddingFormatError(f"{name}: neither an A1111 embedding nor a diffusers concept "
                               f"(keys: {', '.join(sorted(map(str, data))[:8])})")


def _read_file(path: Path, *, allow_unsafe: bool) -> Any:
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointReadError(f"{path} is not a readable safetensors file: {e}") from e
    return read_pickle(path, allow_unsafe)


def load_embedding_file(path: str | Path, *, allow_unsafe: bool = False) -> Embedding:
    """Read one embedding file; raises CheckpointReadError / EmbeddingFormatError."""
    path = Path(path)
    return embedding_from_data(_read_file(path, allow_unsafe=allow_unsafe), path.stem, str(path))


# --- finding embeddings in token streams ---------------------------------------------------------------
class EmbeddingVocabulary:
    """The usable embeddings of one model, looked up by the token ids of their names."""

    def __init__(self, embeddings: Iterable[Embedding], tokenizer: Any, identity: Any) -> None:
        self.identity = identity
        self.embeddings: dict[str, Embedding] = {}
        self._by_first: dict[int, list[tuple[tuple[int, ...], Embedding]]] = {}
        for emb in embeddings:
            ids = tuple(tokenizer(emb.name, add_special_tokens=False, truncation=False)["input_ids"])
            if not ids:
                continue
            self.embeddings[emb.name] = emb
            self._by_first.setdefault(ids[0], []).append((ids, emb))
        for entries in self._by_first.values():
            entries.sort(key=lambda e: len(e[0]), reverse=True)  # the longest name wins

    def __len__(self) -> int:
        return len(self.embeddings)

    def find(self, tokens: Sequence[int], position: int) -> tuple[Embedding, int] | None:
        """The embedding whose name's tokens start at `position`, and how many tokens that is."""
        entries = self._by_first.get(tokens[position])
        if not entries:
            return None
        for ids, emb in entries:
            if tuple(tokens[position:position + len(ids)]) == ids:
                return emb, len(ids)
        return None

    def used_in(self, texts: Iterable[str], tokenizer: Any) -> list[Embedding]:
        """The embeddings the given prompts name, in order of first appearance."""
        found: dict[str, Embedding] = {}
        if not self.embeddings:
            return []
        for text in texts:
            for fragment, _weight in prompt_parser.parse_prompt_attention(text):
                tokens = list(tokenizer(fragment, add_special_tokens=False, truncation=False)["input_ids"])
                i = 0
                while i < len(tokens):
                    hit = self.find(tokens, i)
                    if hit is None:
                        i += 1
                        continue
                    found.setdefault(hit[0].name, hit[0])
                    i += hit[1]
        return list(found.values())


def ti_hashes_value(embeddings: Iterable[Embedding]) -> str | None:
    """The ``TI hashes`` infotext value, ``"name: hash12, ..."``; None when no embedding has a hash."""
    parts = []
    for emb in embeddings:
        if emb.shorthash:
            name = emb.name.replace(":", "").replace(",", "")
            parts.append(f"{name}: {emb.shorthash}")
    return ", ".join(parts) if parts else None


# --- the folder --------------------------------------------------------------------------------------
def _encoder_widths(model: DiffusionModel) -> list[int]:
    widths = [int(model.text_encoder.config.hidden_size)]
    if model.text_encoder_2 is not None:
        widths.append(int(model.text_encoder_2.config.hidden_size))
    return widths


@dataclass
class _Entry:
    signature: tuple[int, int]
    embedding: Embedding | None
    error: str | None = None


@dataclass
class EmbeddingDatabase:
    """The embeddings folder(s): files read once per version, split per model into loaded / skipped."""

    folders: tuple[Path, ...]
    allow_unsafe: bool = False
    hash_cache: hashes.HashCache | None = None
    loaded: dict[str, Embedding] = field(default_factory=dict)
    """usable with the model last passed to `vocabulary`/`attach` (all, before any model)"""
    skipped: dict[str, Embedding] = field(default_factory=dict)
    """readable but of the wrong width for that model"""
    failed: dict[str, str] = field(default_factory=dict)
    """file name -> why it could not be read"""

    def __post_init__(self) -> None:
        self.folders = tuple(Path(f) for f in self.folders)
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.RLock()
        self._generation = 0
        self._widths: tuple[int, ...] | None = None

    def _cache(self) -> hashes.HashCache | None:
        return hashes.cache_or_default(self.hash_cache)

    def refresh(self, force: bool = False) -> bool:
        """Rescan the folders, reading new and changed files; True when anything changed."""
        with self._lock:
            files: dict[str, Path] = {}
            for folder in self.folders:
                for path in model_registry.scan_files(folder, EMBEDDING_SUFFIXES):
                    if ".preview." in path.name.lower():
                        continue
                    files.setdefault(str(path), path)
            changed = force or set(files) != set(self._entries)
            entries: dict[str, _Entry] = {}
            for key, path in files.items():
                try:
                    signature = hashes.file_signature(path)
                except OSError:
                    continue
                old = self._entries.get(key)
                if old is not None and old.signature == signature and not force:
                    entries[key] = old
                    continue
                changed = True
                entries[key] = self._read(path, signature)
            self._entries = entries
            if changed:
                self._generation += 1
                self._split(self._widths)
            return changed

    def _read(self, path: Path, signature: tuple[int, int]) -> _Entry:
        try:
            emb = load_embedding_file(path, allow_unsafe=self.allow_unsafe)
        except (CheckpointReadError, EmbeddingFormatError) as e:
            log.warning("embedding %s was not loaded: %s", path.name, e)
            return _Entry(signature, None, str(e))
        cache = self._cache()
        try:
            title = f"textual_inversion/{emb.name}"
            emb.hash = cache.sha256(path, title) if cache is not None else hashes.calculate_sha256(path)
        except OSError as e:
            log.warning("could not hash embedding %s: %s", path.name, e)
        return _Entry(signature, emb)

    def _split(self, widths: tuple[int, ...] | None) -> None:
        loaded: dict[str, Embedding] = {}
        skipped: dict[str, Embedding] = {}
        failed: dict[str, str] = {}
        for key, entry in sorted(self._entries.items(), key=lambda kv: kv[0].lower()):
            emb = entry.embedding
            if emb is None:
                failed[Path(key).name] = entry.error or "unreadable"
                continue
            if emb.name in loaded or emb.name in skipped:
                log.warning("two embeddings are named %s; using the first", emb.name)
                continue
            if widths is None or emb.fits(widths):
                loaded[emb.name] = emb
            else:
                skipped[emb.name] = emb
        self.loaded, self.skipped, self.failed = loaded, skipped, failed

    def vocabulary(self, model: DiffusionModel, *, refresh: bool = True) -> EmbeddingVocabulary:
        """The embeddings usable with `model`, ready for the conditioning engine."""
        with self._lock:
            if refresh or not self._entries:
                self.refresh()
            widths = tuple(_encoder_widths(model))
            if widths != self._widths:
                self._widths = widths
                self._split(widths)
            identity = ("embeddings", id(self), self._generation, widths)
            cached = model.extra.get(VOCABULARY_KEY)
            if isinstance(cached, EmbeddingVocabulary) and cached.identity == identity:
                return cached
            return EmbeddingVocabulary(self.loaded.values(), model.tokenizer, identity)

    def api_dict(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``GET /sdapi/v1/embeddings``: {loaded: {name: {...}}, skipped: {name: {...}}}."""
        with self._lock:
            if not self._entries:
                self.refresh()
            return {
                "loaded": {name: emb.api_dict() for name, emb in self.loaded.items()},
                "skipped": {name: emb.api_dict() for name, emb in self.skipped.items()},
            }


def attach(model: DiffusionModel, database: EmbeddingDatabase, *, refresh: bool = True) -> EmbeddingVocabulary:
    """Make `database`'s usable embeddings resolve in prompts encoded for `model`."""
    vocab = database.vocabulary(model, refresh=refresh)
    model.extra[VOCABULARY_KEY] = vocab
    return vocab


# --- the instance's database ---------------------------------------------------------------------------
_default: EmbeddingDatabase | None = None
_default_lock = threading.Lock()


def default_database() -> EmbeddingDatabase:
    """The database of this instance's embeddings folder (follows `shared.paths`)."""
    global _default
    from modules import shared

    folders = (Path(shared.paths.embeddings_dir),)
    allow_unsafe = bool(getattr(shared.cmd_opts, "disable_safe_unpickle", False))
    with _default_lock:
        if _default is None or _default.folders != folders or _default.allow_unsafe != allow_unsafe:
            _default = EmbeddingDatabase(folders, allow_unsafe=allow_unsafe)
        return _default


def refresh_embeddings() -> dict[str, dict[str, dict[str, Any]]]:
    """``POST /sdapi/v1/refresh-embeddings``: rescan (and re-split for the loaded model)."""
    db = default_database()
    db.refresh(force=True)
    _resplit_for_current_model(db)
    return db.api_dict()


def list_embeddings() -> dict[str, dict[str, dict[str, Any]]]:
    """``GET /sdapi/v1/embeddings`` for the model in service (all files count as loaded before one is)."""
    db = default_database()
    db.refresh()
    _resplit_for_current_model(db)
    return db.api_dict()


def _resplit_for_current_model(db: EmbeddingDatabase) -> None:
    from modules import shared

    manager = shared.model_manager
    model = manager.current_model(load=False) if manager is not None else None
    if model is not None:
        attach(model, db, refresh=False)
