"""Reading checkpoint files into state dicts without running code from them.

`.safetensors` is read with safetensors. `.ckpt` / `.pt` / `.bin` pickles go through torch's
weights-only unpickler, extended only by the few harmless globals real SD checkpoints carry
(PyTorch Lightning's callback records, numpy scalars and arrays, `collections.OrderedDict`). A pickle
that would import or call anything else is refused with `UnsafeCheckpointError` naming the file.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import pickle
import re
import struct
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

# torch keeps the extra allowed globals in one process-wide set that `safe_globals` edits on entry and
# restores on exit; two overlapping loads in different threads would otherwise undo each other's list.
_unpickle_lock = threading.Lock()


class CheckpointReadError(ValueError):
    """The file is missing, truncated or not a checkpoint."""


class UnsafeCheckpointError(CheckpointReadError):
    """The pickle asks to import or call something outside the allowlist."""


class _LightningModelCheckpoint:
    """Stand-in for `pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`.

    Original SD checkpoints were saved by PyTorch Lightning, whose `callbacks` entry is keyed by that
    class (older Lightning) or holds a pickled instance of it. The weights never depend on it, so the
    name is mapped to this inert class: instances only keep the state they were given.
    """

    def __setstate__(self, state: Any) -> None:
        self.state = state


_LIGHTNING_PATHS = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
)


def _numpy_globals() -> list[tuple[Any, str]]:
    """numpy objects that checkpoints pickle (scalars such as a saved loss, small arrays), each under
    every module path a pickle may name it by.

    Pickles written under numpy 1.x say `numpy.core.multiarray`, numpy 2 writes `numpy._core...`. The
    objects are fetched from whichever package this numpy has, without touching the deprecated
    `numpy.core` alias (that would emit a DeprecationWarning on numpy 2).
    """
    import numpy as np

    core = getattr(np, "_core", None)
    if core is None:  # numpy 1.x
        core = np.core
    multiarray = core.multiarray
    entries: list[tuple[Any, str]] = [(np.dtype, "numpy.dtype"), (np.ndarray, "numpy.ndarray")]
    for prefix in ("numpy.core.multiarray", "numpy._core.multiarray"):
        entries.append((multiarray.scalar, f"{prefix}.scalar"))
        entries.append((multiarray._reconstruct, f"{prefix}._reconstruct"))
    # Unpickling a dtype ends with a BUILD on the dtype instance, whose class on numpy 2 is one of
    # `numpy.dtypes.*DType`; the unpickler only builds instances of allowlisted classes.
    dtypes_module = getattr(np, "dtypes", None)
    if dtypes_module is not None:
        for name in dir(dtypes_module):
            cls = getattr(dtypes_module, name)
            if name.endswith("DType") and isinstance(cls, type):
                entries.append((cls, f"numpy.dtypes.{name}"))
    return entries


def _allowed_globals() -> list[tuple[Any, str]]:
    entries = [(collections.OrderedDict, "collections.OrderedDict"), *_numpy_globals()]
    entries.extend((_LightningModelCheckpoint, path) for path in _LIGHTNING_PATHS)
    return entries


@contextlib.contextmanager
def _quiet_numpy() -> Iterator[None]:
    """Silence numpy's own deprecation notices (e.g. the `numpy.core` rename) while unpickling."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"numpy(\.|$)")
        warnings.filterwarnings("ignore", message=r".*numpy\.core.*", category=DeprecationWarning)
        yield


def _load_weights_only(path: Path) -> Any:
    from torch.serialization import safe_globals

    with _unpickle_lock, safe_globals(_allowed_globals()), _quiet_numpy():
        return torch.load(path, map_location="cpu", weights_only=True)


def _load_unrestricted(path: Path) -> Any:
    with _unpickle_lock, _quiet_numpy():
        return torch.load(path, map_location="cpu", weights_only=False)


_REFUSAL_PATTERNS = (
    re.compile(r"(Trying to load unsupported GLOBAL \S+)"),
    re.compile(r"Unsupported global: (GLOBAL \S+)"),
    re.compile(r"(Trying to call reduce for unrecognized function .*)"),
    re.compile(r"(Can only (?:create new object|build) .*)"),
)


def _refusal_reason(error: BaseException) -> str | None:
    """What the weights-only unpickler refused, or None when the error is not a refusal."""
    text = str(error)
    for pattern in _REFUSAL_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1).strip().rstrip(".")
    return None


def _pickle_streams(path: Path) -> Iterator[bytes]:
    """The pickle bytes of a checkpoint: `*/data.pkl` inside torch's zip format, else the raw file."""
    import zipfile

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.endswith(".pkl"):
                    yield zf.read(name)
        return
    with open(path, "rb") as f:
        yield f.read()


def _imported_globals(path: Path) -> list[str]:
    """Every `module.name` the pickle would import, found by reading its opcodes (nothing is run).

    Used to name what a refused pickle asks for when torch's unpickler stopped on something else first
    (an opcode it does not support, such as protocol 4 framing).
    """
    import pickletools

    found: list[str] = []
    for data in _pickle_streams(path):
        strings: list[str] = []
        try:
            for op, arg, _pos in pickletools.genops(data):
                if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                    found.append(arg.replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str) and ("UNICODE" in op.name or op.name.endswith("STRING")):
                    strings.append(arg)
        except (ValueError, EOFError, UnicodeDecodeError):
            continue  # genops stops at garbage; what was seen so far counts
    return found


def _disallowed_globals(path: Path) -> list[str]:
    """Imports in the pickle that are neither torch's own tensor machinery nor on our allowlist."""
    allowed = {name for _obj, name in _allowed_globals()}
    out: list[str] = []
    for name in _imported_globals(path):
        if name not in allowed and not name.startswith("torch.") and name not in out:
            out.append(name)
    return out


def _looks_like_lfs_pointer(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(40).startswith(b"version https://git-lfs")
    except OSError:
        return False


def read_pickle(path: Path, allow_unsafe: bool = False) -> Any:
    """Unpickle a torch file through the weights-only unpickler (the allowlist above); raises
    UnsafeCheckpointError / CheckpointReadError."""
    try:
        if allow_unsafe:
            log.warning("loading %s with the full unpickler (--disable-safe-unpickle)", path.name)
            return _load_unrestricted(path)
        return _load_weights_only(path)
    except pickle.UnpicklingError as e:
        reason = _refusal_reason(e)
        if reason is None:
            with contextlib.suppress(OSError, ValueError):
                unsafe = _disallowed_globals(path)
                if unsafe:
                    reason = "it imports " + ", ".join(unsafe[:5])
        if reason is not None:
            raise UnsafeCheckpointError(
                f"{path} was refused: its pickle asks for code outside the allowlist of plain checkpoint "
                f"contents ({reason}). It was not run. If you trust the file, convert it to .safetensors "
                "or start with --disable-safe-unpickle."
            ) from e
        raise CheckpointReadError(_unreadable_message(path, e)) from e
    except Exception as e:
        # A damaged file can trip the unpickler in many ways (IndexError, KeyError, EOFError, ...);
        # all mean the same to the caller: not a readable checkpoint.
        raise CheckpointReadError(_unreadable_message(path, e)) from e


def _unreadable_message(path: Path, error: BaseException) -> str:
    if _looks_like_lfs_pointer(path):
        return f"{path} is a Git LFS pointer, not the model itself: download the real file"
    if isinstance(error, EOFError):
        return f"{path} could not be read as a checkpoint: the file is empty or truncated"
    return f"{path} could not be read as a checkpoint: {_first_line(error)}"


def read_state_dict(path: str | Path, *, allow_unsafe: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors (unwrapping a `state_dict` entry). Raises CheckpointReadError.

    `allow_unsafe` (--disable-safe-unpickle) uses the full unpickler for pickled formats; it does
    nothing for .safetensors, which cannot carry code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointReadError(f"checkpoint file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            if _looks_like_lfs_pointer(path):
                raise CheckpointReadError(f"{path} is a Git LFS pointer, not the model itself") from e
            raise CheckpointReadError(f"{path} is not a readable safetensors file: {_first_line(e)}") from e
    elif suffix in PICKLE_SUFFIXES:
        sd = read_pickle(path, allow_unsafe)
    else:
        raise CheckpointReadError(f"{path}: unsupported checkpoint format {suffix!r}")

    while isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise CheckpointReadError(f"{path} does not hold a state dict")
    tensors = {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointReadError(f"{path} holds no tensors")
    return tensors


_MAX_HEADER = 100 * 1024 * 1024


def read_safetensors_header(path: str | Path) -> tuple[dict[str, tuple[list[int], str]], dict[str, str]]:
    """Tensor names with (shape, dtype), and the `__metadata__` dict, read from the header alone."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise CheckpointReadError(f"{path} is too short to be a safetensors file")
            (n,) = struct.unpack("<Q", raw)
            if n > _MAX_HEADER:
                raise CheckpointReadError(f"{path} is not a safetensors file (implausible header size)")
            data = f.read(n)
            if len(data) != n:
                raise CheckpointReadError(f"{path} is truncated: its safetensors header is incomplete")
            header = json.loads(data)
    except FileNotFoundError as e:
        raise CheckpointReadError(f"checkpoint file not found: {path}") from e
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointReadError(f"{path} is not a readable safetensors file: {_first_line(e)}") from e
    if not isinstance(header, dict):
        raise CheckpointReadError(f"{path} is not a safetensors file (its header is not a JSON object)")
    meta = header.pop("__metadata__", None) or {}
    try:
        shapes = {k: (list(v["shape"]), str(v["dtype"])) for k, v in header.items()}
    except (KeyError, TypeError) as e:
        raise CheckpointReadError(f"{path} has a malformed safetensors header") from e
    return shapes, meta


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
