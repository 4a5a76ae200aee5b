"""Stores with object boxes in the explorer: boxes drawn on the figure (a toggle), the head gallery
sorted by grounding, and the first view on the head that localises the asked objects best."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr

from attnstore.analysis.tokens import ANSWER_STEP
from attnstore.render.geometry import OBJECT_LINE, TARGET_LINE
from attnstore.render.text import quoted
from explorer import figures, views
from explorer.panels import heatmap
from explorer.state import StoreState


@pytest.fixture(scope="module")
def scenes(scene_store):
    return StoreState(scene_store)


def object_rects(shapes: list[dict]) -> list[dict]:
    return [s for s in shapes if s.get("line") in (OBJECT_LINE, TARGET_LINE)]


def test_boxes_are_drawn_where_the_store_puts_them_the_asked_one_marked(scenes):
    ds = scenes.ds
    for image in range(ds.sizes["image"]):
        geom = views.geometry(scenes, image)
        labels = [str(v) for v in ds["object_label"].values[image]]
        present = [i for i, label in enumerate(labels) if label]
        target = int(ds["target_object"].values[image])
        rects = object_rects(figures.overlay_figure(geom, "img.png", boxes=True)["layout"]["shapes"])
        assert len(rects) == 2 * len(present)  # on the image and on the global view's copy
        on_image = rects[: len(present)]
        for rect, obj in zip(on_image, present, strict=True):
            x0, y0, x1, y1 = ds["object_box"].values[image, obj]
            assert rect["name"] == labels[obj]
            assert (rect["x0"], rect["y0"]) == pytest.approx((x0 * geom.width, y0 * geom.height))
            assert (rect["x1"], rect["y1"]) == pytest.approx((x1 * geom.width, y1 * geom.height))
            assert (rect["line"] is TARGET_LINE) == (obj == target)
            assert rect["label"]["text"].endswith("(asked)") == (obj == target)
        g = geom.glob  # the copy: the same boxes scaled into the global panel
        x0 = ds["object_box"].values[image, present[0], 0]
        assert rects[len(present)]["x0"] == pytest.approx(g.x0 + g.width * x0)
        assert object_rects(figures.overlay_figure(geom, "img.png", boxes=False)["layout"]["shapes"]) == []


def test_the_boxes_toggle_patches_the_shapes_and_keeps_the_grid(scenes):
    params = views.default_params(scenes)
    style = heatmap.style_of("viridis", 0.6, ["on"], [])  # grid on, boxes off
    drawn = heatmap.draw(scenes, params, style, params.image, lambda i: "x", changed=["boxes"])
    ops = drawn.figure.to_plotly_json()["operations"]
    shapes = next(op["params"]["value"] for op in ops if op["location"] == ["layout", "shapes"])
    geom = views.geometry(scenes, params.image)
    assert object_rects(shapes) == [] and len(shapes) == len(geom.tiles.lines_x) + len(geom.tiles.lines_y) + 1
    style = heatmap.style_of("viridis", 0.6, [], ["on"])
    drawn = heatmap.draw(scenes, params, style, params.image, lambda i: "x", changed=["boxes"])
    ops = drawn.figure.to_plotly_json()["operations"]
    shapes = next(op["params"]["value"] for op in ops if op["location"] == ["layout", "shapes"])
    assert len(object_rects(shapes)) == 2 * len(geom.objects) and len(shapes) == 2 * len(geom.objects) + 1


def test_the_gallery_sorts_the_layer_heads_by_their_in_box_lift(scenes):
    ds = scenes.ds
    params = views.default_params(scenes)
    for layer in range(scenes.n_layers):
        view = views.ViewParams(image=params.image, token=params.token, layer=layer)
        grounding = views.head_grounding(scenes, view)
        target = int(ds["target_object"].values[params.image])
        assert grounding.label == str(ds["object_label"].values[params.image, target])
        # the library's store-wide scores of the row that chose the answer, the image's asked object
        scores = ds.attn.grounding(ANSWER_STEP, images=[params.image])
        expected = scores["inbox_lift"].sel(image=params.image, layer=layer)
        np.testing.assert_allclose(grounding.lift, expected.values, rtol=1e-5)
        order = figures.gallery_order(np.zeros(4), np.zeros(4), "grounding", grounding.lift)
        assert order == [int(h) for h in np.argsort(-expected.values, kind="stable")]
        assert list(grounding.lift[order]) == sorted(grounding.lift, reverse=True)


def test_the_first_view_is_the_row_that_chose_the_answer_on_the_best_localising_head(scene_store):
    """Head (0, 3) of the row that generated the first answer word (the prompt's last row) is made
    to look only inside each asked object's box: the explorer opens on that row and head, and says
    which word the row chose."""
    from attnstore.store import open_dataset

    ds = open_dataset(scene_store).load()
    attention = ds["attention"].values.copy()  # [image, layer, head, query, key]
    for i in range(ds.sizes["image"]):
        img = ds.isel(image=i)
        row = int(np.flatnonzero(img["query_position"].values == scene_row(img) - 1)[0])
        x0, y0, x1, y1 = img["object_box"].values[int(img["target_object"])]
        box = img["patch_box"].values  # [key, 4]
        cx, cy = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
        inside = np.flatnonzero((cx > x0) & (cx < x1) & (cy > y0) & (cy < y1))
        attention[i, 0, 3, row] = 0
        attention[i, 0, 3, row, inside] = 1 / inside.size
    ds["attention"].values = attention
    state = StoreState(ds)
    params = views.default_params(state)
    meta = state.image(params.image)
    assert params.token == meta.default_token() - 1 == scene_row(meta.img) - 1  # it chose the first answer token
    assert (params.layer, params.head) == (0, 3)
    assert views.head_grounding(state, params).lift.argmax() == 3
    answer_word = quoted(meta.display[scene_row(meta.img)])
    assert f"chose the answer word {answer_word}" in views.heatmap(state, params).note


def scene_row(img) -> int:
    """Sequence position of the first generated token of one image."""
    from attnstore.schema import TokenKind

    return int(np.flatnonzero(img["token_kind"].values == int(TokenKind.GENERATED))[0])


def test_a_store_without_boxes_opens_on_a_measured_view_and_offers_no_box_controls(state):
    params = views.default_params(state)
    assert params == views.measured_first_view(state) and not state.has_objects  # tests/explorer/test_colour_scale.py
    assert views.head_grounding(state, params) is None


def test_without_an_asked_object_the_box_is_the_one_labelled_with_the_clicked_word():
    img = xr.Dataset({"object_label": (("object",), np.array(["dog", "red ball", ""], dtype=object))})
    meta = SimpleNamespace(img=img, display=["a", " Dog", "ball", "cat"])
    assert [views.grounding_object(meta, k) for k in range(4)] == [-1, 0, -1, -1]


def test_a_token_before_the_image_shows_no_box_score(scenes):
    from explorer.panels.gallery import _item

    meta = scenes.image(0)
    early = int(next(p for p in meta.query_position if meta.before_image(int(p))))
    grounding = views.head_grounding(scenes, views.ViewParams(image=0, token=early, layer=0))
    assert not np.isfinite(grounding.lift).any()  # no attention on the image: no share to speak of
    item = _item(0, np.zeros((2, 2)), 0.0, 0.0, float(grounding.lift[0]), 0, "viridis", grounding)
    assert "box" not in item.children[2].children and "chance" not in item.title
