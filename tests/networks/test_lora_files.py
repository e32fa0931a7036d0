"""LoRA files: listing, names and aliases, addnet hashes, the parse cache, and infotext pasting."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from lora_factory import save_lora

from modules import cmd_args, hashes, networks, shared
from modules.networks.lora_files import LoraRegistry, read_network


def small_lora(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    return {f"{name}.lora_down.weight": torch.randn(2, 32, generator=gen),
            f"{name}.lora_up.weight": torch.randn(32, 2, generator=gen),
            f"{name}.alpha": torch.tensor(2.0)}


def body_sha256(path: Path) -> str:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + n:]).hexdigest()


@pytest.fixture
def instance(tmp_path: Path):  # type: ignore[no-untyped-def]
    args = cmd_args.build_parser().parse_args(["--data-dir", str(tmp_path), "--models-dir", str(tmp_path / "models")])
    shared.initialize(args)
    yield tmp_path / "models" / "Lora"
    shared.model_manager.close()


def test_listing_names_aliases_metadata(instance: Path) -> None:
    save_lora(instance / "style_v1.safetensors", small_lora(), {"ss_output_name": "Fancy Style", "ss_base_model_version": "sdxl_base_v1-0"})
    save_lora(instance / "sub" / "plain.safetensors", small_lora(1))
    save_lora(instance.parent / "LyCORIS" / "old.safetensors", small_lora(2), {"ss_v2": "True"})
    listed = {e["name"]: e for e in networks.list_loras()}
    assert set(listed) == {"style_v1", "plain", "old"}
    assert listed["style_v1"]["alias"] == "Fancy Style"
    assert listed["style_v1"]["metadata"]["ss_base_model_version"] == "sdxl_base_v1-0"
    assert listed["plain"]["alias"] == "plain" and listed["plain"]["metadata"] == {}
    assert listed["plain"]["path"] == str(instance / "sub" / "plain.safetensors")
    registry = networks.default_registry()
    assert registry.get("Fancy Style").name == "style_v1"
    assert registry.get("style_v1").sd_version == "SDXL" and registry.get("old").sd_version == "SD2"
    assert registry.get("plain").sd_version == "Unknown"
    # a new file shows up after a refresh
    save_lora(instance / "later.safetensors", small_lora(3))
    assert "later" not in {e["name"] for e in networks.list_loras()}
    assert "later" in {e["name"] for e in networks.refresh_loras()}


def test_alias_that_is_another_files_name_is_not_used(tmp_path: Path) -> None:
    save_lora(tmp_path / "a.safetensors", small_lora(), {"ss_output_name": "b"})
    save_lora(tmp_path / "b.safetensors", small_lora(1))
    reg = LoraRegistry([tmp_path])
    assert reg.get("b").filename.endswith("b.safetensors")
    assert reg.forbidden_aliases() == {"b"}


def test_addnet_hash_skips_the_header_and_prefers_trainer_hash(tmp_path: Path) -> None:
    path = save_lora(tmp_path / "x.safetensors", small_lora(), {"note": "one"})
    reg = LoraRegistry([tmp_path], hash_cache=hashes.HashCache(tmp_path / "cache" / "hashes.json"))
    entry = reg.get("x")
    full = reg.hash_of(entry)
    assert full == body_sha256(path)
    # rewriting only the metadata keeps the hash (that is why kohya hashes the body)
    save_lora(tmp_path / "y.safetensors", small_lora(), {"note": "a much longer note than before"})
    reg.refresh()
    assert reg.hash_of(reg.get("y")) == full
    assert reg.find_by_hash(full[:12]).name in ("x", "y")
    save_lora(tmp_path / "z.safetensors", small_lora(5), {"sshs_model_hash": "ab" * 32})
    reg.refresh()
    assert reg.get("z").shorthash == "abababababab"
    assert reg.find_by_hash("ABABABABABAB").name == "z"


def test_parsed_files_are_cached_until_they_change(tmp_path: Path) -> None:
    path = save_lora(tmp_path / "x.safetensors", small_lora())
    entry = LoraRegistry([tmp_path]).get("x")
    first = read_network(entry)
    assert read_network(entry) is first
    assert list(first.modules) == ["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"]
    save_lora(path, small_lora(7))
    os.utime(path, ns=(first.signature[1] + 10**9, first.signature[1] + 10**9))
    second = read_network(entry)
    assert second is not first
    assert not torch.equal(next(iter(second.modules.values()))["lora_down"],
                           next(iter(first.modules.values()))["lora_down"])


def test_pasted_infotext_maps_lora_hashes_to_local_files(instance: Path) -> None:
    path = save_lora(instance / "my_local_copy.safetensors", small_lora(), {"ss_output_name": "Their Name"})
    h = body_sha256(path)[:12]
    assert networks.lora_name_for_hash(h) == "Their Name"
    params = {"Prompt": "a cat <lora:theirname:0.7>, <lora:unknown:1>",
              "Lora hashes": f"theirname: {h}, unknown: 000000000000"}
    networks.infotext_pasted("", params)
    assert params["Prompt"] == "a cat <lora:Their Name:0.7>, <lora:unknown:1>"
    assert networks.parse_lora_hashes(f"a: {h}, b c: 0123456789ab") == {"a": h, "b c": "0123456789ab"}
    assert networks.lora_hashes_value([("x:y", h), ("a,b", "0123456789ab")]) == f"xy: {h}, ab: 0123456789ab"
