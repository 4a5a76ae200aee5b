"""Where does a patch look: the pure functions (data and figures), the panel's callback, the REST
route and `attnstore heatmap --patch`, on a store with image rows and on one without."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attnstore.analysis import patch_at
from attnstore.cli import main
from explorer import figures, ids, views
from explorer import patch_query as pq
from explorer.panels import patch_query as panel
from explorer.views import ViewParams


@pytest.fixture(scope="module")
def rows_app(image_rows_store):
    from explorer import create_app

    return create_app(image_rows_store)


@pytest.fixture(scope="module")
def rows_state(rows_app):
    return rows_app.attnstore_state


def stored(state, image: int, layer: int, head: int, position: int) -> np.ndarray:
    """The store's own row of `position`  # [key], read without the explorer's code."""
    q = int(np.flatnonzero(np.asarray(state.ds["query_position"].values[image]) == position)[0])
    return np.asarray(state.ds["attention"][image, layer, head, q, :].values, np.float32)


def test_patch_view_draws_the_patch_row_on_both_grids_and_the_text(rows_state):
    img = rows_state.image(0).img
    key = patch_at(img, (3, 6))
    view = pq.patch_view(rows_state, ViewParams(image=0, layer=1, head=3), key)
    row = stored(rows_state, 0, 1, 3, key)
    assert view.tiles[3, 6] == pytest.approx(row[key])  # the patch's own cell: its weight on itself
    kinds = np.asarray(img["token_kind"].values)
    tile_keys = np.flatnonzero(kinds == 2)
    assert np.nansum(view.tiles) == pytest.approx(row[tile_keys].sum(), rel=1e-5)
    assert view.vmax == pytest.approx(max(np.nanmax(view.tiles), np.nanmax(view.glob)))
    np.testing.assert_allclose(view.text_values, row[view.text_positions], rtol=1e-6)
    assert view.text_labels[1].endswith("#1") and "User" in view.text_labels[1]
    assert f"patch token #{key}" in pq.describe(rows_state, view)


def test_text_bars_figure_lists_the_top_tokens_largest_first():
    fig = pq.text_bars_figure(["a #0", "b #1", "c #2", "d #3", "e #4"], np.array([0.1, np.nan, 0.5, 0.2, 0.05]), top=3)
    bar = fig.data[0]
    assert list(bar.y) == ["c #2", "d #3", "a #0"]
    np.testing.assert_allclose(bar.x, [0.5, 0.2, 0.1])
    assert bar.orientation == "h"
    unseen = pq.text_bars_figure(["a #0", "b #1", "c #2"], np.array([0.3, 0.0, np.nan]), title="t")
    assert list(unseen.data[0].y) == ["a #0"] and unseen.layout.title.text == "t"  # text it gives nothing: left out


def test_patch_map_figure_outlines_the_clicked_patch(rows_state):
    key = patch_at(rows_state.image(0).img, (0, 0))
    view = pq.patch_view(rows_state, ViewParams(image=0), key)
    fig = pq.patch_map_figure(rows_state, view, "/img.png")
    geom = views.geometry(rows_state, 0)
    x, y = fig["data"][figures.TRACE_MARK]["x"], fig["data"][figures.TRACE_MARK]["y"]
    assert (x[0], y[0]) == pytest.approx(tuple(c[0] for c in figures.key_centres(geom, [key])))
    assert fig["layout"]["coloraxis"]["cmax"] == pytest.approx(view.vmax)


def test_panel_content_hints_errors_and_off(rows_state, state):
    params = ViewParams(image=0)
    url = lambda i: f"/api/image/{i}.png"  # noqa: E731
    assert panel.panel_content(rows_state, params, None, True, url)[2] == panel.HINT
    assert panel.panel_content(state, params, None, True, url)[2] == panel.NO_ROWS  # a --queries text store
    key = patch_at(state.image(0).img, (1, 1))
    _, _, info = panel.panel_content(state, params, {"image": 0, "key": key}, True, url)
    assert "--queries text+image" in info and "\n" not in info
    assert panel.panel_content(rows_state, params, {"image": 0, "key": key}, False, url)[2].startswith("off")
    fig, bars, info = panel.panel_content(rows_state, params, {"image": 0, "key": key}, True, url)
    assert info.startswith(f"patch token #{key} ") and fig["data"][figures.TRACE_MARK]["x"]
    view = pq.patch_view(rows_state, params, key)
    seen = np.flatnonzero(view.text_values > 0)  # the text before the patch (causal)
    assert sorted(bars.data[0].y) == sorted(view.text_labels[i] for i in seen) and len(seen) < pq.TOP_TEXT
    assert list(bars.data[0].x) == sorted(bars.data[0].x, reverse=True)


def test_the_callback_answers_a_patch_click(rows_app, rows_state, run_callback):
    key = patch_at(rows_state.image(1).img, (0, 5))
    view = json.dumps({**ViewParams(image=1, token=None, layer=0, head=2).__dict__})
    values = {f"{ids.REVERSE}.data": {"image": 1, "key": key}, f"{ids.SETTLED}.data": view,
              f"{ids.PATCH_QUERY_ON}.value": [panel.ON]}  # fmt: skip
    out = run_callback(rows_app, f"{ids.PATCH_QUERY_MAP}.figure", f"{ids.REVERSE}.data", values)
    assert out[ids.PATCH_QUERY_INFO]["children"].startswith(f"patch token #{key} ")
    tiles = np.array(out[ids.PATCH_QUERY_MAP]["figure"]["data"][0]["z"], dtype=float)
    assert tiles[0, 5] == pytest.approx(stored(rows_state, 1, 0, 2, key)[key], rel=1e-3)


def test_rest_patch_view_and_its_errors(rows_app, rows_state, app):
    key = patch_at(rows_state.image(0).img, (2, 2))
    client = rows_app.server.test_client()
    body = client.get(f"/api/patch_view?image=0&patch={key}&layer=1&head=0").get_json()
    assert body["success"] and body["patch"] == key and body["traces"] == [0, 1]
    row = stored(rows_state, 0, 1, 0, key)
    assert np.array(body["z"][0], dtype=float)[2, 2] == pytest.approx(row[key], rel=1e-3)
    text = body["text"]
    np.testing.assert_allclose(text["values"], row[text["positions"]], rtol=1e-5)
    for query, status, words in [
        ("image=0&layer=0&head=0", 400, "Missing field 'patch'"),
        ("image=0&patch=1&layer=0&head=0", 400, "not an image patch"),
        ("image=9&patch=1&layer=0&head=0", 400, "out of range"),
    ]:
        response = client.get(f"/api/patch_view?{query}")
        assert response.status_code == status and words in response.get_json()["error"]
    response = app.server.test_client().get(f"/api/patch_view?image=0&patch={key}&layer=0&head=0")  # text store
    assert response.status_code == 400 and "--queries text+image" in response.get_json()["error"]
    csv = client.post("/api/export", json={"image": 0, "patch": key, "format": "csv", "method": "mean"})
    assert csv.status_code == 200 and csv.data.startswith(b"view,grid_row")


def test_cli_heatmap_patch(image_rows_store, synthetic_store, tmp_path, capsys):
    out = tmp_path / "p.png"
    assert main(["heatmap", image_rows_store, "--patch", "3,6", "--output", str(out), "--method", "mean"]) == 0
    text = capsys.readouterr().out
    assert "patch 3,6: row" in text and "text it looks at most (mean over" in text and out.stat().st_size > 0
    for store, args, words in [
        (synthetic_store, ["--patch", "3,6"], "--queries text+image"),
        (image_rows_store, ["--patch", "3,6", "--token", "User"], "exactly one of --token"),
        (image_rows_store, ["--patch", "a,b"], "--patch must be ROW,COL"),
        (image_rows_store, ["--patch", "1"], "not an image patch"),
    ]:
        assert main(["heatmap", store, *args, "--output", str(out)]) == 1
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err
