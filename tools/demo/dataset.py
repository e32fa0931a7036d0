"""The demo model's data: captioned pictures of shapes, deterministic by (seed, split, index).

Sample `i` of a split is a pure function of `(seed, split, i)`: training can resume at any step by
index alone, and any two machines produce the same pictures.

Held-out combinations (never drawn in the "train" split, in any picture, mentioned or not):
- colour + shape: `HELD_OUT_COLOR_SHAPE` (one pair per shape, each colour used at most once)
- shape + position: `HELD_OUT_SHAPE_POSITION` (one position per shape)
The evaluation captions (`heldout_eval_specs`) each contain exactly one held-out pair, so the
evaluation measures whether the model composes attributes it has only seen separately.

Splits: "train" obeys the hold-out rules; "checker" draws from every combination (the shape
classifier must know every shape everywhere; it judges pictures, it is not under test).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tools.demo import shapes as sh
from tools.demo.captions import SceneSpec, ShapeSpec, write_caption

DEFAULT_SIZE = 64

HELD_OUT_COLOR_SHAPE: frozenset[tuple[str, str]] = frozenset({
    ("red", "star"),
    ("green", "triangle"),
    ("blue", "ring"),
    ("yellow", "cross"),
    ("purple", "circle"),
    ("orange", "square"),
})
HELD_OUT_SHAPE_POSITION: frozenset[tuple[str, str]] = frozenset({
    ("circle", "top right"),
    ("square", "bottom left"),
    ("triangle", "left"),
    ("star", "bottom"),
    ("ring", "top left"),
    ("cross", "right"),
})

SPLITS = {"train": 0, "checker": 1, "eval": 2}

# How often a caption mentions an optional attribute in training, and how many shapes a scene has.
P_MENTION = {"color": 0.92, "size": 0.7, "position": 0.9, "background": 0.85}
P_SHAPE_COUNT = (0.8, 0.12, 0.08)  # one, two, three shapes
P_COUNTED = 0.4  # of the multi-shape scenes: "two red circles" (same kind) rather than a list

COLOR_JITTER = 10  # per channel, uniform
CENTER_JITTER = 0.025  # fraction of the side
RADIUS_JITTER = 0.06  # relative


@dataclass(frozen=True)
class Sample:
    """One picture with its caption and everything known about it."""

    index: int
    caption: str
    spec: SceneSpec
    """what the caption mentions"""
    background: str
    background_rgb: tuple[int, int, int]
    shapes: tuple[sh.PlacedShape, ...]
    """ground truth for every shape drawn, mentioned or not"""
    image: np.ndarray
    """(size, size, 3) uint8"""


def is_held_out(shape: str, color: str | None = None, position: str | None = None) -> bool:
    """Whether a shape with these attributes belongs to the held-out combinations."""
    return (color, shape) in HELD_OUT_COLOR_SHAPE or (shape, position) in HELD_OUT_SHAPE_POSITION


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), SPLITS[split], int(index)])


def _allowed_colors(shape: str, split: str, exclude: set[str]) -> list[str]:
    return [c for c in sh.COLORS if c not in exclude and (split != "train" or (c, shape) not in HELD_OUT_COLOR_SHAPE)]


def _allowed_positions(shape: str, split: str) -> list[str]:
    return [p for p in sh.POSITIONS if split != "train" or (shape, p) not in HELD_OUT_SHAPE_POSITION]


def _pick(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _jittered_rgb(rng: np.random.Generator, color: str) -> tuple[int, int, int]:
    jitter = rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3).tolist()
    r, g, b = (min(255, max(0, c + j)) for c, j in zip(sh.PALETTE[color], jitter, strict=True))
    return r, g, b


def _radius(rng: np.random.Generator, size: str, size_px: int) -> float:
    return sh.SIZE_RADIUS[size] * size_px * (1 + float(rng.uniform(-RADIUS_JITTER, RADIUS_JITTER)))


def _place(rng: np.random.Generator, shape: str, color: str, size: str, position: str, size_px: int,
           radius: float) -> sh.PlacedShape:
    cx, cy = sh.position_center(position, size_px)
    jx, jy = rng.uniform(-CENTER_JITTER, CENTER_JITTER, 2).tolist()
    lo, hi = radius + 0.5, size_px - radius - 0.5
    cx = min(hi, max(lo, cx + jx * size_px))
    cy = min(hi, max(lo, cy + jy * size_px))
    return sh.PlacedShape(shape, color, size, position, cx, cy, radius, _jittered_rgb(rng, color))


def _fits(position: str, radius: float, placed: list[sh.PlacedShape], size_px: int) -> bool:
    """Whether a shape at `position` can clear every placed shape whatever the jitter: the nominal
    centres must be further apart (on one axis) than both radii plus the jitter and a gap."""
    x, y = sh.position_center(position, size_px)
    margin = 2 * CENTER_JITTER * size_px + 2
    for other in placed:
        ox, oy = sh.position_center(other.position, size_px)
        if max(abs(x - ox), abs(y - oy)) < radius + other.radius + margin:
            return False
    return True


def _overlap(a: sh.PlacedShape, b: sh.PlacedShape) -> bool:
    ax0, ay0, ax1, ay1 = a.bbox
    bx0, by0, bx1, by1 = b.bbox
    return ax0 <= bx1 and bx0 <= ax1 and ay0 <= by1 and by0 <= ay1  # touching counts: keep a gap


def _sample_spec(rng: np.random.Generator, split: str) -> tuple[SceneSpec, list[dict[str, str | None]], bool]:
    """A caption spec without positions, per drawn shape the attributes it must have (None: free),
    and whether the caption will name the positions the layout picks."""
    n = int(rng.choice(3, p=P_SHAPE_COUNT)) + 1
    mention = {k: rng.random() < p for k, p in P_MENTION.items()}
    if n == 1:
        clauses = [(_pick(rng, sh.SHAPES), 1)]
    elif rng.random() < P_COUNTED:
        clauses = [(_pick(rng, sh.SHAPES), n)]
    else:
        clauses = [(_pick(rng, sh.SHAPES), 1) for _ in range(n)]
    specs: list[ShapeSpec] = []
    wants: list[dict[str, str | None]] = []
    used_colors: set[str] = set()
    for shape, count in clauses:
        color = _pick(rng, _allowed_colors(shape, split, set()))
        used_colors.add(color)
        size = _pick(rng, sh.SIZES) if mention["size"] else None
        specs.append(ShapeSpec(shape=shape, color=color if mention["color"] else None, size=size, count=count))
        wants.extend({"shape": shape, "color": color, "size": size, "position": None} for _ in range(count))
    if n == 1 and not mention["position"]:
        # A lone shape whose caption names no place sits in the centre, as subjects do in photographs:
        # "a red circle" is then drawn in the middle of the canvas, which is also what puts it in the
        # middle of the masked area when inpainting with "Only masked".
        wants[0]["position"] = "center"
    background = _pick(rng, [c for c in sh.COLORS if c not in used_colors])
    spec = SceneSpec(shapes=tuple(specs), background=background if mention["background"] else None)
    return spec, [dict(w, background=background) for w in wants], mention["position"]


def _with_positions(spec: SceneSpec, placed: list[sh.PlacedShape]) -> SceneSpec:
    """`spec` naming the position of every single-shape clause as laid out."""
    clauses: list[ShapeSpec] = []
    k = 0
    for clause in spec.shapes:
        if clause.count == 1:
            clause = ShapeSpec(clause.shape, clause.color, clause.size, placed[k].position, 1)
        clauses.append(clause)
        k += clause.count
    return SceneSpec(shapes=tuple(clauses), background=spec.background)


def _layout(rng: np.random.Generator, wants: list[dict[str, str | None]], split: str, size_px: int,
            attempts: int = 60) -> list[sh.PlacedShape] | None:
    """Place the shapes in distinct cells without overlap; None when no layout was found."""
    for _ in range(attempts):
        placed: list[sh.PlacedShape] = []
        taken: set[str] = set()
        for want in wants:
            shape = str(want["shape"])
            size = want["size"] or (_pick(rng, sh.SIZES) if len(wants) == 1 else _pick(rng, ("small", "small", "big")))
            radius = _radius(rng, str(size), size_px)
            position = want["position"]
            if position is None:
                free = [p for p in _allowed_positions(shape, split)
                        if p not in taken and _fits(p, radius, placed, size_px)]
                if not free:
                    break
                position = _pick(rng, free)
            item = _place(rng, shape, str(want["color"]), str(size), str(position), size_px, radius)
            if position in taken or any(_overlap(item, other) for other in placed):
                break
            taken.add(str(position))
            placed.append(item)
        else:
            return placed
    return None


def make_sample(seed: int, index: int, *, split: str = "train", size: int = DEFAULT_SIZE) -> Sample:
    """Sample `index` of a split: the same arguments always give the same sample."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    rng = _rng(seed, split, index)
    while True:  # a spec that cannot be laid out (three big shapes...) is redrawn from the same stream
        spec, wants, name_positions = _sample_spec(rng, split)
        placed = _layout(rng, wants, split, size)
        if placed is not None:
            break
    if name_positions:
        spec = _with_positions(spec, placed)
    background = str(wants[0]["background"])
    return render_sample(index, write_caption(spec, rng), spec, background, placed, size, rng)


def render_sample(index: int, caption: str, spec: SceneSpec, background: str, placed: list[sh.PlacedShape],
                  size: int, rng: np.random.Generator) -> Sample:
    bg_rgb = _jittered_rgb(rng, background)
    image = sh.render(size, bg_rgb, placed)
    return Sample(index=index, caption=caption, spec=spec, background=background, background_rgb=bg_rgb,
                  shapes=tuple(placed), image=image)


def sample_for_spec(spec: SceneSpec, seed: int, *, size: int = DEFAULT_SIZE, caption: str | None = None) -> Sample:
    """A picture that matches a given single- or multi-shape spec (free attributes drawn from `seed`).
    Used for img2img/inpainting sources and checker tests; no hold-out rules apply."""
    rng = np.random.default_rng([int(seed), SPLITS["eval"], 1_000_003])
    used = {s.color for s in spec.shapes if s.color}
    if spec.background is not None and spec.background in used:
        raise ValueError("the background colour must differ from every shape colour")
    for _ in range(100):
        wants: list[dict[str, str | None]] = []
        colors = set(used)
        for s in spec.shapes:
            color = s.color or _pick(rng, [c for c in sh.COLORS if c != spec.background and c not in colors])
            colors.add(color)
            wants.extend({"shape": s.shape, "color": color, "size": s.size, "position": s.position}
                         for _ in range(s.count))
        background = spec.background or _pick(rng, [c for c in sh.COLORS if c not in colors])
        placed = _layout(rng, wants, "eval", size)
        if placed is not None:
            return render_sample(-1, caption or write_caption(spec), spec, background, placed, size, rng)
    raise ValueError(f"no layout found for {spec}")


def iter_samples(seed: int, start: int, count: int, *, split: str = "train", size: int = DEFAULT_SIZE) -> Iterator[Sample]:
    for i in range(start, start + count):
        yield make_sample(seed, i, split=split, size=size)


def make_batch(seed: int, start: int, count: int, *, split: str = "train",
               size: int = DEFAULT_SIZE) -> tuple[np.ndarray, list[str]]:
    """Samples `start .. start+count-1` as a (count, size, size, 3) uint8 array and their captions."""
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    captions: list[str] = []
    for j, sample in enumerate(iter_samples(seed, start, count, split=split, size=size)):
        images[j] = sample.image
        captions.append(sample.caption)
    return images, captions


def heldout_eval_specs(per_pair: int = 2, seed: int = 7) -> list[SceneSpec]:
    """Fully specified single-shape captions, each containing exactly one held-out combination.

    For every held-out colour+shape pair `per_pair` specs (position and background free but not
    themselves held out), and the same for every held-out shape+position pair (with a colour that
    is allowed for that shape). The list is fixed for a given `seed`.
    """
    rng = np.random.default_rng([seed, SPLITS["eval"]])
    specs: list[SceneSpec] = []
    for color, shape in sorted(HELD_OUT_COLOR_SHAPE):
        for _ in range(per_pair):
            position = _pick(rng, _allowed_positions(shape, "train"))
            specs.append(_full_spec(rng, shape, color, position))
    for shape, position in sorted(HELD_OUT_SHAPE_POSITION):
        for _ in range(per_pair):
            color = _pick(rng, _allowed_colors(shape, "train", set()))
            specs.append(_full_spec(rng, shape, color, position))
    return specs


def _full_spec(rng: np.random.Generator, shape: str, color: str, position: str) -> SceneSpec:
    size = _pick(rng, sh.SIZES)
    background = _pick(rng, [c for c in sh.COLORS if c != color])
    return SceneSpec(shapes=(ShapeSpec(shape, color=color, size=size, position=position),), background=background)
