"""The procedural data: determinism, captions that mean what was drawn, held-out combinations."""

from __future__ import annotations

import numpy as np

from tools.demo import shapes as sh
from tools.demo.captions import SceneSpec, ShapeSpec, parse_caption, write_caption
from tools.demo.dataset import (
    HELD_OUT_COLOR_SHAPE,
    HELD_OUT_SHAPE_POSITION,
    heldout_eval_specs,
    is_held_out,
    make_batch,
    make_sample,
    sample_for_spec,
)


def test_vocabulary_covers_the_issue() -> None:
    assert {"circle", "square", "triangle", "star", "ring", "cross"} <= set(sh.SHAPES)
    assert {"red", "green", "blue", "yellow", "orange", "purple", "white", "black"} <= set(sh.COLORS)
    assert {"left", "right", "top", "bottom", "center", "top left", "bottom right"} <= set(sh.POSITIONS)
    assert set(sh.SIZES) == {"small", "big"}


def test_samples_are_a_function_of_seed_and_index() -> None:
    a, b = make_sample(3, 17), make_sample(3, 17)
    assert a.caption == b.caption and np.array_equal(a.image, b.image) and a.shapes == b.shapes
    images, captions = make_batch(3, 15, 4)
    assert captions[2] == a.caption and np.array_equal(images[2], a.image)
    other = make_sample(4, 17)
    assert other.caption != a.caption or not np.array_equal(other.image, a.image)
    assert a.image.shape == (64, 64, 3) and a.image.dtype == np.uint8
    assert make_sample(3, 17, size=128).image.shape == (128, 128, 3)


def test_captions_parse_back_to_what_was_drawn() -> None:
    counts = set()
    for i in range(400):
        s = make_sample(1, i)
        spec = parse_caption(s.caption)
        assert spec == s.spec, s.caption
        assert 1 <= len(s.shapes) <= 3 and spec.total_shapes == len(s.shapes)
        counts.add(len(s.shapes))
        if spec.background is not None:
            assert spec.background == s.background
        assert s.background not in {p.color for p in s.shapes}
        drawn = list(s.shapes)
        for clause in spec.shapes:  # each clause names shapes that really are in the picture
            for _ in range(clause.count):
                match = next(p for p in drawn if p.shape == clause.shape
                             and clause.color in (None, p.color) and clause.size in (None, p.size)
                             and clause.position in (None, p.position))
                drawn.remove(match)
    assert counts == {1, 2, 3}


def test_a_lone_shape_with_no_place_named_sits_in_the_centre() -> None:
    lone = [s for s in (make_sample(2, i) for i in range(300))
            if len(s.shapes) == 1 and s.spec.shapes[0].position is None]
    assert len(lone) > 10
    assert {s.shapes[0].position for s in lone} == {"center"}
    # Scenes of several shapes still scatter them when the caption leaves the places out.
    many = [s for s in (make_sample(2, i) for i in range(600))
            if len(s.shapes) > 1 and all(c.position is None for c in s.spec.shapes)]
    assert len({p.position for s in many for p in s.shapes}) > 4


def test_caption_variations_parse_the_same() -> None:
    spec = SceneSpec((ShapeSpec("star", "purple", "small", "top left"),), "white")
    rng = np.random.default_rng(0)
    captions = {write_caption(spec, rng) for _ in range(60)}
    assert len(captions) > 5
    assert all(parse_caption(c) == spec for c in captions)
    assert write_caption(spec) == "a small purple star at the top left on a white background"
    assert parse_caption("Two yellow squares, green background") == SceneSpec(
        (ShapeSpec("square", "yellow", count=2),), "green")
    assert parse_caption("a big red circle on a blue background") == SceneSpec(
        (ShapeSpec("circle", "red", "big"),), "blue")


def test_training_split_never_draws_held_out_combinations() -> None:
    seen_in_checker_split = set()
    for i in range(1500):
        for p in make_sample(0, i).shapes:
            assert not is_held_out(p.shape, p.color, p.position), (i, p)
        for p in make_sample(0, i, split="checker").shapes:
            if is_held_out(p.shape, p.color, p.position):
                seen_in_checker_split.add((p.shape, p.color, p.position))
    assert seen_in_checker_split  # the rule, not chance, keeps them out of training


def test_evaluation_captions_each_hold_one_held_out_pair() -> None:
    specs = heldout_eval_specs()
    assert len(specs) == 2 * (len(HELD_OUT_COLOR_SHAPE) + len(HELD_OUT_SHAPE_POSITION))
    for spec in specs:
        (shape,) = spec.shapes
        assert None not in (shape.color, shape.size, shape.position, spec.background)
        assert spec.background != shape.color
        pairs = [(shape.color, shape.shape) in HELD_OUT_COLOR_SHAPE, (shape.shape, shape.position) in HELD_OUT_SHAPE_POSITION]
        assert sum(pairs) == 1, spec
        assert parse_caption(write_caption(spec)) == spec


def test_pictures_show_their_ground_truth() -> None:
    spec = SceneSpec((ShapeSpec("circle", "red", "big", "left"),), "blue")
    s = sample_for_spec(spec, seed=0)
    (circle,) = s.shapes
    assert circle.position == "left" and circle.cx < 32
    centre = s.image[int(circle.cy), int(circle.cx)].astype(int)
    assert np.abs(centre - np.array(circle.rgb)).max() <= 1
    assert np.abs(s.image[2, 60].astype(int) - np.array(s.background_rgb)).max() <= 1
    x0, y0, x1, y1 = circle.bbox
    outside = np.ones((64, 64), dtype=bool)
    outside[y0:y1, x0:x1] = False
    assert np.abs(s.image[outside].astype(int) - np.array(s.background_rgb)).max() <= 1
