"""A1111-compatible hashes and the persistent, thread-safe hash cache."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from modules import hashes
from modules.hashes import HashCache


def write_bytes(path: Path, size: int, seed: int = 0) -> bytes:
    data = bytes((i * 7 + seed) % 251 for i in range(size))
    path.write_bytes(data)
    return data


def test_sha256_is_full_file_hash(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    data = write_bytes(path, 3 * hashes.BLOCK_SIZE + 123)
    assert hashes.calculate_sha256(path) == hashlib.sha256(data).hexdigest()


def test_old_model_hash_reads_64k_at_1mib(tmp_path: Path) -> None:
    path = tmp_path / "m.ckpt"
    data = write_bytes(path, 0x100000 + 0x20000)
    assert hashes.old_model_hash(path) == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert hashes.old_model_hash(tmp_path / "missing.ckpt") == "NOFILE"


def test_addnet_hash_skips_header(tmp_path: Path) -> None:
    tensors = {"lora_unet_down.lora_down.weight": torch.arange(16.0).reshape(4, 4)}
    a = tmp_path / "a.safetensors"
    b = tmp_path / "b.safetensors"
    save_file(tensors, a, metadata={"ss_output_name": "a"})
    save_file(tensors, b, metadata={"ss_output_name": "a much longer name that changes the header"})
    assert hashes.calculate_sha256(a) != hashes.calculate_sha256(b)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        ha, hb = hashes.addnet_hash_safetensors(fa), hashes.addnet_hash_safetensors(fb)
    assert ha == hb
    raw = a.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert ha == hashlib.sha256(raw[8 + n:]).hexdigest()


def test_cache_roundtrip_and_survives_a_new_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model.safetensors"
    data = write_bytes(model, 2 * hashes.BLOCK_SIZE + 17)
    expected = hashlib.sha256(data).hexdigest()
    cache_file = tmp_path / "cache" / "hashes.json"

    first = HashCache(cache_file)
    assert first.get(model, "checkpoint/model.safetensors") is None
    assert first.sha256(model, "checkpoint/model.safetensors") == expected
    stored = json.loads(cache_file.read_text())
    entry = stored["hashes"]["checkpoint/model.safetensors"]
    assert entry["sha256"] == expected and entry["path"] == str(model.absolute())

    # A restart: a fresh instance over the same file must not read the model again.
    def no_reads(*args: object, **kwargs: object) -> str:
        raise AssertionError("the model file was hashed again")

    monkeypatch.setattr(hashes, "calculate_sha256", no_reads)
    second = HashCache(cache_file)
    assert second.get(model, "checkpoint/model.safetensors") == expected
    assert second.sha256(model, "checkpoint/model.safetensors") == expected


def test_cache_entry_invalid_after_file_changes(tmp_path: Path) -> None:
    model = tmp_path / "m.ckpt"
    write_bytes(model, 1000)
    cache = HashCache(tmp_path / "hashes.json")
    first = cache.sha256(model, "checkpoint/m.ckpt")
    data = write_bytes(model, 1001, seed=3)
    st = model.stat()
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert cache.get(model, "checkpoint/m.ckpt") is None
    second = cache.sha256(model, "checkpoint/m.ckpt")
    assert second == hashlib.sha256(data).hexdigest() != first


def test_cache_entry_is_tied_to_the_path(tmp_path: Path) -> None:
    a = tmp_path / "a" / "m.ckpt"
    b = tmp_path / "b" / "m.ckpt"
    a.parent.mkdir()
    b.parent.mkdir()
    write_bytes(a, 500)
    cache = HashCache(tmp_path / "hashes.json")
    cache.sha256(a, "checkpoint/m.ckpt")
    write_bytes(b, 500, seed=9)
    os.utime(b, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns))
    assert cache.get(b, "checkpoint/m.ckpt") is None


def test_addnet_and_full_hashes_are_cached_separately(tmp_path: Path) -> None:
    path = tmp_path / "lora.safetensors"
    save_file({"w": torch.ones(8)}, path, metadata={"k": "v"})
    cache = HashCache(tmp_path / "hashes.json")
    full = cache.sha256(path, "lora/lora")
    addnet = cache.sha256(path, "lora/lora", addnet=True)
    assert full != addnet
    assert HashCache(tmp_path / "hashes.json").get(path, "lora/lora", addnet=True) == addnet


def test_concurrent_requests_hash_once_and_keep_every_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = []
    for i in range(6):
        f = tmp_path / f"m{i}.pt"
        write_bytes(f, 2000 + i, seed=i)
        files.append(f)
    calls: list[str] = []
    real = hashes.calculate_sha256
    gate = threading.Barrier(12)

    def counting(filename: object) -> str:
        calls.append(str(filename))
        return real(filename)  # type: ignore[arg-type]

    monkeypatch.setattr(hashes, "calculate_sha256", counting)
    cache = HashCache(tmp_path / "hashes.json")
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            gate.wait()
            f = files[n % 6]
            results[n] = cache.sha256(f, f"checkpoint/{f.name}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(calls) == 6, calls
    for n, value in results.items():
        assert value == hashlib.sha256(files[n % 6].read_bytes()).hexdigest()
    stored = json.loads((tmp_path / "hashes.json").read_text())["hashes"]
    assert set(stored) == {f"checkpoint/{f.name}" for f in files}


def test_two_instances_writing_merge_instead_of_overwriting(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    write_bytes(a, 100)
    write_bytes(b, 200)
    cache_file = tmp_path / "hashes.json"
    one, two = HashCache(cache_file), HashCache(cache_file)
    one.get(a, "x")  # both have read the (empty) file before either writes
    two.get(b, "y")
    one.sha256(a, "checkpoint/a.pt")
    two.sha256(b, "checkpoint/b.pt")
    third = HashCache(cache_file)
    assert third.get(a, "checkpoint/a.pt") and third.get(b, "checkpoint/b.pt")


def test_corrupt_cache_file_is_replaced(tmp_path: Path) -> None:
    cache_file = tmp_path / "hashes.json"
    cache_file.write_text("{not json")
    model = tmp_path / "m.pt"
    write_bytes(model, 10)
    cache = HashCache(cache_file)
    assert cache.sha256(model, "checkpoint/m.pt") == hashlib.sha256(model.read_bytes()).hexdigest()
    assert json.loads(cache_file.read_text())["hashes"]


def test_diffusers_folder_hash_is_stable_and_content_based(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"abc" * 1000)
    first = hashes.calculate_sha256(folder)
    assert first == hashes.calculate_sha256(folder)
    cache = HashCache(tmp_path / "hashes.json")
    assert cache.sha256(folder, "checkpoint/model") == first
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"abd" * 1000)
    assert hashes.calculate_sha256(folder) != first


def test_module_functions_use_the_data_roots_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modules import shared
    from modules.paths import Paths

    monkeypatch.setattr(shared, "paths", Paths.from_args(_args(tmp_path)))
    model = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(4)}, model)
    assert hashes.sha256_from_cache(model, "checkpoint/m.safetensors") is None
    value = hashes.sha256(model, "checkpoint/m.safetensors")
    assert hashes.sha256_from_cache(model, "checkpoint/m.safetensors") == value
    assert (tmp_path / "cache" / "hashes.json").is_file()


def _args(data_dir: Path):  # type: ignore[no-untyped-def]
    from modules import cmd_args

    args = cmd_args.defaults()
    args.data_dir = str(data_dir)
    return args
