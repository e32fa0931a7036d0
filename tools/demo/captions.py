"""Scene descriptions and the captions that say them, both ways.

A `SceneSpec` holds what a caption *mentions*: the shapes (with an optional colour, size, position
and a count), and optionally the background colour. The dataset draws a picture that agrees with
the spec and fills in whatever it leaves open; the checker parses a prompt back into a spec to know
what to look for. `parse_caption(write_caption(spec, rng)) == spec` for every template, which the
tests check, so captions and ground truth can never drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from tools.demo.shapes import COLORS, PLURALS, POSITIONS, SHAPES, SIZES

COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
_WORD_COUNTS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}
_SINGULAR = {plural: shape for shape, plural in PLURALS.items()}


@dataclass(frozen=True)
class ShapeSpec:
    """One shape clause of a caption ("two small red circles", "a star at the top left")."""

    shape: str
    color: str | None = None
    size: str | None = None
    position: str | None = None
    count: int = 1

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}")
        if self.color is not None and self.color not in COLORS:
            raise ValueError(f"unknown color {self.color!r}")
        if self.size is not None and self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}")
        if self.position is not None and self.position not in POSITIONS:
            raise ValueError(f"unknown position {self.position!r}")
        if self.count not in COUNT_WORDS:
            raise ValueError(f"count must be 1, 2 or 3, not {self.count!r}")
        if self.count > 1 and self.position is not None:
            raise ValueError("a clause for several shapes cannot name one position")


@dataclass(frozen=True)
class SceneSpec:
    """What a caption says about a picture."""

    shapes: tuple[ShapeSpec, ...]
    background: str | None = None
    extra: tuple[str, ...] = field(default=(), compare=False)
    """words of the caption that were not understood (parsing only; informative)"""

    @property
    def total_shapes(self) -> int:
        return sum(s.count for s in self.shapes)


# --- writing -------------------------------------------------------------------------------------------

# Phrasings per position kind; the parser accepts all of them.
_POSITION_PHRASES = {
    "center": ("in the center", "in the middle", "at the center"),
    "side": ("on the {p}", "at the {p}", "on the {p} side"),
    "edge": ("at the {p}", "near the {p}", "at the {p} edge"),
    "corner": ("at the {p}", "in the {p} corner", "in the {p}"),
}
_BACKGROUND_PHRASES = ("on {a} {c} background", "{c} background", "against {a} {c} background", "with {a} {c} background")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _position_phrase(position: str, rng: np.random.Generator | None) -> str:
    if position == "center":
        kind = "center"
    elif " " in position:
        kind = "corner"
    else:
        kind = "side" if position in ("left", "right") else "edge"
    options = _POSITION_PHRASES[kind]
    choice = options[0 if rng is None else int(rng.integers(len(options)))]
    return choice.format(p=position)


def _noun_phrase(spec: ShapeSpec, rng: np.random.Generator | None) -> str:
    words = [w for w in (spec.size, spec.color) if w]
    noun = spec.shape if spec.count == 1 else PLURALS[spec.shape]
    if spec.count == 1:
        first = (words or [noun])[0]
        det = _article(first) if rng is None or rng.random() < 0.85 else "one"
    else:
        det = COUNT_WORDS[spec.count]
    phrase = " ".join([det, *words, noun])
    if spec.position is not None:
        phrase += " " + _position_phrase(spec.position, rng)
    return phrase


def write_caption(spec: SceneSpec, rng: np.random.Generator | None = None) -> str:
    """A caption for `spec`. With an rng, one of several natural phrasings is chosen; without, the
    canonical one ("a big red circle at the top left on a blue background")."""
    clauses = [_noun_phrase(s, rng) for s in spec.shapes]
    if len(clauses) == 1:
        body = clauses[0]
    else:
        body = ", ".join(clauses[:-1]) + " and " + clauses[-1]
    if spec.background is None:
        return body
    form = 0 if rng is None else int(rng.integers(len(_BACKGROUND_PHRASES)))
    background = _BACKGROUND_PHRASES[form].format(a=_article(spec.background), c=spec.background)
    if form == 0 or (form in (2, 3) and (rng is None or rng.random() < 0.5)):
        return f"{body} {background}"
    if form == 1:
        return f"{body}, {background}" if rng is None or rng.random() < 0.7 else f"{background}, {body}"
    return f"{body}, {background}"


# --- reading -------------------------------------------------------------------------------------------

_COLOR_RE = "|".join(COLORS)
_BACKGROUND_RE = re.compile(rf"(?:\b(?:on|against|with)\s+)?(?:\b(?:a|an)\s+)?\b({_COLOR_RE})\s+background\b")
_POSITION_RE = re.compile(
    r"\b(?:in|at|on|near)\s+the\s+(?:(top|bottom)\s+(left|right)|(left|right|top|bottom)|(center|centre|middle))"
    r"(?:\s+(?:corner|side|edge))?\b"
)
_CLAUSE_SPLIT = re.compile(r"\s*,\s*(?:and\s+)?|\s+and\s+")
_WORD = re.compile(r"[a-z]+")


def _parse_position(match: re.Match[str]) -> str:
    vertical, horizontal, edge, _center = match.groups()
    if vertical:
        return f"{vertical} {horizontal}"
    if edge:
        return edge
    return "center"


def _parse_clause(text: str) -> tuple[ShapeSpec | None, list[str]]:
    position = None
    m = _POSITION_RE.search(text)
    if m:
        position = _parse_position(m)
        text = text[: m.start()] + " " + text[m.end() :]
    shape = color = size = None
    count = 1
    unknown: list[str] = []
    for word in _WORD.findall(text):
        if word in SHAPES:
            shape = word
        elif word in _SINGULAR:
            shape, count = _SINGULAR[word], max(count, 2)
        elif word in COLORS:
            color = word
        elif word in SIZES:
            size = word
        elif word in ("large", "huge"):
            size = "big"
        elif word in ("little", "tiny"):
            size = "small"
        elif word in _WORD_COUNTS:
            count = _WORD_COUNTS[word] if word not in ("a", "an") else count
        elif word != "with":
            unknown.append(word)
    if shape is None:
        return None, unknown
    if count > 1:
        position = None
    return ShapeSpec(shape=shape, color=color, size=size, position=position, count=count), unknown


def parse_caption(text: str) -> SceneSpec:
    """The spec a caption (or a user's prompt in the same words) describes. Unknown words are kept in
    `extra`; clauses that name no shape are skipped."""
    text = text.lower().strip()
    background = None
    m = _BACKGROUND_RE.search(text)
    if m:
        background = m.group(1)
        text = text[: m.start()] + "," + text[m.end() :]
    shapes: list[ShapeSpec] = []
    extra: list[str] = []
    for clause in _CLAUSE_SPLIT.split(text):
        if not clause.strip():
            continue
        spec, unknown = _parse_clause(clause)
        extra.extend(unknown)
        if spec is not None:
            shapes.append(spec)
    return SceneSpec(shapes=tuple(shapes), background=background, extra=tuple(extra))
