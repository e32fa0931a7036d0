"""Text conditioning: prompts to the embeddings the UNet attends to.

Prompts of any length are split into 75-token chunks; each chunk is wrapped with BOS/EOS and padded
to 77 tokens, encoded on its own, and the chunks' hidden states are concatenated along the token
axis (a prompt of up to 75 tokens gives exactly what diffusers' `encode_prompt` gives). Positive and
negative conditioning are padded to the same number of chunks with the encoding of an empty chunk.

Clip skip follows A1111's numbering (1 = last layer): SD 1.x/2.x take the output of layer -n and
apply the final layer norm; SDXL takes the hidden states before the layer norm from layer -(n+1) of
both encoders (its "penultimate" convention) and the pooled, projected output of the second.

Encodings are cached per model by (text, clip skip), so repeated prompts across images, batches
and runs are encoded once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from modules.engine.model import DiffusionModel

CHUNK_TOKENS = 75
_CACHE_SIZE = 128


@dataclass
class TextConditioning:
    """Conditioning for a batch: token embeddings (B, T, D) and, for SDXL, pooled embeddings (B, P)."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.embeds.shape[0])

    def repeat_chunks_to(self, tokens: int, filler: TextConditioning) -> TextConditioning:
        """Pad along the token axis with copies of `filler` (one empty chunk) up to `tokens`."""
        have = self.embeds.shape[1]
        if have >= tokens:
            return self
        step = filler.embeds.shape[1]
        reps = (tokens - have) // step
        pad = filler.embeds.expand(self.batch_size, -1, -1).repeat(1, reps, 1)
        return TextConditioning(torch.cat([self.embeds, pad], dim=1), self.pooled)


def concat(items: Sequence[TextConditioning]) -> TextConditioning:
    pooled = None
    if items[0].pooled is not None:
        pooled = torch.cat([c.pooled for c in items], dim=0)  # type: ignore[misc]
    return TextConditioning(torch.cat([c.embeds for c in items], dim=0), pooled)


class PromptEncoder:
    """Encodes prompt texts with a model's text encoder(s), with a per-model cache."""

    def __init__(self, model: DiffusionModel, clip_skip: int = 1) -> None:
        self.model = model
        self.clip_skip = max(1, int(clip_skip))
        cache = model.extra.get("cond_cache")
        if cache is None:
            cache = OrderedDict()
            model.extra["cond_cache"] = cache
        self._cache: OrderedDict[tuple, TextConditioning] = cache

    # --- tokens --------------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` without BOS/EOS and without truncation."""
        ids = self.model.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]
        return list(ids)

    def token_count(self, text: str) -> tuple[int, int]:
        """(tokens used, chunk capacity) as A1111's "N/75" counter shows."""
        n = len(self.tokenize(text))
        chunks = max(1, -(-n // CHUNK_TOKENS))
        return n, chunks * CHUNK_TOKENS

    def _chunks(self, ids: list[int]) -> list[list[int]]:
        if not ids:
            return [[]]
        return [ids[i:i + CHUNK_TOKENS] for i in range(0, len(ids), CHUNK_TOKENS)]

    @staticmethod
    def _frame(tokenizer, chunk: list[int]) -> list[int]:
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        framed = [bos, *chunk, eos]
        return framed + [pad] * (CHUNK_TOKENS + 2 - len(framed))

    # --- encoding ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _encode_ids(self, framed: list[list[int]]) -> TextConditioning:
        """Encode framed 77-token chunks of ONE prompt; returns (1, 77*k, D)."""
        model = self.model
        device = model.text_encoder.device
        ids = torch.tensor(framed, dtype=torch.long, device=device)
        if model.is_sdxl:
            ids2 = torch.tensor([self._frame(model.tokenizer_2, self._unframe(c)) for c in framed],
                                dtype=torch.long, device=model.text_encoder_2.device)
            layer = -(self.clip_skip + 1)
            out1 = model.text_encoder(ids, output_hidden_states=True)
            out2 = model.text_encoder_2(ids2, output_hidden_states=True)
            h = torch.cat([out1.hidden_states[layer], out2.hidden_states[layer].to(out1.hidden_states[layer].device)],
                          dim=-1)
            pooled = out2.text_embeds[:1]
            return TextConditioning(h.reshape(1, -1, h.shape[-1]), pooled.reshape(1, -1))
        if self.clip_skip <= 1:
            h = model.text_encoder(ids).last_hidden_state
        else:
            out = model.text_encoder(ids, output_hidden_states=True)
            # transformers 5 keeps the layer norm on the model itself; older versions under .text_model
            text_model = getattr(model.text_encoder, "text_model", model.text_encoder)
            h = text_model.final_layer_norm(out.hidden_states[-self.clip_skip])
        return TextConditioning(h.reshape(1, -1, h.shape[-1]))

    def _unframe(self, framed: list[int]) -> list[int]:
        tok = self.model.tokenizer
        body = framed[1:]
        end = body.index(tok.eos_token_id) if tok.eos_token_id in body else len(body)
        return body[:end]

    def encode_one(self, text: str) -> TextConditioning:
        key = (text, self.clip_skip)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        framed = [self._frame(self.model.tokenizer, c) for c in self._chunks(self.tokenize(text))]
        cond = self._encode_ids(framed)
        self._cache[key] = cond
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return cond

    def encode(self, texts: Sequence[str]) -> TextConditioning:
        """Encode a batch of prompts; all items padded to the longest item's number of chunks."""
        items = [self.encode_one(t) for t in texts]
        return self.pad_to_same_length(items)

    def pad_to_same_length(self, items: Sequence[TextConditioning]) -> TextConditioning:
        longest = max(c.embeds.shape[1] for c in items)
        if any(c.embeds.shape[1] != longest for c in items):
            filler = self.encode_one("")
            items = [c.repeat_chunks_to(longest, filler) for c in items]
        return concat(items)

    def encode_pair(self, prompts: Sequence[str], negatives: Sequence[str]) -> tuple[TextConditioning, TextConditioning]:
        """Conditioning and unconditional conditioning with the same token length."""
        cond = self.encode(prompts)
        uncond = self.encode(negatives)
        tokens = max(cond.embeds.shape[1], uncond.embeds.shape[1])
        filler = self.encode_one("")
        return cond.repeat_chunks_to(tokens, filler), uncond.repeat_chunks_to(tokens, filler)
