"""Figure factories: the main figure and its Patch over the shared geometry (attnstore.render.geometry),
small charts, gallery thumbnails."""

from __future__ import annotations

import base64
import io

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

from attnstore import render
from attnstore.render.geometry import figure_geometry
from attnstore.schema import TokenKind
from explorer import figures
from explorer.figures import TRACE_GLOBAL, TRACE_TILES


@pytest.fixture(scope="module", params=[0, 1, 2], ids=["3x4", "4x3", "2x2"])
def meta_geom(request, state):
    meta = state.image(request.param)
    return meta, figure_geometry(meta.img, meta.width, meta.height)


def test_geometry_places_every_patch_on_its_box(meta_geom):
    meta, geom = meta_geom
    kinds = np.asarray(meta.img["token_kind"].values)
    boxes = np.asarray(meta.img["patch_box"].values)  # [key, 4]
    for panel, kind in ((geom.tiles, TokenKind.IMAGE_TILE), (geom.glob, TokenKind.IMAGE_GLOBAL)):
        keys = panel.keys[panel.keys >= 0]
        assert sorted(keys.tolist()) == np.flatnonzero(kinds == kind).tolist()  # each token exactly once
        for r, c in [(0, 0), (panel.shape[0] - 1, panel.shape[1] - 1), (panel.shape[0] // 2, 1)]:
            x0, y0, x1, y1 = boxes[panel.keys[r, c]]
            # the cell's edges in figure coordinates are the token's box scaled to the panel
            assert panel.x_edges[c] == pytest.approx(panel.x0 + x0 * panel.width, abs=1e-3)
            assert panel.x_edges[c + 1] == pytest.approx(panel.x0 + x1 * panel.width, abs=1e-3)
            assert panel.y_edges[r] == pytest.approx(panel.y0 + y0 * panel.height, abs=1e-3)
            assert panel.y_edges[r + 1] == pytest.approx(panel.y0 + y1 * panel.height, abs=1e-3)
    # tiles cover the image; the global view sits beside it, not on it
    assert geom.tiles.x_edges[0] == 0 and geom.tiles.x_edges[-1] == pytest.approx(meta.width)
    assert geom.tiles.y_edges[-1] == pytest.approx(meta.height)
    assert geom.glob.x0 > meta.width


def test_tile_lines_and_labels_follow_the_tile_grid(meta_geom):
    meta, geom = meta_geom
    rows, cols = int(meta.img["tile_rows"]), int(meta.img["tile_cols"])
    assert len(geom.tiles.lines_x) == cols - 1 and len(geom.tiles.lines_y) == rows - 1
    assert geom.tiles.labels[0, 0] == "tile 1,1"
    assert geom.tiles.labels[-1, -1] == f"tile {rows},{cols}"
    assert geom.tiles.subs[-1, -1] == "7,7"
    tile = np.asarray(meta.img["patch_tile"].values)[geom.tiles.keys[-1, -1]]
    assert tile == rows * cols - 1


def test_key_at_inverts_the_geometry(meta_geom):
    _, geom = meta_geom
    for panel in (geom.tiles, geom.glob):
        for r, c in [(0, 0), (2, 5), (panel.shape[0] - 1, panel.shape[1] - 1)]:
            x = (panel.x_edges[c] + panel.x_edges[c + 1]) / 2
            y = (panel.y_edges[r] + panel.y_edges[r + 1]) / 2
            assert figures.key_at(geom, x, y) == panel.keys[r, c]
    assert figures.key_at(geom, -5.0, 10.0) is None
    assert figures.describe_key(geom, int(geom.tiles.keys[0, 9])).startswith("tile 1,2, sub-patch 0,1")


def test_overlay_figure_draws_image_once_and_values_as_heatmaps(meta_geom):
    meta, geom = meta_geom
    tiles = np.random.default_rng(0).random(geom.tiles.shape).astype(np.float32)
    fig = go.Figure(
        figures.overlay_figure(geom, "/api/image/0.png", tiles, None, vmax=float(tiles.max()), cmap="magma")
    )
    assert [img.source for img in fig.layout.images] == ["/api/image/0.png"] * 2  # image + global panel copy
    heat = fig.data[TRACE_TILES]
    np.testing.assert_array_equal(np.asarray(heat.z), tiles)
    assert heat.coloraxis == "coloraxis" and fig.data[TRACE_GLOBAL].coloraxis == "coloraxis"
    assert np.isnan(np.asarray(fig.data[TRACE_GLOBAL].z, float)).all()  # no values yet
    assert fig.layout.coloraxis.cmax == pytest.approx(tiles.max())
    assert fig.layout.coloraxis.colorscale[0][1] == "rgb({},{},{})".format(*render.colormap_lut("magma")[0])
    assert len(fig.layout.shapes) == len(geom.tiles.lines_x) + len(geom.tiles.lines_y) + 1
    assert "sub-patch" in heat.hovertemplate and "value" in heat.hovertemplate
    assert heat.customdata[0][0][1] == "tile 1,1"
    assert fig.layout.annotations[0].text == "global view (whole image, 8x8 tokens)"


def test_heatmap_patch_only_sends_what_changed(meta_geom):
    _, geom = meta_geom
    tiles = np.ones(geom.tiles.shape, np.float32)
    ops = figures.heatmap_patch(geom, tiles, None, 1.0).to_plotly_json()["operations"]
    where = {tuple(op["location"]) for op in ops}
    assert where == {("data", TRACE_TILES, "z"), ("data", TRACE_GLOBAL, "z"), ("layout", "coloraxis", "cmax")}
    ops = figures.heatmap_patch(geom, tiles, None, 1.0, cmap="jet", opacity=0.3, grid_lines=False)
    where = {tuple(op["location"]) for op in ops.to_plotly_json()["operations"]}
    assert ("layout", "coloraxis", "colorscale") in where and ("data", TRACE_TILES, "opacity") in where
    shapes = next(op for op in ops.to_plotly_json()["operations"] if op["location"] == ["layout", "shapes"])
    assert len(shapes["params"]["value"]) == 1  # only the global panel's frame without grid lines


def test_mark_patch_outlines_one_cell(meta_geom):
    _, geom = meta_geom
    key = int(geom.tiles.keys[3, 4])
    ops = figures.mark_patch(geom, key).to_plotly_json()["operations"]
    xs = next(op["params"]["value"] for op in ops if op["location"][-1] == "x")
    assert xs == [pytest.approx((geom.tiles.x_edges[4] + geom.tiles.x_edges[5]) / 2)]
    ops = figures.mark_patch(geom, None).to_plotly_json()["operations"]
    assert all(op["params"]["value"] == [] for op in ops)


def test_small_charts():
    share = np.array([[0.1, 0.5], [0.9, 0.2], [0.3, 0.3]], np.float32)  # [layer, head]
    fig = figures.share_figure(share, layer=1, head=0)
    np.testing.assert_allclose(fig.data[0].y, share.mean(1))
    np.testing.assert_allclose(fig.data[1].y, share[:, 0])
    assert list(fig.data[0].marker.color).count("#e4572e") == 1
    mat = figures.matrix_figure(share, "entropy", layer=2, head=1)
    np.testing.assert_array_equal(mat.data[0].z, share)
    assert mat.layout.shapes[0].x0 == 0.5 and mat.layout.shapes[0].y0 == 1.5
    rev = figures.reverse_figure(["a", "b", "c"], np.array([0.2, 0.9, 0.5]), top=2)
    assert list(rev.data[0].y) == ["b", "c"]


def test_gallery_order_and_thumbnails():
    share = np.array([0.2, 0.9, 0.5])
    ent = np.array([0.8, 0.9, 0.1])
    assert figures.gallery_order(share, ent, "head") == [0, 1, 2]
    assert figures.gallery_order(share, ent, "share") == [1, 2, 0]
    assert figures.gallery_order(share, ent, "entropy") == [2, 0, 1]
    uri = figures.thumbnail_uri(np.arange(12, dtype=np.float32).reshape(3, 4), "viridis", cell_px=2)
    picture = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert picture.size == (8, 6)
