"""Scanning the model folders and A1111's checkpoint naming."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from modules import hashes
from modules.hashes import HashCache
from modules.model_manager.registry import (
    CheckpointInfo,
    ModelRegistry,
    is_diffusers_folder,
    scan_checkpoints,
    scan_vaes,
)


def st(path: Path, seed: int = 0, metadata: dict[str, str] | None = None, n: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    save_file({"w": torch.randn(n, generator=g)}, path, metadata=metadata)
    return path


def pt(path: Path, seed: int = 0, n: int = 16) -> Path:
    """A pickled checkpoint; n > 300k makes it bigger than 1 MiB, so its old hash is its own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    torch.save({"state_dict": {"w": torch.randn(n, generator=g)}}, path)
    return path


def config_folder(path: Path) -> Path:
    (path / "unet").mkdir(parents=True, exist_ok=True)
    (path / "model_index.json").write_text("{}")
    (path / "unet" / "config.json").write_text("{}")
    return path


def diffusers_folder(path: Path) -> Path:
    config_folder(path)
    st(path / "unet" / "diffusion_pytorch_model.safetensors", seed=7)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    models = tmp_path / "models"
    sd = models / "Stable-diffusion"
    st(sd / "a.safetensors", 1, metadata={"ss_note": "hello", "modelspec.title": "A", "nested": '{"k": [1, 2]}'},
       n=300_000)
    pt(sd / "sub" / "b.ckpt", 2, n=300_000)
    pt(sd / "Upper.pt", 3)
    st(sd / "foo.safetensors", 4)
    config_folder(sd / "foo.config")
    st(sd / "foo.config" / "stray.safetensors", 5)  # nothing inside a config folder is a model
    st(sd / "foo.vae.safetensors", 6)
    diffusers_folder(sd / "diff-model")
    st(sd / ".hidden" / "x.safetensors", 8)
    (sd / "notes.txt").write_text("not a model")
    st(models / "VAE" / "v1.safetensors", 9)
    pt(models / "VAE" / "sub" / "v2.pt", 10)
    st(models / "Lora" / "l1.safetensors", 11)
    pt(models / "Lora" / "x" / "l2.pt", 12)
    (models / "Lora" / "readme.md").write_text("x")
    emb = tmp_path / "embeddings"
    pt(emb / "e1.pt", 13)
    pt(emb / "e2.bin", 14)
    st(emb / "e3.safetensors", 15)
    (emb / "e.txt").write_text("x")
    extra = tmp_path / "extra-ckpts"
    st(extra / "c.safetensors", 16)
    outside = st(tmp_path / "elsewhere" / "d.safetensors", 17)
    return {"root": tmp_path, "models": models, "sd": sd, "extra": extra, "outside": outside, "emb": emb}


def make_registry(tree: dict[str, Path], cache: HashCache | None = None) -> ModelRegistry:
    reg = ModelRegistry(
        ckpt_dirs=(tree["sd"], tree["extra"]),
        vae_dirs=(tree["models"] / "VAE",),
        lora_dir=tree["models"] / "Lora",
        embeddings_dir=tree["emb"],
        hash_cache=cache or HashCache(tree["root"] / "cache" / "hashes.json"),
        extra_checkpoints=(tree["outside"],),
    )
    reg.refresh()
    return reg


def test_scan_lists_checkpoints_sorted_case_insensitively(tree: dict[str, Path]) -> None:
    reg = make_registry(tree)
    names = [i.name for i in reg.checkpoints]
    assert names == ["a.safetensors", "c.safetensors", "d.safetensors", "diff-model", "foo.safetensors",
                     "sub/b.ckpt", "Upper.pt"]
    by_name = {i.name: i for i in reg.checkpoints}
    assert by_name["diff-model"].is_diffusers
    assert by_name["c.safetensors"].filename == str(tree["extra"] / "c.safetensors")
    assert by_name["d.safetensors"].filename == str(tree["outside"])


def test_vaes_loras_embeddings(tree: dict[str, Path]) -> None:
    reg = make_registry(tree)
    assert [v.name for v in reg.vaes] == ["foo.vae.safetensors", "v1.safetensors", "v2.pt"]
    assert reg.vaes[0].stem == "foo"
    assert [p.name for p in reg.loras] == ["l1.safetensors", "l2.pt"]
    assert [p.name for p in reg.embeddings] == ["e1.pt", "e2.bin", "e3.safetensors"]


def test_checkpoint_info_names(tree: dict[str, Path]) -> None:
    reg = make_registry(tree)
    info = next(i for i in reg.checkpoints if i.name == "sub/b.ckpt")
    assert info.filename == str(tree["sd"] / "sub" / "b.ckpt")
    assert info.name_for_extra == "b"
    assert info.model_name == "sub_b"
    assert info.sha256 is None and info.shorthash is None
    assert info.title == "sub/b.ckpt" and info.short_title == "b"
    assert not info.is_safetensors
    data = Path(info.filename).read_bytes()
    assert info.hash == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert set(info.ids) >= {info.hash, "sub_b", "sub/b.ckpt", "b", f"sub/b.ckpt [{info.hash}]"}


def test_metadata_and_config_override(tree: dict[str, Path]) -> None:
    reg = make_registry(tree)
    by_name = {i.name: i for i in reg.checkpoints}
    a = by_name["a.safetensors"]
    assert a.is_safetensors
    assert a.metadata["ss_note"] == "hello" and a.metadata["nested"] == {"k": [1, 2]}
    assert by_name["foo.safetensors"].config_dir_override == tree["sd"] / "foo.config"
    assert a.config_dir_override is None


def test_listing_never_computes_sha256(tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object) -> str:
        raise AssertionError("full hash computed while listing")

    monkeypatch.setattr(hashes, "calculate_sha256", forbidden)
    reg = make_registry(tree)
    assert all(i.sha256 is None for i in reg.checkpoints)


def test_calculate_shorthash_updates_title_and_cache(tree: dict[str, Path]) -> None:
    cache = HashCache(tree["root"] / "cache" / "hashes.json")
    reg = make_registry(tree, cache)
    info = next(i for i in reg.checkpoints if i.name == "a.safetensors")
    full = hashlib.sha256(Path(info.filename).read_bytes()).hexdigest()
    assert info.calculate_shorthash() == full[:10]
    assert info.sha256 == full
    assert info.title == f"a.safetensors [{full[:10]}]"
    assert info.short_title == f"a [{full[:10]}]"
    assert {full[:10], full, f"a.safetensors [{full[:10]}]", f"a [{full[:10]}]"} <= set(info.ids)

    # A fresh scan (a restart) takes the hash from the cache.
    again = make_registry(tree, HashCache(cache.path))
    info2 = next(i for i in again.checkpoints if i.name == "a.safetensors")
    assert info2.sha256 == full and info2.title == info.title


def test_no_hashing_uses_only_the_cache(tree: dict[str, Path]) -> None:
    cache = HashCache(tree["root"] / "hashes.json")
    info = CheckpointInfo(tree["sd"] / "a.safetensors", tree["sd"], hash_cache=cache, no_hashing=True)
    assert info.calculate_shorthash() is None
    assert info.title == "a.safetensors"


def test_find_checkpoint_by_every_alias(tree: dict[str, Path]) -> None:
    reg = make_registry(tree)
    b = next(i for i in reg.checkpoints if i.name == "sub/b.ckpt")
    b.calculate_shorthash()
    assert b.sha256 is not None
    for query in [b.title, "sub/b.ckpt", "b", "sub_b", b.shorthash, b.sha256, b.hash, f"sub/b.ckpt [{b.hash}]",
                  f"b [{b.shorthash}]", b.filename, b.sha256[:16]]:
        assert reg.find_checkpoint(query) is b, query
    # A stale hash in brackets still finds the file by name; the hash of another file wins over a name.
    assert reg.find_checkpoint("sub/b.ckpt [0123456789]") is b
    a = next(i for i in reg.checkpoints if i.name == "a.safetensors")
    assert reg.find_checkpoint(f"whatever.safetensors [{a.hash}]") is a
    # Closest match: the shortest title containing the text, then case-insensitively.
    assert reg.find_checkpoint("ub/b") is b
    assert reg.find_checkpoint("UPPER") is next(i for i in reg.checkpoints if i.name == "Upper.pt")
    assert reg.find_checkpoint("nothing-like-this") is None
    assert reg.find_checkpoint("") is None


def test_refresh_keeps_info_objects_and_picks_up_changes(tree: dict[str, Path]) -> None:
    reg = make_registry(tree)
    a = next(i for i in reg.checkpoints if i.name == "a.safetensors")
    a.calculate_shorthash()
    st(tree["sd"] / "new.safetensors", 20)
    (tree["sd"] / "Upper.pt").unlink()
    reg.refresh()
    names = [i.name for i in reg.checkpoints]
    assert "new.safetensors" in names and "Upper.pt" not in names
    assert next(i for i in reg.checkpoints if i.name == "a.safetensors") is a
    assert a.shorthash is not None


def test_vae_near_checkpoint_prefers_exact_stem(tree: dict[str, Path]) -> None:
    st(tree["models"] / "VAE" / "foo-old.safetensors", 30)
    reg = make_registry(tree)
    near = reg.vaes_near_checkpoint(tree["sd"] / "foo.safetensors")
    assert [v.name for v in near] == ["foo.vae.safetensors", "foo-old.safetensors"]
    assert reg.vaes_near_checkpoint(tree["sd"] / "a.safetensors") == []
    assert reg.find_vae("v2.pt").filename == str(tree["models"] / "VAE" / "sub" / "v2.pt")
    assert reg.find_vae("v2") is not None
    assert reg.find_vae("nope") is None


def test_duplicate_vae_names_keep_the_first(tree: dict[str, Path], tmp_path: Path) -> None:
    st(tree["models"] / "VAE" / "other" / "v1.safetensors", 40)
    vaes = scan_vaes([tree["models"] / "VAE"], [tree["sd"]])
    assert [v.name for v in vaes].count("v1.safetensors") == 1


def test_diffusers_folder_rules(tmp_path: Path) -> None:
    assert not is_diffusers_folder(config_folder(tmp_path / "x.config"))
    assert not is_diffusers_folder(config_folder(tmp_path / "weightless"))
    assert is_diffusers_folder(diffusers_folder(tmp_path / "real"))
    # Inside a diffusers folder nothing is listed as a checkpoint of its own.
    infos = scan_checkpoints([tmp_path])
    assert [i.name for i in infos] == ["real"]
    assert infos[0].name_for_extra == "real" and infos[0].model_name == "real"


def test_user_metadata_json(tree: dict[str, Path]) -> None:
    (tree["sd"] / "a.json").write_text(json.dumps({"vae": "v1.safetensors", "description": "x"}))
    reg = make_registry(tree)
    a = next(i for i in reg.checkpoints if i.name == "a.safetensors")
    assert a.user_metadata()["vae"] == "v1.safetensors"


def test_checkpoint_symlink_loop_does_not_hang(tmp_path: Path) -> None:
    root = tmp_path / "sd"
    st(root / "m.safetensors")
    (root / "loop").symlink_to(root, target_is_directory=True)
    infos = scan_checkpoints([root])
    assert [i.name for i in infos] == ["m.safetensors"]


def test_exact_name_wins_over_another_files_stem(tmp_path: Path) -> None:
    root = tmp_path / "sd"
    st(root / "a" / "foo.safetensors", 1)  # stem "foo"
    st(root / "foo", 2)  # no model extension: not listed
    st(root / "foo.safetensors", 3)
    reg = ModelRegistry(ckpt_dirs=(root,), vae_dirs=(), lora_dir=tmp_path / "l", embeddings_dir=tmp_path / "e",
                        hash_cache=HashCache(tmp_path / "h.json"))
    reg.refresh()
    assert [i.name for i in reg.checkpoints] == ["a/foo.safetensors", "foo.safetensors"]
    assert reg.find_checkpoint("foo.safetensors").name == "foo.safetensors"  # type: ignore[union-attr]
    assert reg.find_checkpoint("a/foo.safetensors").name == "a/foo.safetensors"  # type: ignore[union-attr]
    assert reg.find_checkpoint("foo").name == "a/foo.safetensors"  # type: ignore[union-attr]  # first stem


def test_refresh_forgets_the_hash_of_a_replaced_file(tree: dict[str, Path]) -> None:
    import os

    reg = make_registry(tree)
    a = next(i for i in reg.checkpoints if i.name == "a.safetensors")
    old_short = a.calculate_shorthash()
    path = Path(a.filename)
    st(path, 99, n=300_001)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    reg.refresh()
    fresh = next(i for i in reg.checkpoints if i.name == "a.safetensors")
    assert fresh is not a and fresh.sha256 is None and fresh.title == "a.safetensors"
    assert fresh.calculate_shorthash() != old_short
