"""Textual-inversion embeddings: file formats, compatibility, how prompts resolve them, and the
TI hashes infotext."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from tiny_models import load_tiny_model

from modules import cmd_args, shared, textual_inversion
from modules.engine import conditioning
from modules.processing import StableDiffusionProcessingTxt2Img, process_images
from modules.textual_inversion import EmbeddingDatabase, EmbeddingFormatError, attach, embedding_from_data


def token_vectors(encoder, tokenizer, text: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The input embeddings the encoder gives the tokens of `text`."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return encoder.get_input_embeddings().weight[ids].detach().clone()


def write_a1111_pt(path: Path, vectors: torch.Tensor, **extra) -> Path:  # type: ignore[no-untyped-def]
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"string_to_token": {"*": 265}, "string_to_param": {"*": torch.nn.Parameter(vectors.clone())},
            "name": path.stem, "step": 1500, "sd_checkpoint": "abcdef12", "sd_checkpoint_name": "tiny-sd1", **extra}
    torch.save(data, path)
    return path


def write_diffusers_bin(path: Path, vectors: torch.Tensor) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({f"<{path.stem}>": vectors.clone()}, path)
    return path


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


@pytest.fixture
def sd1(tiny_models_dir: Path):  # type: ignore[no-untyped-def]
    return load_tiny_model(tiny_models_dir / "Stable-diffusion" / "tiny-sd1.safetensors")


@pytest.fixture
def sdxl(tiny_models_dir: Path):  # type: ignore[no-untyped-def]
    return load_tiny_model(tiny_models_dir / "Stable-diffusion" / "tiny-sdxl.safetensors")


def test_file_formats_and_api_shape(tmp_path: Path, sd1) -> None:  # type: ignore[no-untyped-def]
    vec = torch.randn(3, 32)
    write_a1111_pt(tmp_path / "a1111.pt", vec)
    write_diffusers_bin(tmp_path / "concept.bin", torch.randn(32))
    write_safetensors(tmp_path / "params.safetensors", {"emb_params": torch.randn(2, 32)})
    write_safetensors(tmp_path / "xlpair.safetensors", {"clip_l": torch.randn(2, 32), "clip_g": torch.randn(2, 64)})
    write_safetensors(tmp_path / "wide.safetensors", {"emb_params": torch.randn(1, 768)})
    (tmp_path / "broken.pt").write_bytes(b"not a pickle")
    db = EmbeddingDatabase((tmp_path,))
    vocab = attach(sd1, db)
    assert set(vocab.embeddings) == {"a1111", "concept", "params"}
    api = db.api_dict()
    assert api["loaded"]["a1111"] == {"step": 1500, "sd_checkpoint": "abcdef12", "sd_checkpoint_name": "tiny-sd1",
                                      "shape": 32, "vectors": 3}
    assert api["loaded"]["concept"] == {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                        "shape": 32, "vectors": 1}
    assert set(api["skipped"]) == {"xlpair", "wide"}
    assert api["skipped"]["xlpair"]["shape"] == 96 and api["skipped"]["xlpair"]["vectors"] == 2
    assert "broken.pt" in db.failed
    assert torch.equal(db.loaded["a1111"].vec, vec)
    with pytest.raises(EmbeddingFormatError):
        embedding_from_data({"a": torch.zeros(3), "b": torch.zeros(3)}, "two")


def test_embedding_encodes_exactly_like_the_words_it_copies(tmp_path: Path, sd1) -> None:  # type: ignore[no-untyped-def]
    # An embedding whose vectors are the token embeddings of "red dog" must encode like "red dog":
    # same positions, same causal mask, same pooled/EOS handling.
    write_a1111_pt(tmp_path / "mydog.pt", token_vectors(sd1.text_encoder, sd1.tokenizer, "red dog"))
    attach(sd1, EmbeddingDatabase((tmp_path,)))
    enc = conditioning.PromptEncoder(sd1)
    chunk = enc.chunks("a photo of mydog, sitting")[0]
    assert len(chunk.tokens) == len(enc.tokenize("a photo of red dog, sitting"))
    assert [offset for offset, _ in chunk.fixes] == [3]
    got = enc.encode_one("a photo of mydog, sitting").embeds
    sd1.extra.pop("embeddings")
    want = conditioning.PromptEncoder(sd1).encode_one("a photo of red dog, sitting").embeds
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not sd1.text_encoder.get_input_embeddings()._forward_hooks  # nothing left on the model


def test_vectors_change_the_output_and_the_cache_follows_the_folder(tmp_path: Path, sd1) -> None:  # type: ignore[no-untyped-def]
    enc = conditioning.PromptEncoder(sd1)
    plain = enc.encode_one("a zzemb cat").embeds.clone()
    db = EmbeddingDatabase((tmp_path,))
    write_safetensors(tmp_path / "zzemb.safetensors", {"emb_params": torch.randn(2, 32) * 3})
    attach(sd1, db)
    first = enc.encode_one("a zzemb cat").embeds.clone()
    assert first.shape == plain.shape and not torch.allclose(first, plain)
    write_safetensors(tmp_path / "zzemb.safetensors", {"emb_params": torch.randn(2, 32) * 3 + 1})
    import os
    st = (tmp_path / "zzemb.safetensors").stat()
    os.utime(tmp_path / "zzemb.safetensors", ns=(st.st_mtime_ns + 10**9, st.st_mtime_ns + 10**9))
    attach(sd1, db)
    assert not torch.allclose(enc.encode_one("a zzemb cat").embeds, first)


def test_multi_vector_embeddings_are_never_split_across_chunks(tmp_path: Path, sd1) -> None:  # type: ignore[no-untyped-def]
    write_safetensors(tmp_path / "longemb.safetensors", {"emb_params": torch.randn(8, 32)})
    write_safetensors(tmp_path / "long.safetensors", {"emb_params": torch.randn(1, 32)})
    attach(sd1, EmbeddingDatabase((tmp_path,)))
    enc = conditioning.PromptEncoder(sd1, comma_padding_backtrack=0)
    filler = " ".join(["cat"] * 70)
    chunks = enc.chunks(f"{filler} longemb dog")
    # 70 + 8 does not fit in 75: the first chunk is closed at 70 and the embedding starts the next
    assert len(chunks[0].tokens) == 70 and chunks[0].fixes == []
    assert chunks[1].fixes[0][0] == 0 and chunks[1].fixes[0][1].name == "longemb"
    assert len(chunks[1].tokens) == 9
    assert enc.token_count(f"{filler} longemb dog") == (75 + 9, 150)
    # the longest name wins: "longemb" is not read as "long" + "emb"
    assert [e.name for _, e in enc.chunks("longemb")[0].fixes] == ["longemb"]
    assert enc.encode_one(f"{filler} longemb dog").embeds.shape[1] == 154


def test_sdxl_pair_feeds_each_encoder_its_own_vectors(tmp_path: Path, sdxl) -> None:  # type: ignore[no-untyped-def]
    pair = {"clip_l": token_vectors(sdxl.text_encoder, sdxl.tokenizer, "dog"),
            "clip_g": token_vectors(sdxl.text_encoder_2, sdxl.tokenizer, "dog")}
    write_safetensors(tmp_path / "xldog.safetensors", pair)
    write_safetensors(tmp_path / "sd1only.safetensors", {"emb_params": torch.randn(1, 32)})
    db = EmbeddingDatabase((tmp_path,))
    attach(sdxl, db)
    assert set(db.loaded) == {"xldog"} and set(db.skipped) == {"sd1only"}
    got = conditioning.PromptEncoder(sdxl).encode_one("a xldog running")
    sdxl.extra.pop("embeddings")
    want = conditioning.PromptEncoder(sdxl).encode_one("a dog running")
    torch.testing.assert_close(got.embeds, want.embeds, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.pooled, want.pooled, rtol=1e-5, atol=1e-5)


def test_ti_hashes_in_infotext(tmp_path: Path, tiny_models_dir: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    args = cmd_args.build_parser().parse_args(["--data-dir", str(tmp_path / "data"), "--models-dir", str(models)])
    shared.initialize(args)
    try:
        shared.opts.sd_model_checkpoint = "tiny-sd1.safetensors"
        shared.opts.live_previews_enable = False
        emb_dir = tmp_path / "data" / "embeddings"
        pos = write_safetensors(emb_dir / "goodstyle.safetensors", {"emb_params": torch.randn(2, 32) * 2})
        neg = write_a1111_pt(emb_dir / "badhands.pt", torch.randn(1, 32) * 2)
        write_safetensors(emb_dir / "unused.safetensors", {"emb_params": torch.randn(1, 32)})

        def run(prompt: str, negative: str):  # type: ignore[no-untyped-def]
            return process_images(StableDiffusionProcessingTxt2Img(
                prompt=prompt, negative_prompt=negative, seed=2, steps=2, width=64, height=64,
                sampler_name="Euler", do_not_save_samples=True, do_not_save_grid=True))

        res = run("a (goodstyle:1.1) cat", "badhands")
        h1 = hashlib.sha256(pos.read_bytes()).hexdigest()[:12]
        h2 = hashlib.sha256(neg.read_bytes()).hexdigest()[:12]
        assert f'TI hashes: "goodstyle: {h1}, badhands: {h2}"' in res.infotexts[0]
        plain = run("a (cat:1.1) cat", "")
        assert "TI hashes" not in plain.infotexts[0]
        assert np.abs(np.asarray(res.images[0], dtype=np.int16) - np.asarray(plain.images[0], dtype=np.int16)).max() > 0
        listed = textual_inversion.list_embeddings()
        assert set(listed["loaded"]) == {"goodstyle", "badhands", "unused"} and listed["skipped"] == {}
    finally:
        shared.model_manager.close()
