"""The scene generator: boxes match the drawn pixels, questions match the scene."""

from __future__ import annotations

import numpy as np
import pytest

from attnstore.inputs.scenes import (
    ASPECTS,
    COLORS,
    QUESTION_TYPES,
    SHAPES,
    make_scene,
    position_word,
    scene_questions,
)


def scenes(n=40, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return [make_scene(rng, **kw) for _ in range(n)]


def test_same_seed_same_scene_and_different_seed_differs():
    a, b, c = scenes(1, 3)[0], scenes(1, 3)[0], scenes(1, 4)[0]
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and a.objects == b.objects
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image)) or a.objects != c.objects


def test_boxes_hold_the_drawn_object_and_nothing_else_is_coloured():
    for scene in scenes(background="plain"):
        pixels = np.asarray(scene.image).astype(int)  # [y, x, rgb]
        h, w, _ = pixels.shape
        outside = np.ones((h, w), bool)
        assert 1 <= len(scene.objects) <= 4
        assert len({o.color for o in scene.objects}) == len({o.shape for o in scene.objects}) == len(scene.objects)
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
            px = slice(round(x0 * w), round(x1 * w)), slice(round(y0 * h), round(y1 * h))
            crop = pixels[px[1], px[0]]
            is_colour = (np.abs(crop - np.array(COLORS[obj.color])).sum(-1) < 10).mean()
            # circle ~0.79 of its box, triangle ~0.5, cross 5/9: the object fills a good part of its box
            assert 0.4 < is_colour <= 1.0, (obj, is_colour)
            outside[px[1], px[0]] = False
        background = pixels[outside]
        assert (background.max(-1) - background.min(-1)).max() <= 30  # greyish: no object colour outside boxes


@pytest.mark.parametrize("aspect", ASPECTS)
def test_aspect_ratio_and_longest_edge(aspect):
    scene = scenes(1, 1, aspect=aspect, longest=240)[0]
    w, h = scene.image.size
    assert max(w, h) == 240
    assert abs(w / h - aspect) < 0.02


def test_questions_are_answered_by_the_scene():
    rng = np.random.default_rng(5)
    seen = set()
    for scene in scenes(60, 2, n_objects=(2, 4)):
        present = {(o.color, o.shape) for o in scene.objects}
        for q in scene_questions(scene, rng, every_object=True):
            seen.add((q.kind, q.answer))
            if q.kind == "color":
                obj = scene.objects[q.target]
                assert obj.shape in q.text and q.answer == obj.color
            elif q.kind == "shape":
                obj = scene.objects[q.target]
                assert obj.color in q.text and q.answer == obj.shape
            elif q.kind == "presence":
                named = next((c, s) for c in COLORS for s in SHAPES if f"{c} {s}" in q.text)
                assert q.answer == ("yes" if named in present else "no")
            else:
                assert q.answer == position_word(scene.objects[q.target].box)
    kinds = {k for k, _ in seen}
    assert kinds == set(QUESTION_TYPES)
    assert {a for k, a in seen if k == "presence"} == {"yes", "no"}


def test_position_word_is_none_when_ambiguous():
    assert position_word((0.0, 0.4, 0.2, 0.6)) == "left"
    assert position_word((0.4, 0.8, 0.6, 1.0)) == "bottom"
    assert position_word((0.45, 0.45, 0.55, 0.55)) is None  # at the centre
    assert position_word((0.0, 0.0, 0.2, 0.2)) is None  # on the diagonal
