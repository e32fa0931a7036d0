"""The checker that judges pictures against captions, measured on generator pictures."""

from __future__ import annotations

import numpy as np
import pytest

from tools.demo import checker
from tools.demo.captions import SceneSpec, ShapeSpec, parse_caption
from tools.demo.dataset import sample_for_spec


@pytest.fixture(scope="module")
def classifier() -> checker.ShapeClassifier:
    return checker.ShapeClassifier.load()


def test_classifier_weights_are_small() -> None:
    assert checker.WEIGHTS_PATH.stat().st_size < 1_000_000


def test_checker_agrees_with_ground_truth(classifier: checker.ShapeClassifier) -> None:
    rates = checker.judge_generator_pictures(seed=11, pictures=60, classifier=classifier)
    assert all(v >= 0.98 for v in rates.values()), rates


def test_shape_classes_of_softened_pictures(classifier: checker.ShapeClassifier) -> None:
    assert checker.accuracy(classifier, seed=12, pictures=80, degraded=1.0) >= 0.97


def test_wrong_captions_are_rejected(classifier: checker.ShapeClassifier) -> None:
    image = sample_for_spec(SceneSpec((ShapeSpec("circle", "red", "big", "left"),), "blue"), seed=1).image
    right = checker.judge(image, parse_caption("a big red circle on the left on a blue background"), classifier)
    assert right.background_ok and right.color_ok and right.shape_ok and right.position_ok and right.size_ok
    assert right.scene_ok
    wrong = checker.judge(image, parse_caption("a small green square on the right, yellow background"), classifier)
    assert not any((wrong.background_ok, wrong.color_ok, wrong.shape_ok, wrong.position_ok, wrong.size_ok))
    assert not wrong.scene_ok


def test_multi_shape_scenes(classifier: checker.ShapeClassifier) -> None:
    spec = SceneSpec((ShapeSpec("star", "yellow"), ShapeSpec("ring", "white")), "black")
    image = sample_for_spec(spec, seed=5).image
    assert checker.judge(image, spec, classifier).scene_ok
    assert not checker.judge(image, SceneSpec((ShapeSpec("star", "yellow"),), "black"), classifier).scene_ok
    assert not checker.judge(image, SceneSpec((ShapeSpec("star", "yellow"), ShapeSpec("cross", "white")), "black"),
                             classifier).scene_ok
    two = sample_for_spec(SceneSpec((ShapeSpec("triangle", "orange", count=2),), "purple"), seed=2).image
    assert checker.judge(two, parse_caption("two orange triangles, purple background"), classifier).scene_ok


def test_empty_picture_has_no_shape(classifier: checker.ShapeClassifier) -> None:
    image = np.full((64, 64, 3), (35, 75, 215), dtype=np.uint8)
    j = checker.judge(image, parse_caption("a red circle on a blue background"), classifier)
    assert j.background_ok and j.detections == [] and not j.shape_ok and not j.color_ok
