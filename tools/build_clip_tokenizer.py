"""Rebuild the bundled CLIP tokenizer files offline.

Stable Diffusion's text encoders all use OpenAI's CLIP byte-level BPE (49408 tokens). Its merge list
ships inside the open_clip_torch wheel as `open_clip/bpe_simple_vocab_16e6.txt.gz`; this script
derives the Hugging Face tokenizer files (vocab.json, merges.txt, special_tokens_map.json,
tokenizer_config.json) from it, so Easel never has to fetch a tokenizer from a model hub.

Two flavours are written, identical except for the padding token:

- `configs/_tokenizers/clip/`: SD 1.x and SDXL's first encoder (CLIP ViT-L), padded with
  `<|endoftext|>` (id 49407).
- `configs/_tokenizers/openclip/`: SD 2.x and SDXL's second encoder (OpenCLIP ViT-H / bigG),
  padded with `!` (id 0), as the Stability AI repositories configure it.

The bundled architecture folders (`configs/<arch>/model_index.json`) name the flavour each of
their tokenizers uses; the model loader resolves them, so the 1.5 MB of vocabulary exists once.

Usage:
    python tools/build_clip_tokenizer.py                 # downloads the wheel with pip (no install)
    python tools/build_clip_tokenizer.py --source X.whl  # or a wheel / .txt.gz already at hand

The output is deterministic: running it again produces byte-identical files.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "configs" / "_tokenizers"

BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
BPE_SHA256 = "67603cfda2e032ad77b5f8808af37789d590db664b26df8705d2bf8b3c553fc8"
"""sha256 of the decompressed merge list; it has not changed since CLIP's release."""

VOCAB_SIZE = 49408
NUM_MERGES = VOCAB_SIZE - 2 * 256 - 2  # 48894: the vocabulary is bytes, bytes+</w>, merges, 2 specials
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table, in its canonical order.

    Printable Latin-1 bytes map to themselves; the remaining bytes (control characters, space, ...)
    are assigned code points from 256 upwards so every byte has a visible, non-whitespace symbol.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def read_bpe_text(source: Path) -> str:
    """The decompressed merge list from a wheel or a bare `.txt.gz`, checked against its known hash."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            raw = wheel.read(BPE_MEMBER)
    else:
        raw = source.read_bytes()
    data = gzip.decompress(raw)
    digest = hashlib.sha256(data).hexdigest()
    if digest != BPE_SHA256:
        raise SystemExit(f"{source}: unexpected BPE merge list (sha256 {digest}, expected {BPE_SHA256})")
    return data.decode("utf-8")


def build_vocab(bpe_text: str) -> tuple[dict[str, int], list[str]]:
    """The token -> id table and the merge lines, exactly as CLIP's own tokenizer orders them."""
    merges = bpe_text.split("\n")[1 : NUM_MERGES + 1]  # line 0 is a version header
    if len(merges) != NUM_MERGES:
        raise SystemExit(f"merge list too short: {len(merges)} merges")
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(m.split(" ")) for m in merges]
    tokens += [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise SystemExit(f"vocabulary has {len(vocab)} distinct entries, expected {VOCAB_SIZE}")
    return vocab, merges


def _special(content: str) -> dict[str, object]:
    return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def tokenizer_files(vocab: dict[str, int], merges: list[str], pad_token: str) -> dict[str, str]:
    """File name -> text for one tokenizer folder."""
    special_map = {
        "bos_token": _special(BOS),
        "eos_token": _special(EOS),
        "pad_token": pad_token,
        "unk_token": _special(EOS),
    }
    config = {
        "add_prefix_space": False,
        "bos_token": _special(BOS),
        "do_lower_case": True,
        "eos_token": _special(EOS),
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": pad_token,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": _special(EOS),
    }
    return {
        "vocab.json": json.dumps(vocab, ensure_ascii=False, separators=(",", ":")) + "\n",
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
        "special_tokens_map.json": json.dumps(special_map, indent=2, sort_keys=True) + "\n",
        "tokenizer_config.json": json.dumps(config, indent=2, sort_keys=True) + "\n",
    }


FLAVOURS = {"clip": EOS, "openclip": "!"}
"""Folder name -> padding token."""


def write_tokenizers(bpe_text: str, out_dir: Path) -> list[Path]:
    vocab, merges = build_vocab(bpe_text)
    written = []
    for name, pad in FLAVOURS.items():
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        for fname, text in tokenizer_files(vocab, merges, pad).items():
            path = folder / fname
            # newline="\n": identical bytes on every platform.
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
            written.append(path)
    return written


def download_wheel(dest: Path) -> Path:
    """Fetch the open_clip_torch wheel without installing it (installing would pull torchvision)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "open_clip_torch", "-d", str(dest)],
        check=True,
    )
    wheels = sorted(dest.glob("open_clip_torch-*.whl"))
    if not wheels:
        raise SystemExit("pip did not produce an open_clip_torch wheel")
    return wheels[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, help="open_clip_torch wheel or bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    if args.source is not None:
        bpe_text = read_bpe_text(args.source)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            bpe_text = read_bpe_text(download_wheel(Path(tmp)))
    for path in write_tokenizers(bpe_text, args.out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
