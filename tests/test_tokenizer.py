"""The bundled CLIP tokenizers: vocabulary, padding per architecture, and the rebuild tool."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import modules  # noqa: F401  (offline environment)
from modules.model_manager.arch import ModelArch
from modules.model_manager.loader import load_tokenizer, tokenizer_dir
from modules.paths import configs_path, script_path

SHARED = configs_path / "_tokenizers"
BOS, EOS = 49406, 49407


def _tool():
    spec = importlib.util.spec_from_file_location("build_clip_tokenizer", script_path / "tools" / "build_clip_tokenizer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_clip_tokenizer_matches_openai_ids() -> None:
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(SHARED / "clip", model_max_length=77, local_files_only=True)
    assert tok("a photo of a cat").input_ids == [BOS, 320, 1125, 539, 320, 2368, EOS]
    assert len(tok) == 49408
    assert tok.bos_token_id == BOS and tok.eos_token_id == EOS
    # Lower-casing and punctuation as CLIP does it: "," is 267, "dog" 1929.
    assert tok("A DOG, a cat").input_ids == [BOS, 320, 1929, 267, 320, 2368, EOS]


@pytest.mark.parametrize("arch", list(ModelArch))
def test_each_architecture_pads_like_its_text_encoder(arch: ModelArch) -> None:
    """SD 1.x and SDXL's CLIP-L pad with <|endoftext|>; OpenCLIP (SD 2.x, SDXL's second) with id 0."""
    tok = load_tokenizer(tokenizer_dir(arch.config_dir, "tokenizer"))
    ids = tok("a cat", padding="max_length", max_length=tok.model_max_length).input_ids
    expected_pad = 0 if arch.family == "sd2" else EOS
    assert tok.model_max_length == 77
    assert len(ids) == 77
    assert ids[:4] == [BOS, 320, 2368, EOS]
    assert set(ids[4:]) == {expected_pad}
    if arch.family == "sdxl":
        tok2 = load_tokenizer(tokenizer_dir(arch.config_dir, "tokenizer_2"))
        ids2 = tok2("a cat", padding="max_length", max_length=77).input_ids
        assert ids2[:4] == [BOS, 320, 2368, EOS]
        assert set(ids2[4:]) == {0}


def test_openclip_padding_does_not_swallow_exclamation_marks() -> None:
    """OpenCLIP pads with id 0 ("!"), yet "!" typed in a prompt stays ordinary text: "! !! !!!" is
    [256, 748, 995] as open_clip's own tokenizer (and A1111) produce, not three pad tokens."""
    tok = load_tokenizer(tokenizer_dir(ModelArch.SD2.config_dir))
    assert tok.pad_token_id == 0
    assert tok("! !! !!!").input_ids == [BOS, 256, 748, 995, EOS]


def test_tokenizer_files_exist_once() -> None:
    """The 1.4 MB vocabulary is shared by the architectures, not copied into each folder."""
    assert sorted(p.name for p in (SHARED / "clip").iterdir()) == [
        "merges.txt",
        "special_tokens_map.json",
        "tokenizer_config.json",
        "vocab.json",
    ]
    for arch in ModelArch:
        assert not (arch.config_dir / "tokenizer" / "vocab.json").exists()
        assert tokenizer_dir(arch.config_dir).parent == SHARED


def test_rebuild_tool_reproduces_the_committed_files_byte_for_byte(tmp_path: Path) -> None:
    """The tool's vocabulary construction, fed the committed merge list, gives identical files."""
    tool = _tool()
    merges = (SHARED / "clip" / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    bpe_text = "bpe_simple_vocab_16e6.txt#version: 0.2\n" + "\n".join(merges) + "\n"
    written = tool.write_tokenizers(bpe_text, tmp_path)
    assert len(written) == 8
    for path in written:
        committed = SHARED / path.parent.name / path.name
        assert path.read_bytes() == committed.read_bytes(), path.name
    # A second run writes the same bytes again.
    again = tool.write_tokenizers(bpe_text, tmp_path / "again")
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in written]


def test_byte_table_and_vocab_layout() -> None:
    tool = _tool()
    table = tool.bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert table[ord("!")] == "!" and table[ord(" ")] == "Ġ"
    merges = (SHARED / "clip" / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    vocab, _ = tool.build_vocab("header\n" + "\n".join(merges))
    assert vocab["!"] == 0 and vocab["!</w>"] == 256 and vocab["<|endoftext|>"] == EOS
    assert vocab["".join(merges[0].split(" "))] == 512
