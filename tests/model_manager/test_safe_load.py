"""Safe reading of checkpoint files: real-world pickles load, code-carrying pickles are refused."""

from __future__ import annotations

import builtins
import os
import random
import sys
import types
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modules.model_manager.safe_load import (
    CheckpointReadError,
    UnsafeCheckpointError,
    read_safetensors_header,
    read_state_dict,
)

LIGHTNING_MODULE = "pytorch_lightning.callbacks.model_checkpoint"


@contextmanager
def fake_lightning() -> Iterator[type]:
    """Register a throwaway `pytorch_lightning.callbacks.model_checkpoint` so torch.save pickles a
    reference to its ModelCheckpoint class, as original SD checkpoints do; removed afterwards."""
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", LIGHTNING_MODULE]
    saved = {n: sys.modules.get(n) for n in names}
    module = types.ModuleType(LIGHTNING_MODULE)

    class ModelCheckpoint:
        def __init__(self) -> None:
            self.monitor = None
            self.best_model_score = torch.tensor(0.25)
            self.dirpath = "/logs/checkpoints"

    ModelCheckpoint.__module__ = LIGHTNING_MODULE
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint  # type: ignore[attr-defined]
    for n in names[:-1]:
        sys.modules[n] = types.ModuleType(n)
    sys.modules[LIGHTNING_MODULE] = module
    try:
        yield ModelCheckpoint
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def sd_like_state_dict() -> dict[str, torch.Tensor]:
    return {
        "model.diffusion_model.input_blocks.0.0.weight": torch.randn(8, 4, 3, 3),
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.ones(8),
        "first_stage_model.decoder.conv_out.bias": torch.zeros(3),
    }


def write_original_style_ckpt(path: Path, state_dict: dict[str, torch.Tensor], *, legacy: bool = False) -> None:
    with fake_lightning() as model_checkpoint_cls:
        payload = {
            "epoch": 6,
            "global_step": 470000,
            "pytorch-lightning_version": "1.4.2",
            "state_dict": state_dict,
            # Older Lightning keys the callback state by the class itself; newer ones pickle instances.
            "callbacks": {
                model_checkpoint_cls: {
                    "monitor": None,
                    "best_model_score": None,
                    "current_score": np.float64(0.123),
                    "dirpath": "/logs/checkpoints",
                },
                "instance": model_checkpoint_cls(),
            },
            "optimizer_states": [],
            "lr_schedulers": [],
            "numpy_things": {"loss": np.float32(1.5), "step": np.int64(3), "array": np.arange(4, dtype=np.int64)},
        }
        torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    assert "pytorch_lightning" not in sys.modules


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_original_sd_ckpt_with_lightning_callbacks_and_numpy_loads(tmp_path: Path, legacy: bool) -> None:
    expected = sd_like_state_dict()
    path = tmp_path / "sd-v1-4.ckpt"
    write_original_style_ckpt(path, expected, legacy=legacy)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sd = read_state_dict(path)

    assert set(sd) == set(expected)
    for k, v in expected.items():
        assert torch.equal(sd[k], v)
    numpy_warnings = [w for w in caught if "numpy" in str(w.message).lower() or "numpy" in w.filename]
    assert not numpy_warnings, [str(w.message) for w in numpy_warnings]
    assert "pytorch_lightning" not in sys.modules, "loading must not need (or import) Lightning"


def test_plain_pickled_state_dict_and_ordered_dict(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save(OrderedDict(a=torch.arange(3.0), b=torch.ones(2, 2, dtype=torch.float16)), path)
    sd = read_state_dict(path)
    assert torch.equal(sd["a"], torch.arange(3.0)) and sd["b"].dtype == torch.float16


class _SystemCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


class _ExecCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload_cls", [_SystemCall, _ExecCall], ids=["os.system", "builtins.exec"])
def test_malicious_pickle_is_refused_and_not_run(tmp_path: Path, payload_cls: type) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "x": payload_cls(marker)}, path)

    with pytest.raises(UnsafeCheckpointError) as info:
        read_state_dict(path)
    assert str(path) in str(info.value)
    assert "disable-safe-unpickle" in str(info.value)
    assert not marker.exists(), "the payload ran"


class _Benign:
    """Not on the allowlist, but harmless: loads only with allow_unsafe."""

    def __init__(self) -> None:
        self.note = "hello"


def test_allow_unsafe_loads_a_benign_non_allowlisted_pickle(tmp_path: Path) -> None:
    path = tmp_path / "custom.ckpt"
    torch.save({"state_dict": {"w": torch.full((2,), 3.0)}, "extra": _Benign()}, path)
    with pytest.raises(UnsafeCheckpointError):
        read_state_dict(path)
    sd = read_state_dict(path, allow_unsafe=True)
    assert torch.equal(sd["w"], torch.full((2,), 3.0))


def test_missing_corrupt_and_lfs_files_raise_read_errors_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointReadError, match="not found"):
        read_state_dict(tmp_path / "nope.safetensors")

    garbage = tmp_path / "garbage.ckpt"
    for seed in range(8):
        garbage.write_bytes(random.Random(seed).randbytes(4096))
        with pytest.raises(CheckpointReadError) as info:
            read_state_dict(garbage)
        assert not isinstance(info.value, UnsafeCheckpointError)
    with pytest.raises(CheckpointReadError) as info:
        read_state_dict(garbage)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert "garbage.ckpt" in str(info.value)

    lfs = tmp_path / "model.ckpt"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 4265380512\n")
    with pytest.raises(CheckpointReadError, match="Git LFS pointer"):
        read_state_dict(lfs)

    good = tmp_path / "good.safetensors"
    save_file({"w": torch.ones(64)}, good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(CheckpointReadError, match=r"truncated\.safetensors"):
        read_state_dict(truncated)

    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    with pytest.raises(CheckpointReadError, match="unsupported checkpoint format"):
        read_state_dict(notes)


def test_no_tensors_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    torch.save({"epoch": 1}, path)
    with pytest.raises(CheckpointReadError, match="holds no tensors"):
        read_state_dict(path)


def test_safetensors_roundtrip_and_header(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.zeros(2, 3), "b": torch.ones(5, dtype=torch.float16)}, path, metadata={"ss_v2": "True"})
    shapes, meta = read_safetensors_header(path)
    assert shapes == {"a": ([2, 3], "F32"), "b": ([5], "F16")}
    assert meta == {"ss_v2": "True"}
    sd = read_state_dict(path)
    assert sd["a"].shape == (2, 3)


def test_header_of_non_safetensors_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "fake.safetensors"
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointReadError, match=r"fake\.safetensors"):
        read_safetensors_header(path)
    with pytest.raises(CheckpointReadError, match="not found"):
        read_safetensors_header(tmp_path / "missing.safetensors")


def test_concurrent_reads_keep_their_allowlist(tmp_path: Path) -> None:
    import threading

    good = tmp_path / "good.ckpt"
    write_original_style_ckpt(good, sd_like_state_dict())
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"x": _SystemCall(marker)}, evil)
    results: list[object] = []

    def read(path: Path) -> None:
        try:
            results.append(len(read_state_dict(path)))
        except CheckpointReadError as e:
            results.append(type(e))

    threads = [threading.Thread(target=read, args=(good if i % 3 else evil,)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, results)) == sorted(map(str, [3] * 6 + [UnsafeCheckpointError] * 3))
    assert not marker.exists()
