"""The study panels (modality allocation, attention sinks, a second store compared): their numbers
against plain numpy loops over the stored attention, their figures, their callbacks, `serve --compare`."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest

from attnstore.schema import TokenKind
from explorer import create_app, figures, ids, views
from explorer.panels import compare, modality, sinks
from explorer.state import StoreState

GROUPS = {
    "prompt": [TokenKind.PROMPT_TEXT],
    "image": [TokenKind.IMAGE_TILE, TokenKind.IMAGE_GLOBAL],
    "generated": [TokenKind.GENERATED],
    "special": [TokenKind.SPECIAL, TokenKind.IMAGE_SPECIAL],
}


def stored(ds, image: int, row: int) -> np.ndarray:
    """One stored row as float64  # [layer, head, key] (trimmed to the image's keys)."""
    n_key = int(ds["n_key"].values[image])
    return np.asarray(ds["attention"].values[image, :, :, row, :n_key], np.float64)


def loop_allocation(ds, image: int, row: int) -> np.ndarray:
    """Mass on each token type per layer, mean over heads, by loops  # [layer, kind]."""
    w = stored(ds, image, row)
    kinds = ds["token_kind"].values[image][: w.shape[-1]]
    out = np.zeros((w.shape[0], len(GROUPS)))
    for layer in range(w.shape[0]):
        for g, members in enumerate(GROUPS.values()):
            keys = [k for k in range(w.shape[-1]) if kinds[k] in [int(m) for m in members]]
            out[layer, g] = np.mean([sum(w[layer, h, k] for k in keys) for h in range(w.shape[1])])
    return out


def answer_rows(ds, image: int) -> list[int]:
    kinds = ds["token_kind"].values[image]
    qpos = ds["query_position"].values[image][: int(ds["n_query"].values[image])]
    return [r for r, p in enumerate(qpos) if kinds[p] == int(TokenKind.GENERATED)]


@pytest.fixture(scope="module")
def other_store(tmp_path_factory):
    """A second run over the first two images of the shared synthetic store (same names and tokens)."""
    from attnstore.extraction.synthetic import make_synthetic_store

    return make_synthetic_store(str(tmp_path_factory.mktemp("compare") / "other.zarr"), n_images=2, seed=5)


@pytest.fixture(scope="module")
def pair(synthetic_store, other_store):
    state = StoreState(synthetic_store)
    state.compare = StoreState(other_store)
    return state


# -- modality allocation ---------------------------------------------------------------------------


def test_token_allocation_equals_a_loop(state):
    params = views.default_params(state)
    row = state.image(params.image).query_of(params.token)
    got = modality.allocation(state, params)
    np.testing.assert_allclose(got, loop_allocation(state.ds, params.image, row), atol=1e-5)
    assert modality.queries_of(state, params) == "generated"  # the default token is an answer token


def test_dataset_mean_equals_a_loop_and_a_large_store_uses_its_first_images(synthetic_store, monkeypatch):
    monkeypatch.setattr(modality, "MEAN_IMAGES", 2)
    fresh = StoreState(synthetic_store)  # its own caches
    mean, used, complete = modality.dataset_mean(fresh, "generated")
    assert (used, complete) == (2, 3)
    per_image = [np.mean([loop_allocation(fresh.ds, i, r) for r in answer_rows(fresh.ds, i)], axis=0) for i in (0, 1)]
    np.testing.assert_allclose(mean, np.mean(per_image, axis=0), atol=1e-5)
    assert modality.describe_mean("generated", used, complete).endswith("the first 2 images of 3")
    assert "3 images" in modality.describe_mean("generated", 3, 3)


def test_modality_figure_draws_the_token_beside_the_mean():
    token = np.array([[0.1, 0.7, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1]])
    mean = token[::-1].copy()
    fig = figures.modality_figure(token, mean, ["prompt", "image", "generated", "special"], layer=1)
    assert len(fig.data) == 8
    assert list(fig.data[2].y) == [0.7, 0.5] and list(fig.data[3].y) == [0.5, 0.7]  # image: token, then dataset
    assert fig.data[3].line.dash == "dot" and fig.layout.shapes[0].x0 == 1  # the current layer is marked
    assert len(figures.modality_figure(token, None, list("abcd"), 0).data) == 4


def test_modality_callback(app, state, run_callback):
    view = views.default_params(state)
    out = run_callback(app, f"{ids.MODALITY_CHART}.figure", f"{ids.SETTLED}.data", {f"{ids.SETTLED}.data": _view(view)})
    assert "mean over the answer tokens of 3 images" in out[ids.MODALITY_INFO]["children"]
    assert len(out[ids.MODALITY_CHART]["figure"]["data"]) == 8


# -- sinks -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sunk(synthetic_store):
    """The synthetic store in memory with a sink planted on one image key of image 0: (state, key)."""
    from attnstore.store import open_dataset

    ds = open_dataset(synthetic_store).load()
    key = int(np.flatnonzero(ds["token_kind"].values[0] == int(TokenKind.IMAGE_TILE))[5])
    attention = ds["attention"].values.copy()
    attention[0, :, :, :, key] = 0.5
    ds["attention"].values = attention
    return StoreState(ds), key


def test_layer_sinks_equal_a_loop_and_find_the_planted_one(sunk):
    state, planted = sunk
    for layer in range(state.n_layers):
        params = views.default_params(state)
        params = type(params)(**{**params.__dict__, "layer": layer})
        keys, first = sinks.layer_sinks(state, params)
        w = stored(state.ds, 0, state.image(0).query_of(params.token))[layer]  # [head, key]
        kinds = state.ds["token_kind"].values[0][: w.shape[-1]]
        image_keys = [
            k for k in range(w.shape[-1]) if kinds[k] in (int(TokenKind.IMAGE_TILE), int(TokenKind.IMAGE_GLOBAL))
        ]
        upper_median = [sorted(w[:, k])[w.shape[0] // 2] for k in range(w.shape[-1])]
        baseline = float(np.median([upper_median[k] for k in image_keys]))
        expected = [k for k in image_keys if upper_median[k] > 20 * baseline]
        assert keys == expected and planted in keys
        assert first == pytest.approx(w[:, 0].mean(), abs=1e-6)
        text = sinks.describe(state, params, keys, first)
        assert f"#{planted} (tile" in text and f"layer {layer}" in text


def test_sink_marks_sit_on_the_cells_of_the_sink_keys(sunk):
    state, planted = sunk
    geom = views.geometry(state, 0)
    patch = figures.mark_sinks(geom, [planted]).to_plotly_json()
    ops = {tuple(op["location"]): op["params"]["value"] for op in patch["operations"]}
    xs, ys = ops[("data", figures.TRACE_SINKS, "x")], ops[("data", figures.TRACE_SINKS, "y")]
    r, c = np.argwhere(geom.tiles.keys == planted)[0]
    assert len(xs) == 1 and geom.tiles.x_edges[c] < xs[0] < geom.tiles.x_edges[c + 1]
    assert geom.tiles.y_edges[r] < ys[0] < geom.tiles.y_edges[r + 1]
    empty = figures.mark_sinks(geom, []).to_plotly_json()
    assert all(op["params"]["value"] == [] for op in empty["operations"])


def test_sinks_follow_the_settled_view_only(app):
    """Computed once the view settles, never on the heatmap's click path."""
    key = next(k for k in app.callback_map if f"{ids.SINKS_INFO}.children" in k)
    assert [d["id"] for d in app.callback_map[key]["inputs"]] == [ids.SETTLED]


def test_sinks_callback(app, state, run_callback):
    view = views.default_params(state)
    out = run_callback(app, f"{ids.SINKS_INFO}.children", f"{ids.SETTLED}.data", {f"{ids.SETTLED}.data": _view(view)})
    assert out[ids.SINKS_INFO]["children"].startswith(f"layer {view.layer}: position 0")


# -- compare ---------------------------------------------------------------------------------------


def jsd_bits(p: np.ndarray, q: np.ndarray) -> float:
    p, q = p / p.sum(), q / q.sum()
    total = 0.0
    for a, b in zip(p, q):
        m = (a + b) / 2
        total += 0.5 * (a * math.log2(a / m) if a > 0 else 0) + 0.5 * (b * math.log2(b / m) if b > 0 else 0)
    return total


def test_compare_view_equals_loops_over_both_stores(pair):
    params = views.default_params(pair)
    other = pair.compare
    shown = compare.compare_view(pair, params)
    assert shown.params.image == 0 and shown.params.token == params.token  # matched by name, then position
    direct = views.heatmap(other, shown.params)
    np.testing.assert_array_equal(shown.data.tiles, direct.tiles)
    a = stored(pair.ds, 0, pair.image(0).query_of(params.token))
    b = stored(other.ds, 0, other.image(0).query_of(params.token))
    kinds = pair.ds["token_kind"].values[0][: a.shape[-1]]
    image = np.isin(kinds, [int(TokenKind.IMAGE_TILE), int(TokenKind.IMAGE_GLOBAL)])
    for layer in range(pair.n_layers):
        pa, pb = a[layer][:, image].mean(0), b[layer][:, image].mean(0)
        assert shown.jsd[layer] == pytest.approx(jsd_bits(pa, pb), abs=1e-4)
        diff = (b[layer][:, image].sum(-1) - a[layer][:, image].sum(-1)).mean()
        assert shown.share_diff[layer] == pytest.approx(diff, abs=1e-4)
    assert not np.allclose(shown.data.tiles, views.heatmap(pair, params).tiles)  # another run: another map


def test_an_image_the_second_store_lacks_is_a_message(pair):
    params = views.default_params(pair)
    params = type(params)(**{**params.__dict__, "image": 2, "token": pair.image(2).default_token()})
    with pytest.raises(Exception, match="is not in") as err:
        compare.compare_view(pair, params)
    assert type(err.value).__name__ == "NotFound"


def test_compare_figure():
    fig = figures.compare_figure(np.array([0.1, 0.3]), np.array([0.05, -0.2]), layer=1)
    assert list(fig.data[0].y) == [0.1, 0.3] and list(fig.data[1].y) == [0.05, -0.2]
    assert fig.data[0].marker.color[1] != fig.data[0].marker.color[0]  # the current layer stands out


def test_the_compare_panel_is_there_only_with_a_second_store(synthetic_store, other_store, run_callback):
    alone = create_app(synthetic_store)
    assert ids.COMPARE_FIGURE not in alone.server.test_client().get("/_dash-layout").get_data(as_text=True)
    both = create_app(synthetic_store, compare=other_store)
    assert ids.COMPARE_FIGURE in both.server.test_client().get("/_dash-layout").get_data(as_text=True)
    state = both.attnstore_state
    view = views.default_params(state)
    values = {f"{ids.SETTLED}.data": _view(view)}
    out = run_callback(both, f"{ids.COMPARE_FIGURE}.figure", f"{ids.SETTLED}.data", values)
    assert "same colour scale" in out[ids.COMPARE_INFO]["children"]
    assert len(out[ids.COMPARE_CHART]["figure"]["data"]) == 2
    assert out[ids.COMPARE_FIGURE]["figure"]["layout"]["images"][0]["source"].endswith("/api/image/0.png")


def test_serve_compare_builds_the_panel_and_a_missing_store_is_one_line(synthetic_store, other_store, tmp_path, capsys):
    from attnstore.cli import main
    from attnstore.cli.serve import build_app

    server = build_app(synthetic_store, compare=other_store)
    assert ids.COMPARE_CHART in server.test_client().get("/_dash-layout").get_data(as_text=True)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    assert main(["serve", synthetic_store, "--compare", str(tmp_path / "none.zarr"), "--port", port]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no attnstore store" in err and "Traceback" not in err


def _view(params) -> str:
    import json

    return json.dumps({**params.__dict__, "vmax": None})
