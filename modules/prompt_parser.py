"""A1111's prompt language: emphasis, prompt editing, alternation, composable prompts, BREAK.

The names and return shapes are A1111's (`modules.prompt_parser`), because extensions import them:

- `parse_prompt_attention(text)` turns ``a (cat:1.2) [dog]`` into ``[[text, weight], ...]``.
- `get_learned_conditioning_prompt_schedules(prompts, steps, ...)` expands prompt editing
  (``[from:to:when]``) and alternation (``[a|b]``) into per-step texts ``[[end_step, text], ...]``.
- `get_multicond_prompt_list(prompts)` splits composable prompts on ``AND`` with ``:weight``.
- `get_learned_conditioning` / `get_multicond_learned_conditioning` encode the schedules with any
  encoder, and `reconstruct_cond_batch` / `reconstruct_multicond_batch` pick the conditioning of a
  sampling step.

Emphasis is a small stack machine over a tokenizer, scheduling a lark (Earley) grammar. Both are
written to give byte-identical texts and bit-identical weights to A1111 v1.10 for the same input,
including its handling of unbalanced brackets: a pasted prompt must make the same picture.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

import lark

from modules.extra_networks import ExtraNetworkParams, re_extra_net
from modules.extra_networks import parse_prompt as _parse_extra_network_prompt

if TYPE_CHECKING:
    import torch

__all__ = [
    "ComposableScheduledPromptConditioning",
    "DictWithShape",
    "MulticondLearnedConditioning",
    "ScheduledPromptConditioning",
    "SdConditioning",
    "get_learned_conditioning",
    "get_learned_conditioning_prompt_schedules",
    "get_multicond_learned_conditioning",
    "get_multicond_prompt_list",
    "parse_extra_networks",
    "parse_prompt_attention",
    "re_AND",
    "re_attention",
    "re_break",
    "re_extra_net",
    "re_weight",
    "reconstruct_cond_batch",
    "reconstruct_multicond_batch",
    "stack_conds",
]


# --------------------------------------------------------------------------------------------------
# Emphasis: (x) (x:1.3) [x] \( \) \[ \] \\ and BREAK
# --------------------------------------------------------------------------------------------------

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# One token per match; every character of the input belongs to exactly one token. Group 1 is the
# weight of a ``:number)`` closer (kept as group 1: some extensions read it that way).
re_attention = re.compile(
    r"""
    \\[()\[\]\\]                    # escaped bracket or backslash: the character itself
    | \\                            # any other backslash: dropped
    | [(\[]                         # openers
    | :\s*([+-]?[.\d]+)\s*\)        # explicit weight closing a round bracket
    | [)\]]                         # closers
    | [^\\()\[\]:]+                 # plain text
    | :                             # a colon that is not a weight
    """,
    re.VERBOSE,
)

# BREAK as a whole uppercase word, with the whitespace around it, splits a text run.
re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)

BREAK_MARKER = ["BREAK", -1]


def parse_prompt_attention(text: str) -> list[list]:
    """Split a prompt into ``[text, weight]`` runs, A1111's emphasis rules.

    ``(x)`` multiplies by 1.1, ``[x]`` divides by 1.1, ``(x:w)`` multiplies by w; nesting multiplies.
    A backslash escapes ``( ) [ ] \\``; any other backslash is dropped. A closer without an open
    bracket of its kind, and a ``:`` outside a weight, are literal text; brackets still open at the
    end apply to the rest of the prompt (round ones first, then square, outermost first).
    ``BREAK`` becomes a ``["BREAK", -1]`` item. Adjacent runs of equal weight are merged; an empty
    prompt gives ``[["", 1.0]]``.

    The multiplications happen in the same order as A1111's (innermost bracket first, at its
    closer), so the float weights are identical, e.g. ``(((house:1.3))`` gives 1.5730000000000004.
    Markers inside brackets are multiplied too (A1111 does the same), so ``(a BREAK b)`` has a
    ``["BREAK", -1.1]`` item, which encoders then treat as the word BREAK, not a chunk break.
    Where A1111 would raise on an unparsable weight such as ``(a:1.2.3)``, the closer is text.
    """
    runs: list[list] = []
    open_round: list[int] = []
    open_square: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for run in runs[start:]:
            run[1] *= factor

    def add_text(chunk: str) -> None:
        for i, part in enumerate(re_break.split(chunk)):
            if i:
                runs.append(list(BREAK_MARKER))
            runs.append([part, 1.0])

    for match in re_attention.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token[0] == "\\":
            runs.append([token[1:], 1.0])
        elif token == "(":
            open_round.append(len(runs))
        elif token == "[":
            open_square.append(len(runs))
        elif weight is not None and open_round:
            factor = _to_float(weight)
            if factor is None:
                add_text(token)
            else:
                scale_from(open_round.pop(), factor)
        elif token == ")" and open_round:
            scale_from(open_round.pop(), ROUND_MULTIPLIER)
        elif token == "]" and open_square:
            scale_from(open_square.pop(), SQUARE_MULTIPLIER)
        else:
            add_text(token)

    for start in open_round:
        scale_from(start, ROUND_MULTIPLIER)
    for start in open_square:
        scale_from(start, SQUARE_MULTIPLIER)

    if not runs:
        return [["", 1.0]]

    merged = [runs[0]]
    for run in runs[1:]:
        if run[1] == merged[-1][1]:
            merged[-1][0] += run[0]
        else:
            merged.append(run)
    return merged


def _to_float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------------
# Prompt editing [from:to:when] and alternation [a|b|c]
# --------------------------------------------------------------------------------------------------

# Bracket constructs may nest; inside one, every bracket must belong to a construct. At the top
# level a bracket or colon that closes nothing is kept as literal text ("loose"). A `|` outside an
# alternation, or a trailing lone backslash, makes the whole prompt unparsable: it is then used
# verbatim with no scheduling (as in A1111).
#
# The grammar is ambiguous on purpose: a bracket pair may be a construct or loose text, and
# whitespace may be TEXT or SPACE. Earley picks one derivation by rule order, and which one it
# picks depends on the shape of the rules, so they are shaped to resolve every prompt the way
# A1111's parser does (checked against it on many thousands of generated prompts, including
# deeply nested unbalanced ones); the redundant SPACE item is part of that.
_SCHEDULE_GRAMMAR = r"""
start: (seq | LOOSE+)*
seq: _item*
_item: group | edit | alternation | TEXT | SPACE
group: "(" seq ")" | "(" seq ":" seq ")" | "[" seq "]"
edit: "[" [seq ":"] seq ":" _PAD? WHEN _PAD? "]"
alternation: "[" seq ("|" seq)+ "]"
TEXT: /(?:[^\\\[\]():|]|\\.)+/
WHEN: /[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?/
LOOSE: /[\[\]():]/
SPACE: /\s+/
_PAD: /\s+/
"""


# The end of any edit ": when ]"; a prompt without one and without "|" has nothing to schedule.
_re_edit_end = re.compile(r":\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*\]")


@cache
def _schedule_parser() -> lark.Lark:
    return lark.Lark(_SCHEDULE_GRAMMAR, parser="earley", propagate_positions=True)


@lru_cache(maxsize=256)
def _parse_schedule(prompt: str) -> lark.Tree | None:
    """The parse tree of a prompt with editing or alternation; None when there is nothing to schedule.

    Earley parsing takes time that grows quickly with the number of brackets (a second or more
    for prompts with ~80 weighted tags), so prompts that cannot hold an edit or an alternation skip
    it: their schedule is the prompt itself whether or not it parses. Trees are cached because the
    same prompts are scheduled for every batch and again for the hires pass; they are never modified.
    """
    if "|" not in prompt and not _re_edit_end.search(prompt):
        return None
    try:
        return _schedule_parser().parse(prompt)
    except lark.exceptions.LarkError:
        return None


def _span(node: lark.Tree | lark.Token) -> tuple[int, int] | None:
    if isinstance(node, lark.Token):
        return node.start_pos, node.end_pos
    if node.meta.empty:
        return None
    return node.meta.start_pos, node.meta.end_pos


class _Schedule:
    """One parsed prompt: the step boundaries it has and its text at any step."""

    def __init__(self, source: str, tree: lark.Tree, when_of: Callable[[str], int]) -> None:
        self.source = source
        self.tree = tree
        # The end step of every edit, by node identity; computed once, the tree is not modified.
        self.ends: dict[int, int] = {}
        self.has_alternation = False
        for node in tree.iter_subtrees():
            if node.data == "edit":
                self.ends[id(node)] = when_of(str(node.children[2]))
            elif node.data == "alternation":
                self.has_alternation = True

    def boundaries(self, steps: int) -> list[int]:
        found = {steps}
        found.update(end for end in self.ends.values() if end >= 1)
        if self.has_alternation:
            found.update(range(1, steps + 1))
        return sorted(found)

    def text_at(self, step: int) -> str:
        return "".join(self._render(self.tree, step))

    def _render(self, node: lark.Tree, step: int) -> Iterator[str]:
        if node.data == "edit":
            before, after, _ = node.children
            chosen = (before if step <= self.ends[id(node)] else after)
            if chosen is not None:
                yield from self._render(chosen, step)
            return
        if node.data == "alternation":
            options = node.children
            yield from self._render(options[(step - 1) % len(options)], step)
            return
        # Anything else is its source text, with the edits and alternations inside it replaced.
        span = _span(node)
        if span is None:
            return
        cursor = span[0]
        for child in node.children:
            child_span = _span(child) if child is not None else None
            if child_span is None:
                continue
            yield self.source[cursor:child_span[0]]
            if isinstance(child, lark.Tree):
                yield from self._render(child, step)
            else:
                yield str(child)
            cursor = child_span[1]
        yield self.source[cursor:span[1]]


def get_learned_conditioning_prompt_schedules(
    prompts: Sequence[str],
    base_steps: int,
    hires_steps: int | None = None,
    use_old_scheduling: bool = False,
) -> list[list[list]]:
    """For each prompt, ``[[end_step, text], ...]``: the text to use up to and including end_step.

    ``[from:to:when]`` uses `from` up to step `when` and `to` after it; ``[to:when]`` adds, and
    ``[from::when]`` removes. A `when` written with a decimal point is a fraction of the steps,
    without one a step number (a step count of 0 or less means "from the start"). ``[a|b|c]``
    switches every step. Prompts that do not parse are used as they are, for all steps.

    For the hires pass (`hires_steps` given), the timeline continues from the first pass: a step
    number counts from the first pass's start (``[x:25]`` with 20 base steps ends at hires step
    5) and a fraction from 1.0 at the start of the hires pass to 2.0 at its end, so ``[x:0.5]``
    has ended before the hires pass begins. `use_old_scheduling` restores the rule of A1111 before
    1.6 ("Old prompt editing timelines" in infotext): below 1 a fraction of `base_steps`, else a
    step number, and `hires_steps` is not used (callers pass the steps of the pass as base_steps).

    >>> get_learned_conditioning_prompt_schedules(["a [b:3]"], 10)
    [[[3, 'a '], [10, 'a b']]]
    """
    if hires_steps is None or use_old_scheduling:
        steps, int_offset, float_offset = base_steps, 0, 0.0
    else:
        steps, int_offset, float_offset = hires_steps, base_steps, 1.0

    def when_of(number: str) -> int:
        value = float(number)
        if use_old_scheduling:
            if value < 1:
                value *= steps
        elif "." in number:
            value = (value - float_offset) * steps
        else:
            value -= int_offset
        return min(steps, int(value))

    def schedule_of(prompt: str) -> list[list]:
        tree = _parse_schedule(prompt)
        if tree is None:
            return [[steps, prompt]]
        parsed = _Schedule(prompt, tree, when_of)
        return [[step, parsed.text_at(step)] for step in parsed.boundaries(steps)]

    by_prompt = {prompt: schedule_of(prompt) for prompt in dict.fromkeys(prompts)}
    return [by_prompt[prompt] for prompt in prompts]


# --------------------------------------------------------------------------------------------------
# Conditioning schedules
# --------------------------------------------------------------------------------------------------


class ScheduledPromptConditioning(NamedTuple):
    """The conditioning to use for sampling steps up to and including `end_at_step`."""

    end_at_step: int
    cond: Any


class SdConditioning(list):
    """A list of prompts that also says whether they are negative and the image size (SDXL needs it).

    Lists made from it with `copy_from` keep those attributes, so an encoder called with schedule
    texts still knows the size and kind of the prompts they came from.
    """

    def __init__(
        self,
        prompts: Iterable[str],
        is_negative_prompt: bool = False,
        width: int | None = None,
        height: int | None = None,
        copy_from: Any = None,
    ) -> None:
        super().__init__(prompts)
        if copy_from is None:
            copy_from = prompts
        self.is_negative_prompt: bool = is_negative_prompt or getattr(copy_from, "is_negative_prompt", False)
        self.width: int | None = width or getattr(copy_from, "width", None)
        self.height: int | None = height or getattr(copy_from, "height", None)


Encoder = Callable[[SdConditioning], Any]


def _encoder_of(model: Any) -> Encoder:
    """How to encode a list of texts with `model`.

    Accepted: an A1111-style model with ``get_learned_conditioning(texts)``, Easel's
    `PromptEncoder` (``encode(texts)``), or a plain callable. The result may be a tensor (B, T, D),
    a dict of tensors with the batch first (A1111's SDXL ``{"crossattn", "vector"}``), or an object
    with ``embeds`` and ``pooled`` (Easel's `TextConditioning`).
    """
    for name in ("get_learned_conditioning", "encode"):
        method = getattr(model, name, None)
        if callable(method):
            return method
    if callable(model):
        return model
    raise TypeError(f"cannot encode prompts with {type(model).__name__}: it has no get_learned_conditioning/encode")


def _split_batch(conds: Any, count: int) -> list[Any]:
    """Per-item conditionings from a batch result; TextConditioning-like results become A1111's shapes."""
    if isinstance(conds, Mapping):
        return [{key: value[i] for key, value in conds.items()} for i in range(count)]
    embeds = getattr(conds, "embeds", None)
    if embeds is not None:
        pooled = getattr(conds, "pooled", None)
        if pooled is None:
            return [embeds[i] for i in range(count)]
        return [{"crossattn": embeds[i], "vector": pooled[i]} for i in range(count)]
    return [conds[i] for i in range(count)]


def get_learned_conditioning(
    model: Any,
    prompts: Sequence[str],
    steps: int,
    hires_steps: int | None = None,
    use_old_scheduling: bool = False,
) -> list[list[ScheduledPromptConditioning]]:
    """For each prompt, its schedule with encoded conditionings: ``[ScheduledPromptConditioning, ...]``.

    Each prompt's distinct schedule texts are encoded together in one call (so they share the
    encoder's padding to the longest text, as in A1111); a set of texts seen before in this call is
    not encoded again. `model` is anything `_encoder_of` accepts. A per-item conditioning is a tensor
    (T, D), or a dict such as ``{"crossattn": (T, D), "vector": (P,)}`` when the encoder gives one.
    """
    encode = _encoder_of(model)
    schedules = get_learned_conditioning_prompt_schedules(prompts, steps, hires_steps, use_old_scheduling)
    encoded: dict[tuple[str, ...], dict[str, Any]] = {}
    result: list[list[ScheduledPromptConditioning]] = []
    for schedule in schedules:
        texts = tuple(dict.fromkeys(text for _, text in schedule))
        by_text = encoded.get(texts)
        if by_text is None:
            batch = encode(SdConditioning(texts, copy_from=prompts))
            by_text = dict(zip(texts, _split_batch(batch, len(texts)), strict=True))
            encoded[texts] = by_text
        result.append([ScheduledPromptConditioning(end, by_text[text]) for end, text in schedule])
    return result


# --------------------------------------------------------------------------------------------------
# Composable diffusion: "a cat :1.2 AND a dog"
# --------------------------------------------------------------------------------------------------

re_AND = re.compile(r"\bAND\b")
# The sub-prompt's text (trailing whitespace dropped) and an optional trailing ":weight".
re_weight = re.compile(r"^(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$", re.S)


def get_multicond_prompt_list(
    prompts: Sequence[str],
) -> tuple[list[list[tuple[int, float]]], SdConditioning, dict[str, int]]:
    """Split prompts on uppercase ``AND`` into weighted sub-prompts.

    Returns (res_indexes, prompt_flat_list, prompt_indexes): for each prompt a list of
    ``(index into prompt_flat_list, weight)``; the distinct sub-prompt texts in first-seen order
    (an `SdConditioning` keeping the attributes of `prompts`); and text -> index. A sub-prompt's
    text keeps its leading whitespace and loses its trailing whitespace and ``:weight``.
    """
    res_indexes: list[list[tuple[int, float]]] = []
    prompt_flat_list = SdConditioning([], copy_from=prompts)
    prompt_indexes: dict[str, int] = {}
    for prompt in prompts:
        indexes: list[tuple[int, float]] = []
        for subprompt in re_AND.split(prompt):
            match = re_weight.search(subprompt)
            text, weight = match.groups() if match is not None else (subprompt, None)
            index = prompt_indexes.get(text)
            if index is None:
                index = prompt_indexes[text] = len(prompt_flat_list)
                prompt_flat_list.append(text)
            indexes.append((index, float(weight) if weight is not None else 1.0))
        res_indexes.append(indexes)
    return res_indexes, prompt_flat_list, prompt_indexes


@dataclass
class ComposableScheduledPromptConditioning:
    """One sub-prompt of a composable prompt: its conditioning schedule and its weight."""

    schedules: list[ScheduledPromptConditioning]
    weight: float = 1.0


@dataclass
class MulticondLearnedConditioning:
    """Conditioning of a batch of composable prompts: per prompt, its weighted sub-prompts."""

    shape: tuple  # (batch size,): samplers written for plain tensors read the batch size from it
    batch: list[list[ComposableScheduledPromptConditioning]] = field(default_factory=list)


def get_multicond_learned_conditioning(
    model: Any,
    prompts: Sequence[str],
    steps: int,
    hires_steps: int | None = None,
    use_old_scheduling: bool = False,
) -> MulticondLearnedConditioning:
    """`get_learned_conditioning` for composable prompts: every distinct sub-prompt is encoded once."""
    res_indexes, prompt_flat_list, _ = get_multicond_prompt_list(prompts)
    learned = get_learned_conditioning(model, prompt_flat_list, steps, hires_steps, use_old_scheduling)
    batch = [[ComposableScheduledPromptConditioning(learned[i], weight) for i, weight in indexes]
             for indexes in res_indexes]
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=batch)


# --------------------------------------------------------------------------------------------------
# Picking a step's conditioning
# --------------------------------------------------------------------------------------------------


class DictWithShape(dict):
    """A dict conditioning (``{"crossattn": ..., "vector": ...}``) whose `.shape` is its crossattn's."""

    def __init__(self, x: Mapping[str, Any], shape: Any = None) -> None:
        super().__init__(x)

    @property
    def shape(self) -> torch.Size:
        return self["crossattn"].shape


def _entry_at(schedule: Sequence[ScheduledPromptConditioning], current_step: int) -> Any:
    # The first entry whose end_at_step is not before the step. Past the last end (a sampler that
    # counts more steps than it was scheduled for), A1111 goes back to the first entry; kept so that
    # its images reproduce.
    for entry in schedule:
        if current_step <= entry.end_at_step:
            return entry.cond
    return schedule[0].cond


def stack_conds(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack (T, D) tensors; shorter ones are first padded by repeating their last token vector.

    Prompts of different lengths past 75 tokens encode to different T; A1111 pads this way.
    """
    import torch

    longest = max(t.shape[0] for t in tensors)
    padded = []
    for t in tensors:
        if t.shape[0] < longest:
            t = torch.cat([t, t[-1:].expand(longest - t.shape[0], *t.shape[1:])], dim=0)
        padded.append(t)
    return torch.stack(padded)


def _stack_any(conds: Sequence[Any], like: Any) -> Any:
    if isinstance(like, Mapping):
        stacked = {key: _stack_any([c[key] for c in conds], like[key]) for key in like}
        return DictWithShape(stacked)
    return stack_conds([c.to(device=like.device, dtype=like.dtype) for c in conds])


def reconstruct_cond_batch(c: Sequence[Sequence[ScheduledPromptConditioning]], current_step: int) -> Any:
    """The batch conditioning at `current_step`: one entry per schedule, stacked to (B, T, D).

    Dict conditionings are stacked per key into a `DictWithShape`. Items of different token length
    are padded as `stack_conds` does (A1111 requires equal lengths here).
    """
    like = c[0][0].cond
    return _stack_any([_entry_at(schedule, current_step) for schedule in c], like)


def reconstruct_multicond_batch(
    c: MulticondLearnedConditioning, current_step: int
) -> tuple[list[list[tuple[int, float]]], Any]:
    """(conds_list, tensor) at `current_step` for composable prompts.

    `tensor` stacks the conditioning of every sub-prompt of every prompt (padded as in
    `stack_conds`); conds_list[i] lists ``(row in tensor, weight)`` for prompt i.
    """
    like = c.batch[0][0].schedules[0].cond
    rows: list[Any] = []
    conds_list: list[list[tuple[int, float]]] = []
    for composable_prompts in c.batch:
        entries = []
        for sub in composable_prompts:
            entries.append((len(rows), sub.weight))
            rows.append(_entry_at(sub.schedules, current_step))
        conds_list.append(entries)
    return conds_list, _stack_any(rows, like)


# --------------------------------------------------------------------------------------------------
# Extra networks
# --------------------------------------------------------------------------------------------------


def parse_extra_networks(prompt: str) -> tuple[str, dict[str, list[ExtraNetworkParams]]]:
    """The prompt without its ``<kind:args>`` references, and the references' params by kind."""
    return _parse_extra_network_prompt(prompt)
