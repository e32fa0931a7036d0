"""Reading checkpoint files into state dicts without running code from them.

`.safetensors` is read with safetensors. `.ckpt` / `.pt` / `.bin` pickles go through torch's
weights-only unpickler, extended only by the few harmless globals real SD checkpoints carry
(PyTorch Lightning's callback records, numpy scalars, `collections.OrderedDict`). A pickle that
would call anything else is refused with `UnsafeCheckpointError` naming the file.
"""

from __future__ import annotations

import collections
import json
import logging
import pickle
import struct
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


class CheckpointReadError(ValueError):
    """The file is missing, truncated or not a checkpoint."""


class UnsafeCheckpointError(CheckpointReadError):
    """The pickle asks to import or call something outside the allowlist."""


def _allowlisted_globals() -> list[Any]:
    """Globals that real SD 1.x/2.x checkpoints carry besides tensors."""
    import numpy as np

    allowed: list[Any] = [collections.OrderedDict, np.dtype, np.ndarray, np.core.multiarray._reconstruct
                          if hasattr(np, "core") else None]
    for name in ("float64", "float32", "int64", "int32", "bool_", "uint8"):
        allowed.append(getattr(np, name))
    try:
        allowed.append(np.dtypes.Float64DType)
        allowed.append(np.dtypes.Int64DType)
        allowed.append(np.dtypes.Float32DType)
    except AttributeError:
        pass
    scalar = getattr(getattr(np, "_core", getattr(np, "core", None)), "multiarray", None)
    if scalar is not None and hasattr(scalar, "scalar"):
        allowed.append(scalar.scalar)
    allowed.append(_LightningModelCheckpoint)
    return [a for a in allowed if a is not None]


class _LightningModelCheckpoint:
    """Stand-in for `pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint` records that
    original SD checkpoints pickle into their `callbacks` entry. Only its state is kept."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


_LIGHTNING_NAMES = {
    ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
    ("lightning.pytorch.callbacks.model_checkpoint", "ModelCheckpoint"),
}


def _load_weights_only(path: Path) -> Any:
    from torch.serialization import safe_globals

    allowed = _allowlisted_globals()
    # The Lightning class is looked up by its module path; map those names to our stand-in.
    renames = {f"{m}.{n}": _LightningModelCheckpoint for m, n in _LIGHTNING_NAMES}
    with safe_globals([*allowed, *[(cls, name) for name, cls in renames.items()]]):
        return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(path: str | Path, *, allow_unsafe: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors (unwrapping a `state_dict` entry). Raises CheckpointReadError."""
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
            raise CheckpointReadError(f"{path.name} is not a readable safetensors file: {e}") from e
    elif suffix in PICKLE_SUFFIXES:
        try:
            if allow_unsafe:
                log.warning("loading %s with the full unpickler (--disable-safe-unpickle)", path.name)
                sd = torch.load(path, map_location="cpu", weights_only=False)
            else:
                sd = _load_weights_only(path)
        except pickle.UnpicklingError as e:
            raise UnsafeCheckpointError(
                f"{path.name} was refused: its pickle asks for code outside the allowlist of plain "
                f"checkpoint contents ({_first_line(e)}). If you trust the file, convert it to "
                ".safetensors or start with --disable-safe-unpickle."
            ) from e
        except (OSError, RuntimeError, EOFError, ValueError, AttributeError) as e:
            raise CheckpointReadError(f"{path.name} could not be read as a checkpoint: {_first_line(e)}") from e
    else:
        raise CheckpointReadError(f"{path.name}: unsupported checkpoint format {suffix!r}")

    while isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise CheckpointReadError(f"{path.name} does not hold a state dict")
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointReadError(f"{path.name} holds no tensors")
    return tensors


def read_safetensors_header(path: str | Path) -> tuple[dict[str, tuple[list[int], str]], dict[str, str]]:
    """Tensor names with (shape, dtype), and the `__metadata__` dict, read from the header alone."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise CheckpointReadError(f"{path.name} is too short to be a safetensors file")
            (n,) = struct.unpack("<Q", raw)
            if n > 100 * 1024 * 1024:
                raise CheckpointReadError(f"{path.name} has an implausible safetensors header size")
            header = json.loads(f.read(n))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointReadError(f"{path.name} is not a readable safetensors file: {e}") from e
    meta = header.pop("__metadata__", None) or {}
    shapes = {k: (list(v["shape"]), str(v["dtype"])) for k, v in header.items()}
    return shapes, meta


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
