"""The "N/75" token counters beside the prompt boxes.

The count follows what the encoder will see: extra-network references (`<lora:...>`) are removed,
emphasis brackets and weights are not tokens, each `AND` part and each step of a prompt-editing
schedule is counted separately and the largest is shown, and `BREAK` closes a 75-token chunk. The
tokenizer is the loaded model's; before a model is loaded it is the bundled CLIP tokenizer, which
tokenizes the same way for every supported architecture.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

CHUNK = 75
_AND = re.compile(r"\bAND\b(?!_PERP|_SALT|_TOPK)")
_WEIGHT_SUFFIX = re.compile(r"\s*:\s*([-+]?(?:\d+\.?\d*|\.\d+))\s*$")


@functools.lru_cache(maxsize=1)
def _bundled_tokenizer() -> Any:
    from modules.model_manager import loader

    return loader.load_tokenizer(loader.SHARED_TOKENIZERS_DIR / "clip")


def _tokenizer() -> Any:
    from modules import shared

    mm = shared.model_manager
    model = mm.current_model(load=False) if mm is not None else None
    tok = getattr(model, "tokenizer", None)
    return tok if tok is not None else _bundled_tokenizer()


def _vocabulary() -> Any:
    """The loaded model's embedding vocabulary (None before a model is loaded), so that an
    embedding's name counts as the vectors it stands for."""
    from modules import shared, textual_inversion

    mm = shared.model_manager
    model = mm.current_model(load=False) if mm is not None else None
    if model is None:
        return None
    try:
        # No folder rescan per keystroke: the panel's 🔄 and every job rescan the embeddings folder.
        return textual_inversion.attach(model, textual_inversion.default_database(), refresh=False)
    except Exception as e:  # the counter is a hint; fall back to counting names as text
        log.debug("embedding vocabulary unavailable: %s", e)
        return None


def _piece_length(ids: list[int], vocabulary: Any) -> int:
    """Tokens a piece takes: an embedding's name counts as its number of vectors."""
    if vocabulary is None or not len(vocabulary):
        return len(ids)
    total, i = 0, 0
    while i < len(ids):
        hit = vocabulary.find(ids, i)
        if hit is None:
            total += 1
            i += 1
            continue
        emb, length = hit
        total += int(emb.vectors)
        i += length
    return total


def _count_ids(tokenize: Callable[[str], list[int]], text: str, vocabulary: Any = None) -> int:
    """Tokens of one prompt variant, with BREAK padding its chunk to a multiple of 75."""
    from modules import prompt_parser

    total = 0
    for piece, weight in prompt_parser.parse_prompt_attention(text):
        if piece == "BREAK" and weight == -1:
            # A chunk break: what is used so far is padded to the end of its chunk.
            if total % CHUNK:
                total += CHUNK - total % CHUNK
            continue
        if piece:
            total += _piece_length(list(tokenize(piece)), vocabulary)
    return total


def count_tokens(text: str, steps: int = 20, tokenize: Callable[[str], list[int]] | None = None,
                 vocabulary: Any = None) -> tuple[int, int]:
    """(tokens used, capacity) for a prompt; capacity is the number of 75-token chunks times 75.

    vocabulary: an `EmbeddingVocabulary` (default: the loaded model's, when counting with its
    tokenizer) whose embeddings count as their vectors.
    """
    from modules import prompt_parser

    if tokenize is None:
        tok = _tokenizer()
        if vocabulary is None:
            vocabulary = _vocabulary()

        def tokenize(s: str) -> list[int]:
            return list(tok(s, add_special_tokens=False, truncation=False)["input_ids"])

    try:
        text, _ = prompt_parser.parse_extra_networks(text or "")
    except Exception:  # a half-typed reference must not break the counter
        log.debug("extra network parse failed", exc_info=True)
    used = 0
    for part in _AND.split(text):
        part = _WEIGHT_SUFFIX.sub("", part)
        try:
            schedules = prompt_parser.get_learned_conditioning_prompt_schedules([part], max(1, int(steps)))[0]
            variants = [t for _, t in schedules]
        except Exception:
            variants = [part]
        for variant in variants:
            used = max(used, _count_ids(tokenize, variant, vocabulary))
    chunks = max(1, -(-used // CHUNK))
    return used, chunks * CHUNK


def token_counter_html(text: str, steps: int = 20) -> str:
    """The counter's HTML; shows a warning colour when the prompt spills into another chunk."""
    try:
        used, capacity = count_tokens(text, steps)
    except Exception as e:  # the counter is a hint; it never blocks typing
        log.warning("token counting failed: %s", e)
        return "<span class='token-counter'>?/75</span>"
    cls = "token-counter token-counter-multi" if capacity > CHUNK else "token-counter"
    return f"<span class='{cls}' title='tokens used / tokens available in the current chunks'>{used}/{capacity}</span>"
