"""`ds.attn.show` and friends are the explorer's figures: the same values (a test compares them with
the explorer's own view), the same colour range, drawn by the same factories; the store summary, and
`attnstore.explore` from plain Python (served on 127.0.0.1, a browser tab asked for, stopped)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import requests
from support.probes import probe_output, without

import attnstore
from attnstore.analysis import MapSpec, compute_map, patch_grid
from attnstore.analysis.notebook import view_spec
from attnstore.render.figures import TRACE_GLOBAL, TRACE_TILES
from explorer import figures, views
from explorer.state import StoreState
from explorer.views import ViewParams


@pytest.fixture(scope="module")
def ds(synthetic_store):
    return attnstore.open_dataset(synthetic_store)


def explorer_view(store, ds, token="dog", image=0, **params) -> tuple[views.ViewMap, dict]:
    """The explorer's map and main figure for a view of `token` (its own pipeline, StoreState)."""
    state = StoreState(store)
    img = ds.attn.image(image)
    row = attnstore.analysis.find_token(img, token)
    position = int(img["query_position"].values[row])
    view = views.heatmap(state, ViewParams(image=image, token=position, **params))
    geom = views.geometry(state, image)
    return view, figures.overlay_figure(geom, "x.png", view.tiles, view.glob, view.cmax)


def z(trace) -> np.ndarray:
    return np.asarray(trace.z, np.float64)


@pytest.mark.parametrize(
    ("show", "params"),
    [
        ({"layer": 1, "head": 2}, {"layer": 1, "head": 2, "mode": "head"}),
        ({"layer": 1, "method": "entropy_topk"}, {"layer": 1, "mode": "entropy_topk", "over": "heads"}),
        ({"method": "mean", "normalise": "no_sinks"}, {"mode": "mean", "over": "all", "norm": "no_sinks"}),
    ],
)
def test_show_draws_the_explorer_heatmap_of_the_same_view(synthetic_store, ds, show, params):
    fig = ds.attn.show("dog", image=0, **show)
    view, explorer_fig = explorer_view(synthetic_store, ds, **params)
    for index in (TRACE_TILES, TRACE_GLOBAL):
        np.testing.assert_array_equal(z(fig.data[index]), np.asarray(explorer_fig["data"][index]["z"], np.float64))
    np.testing.assert_array_equal(z(fig.data[TRACE_TILES]), view.tiles)
    assert fig.layout.coloraxis.cmax == pytest.approx(view.cmax)
    assert np.isfinite(view.tiles).any() and np.nanmax(view.tiles) > 0


def test_show_values_are_compute_maps(ds):
    fig = ds.attn.show("dog", image=1, layer=0, head=3)
    result = compute_map(ds, MapSpec(image=1, token="dog", layers=(0,), heads=(3,), method="mean"))
    np.testing.assert_array_equal(z(fig.data[TRACE_TILES]), patch_grid(result.values, result.img, "tiles").values)
    np.testing.assert_array_equal(z(fig.data[TRACE_GLOBAL]), patch_grid(result.values, result.img, "global").values)


def test_show_hovers_tile_sub_patch_key_and_value_and_marks_the_token(ds):
    fig = ds.attn.show("dog", image=0, layer=1, head=2)
    tiles = fig.data[TRACE_TILES]
    assert "sub-patch %{customdata[2]}" in tiles.hovertemplate and "%{z" in tiles.hovertemplate
    key, where, sub = tiles.customdata[0][0]
    assert where.startswith("tile") and "," in sub and int(key) >= 0
    strip = fig.layout.annotations[-1].text
    assert "[dog]</span>" in strip and "[image]" in strip and "layer 1, head 2" in strip
    assert fig.layout.images[0].source.startswith("data:image/png;base64,")


def test_show_picks_the_explorers_reach_for_a_method(ds):
    assert view_spec(ds, "dog", 0, 1, None, "max", "raw", 10, 0).layers == (1,)  # heads of layer 1
    assert view_spec(ds, "dog", 0, None, 2, "max", "raw", 10, 0).heads == (2,)  # layers of head 2
    spec = view_spec(ds, "dog", 0, None, None, None, "raw", 10, 0)
    assert (spec.layers, spec.heads, spec.method) == (None, None, "entropy_topk")


def test_show_draws_object_boxes(scene_store):
    ds = attnstore.open_dataset(scene_store)
    objects = {str(x) for x in ds.attn.image(0)["object_label"].values if str(x)}
    named = lambda fig: {s.name for s in fig.layout.shapes if s.type == "rect" and s.name}
    assert objects and named(ds.attn.show("@answer", image=0, layer=0, head=0)) == objects
    assert named(ds.attn.show("@answer", image=0, layer=0, head=0, boxes=False)) == set()


def test_show_heads_is_the_gallery_of_one_layer(synthetic_store, ds):
    """The explorer's gallery thumbnails of the layer: the same grids on the same colour tops."""
    fig = ds.attn.show_heads("dog", image=0, layer=1)
    state = StoreState(synthetic_store)
    img = ds.attn.image(0)
    position = int(img["query_position"].values[attnstore.analysis.find_token(img, "dog")])
    params = ViewParams(image=0, token=position, layer=1)
    grids = views.head_grids(state, params)  # [head, grid_row, grid_col]
    share = views.layer_head_stats(state, params)["share"][1]
    tops = figures.head_tops(grids, share, views.shared_top(state, params), "own")
    assert len(fig.data) == ds.sizes["head"]
    for h, trace in enumerate(fig.data):
        np.testing.assert_array_equal(z(trace), grids[h])
        assert trace.zmax == pytest.approx(tops[h])
    assert np.isfinite(grids).any()


def test_show_layers_are_the_explorers_layer_charts(ds):
    share_fig, matrix_fig = ds.attn.show_layers("dog", image=0, layer=1, head=2)
    share = ds.attn.image_share("dog", 0).values
    np.testing.assert_allclose(np.asarray(share_fig.data[0].y), share.mean(1), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(share_fig.data[1].y), share[:, 2], rtol=1e-6)
    np.testing.assert_allclose(z(matrix_fig.data[0]), share, rtol=1e-6)
    expected = figures.matrix_figure(share.astype(np.float32), "share", 1, 2)
    assert matrix_fig.layout.shapes[0].x0 == expected.layout.shapes[0].x0 == 1.5


def test_plot_overlay_draws_the_same_map_with_matplotlib(ds):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    fig = ds.attn.show("dog", image=0, layer=1, head=2)
    ax = ds.attn.plot_overlay("dog", image=0, layer=1, head=2)
    meshes = ax.collections
    assert len(meshes) == 2  # tiles and the global view
    tiles = np.ma.filled(meshes[0].get_array().reshape(z(fig.data[TRACE_TILES]).shape).astype(float), np.nan)
    np.testing.assert_array_equal(tiles, z(fig.data[TRACE_TILES]))
    assert meshes[0].get_clim() == pytest.approx((0.0, fig.layout.coloraxis.cmax))


def test_summary_shows_thumbnails_answers_dims_model_size_and_backend(synthetic_store, ds):
    summary = ds.attn.summary()
    page = ds.attn._repr_html_()
    assert summary.path == synthetic_store and summary.size_bytes > 0 and summary.n_images == 3
    assert page.count("<img src='data:image/png;base64,") == 3
    for i in range(3):
        assert str(ds["image_name"].values[i]) in page and str(ds["answer"].values[i])[:40] in page
    assert "layer=2" in page and "synthetic" in page and "MB" in page and summary.backend in page


def test_info_prints_the_same_summary(synthetic_store):
    proc = subprocess.run([sys.executable, "-m", "attnstore", "info", synthetic_store], capture_output=True,
                          text=True, timeout=120, env={"COLUMNS": "200", **__import__("os").environ})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = attnstore.open_dataset(synthetic_store).attn.summary()  # fresh: no attention row read yet, as info
    assert f"size on disk: {summary.size_text}" in proc.stdout and summary.backend in proc.stdout


def test_explore_from_plain_python_serves_on_loopback_opens_a_tab_and_stops(synthetic_store, monkeypatch):
    opened = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    explorer = attnstore.explore(synthetic_store)
    try:
        assert explorer.url.startswith("http://127.0.0.1:") and opened == [explorer.url]
        page = requests.get(explorer.url, timeout=30)
        assert page.status_code == 200 and "_dash-config" in page.text
        answer = requests.post(
            explorer.url + "api/generate_attention_map", json={"word": "dog", "layer": 0, "head": 0}, timeout=30
        )
        assert answer.status_code == 200
    finally:
        explorer.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(explorer.url, timeout=5)


def test_the_light_core_needs_no_jupyter(synthetic_store):
    """Without IPython, nbclient or matplotlib installed, `show` still works; `import attnstore`
    builds no explorer and loads no plotly."""
    probe = (
        without("IPython", "ipykernel", "nbclient", "nbformat", "matplotlib") +
        "import attnstore\n"
        "early = [m for m in ('plotly', 'explorer', 'dash') if m in sys.modules]\n"
        "ds = attnstore.open_dataset(sys.argv[1])\n"
        "fig = ds.attn.show('dog', image=0, layer=0, head=0)\n"
        "print('EARLY', early, type(fig).__name__, len(ds.attn._repr_html_()) > 100)\n"
    )
    assert "EARLY [] Figure True" in probe_output(probe, synthetic_store)
