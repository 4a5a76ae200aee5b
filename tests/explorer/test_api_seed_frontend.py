"""The seed viewer's shipped frontend as a client: the fields it sends and reads, and
`create_seed_app` serving such a folder (tests/explorer/seed_client, written to that contract)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnstore import render
from attnstore.errors import InvalidArgument
from explorer import views
from explorer.seed_frontend import create_seed_app

GEN = "/api/generate_attention_map"
CLIENT = Path(__file__).parent / "seed_client"


@pytest.fixture(scope="module")
def seed(state):
    return create_seed_app(state, CLIENT).test_client()


def _png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGBA"))


def test_generate_returns_the_seed_frontend_fields(client, state):
    meta = state.image(0)
    key = int(meta.query_position[-3])
    body = client.post(GEN, json={"word_index": key, "layer": 1, "head": 2}).get_json()
    assert body["success"] and body["word_index"] == key
    assert body["heatmap"] == body["image"]  # one picture under both names
    assert (body["heatmap_width"], body["heatmap_height"]) == (meta.width, meta.height)
    assert _png(body["heatmap"]).shape == (meta.height, meta.width, 4)
    data = views.heatmap(state, views.ViewParams(image=0, token=key, layer=1, head=2))
    values = np.concatenate([data.tiles.ravel(), data.glob.ravel()])
    values = values[np.isfinite(values)]
    assert body["stats"] == {"min": pytest.approx(values.min()), "max": pytest.approx(values.max())}
    assert body["stats"]["max"] == pytest.approx(body["max_value"])


def test_word_index_wins_over_word(client, state):
    key = int(state.image(0).query_position[-1])
    body = client.post(GEN, json={"word": "dog", "word_index": key, "layer": 0, "head": 0}).get_json()
    assert body["word_index"] == key and body["token"] == state.image(0).token_text[key]


def test_threshold_draws_weaker_cells_as_zero(client, state):
    payload = {"word": "dog", "layer": 1, "head": 1}
    plain = client.post(GEN, json=payload).get_json()
    lo, hi = plain["stats"]["min"], plain["stats"]["max"]
    cut = lo + (hi - lo) / 2
    cut_body = client.post(GEN, json={**payload, "threshold": cut}).get_json()
    assert cut_body["stats"] == plain["stats"]  # stats describe the map, not the drawing
    before, after = _png(plain["heatmap"]), _png(cut_body["heatmap"])
    lowest = render.colormap_lut("viridis")[0]
    changed = np.any(before != after, axis=-1)
    assert changed.any()  # some cells were below the cut ...
    assert (after[changed][:, :3] == lowest).all()  # ... and are now drawn as 0
    assert (after[~changed] == before[~changed]).all()  # the strong cells are untouched
    above_max = _png(client.post(GEN, json={**payload, "threshold": hi + 1}).get_json()["heatmap"])
    opaque = above_max[..., 3] > 0
    assert opaque.any() and (above_max[opaque][:, :3] == lowest).all()


@pytest.mark.parametrize("threshold", ["0.5", [0.5], True, {"v": 1}])
def test_threshold_must_be_a_number(client, threshold):
    response = client.post(GEN, json={"word": "dog", "layer": 0, "head": 0, "threshold": threshold})
    assert response.status_code == 400 and "Field 'threshold' must be a finite number" in response.get_json()["error"]


def test_documented_tokens_stay_strings(client):
    assert all(isinstance(t, str) for t in client.get("/api/initialize").get_json()["tokens"])


def test_seed_app_serves_the_folder_and_token_objects(seed, state):
    page = seed.get("/").get_data(as_text=True)
    assert '<script src="/static/js/client.js">' in page  # index.html is rendered as the seed's Flask did
    assert seed.get("/static/js/client.js").get_data(as_text=True).startswith("// Reads /api/initialize")
    body = seed.get("/api/initialize").get_json()
    meta = state.image(0)
    assert body["prompt"] == meta.prompt and body["image_url"] == "/api/image/0.png"
    assert [t["index"] for t in body["tokens"]] == list(range(meta.n_key))
    assert [t["text"] for t in body["tokens"]] == meta.display
    selectable = [t["index"] for t in body["tokens"] if t["is_selectable"]]
    assert selectable == [int(p) for p in meta.query_position]  # exactly the tokens with a stored row
    assert seed.get(body["image_url"]).mimetype == "image/png"


def test_seed_app_api_errors_are_json(seed):
    assert seed.get("/api/nope").status_code == 404 and seed.get("/api/nope").get_json()["success"] is False
    assert seed.get(GEN).status_code == 405 and seed.get(GEN).headers["Allow"] == "POST, OPTIONS"
    assert seed.get("/static/missing.js").status_code == 404  # outside /api: Flask's own answer


def test_seed_folder_must_have_an_index(tmp_path, state):
    with pytest.raises(InvalidArgument, match="has no templates/index.html") as err:
        create_seed_app(state, tmp_path)
    assert err.value.param == "seed_frontend"


@pytest.mark.parametrize(("decimals", "mode"), [(1, "P"), (3, "RGBA")])  # 11 colours; all 256 + transparent
def test_layer_png_has_the_pixels_of_render_heatmap_image(decimals, mode):
    from attnstore.render.export import layer_png

    tiles = np.linspace(0, 1, 960).round(decimals).reshape(24, 40)  # [grid_row, grid_col]
    tiles[2, 3] = np.nan  # no token: transparent
    boxes = render.uniform_boxes(24, 40)
    png = layer_png(tiles, boxes, (800, 480), "viridis", 1.0)
    want = np.asarray(render.heatmap_image(tiles, vmin=0.0, vmax=1.0, boxes=boxes, size=(800, 480)))
    got = Image.open(io.BytesIO(png))
    assert got.size == (800, 480) and got.mode == mode  # past 256 colours: RGBA
    assert (np.asarray(got.convert("RGBA")) == want).all()


def test_generate_draws_its_png_through_export_map(client, state):
    """The seed API's picture is the library's "layer" export of the same map (one place a map
    becomes a file), its threshold applied there."""
    key = int(state.image(0).query_position[-3])
    body = client.post(GEN, json={"word_index": key, "layer": 1, "head": 2, "threshold": 0.01}).get_json()
    result = views.heatmap(state, views.ViewParams(image=0, token=key, layer=1, head=2)).result
    want = render.export_map(result, "layer", render.Style(threshold=0.01))
    assert base64.b64decode(body["image"]) == want
    assert want != render.export_map(result, "layer")  # the threshold changed the picture
