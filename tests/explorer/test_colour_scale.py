"""Honest colour scales, the measured first view of a store without boxes, and the explorer polish of
issue 21 (export names, rollout's reach, box labels, the compare figure, the modality legend, the
side-panel skeleton): pure functions and callbacks, no browser."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from dash import html

from attnstore.analysis import MapSpec, compute_map
from attnstore.errors import InvalidArgument
from attnstore.extraction.synthetic import _gradient_image, synthetic_extraction
from attnstore.records import Extraction
from attnstore.render import file_name
from attnstore.render.geometry import ObjectBox
from attnstore.render.scale import NEGLIGIBLE_SHARE, colour_top, colourbar_title, negligible, share_label
from attnstore.store import AttnStore, StoreShape
from explorer import figures, ids, layout, views
from explorer.callbacks import follow_token
from explorer.panels import gallery, heatmap
from explorer.state import StoreState
from explorer.views import ViewParams

PLANTED = (2, 1)  # (layer, head) that looks at one patch for the answer word "dog"
STOP_WORD_HEAD = (0, 0)  # looks harder at a patch, but for "the": not a content word
BACKGROUND = 1e-5  # every other head's weight on each image patch: ~0.1 % of its attention on the image


def planted_extraction() -> Extraction:
    """A 2x2-tile SmolVLM layout whose heads all look at the first token, except `PLANTED` for "dog"
    (70 % on one patch) and weaker or stop-word heads elsewhere."""
    ext = synthetic_extraction((2, 2), 12, np.random.default_rng(1), n_layers=3, n_heads=4, seq=16)
    rows, n_key = ext.query_position, len(ext.token_text)
    patches = np.flatnonzero(ext.layout.patch_tile >= 0)
    att = np.zeros((3, 4, rows.shape[0], n_key), np.float32)  # [layer, head, query, key]
    att[..., patches] = BACKGROUND
    att[:, :, np.arange(n_key)[None, :] > rows[:, None]] = 0.0  # causal
    att[..., 0] += 1.0 - att.sum(-1)  # the rest on the first token (a sink)

    def plant(word: str, layer: int, head: int, patch: int, weight: float) -> None:
        row = [i for i, p in enumerate(rows) if ext.token_text[p] == word][0]
        att[layer, head, row] = 0.0
        att[layer, head, row, patches[patch]] = weight
        att[layer, head, row, 0] = 1.0 - weight

    plant("Ġdog", *PLANTED, patch=10, weight=0.7)
    plant("Ġthe", *STOP_WORD_HEAD, patch=5, weight=0.95)
    plant("Ġred", 1, 3, patch=3, weight=0.3)
    return replace(ext, attention=att.astype(np.float16))


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> StoreState:
    ext = planted_extraction()
    path = str(tmp_path_factory.mktemp("planted") / "planted.zarr")
    shape = StoreShape(3, 4, query_capacity=ext.n_query, key_capacity=ext.n_key)
    store = AttnStore.create(path, shape, {"model_id": "synthetic", "model_family": "idefics3", "queries": "text"})
    (index,) = store.allocate(["planted.png"], ["planted.png"])
    store.write_image(index, ext, _gradient_image(640, 480))
    return StoreState(path)


def position_of(state: StoreState, word: str) -> int:
    meta = state.image(0)
    return next(int(p) for p in meta.query_position if meta.display[int(p)].strip() == word)


# -- the scale itself (pure) -----------------------------------------------------------------------


def test_a_map_with_a_real_image_share_is_drawn_to_its_own_maximum():
    assert colour_top(0.2, 0.5) == 0.2
    assert not negligible(NEGLIGIBLE_SHARE) and negligible(NEGLIGIBLE_SHARE * 0.99) and negligible(float("nan"))


def test_a_map_with_a_negligible_share_fades_in_proportion_to_it():
    # 0.5 % on the image: the brightest cell at half colour; 1e-7: nearly black, never full colour
    assert colour_top(1e-3, 0.005) == pytest.approx(2e-3)
    assert 5.96e-08 / colour_top(5.96e-08, 1e-7) < 1e-4
    assert colour_top(1e-3, 0.005, shared_top=0.4) == 0.4  # and never brighter than on the shared scale


def test_the_shared_scale_is_one_top_and_never_clips():
    assert colour_top(0.1, 0.5, shared_top=0.4, scale="shared") == 0.4
    assert colour_top(0.6, 0.5, shared_top=0.4, scale="shared") == 0.6  # e.g. rollout above any head
    assert colour_top(0.0, 0.0) == colour_top(None, None) == 1.0  # an all-zero map


def test_labels_say_the_image_share():
    assert share_label(0.37) == "37% on image"
    assert share_label(5.96e-08) == "≈0% on image"
    assert share_label(0.004) == "0.4% on image (negligible)"
    assert colourbar_title(0.37, "shared") == "attention · 37% on image · shared scale"


def test_gallery_tops_fade_negligible_heads_and_share_one_top_on_request():
    grids = np.stack([np.full((2, 2), 0.3), np.full((2, 2), 1e-6)])  # [head, row, col]
    share = np.array([0.9, 1e-5])
    own = figures.head_tops(grids, share, 0.5, "own")
    assert own[0] == pytest.approx(0.3) and own[1] >= 0.5  # the near-zero head is not stretched to full colour
    assert figures.head_tops(grids, share, 0.5, "shared") == pytest.approx([0.5, 0.5])


# -- the explorer on a store with a planted head ---------------------------------------------------


def test_a_store_without_boxes_opens_on_the_planted_content_word_and_head(planted):
    view = views.measured_first_view(planted)
    assert view.token == position_of(planted, "dog")  # not "the" (a stop word), not the weaker "red"
    assert (view.layer, view.head) == PLANTED and view.mode == "head"
    assert views.default_params(planted) == view  # no target_object: default_params measures
    assert views.parse_query("", planted) == (view, [])
    data = views.heatmap(planted, view)
    assert data.share == pytest.approx(0.7, abs=0.01) and data.cmax == data.vmax  # drawn in full colour
    assert data.note == ""


def test_a_negligible_map_says_so_and_is_drawn_faded(planted):
    view = replace(views.measured_first_view(planted), layer=1, head=0)
    data = views.heatmap(planted, view)
    assert negligible(data.share) and data.vmax > 0
    assert data.cmax >= 0.7 and data.vmax / data.cmax < 0.01  # the brightest cell is near the bottom
    assert "barely looks at the image" in data.note
    status = heatmap.status(planted, view, data)
    share = next(part for part in status if isinstance(part, html.Span) and "status-share" in part.className)
    assert "negligible" in share.className and "on image" in share.children
    drawn = heatmap.draw(planted, view, heatmap.DEFAULT_STYLE, None, lambda i: "img.png")
    assert drawn.figure["layout"]["coloraxis"]["cmax"] == data.cmax
    assert "on image" in drawn.figure["layout"]["coloraxis"]["colorbar"]["title"]["text"]


def test_the_shared_scale_puts_every_layer_on_one_top_and_travels_in_the_permalink(planted):
    view = replace(views.measured_first_view(planted), scale="shared")
    tops = {
        views.heatmap(planted, replace(view, layer=layer, head=head)).cmax for layer in range(3) for head in range(4)
    }
    assert max(tops) - min(tops) == 0 and tops.pop() == pytest.approx(0.7, abs=0.01)
    assert views.parse_query("?" + view.to_query(), planted) == (view, [])
    _, problems = views.parse_query("?scale=loud", planted)
    assert "scale=loud in the link is not one of own, shared" in problems[0]


def test_the_gallery_marks_heads_that_barely_look_at_the_image(planted):
    view = views.measured_first_view(planted)
    items = gallery._items(planted, view, "head", "viridis")
    marked = [item for item in items if "negligible" in item.className]
    assert len(marked) == planted.n_heads - 1  # every head of the layer but the planted one
    badge = marked[0].children[-1]
    assert (badge.className, badge.children) == ("gallery-badge", "≈0% on image")
    shared = gallery._items(planted, replace(view, scale="shared"), "head", "viridis")
    assert "one colour scale" in shared[0].children


# -- polish -----------------------------------------------------------------------------------------


def test_a_one_head_export_is_named_after_the_head(state):
    token = state.image(0).default_token()
    one = compute_map(state.ds, MapSpec.from_controls(state.ds, image=0, position=token, layer=1, head=0,
                                                      mode="head", over="heads", norm="raw", k=10))  # fmt: skip
    assert f"_tok{token}_head-L1H0_raw_heatmap.png" in file_name(one, "png", "x")
    heads = compute_map(state.ds, MapSpec.from_controls(state.ds, image=0, position=token, layer=1, head=0,
                                                        mode="mean", over="heads", norm="raw", k=10))  # fmt: skip
    assert "_mean-L1Hall_" in file_name(heads, "png", "x")


def test_rollout_picked_from_the_menu_reaches_all_layers(app, run_callback):
    assert views.over_for_mode("rollout", "heads") == "all" and views.over_for_mode("max", "layers") == "layers"
    values = {f"{ids.MODE}.value": "rollout", f"{ids.OVER}.value": "heads"}
    out = run_callback(app, f"{ids.LAYER}.disabled", f"{ids.MODE}.value", values)  # the controls' callback
    assert out[ids.OVER]["value"] == "all" and out[ids.LAYER]["disabled"] and out[ids.HEAD]["disabled"]
    values[f"{ids.MODE}.value"] = "max"
    assert "value" not in run_callback(app, f"{ids.LAYER}.disabled", f"{ids.MODE}.value", values).get(ids.OVER, {})


def _with_objects(state):
    geom = views.geometry(state, 0)
    objects = (ObjectBox("dog", (0.1, 0.1, 0.4, 0.5), target=True), ObjectBox("ball", (0.5, 0.5, 0.9, 0.9)))
    return replace(geom, objects=objects)


def test_box_labels_are_readable_and_only_on_the_main_picture(state):
    geom = _with_objects(state)
    rects = [s for s in figures.layout_shapes(geom, False, True) if s.get("name")]
    assert len(rects) == 4  # two boxes on the image and on the global view's copy
    labelled = [r for r in rects if "label" in r]
    assert [r["label"]["text"] for r in labelled] == ["dog (asked)", "ball"]
    assert all(r["x1"] <= geom.tiles.x0 + geom.tiles.width for r in labelled)  # none on the global copy
    font = labelled[0]["label"]["font"]
    assert font["color"] == "#ffffff" and font["shadow"]  # white on a dark halo, not red on the red line


def test_the_compare_copy_is_compact(state):
    geom = _with_objects(state)
    fig = figures.overlay_figure(geom, "img.png", vmax=1.0, height_px=300, colourbar="attention · 5 % on image",
                                 compact=True)  # fmt: skip
    layout_ = fig["layout"]
    assert not any("label" in s for s in layout_["shapes"])  # small labels overlapped
    assert layout_["coloraxis"]["colorbar"]["orientation"] == "h"  # under the picture, clear of the caption
    assert layout_["margin"]["b"] >= 40 and layout_["annotations"][0]["text"] == "global view"
    import plotly.graph_objects as go

    go.Figure(fig)  # valid plotly


def test_the_modality_legend_has_one_entry_per_kind():
    token = np.full((3, 4), 0.25)
    fig = figures.modality_figure(token, token.copy(), ["prompt", "image", "generated", "special"], layer=1)
    shown = [t.name for t in fig.data if t.showlegend is not False]
    assert shown == ["prompt", "image", "generated", "special"]
    assert fig.layout.legend.title.text == "dotted: dataset mean"


def test_side_panels_share_one_skeleton():
    header, info, chart = layout.side_panel("Title", "tip", info="some-id", hint="pick", graphs=["g"])
    assert (header.children, header.title, info.id, info.children, chart.id) == ("Title", "tip", "some-id", "pick", "g")
    head = layout.panel_head("Heads", controls=html.Span("x"))
    assert head.className == "panel-head" and head.children[0].children == "Heads"


def test_follow_token_says_why_a_panel_is_blank():
    def refuse(params):
        raise InvalidArgument("position", "no row here")

    assert follow_token(None, lambda p: "shown", lambda why: why) == "select a token"
    view = ViewParams(image=0, token=5).to_query()
    assert follow_token(_json(view), refuse, lambda why: why).endswith("no row here")
    assert follow_token(_json(view), lambda p: p.token, str) == 5


def _json(query: str) -> str:
    import json
    from urllib.parse import parse_qsl

    fields = dict(parse_qsl(query))
    return json.dumps({**{k: int(v) if v.lstrip("-").isdigit() else v for k, v in fields.items()}})
