"""Text conditioning: prompts in A1111's language to the embeddings the UNet attends to.

Tokens and weights: the prompt is parsed for emphasis (`(x)`, `[x]`, `(x:1.3)`) and `BREAK`, then cut
into 75-token chunks. A chunk that fills up within `comma_padding_backtrack` tokens after a comma
moves the words after that comma to the next chunk; `BREAK` starts a new chunk. Each chunk is
wrapped as [BOS] tokens [EOS] [pad...] to 77 tokens and encoded on its own; the chunks' hidden states
are concatenated along the token axis, so prompts have no length limit. A prompt of at most 75
tokens without weights gives exactly what diffusers' `encode_prompt` gives.

Emphasis (setting `emphasis`): "Original" multiplies each token's hidden state by its weight and
rescales the chunk so its mean is unchanged; "No norm" multiplies only; "Ignore" parses but drops
the weights; "None" does not parse brackets at all.

Clip skip follows A1111's numbering (1 = last layer): SD 1.x/2.x take the output of layer -n and
apply the final layer norm; SDXL takes the hidden states before the layer norm from layer -(n+1) of
both encoders (its "penultimate" convention) and the pooled, projected output of the second
encoder for the first chunk.

Prompt editing (`[a:b:when]`, `[a|b]`) and composable prompts (`a AND b :0.5`) are handled by
`PromptPlan`: every distinct text is encoded once, and the plan gives the conditioning rows and
their guidance weights at each step. Encodings are cached per model by (text, clip skip, emphasis,
backtrack, text-encoder state), so repeated prompts across images, steps, batches and runs are
encoded once.

Textual-inversion embeddings resolve here: when `model.extra["embeddings"]` holds a vocabulary
(`modules.textual_inversion.attach`), an embedding's name in a prompt becomes as many token slots
as it has vectors. As in A1111 an embedding is never split across chunks: one that does not fit in
the rest of a chunk starts the next. The slots are encoded with the embedding's vectors in place of
token embeddings (a forward hook on the encoder's input embedding layer, held only during the
call); positions and the causal mask are those of ordinary tokens. The cache key carries the
vocabulary's identity and the networks merged into the text encoder (`text_encoder_state`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from modules import prompt_parser
from modules.engine import offload
from modules.engine.model import DiffusionModel

CHUNK_TOKENS = 75
EMBEDDING_SLOT_TOKEN = 0
"""Token id in an embedding's slots; the hook replaces its embedding, and being below EOS keeps
the pooled output (taken at the highest id by older CLIP configs) at the EOS token."""
EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")
_CACHE_SIZE = 256


@dataclass
class TextConditioning:
    """Conditioning rows: token embeddings (N, T, D) and, for SDXL, pooled embeddings (N, P)."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.embeds.shape[0])

    @property
    def tokens(self) -> int:
        return int(self.embeds.shape[1])

    def repeat_chunks_to(self, tokens: int, filler: TextConditioning) -> TextConditioning:
        """Pad along the token axis with copies of `filler` (one empty chunk) up to `tokens`."""
        have = self.embeds.shape[1]
        if have >= tokens:
            return self
        step = filler.embeds.shape[1]
        reps = (tokens - have) // step
        pad = filler.embeds.to(self.embeds).expand(self.batch_size, -1, -1).repeat(1, reps, 1)
        return TextConditioning(torch.cat([self.embeds, pad], dim=1), self.pooled)

    def select(self, rows: Sequence[int]) -> TextConditioning:
        idx = torch.tensor(list(rows), dtype=torch.long)
        pooled = None if self.pooled is None else self.pooled[idx]
        return TextConditioning(self.embeds[idx], pooled)


def concat(items: Sequence[TextConditioning]) -> TextConditioning:
    pooled = None
    if items[0].pooled is not None:
        pooled = torch.cat([c.pooled for c in items], dim=0)  # type: ignore[misc]
    return TextConditioning(torch.cat([c.embeds for c in items], dim=0), pooled)


@dataclass
class TokenChunk:
    tokens: list[int]
    weights: list[float]
    fixes: list[tuple[int, Any]] = field(default_factory=list)
    """(offset in `tokens`, embedding) for each embedding placed in the chunk"""


class PromptEncoder:
    """Encodes prompt texts with a model's text encoder(s), with a per-model cache."""

    def __init__(self, model: DiffusionModel, clip_skip: int = 1, *, emphasis: str = "Original",
                 comma_padding_backtrack: int = 20) -> None:
        if emphasis not in EMPHASIS_MODES:
            raise ValueError(f"emphasis mode {emphasis!r} is not one of {', '.join(EMPHASIS_MODES)}")
        self.model = model
        self.clip_skip = max(1, int(clip_skip))
        self.emphasis = emphasis
        self.backtrack = max(0, int(comma_padding_backtrack))
        cache = model.extra.get("cond_cache")
        if cache is None:
            cache = OrderedDict()
            model.extra["cond_cache"] = cache
        self._cache: OrderedDict[tuple, TextConditioning] = cache
        vocab = model.tokenizer.get_vocab()
        self._comma = vocab.get(",</w>")

    # --- tokens --------------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` without BOS/EOS and without truncation."""
        return list(self.model.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])

    def _vocabulary(self) -> Any:
        return self.model.extra.get("embeddings")

    def chunks(self, text: str) -> list[TokenChunk]:
        """The prompt as A1111 cuts it: weighted tokens in chunks of at most 75."""
        parsed = [[text, 1.0]] if self.emphasis == "None" else prompt_parser.parse_prompt_attention(text)
        vocab = self._vocabulary()
        if vocab is not None and not len(vocab):
            vocab = None
        chunks: list[TokenChunk] = []
        tokens: list[int] = []
        weights: list[float] = []
        fixes: list[tuple[int, Any]] = []
        last_comma = -1

        def next_chunk() -> None:
            nonlocal tokens, weights, fixes, last_comma
            chunks.append(TokenChunk(tokens, weights, fixes))
            tokens, weights, fixes, last_comma = [], [], [], -1

        for fragment, weight in parsed:
            if fragment == "BREAK" and weight == -1:
                next_chunk()
                continue
            ids = self.tokenize(fragment)
            position = 0
            while position < len(ids):
                token = ids[position]
                if token == self._comma:
                    last_comma = len(tokens)
                elif (self.backtrack and len(tokens) == CHUNK_TOKENS and last_comma != -1
                      and len(tokens) - last_comma <= self.backtrack):
                    cut = last_comma + 1
                    moved_tokens, moved_weights = tokens[cut:], weights[cut:]
                    moved_fixes = [(offset - cut, emb) for offset, emb in fixes if offset >= cut]
                    tokens, weights = tokens[:cut], weights[:cut]
                    fixes = [(offset, emb) for offset, emb in fixes if offset < cut]
                    next_chunk()
                    tokens, weights, fixes = moved_tokens, moved_weights, moved_fixes
                if len(tokens) == CHUNK_TOKENS:
                    next_chunk()
                hit = vocab.find(ids, position) if vocab is not None else None
                if hit is None:
                    tokens.append(token)
                    weights.append(float(weight))
                    position += 1
                    continue
                embedding, name_tokens = hit
                slots = min(int(embedding.vectors), CHUNK_TOKENS)
                if len(tokens) + slots > CHUNK_TOKENS:
                    next_chunk()
                fixes.append((len(tokens), embedding))
                tokens.extend([EMBEDDING_SLOT_TOKEN] * slots)
                weights.extend([float(weight)] * slots)
                position += name_tokens
        if tokens or not chunks:
            next_chunk()
        return chunks

    def token_count(self, text: str) -> tuple[int, int]:
        """(tokens used, chunk capacity) as A1111's "N/75" counter shows them."""
        chunks = self.chunks(text)
        used = CHUNK_TOKENS * (len(chunks) - 1) + len(chunks[-1].tokens)
        return used, CHUNK_TOKENS * len(chunks)

    @staticmethod
    def _frame(tokenizer, tokens: list[int]) -> list[int]:  # type: ignore[no-untyped-def]
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        framed = [bos, *tokens, eos]
        return framed + [pad] * (CHUNK_TOKENS + 2 - len(framed))

    # --- encoding ------------------------------------------------------------------------------------
    @staticmethod
    @contextmanager
    def _embeddings_in(encoder, chunks: list[TokenChunk], encoder_index: int) -> Iterator[None]:  # type: ignore[no-untyped-def]
        """While encoding, replace the token embeddings of embedding slots with their vectors."""
        rows = [(c, offset, emb) for c, chunk in enumerate(chunks) for offset, emb in chunk.fixes]
        if not rows:
            yield
            return

        def substitute(_module, _args, output: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
            output = output.clone()
            for c, offset, emb in rows:
                vectors = emb.vectors_for(encoder_index)
                n = min(int(vectors.shape[0]), output.shape[1] - 2 - offset)
                output[c, 1 + offset:1 + offset + n] = vectors[:n].to(output)  # +1: after BOS
            return output

        handle = encoder.get_input_embeddings().register_forward_hook(substitute)
        try:
            yield
        finally:
            handle.remove()

    def _hidden(self, encoder, ids: torch.Tensor, *, sdxl: bool) -> tuple[torch.Tensor, torch.Tensor | None]:  # type: ignore[no-untyped-def]
        if sdxl:
            out = encoder(ids, output_hidden_states=True)
            pooled = getattr(out, "text_embeds", None)
            return out.hidden_states[-(self.clip_skip + 1)], pooled
        if self.clip_skip <= 1:
            return encoder(ids).last_hidden_state, None
        out = encoder(ids, output_hidden_states=True)
        # transformers 5 keeps the layer norm on the model itself; older versions under .text_model
        text_model = getattr(encoder, "text_model", encoder)
        return text_model.final_layer_norm(out.hidden_states[-self.clip_skip]), None

    def _emphasize(self, z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Apply token weights to (k, 77, D) hidden states, per chunk."""
        if self.emphasis in ("Ignore", "None") or bool((weights == 1.0).all()):
            return z
        zf = z.float()
        scaled = zf * weights[:, :, None]
        if self.emphasis == "Original":
            original_mean = zf.mean(dim=(1, 2), keepdim=True)
            scaled = scaled * (original_mean / scaled.mean(dim=(1, 2), keepdim=True))
        return scaled.to(z.dtype)

    @torch.inference_mode()
    def _encode_chunks(self, chunks: list[TokenChunk]) -> TextConditioning:
        model = self.model
        weights = torch.tensor([[1.0, *c.weights] + [1.0] * (CHUNK_TOKENS + 1 - len(c.weights)) for c in chunks])
        ids = torch.tensor([self._frame(model.tokenizer, c.tokens) for c in chunks], dtype=torch.long,
                           device=model.device_of(model.text_encoder))
        if not model.is_sdxl:
            with offload.stage(model, "text_encoder"), self._embeddings_in(model.text_encoder, chunks, 0):
                h, _ = self._hidden(model.text_encoder, ids, sdxl=False)
            h = self._emphasize(h, weights.to(h.device))
            return TextConditioning(h.reshape(1, -1, h.shape[-1]))
        ids2 = torch.tensor([self._frame(model.tokenizer_2, c.tokens) for c in chunks], dtype=torch.long,
                            device=model.device_of(model.text_encoder_2))
        with offload.stage(model, "text_encoder"), self._embeddings_in(model.text_encoder, chunks, 0):
            h1, _ = self._hidden(model.text_encoder, ids, sdxl=True)
        with offload.stage(model, "text_encoder_2"), self._embeddings_in(model.text_encoder_2, chunks, 1):
            h2, pooled = self._hidden(model.text_encoder_2, ids2, sdxl=True)
        h1 = self._emphasize(h1, weights.to(h1.device))
        h2 = self._emphasize(h2, weights.to(h2.device)).to(h1.device)
        h = torch.cat([h1, h2], dim=-1)
        assert pooled is not None
        return TextConditioning(h.reshape(1, -1, h.shape[-1]), pooled[:1].to(h1.device))

    def encode_one(self, text: str) -> TextConditioning:
        """One prompt (no editing syntax, no AND) -> (1, 77*k, D)."""
        vocab = self._vocabulary()
        key = (text, self.clip_skip, self.emphasis, self.backtrack, getattr(vocab, "identity", None),
               self.model.extra.get("text_encoder_state"))
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        cond = self._encode_chunks(self.chunks(text))
        self._cache[key] = cond
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return cond

    def empty_chunk(self) -> TextConditioning:
        return self.encode_one("")

    def encode(self, texts: Sequence[str]) -> TextConditioning:
        """Encode a batch of plain prompts; all padded to the longest one's number of chunks."""
        return self.pad_to_same_length([self.encode_one(t) for t in texts])

    def pad_to_same_length(self, items: Sequence[TextConditioning]) -> TextConditioning:
        longest = max(c.tokens for c in items)
        if any(c.tokens != longest for c in items):
            filler = self.empty_chunk()
            items = [c.repeat_chunks_to(longest, filler) for c in items]
        return concat(items)

    def encode_pair(self, prompts: Sequence[str], negatives: Sequence[str]) -> tuple[TextConditioning, TextConditioning]:
        """Conditioning and unconditional conditioning of plain prompts, with the same token length."""
        cond = self.encode(prompts)
        uncond = self.encode(negatives)
        tokens = max(cond.tokens, uncond.tokens)
        filler = self.empty_chunk()
        return cond.repeat_chunks_to(tokens, filler), uncond.repeat_chunks_to(tokens, filler)


# --- prompt editing and composable prompts --------------------------------------------------------------
@dataclass
class StepConditioning:
    """What the loop needs at one step.

    `cond` holds conditioning rows; `weights[i]` lists (row, weight) pairs image i is guided by
    (one pair of weight 1 for an ordinary prompt, several for `a AND b :0.5`). `uncond` has one row
    per image. All rows have the same token length.
    """

    cond: TextConditioning
    weights: list[list[tuple[int, float]]]
    uncond: TextConditioning | None

    @property
    def one_row_per_image(self) -> bool:
        return all(len(w) == 1 and w[0][1] == 1.0 for w in self.weights)

    def per_image_cond(self) -> TextConditioning:
        """For one-row-per-image steps: the cond rows in image order."""
        return self.cond.select([w[0][0] for w in self.weights])


class PromptPlan:
    """Conditioning for a batch of prompts over the sampling steps (A1111 editing, alternation, AND)."""

    def __init__(self, encoder: PromptEncoder, prompts: Sequence[str], steps: int, *, composable: bool = True,
                 hires_steps: int | None = None) -> None:
        prompts = list(prompts)
        if composable:
            weights, flat, _ = prompt_parser.get_multicond_prompt_list(prompts)
            flat = list(flat)
        else:
            flat = prompts
            weights = [[(i, 1.0)] for i in range(len(prompts))]
        schedules = prompt_parser.get_learned_conditioning_prompt_schedules(flat, steps, hires_steps)
        self.weights: list[list[tuple[int, float]]] = [[(int(r), float(w)) for r, w in ws] for ws in weights]
        self._schedules = [[(int(end), encoder.encode_one(text)) for end, text in sched] for sched in schedules]
        self._cache: dict[tuple[int, ...], TextConditioning] = {}
        self._encoder = encoder
        self.texts = flat
        self.is_constant = all(len(s) == 1 for s in self._schedules)

    def _pick(self, step: int) -> tuple[int, ...]:
        picks = []
        for sched in self._schedules:
            target = 0  # past the last entry A1111 falls back to the first one
            for j, (end, _cond) in enumerate(sched):
                if step <= end:
                    target = j
                    break
            picks.append(target)
        return tuple(picks)

    def rows_at(self, step: int) -> TextConditioning:
        key = self._pick(step)
        rows = self._cache.get(key)
        if rows is None:
            rows = self._encoder.pad_to_same_length([sched[j][1] for sched, j in zip(self._schedules, key, strict=True)])
            self._cache[key] = rows
        return rows


class GuidancePlan:
    """Positive (composable) and negative prompt plans, aligned to one token length per step."""

    def __init__(self, encoder: PromptEncoder, prompts: Sequence[str], negatives: Sequence[str] | None,
                 steps: int) -> None:
        self.encoder = encoder
        self.positive = PromptPlan(encoder, prompts, steps, composable=True)
        self.negative = None if negatives is None else PromptPlan(encoder, negatives, steps, composable=False)
        self._filler: TextConditioning | None = None

    @property
    def uses_emphasis(self) -> bool:
        texts = self.positive.texts + (self.negative.texts if self.negative else [])
        return any("(" in t or "[" in t for t in texts)

    def at(self, step: int) -> StepConditioning:
        cond = self.positive.rows_at(step)
        uncond = None if self.negative is None else self.negative.rows_at(step)
        if uncond is not None and uncond.tokens != cond.tokens:
            if self._filler is None:
                self._filler = self.encoder.empty_chunk()
            tokens = max(cond.tokens, uncond.tokens)
            cond = cond.repeat_chunks_to(tokens, self._filler)
            uncond = uncond.repeat_chunks_to(tokens, self._filler)
        return StepConditioning(cond=cond, weights=self.positive.weights, uncond=uncond)
