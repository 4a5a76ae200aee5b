"""REST endpoints (seed-compatible) through Flask's test client, and the app factory."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from attnstore import analysis, render
from explorer import create_app

GEN = "/api/generate_attention_map"


def test_initialize_has_the_seed_shape(client, state):
    body = client.get("/api/initialize").get_json()
    assert body["success"] is True
    assert {"tokens", "num_layers", "num_heads", "image_url"} <= set(body)
    assert (body["num_layers"], body["num_heads"]) == (state.n_layers, state.n_heads)
    meta = state.image(0)
    assert body["tokens"] == meta.token_text and "Ġdog" in body["tokens"]
    image = client.get(body["image_url"])
    assert image.status_code == 200 and image.mimetype == "image/png"
    assert Image.open(io.BytesIO(image.data)).size == (meta.width, meta.height)
    other = client.get("/api/initialize?image=2").get_json()
    assert other["image"] == 2 and other["image_url"].endswith("/2.png")


def test_generate_returns_a_heatmap_png_of_the_requested_token(client, state):
    response = client.post(GEN, json={"word": "dog", "layer": 1, "head": 2})
    body = response.get_json()
    assert response.status_code == 200 and body["success"] is True
    assert (body["layer"], body["head"]) == (1, 2)
    meta = state.image(0)
    assert meta.token_text[body["word_index"]] == "Ġdog"
    assert body["word_index"] == int(meta.query_position[analysis.find_token(meta.img, "dog")])
    picture = Image.open(io.BytesIO(base64.b64decode(body["image"]))).convert("RGBA")  # a palette PNG
    assert picture.size == (meta.width, meta.height)
    # the brightest cell of the PNG is where the stored row is largest
    row = np.asarray(state.ds.attn.weights(0, body["query_row"])[1, 2])
    keys = np.flatnonzero(np.asarray(meta.img["token_kind"].values) == 2)
    x0, y0, x1, y1 = np.asarray(meta.img["patch_box"].values)[keys[np.argmax(row[keys])]]
    cx, cy = int((x0 + x1) / 2 * meta.width), int((y0 + y1) / 2 * meta.height)
    lut = render.colormap_lut("viridis")
    assert tuple(np.asarray(picture)[cy, cx, :3]) == tuple(lut[-1])


def test_generate_by_token_index_and_image(client, state):
    meta = state.image(1)
    key = int(meta.query_position[-1])
    body = client.post(GEN, json={"word": "ignored", "token_index": key, "layer": 0, "head": 0, "image": 1}).get_json()
    assert body["success"] and body["word_index"] == key and body["image_index"] == 1


@pytest.mark.parametrize(
    ("payload", "status", "error"),
    [
        ({"word": "zebra", "layer": 0, "head": 0}, 404, "Word not found in tokens"),
        ({"word": "dog", "layer": 2, "head": 0}, 400, "Layer 2 out of range (0-1)"),
        ({"word": "dog", "layer": 0, "head": 4}, 400, "Head 4 out of range (0-3)"),
        ({"word": "dog", "layer": -1, "head": 0}, 400, "Layer -1 out of range (0-1)"),
        ({"word": "dog", "layer": "one", "head": 0}, 400, "Field 'layer' must be an integer"),
        ({"word": "dog", "head": 0}, 400, "Missing field 'layer'"),
        ({"layer": 0, "head": 0}, 400, "Missing field 'word'"),
        ({"word": "dog", "layer": 0, "head": 0, "image": 7}, 400, "Image 7 out of range (0-2)"),
        ({"word": "x", "token_index": 10, "layer": 0, "head": 0}, 400, "no stored attention row"),
        ({"word": "dog", "layer": 0, "head": 0, "norm": "zscore"}, 400, "Field 'norm' must be one of raw, image"),
        ({"word": "dog", "layer": 0, "head": 0, "mode": "median"}, 400, "Field 'mode' must be one of head, mean"),
        ([1, 2, 3], 400, "Malformed JSON body"),
    ],
)
def test_generate_errors(client, payload, status, error):
    response = client.post(GEN, json=payload)
    body = response.get_json()
    assert response.status_code == status
    assert body["success"] is False and error in body["error"]


def test_word_not_found_keeps_the_seed_message_and_suggests(client):
    body = client.post(GEN, json={"word": "dgo", "layer": 0, "head": 0}).get_json()
    assert body["error"] == "Word not found in tokens"
    assert "'dog'" in body["detail"]


def test_malformed_json(client):
    response = client.post(GEN, data="{'word': ", content_type="application/json")
    assert response.status_code == 400
    assert response.get_json() == {"success": False, "error": response.get_json()["error"]}
    assert response.get_json()["error"].startswith("Malformed JSON body")


def test_pictures(client):
    assert client.get("/api/thumbnail/1.png").data.startswith(b"\x89PNG")
    missing = client.get("/api/image/9.png")
    assert missing.status_code == 404 and "does not exist" in missing.get_json()["error"]


def test_page_and_layout_serve(client):
    assert client.get("/").status_code == 200
    layout = client.get("/_dash-layout").get_data(as_text=True)
    assert "random-weight demo" in layout  # the synthetic store says random_weights = true
    assert "token-strip" in layout and "view-state" in layout


def test_factory_has_no_shared_state(synthetic_store, tmp_path):
    from attnstore.extraction.synthetic import make_synthetic_store

    other = make_synthetic_store(str(tmp_path / "other.zarr"), n_images=1, n_layers=3, n_heads=2)
    a, b = create_app(synthetic_store), create_app(other, url_base_pathname="/x/")
    assert a.server is not b.server
    assert a.server.test_client().get("/api/initialize").get_json()["num_layers"] == 2
    body = b.server.test_client().get("/x/api/initialize").get_json()
    assert (body["num_layers"], body["num_heads"], body["image_url"]) == (3, 2, "/x/api/image/0.png")


def test_explorer_on_a_store_over_http(http_store, client):
    url, requests = http_store
    remote = create_app(url).server.test_client()
    payload = {"word": "jacket", "layer": 1, "head": 3, "image": 1}
    local = client.post(GEN, json=payload).get_json()
    requests.clear()
    over_http = remote.post(GEN, json=payload).get_json()
    assert over_http["success"] and over_http["image"] == local["image"]  # the same PNG, byte for byte
    # chunk reads (not the metadata a poll of the store re-reads whole when its 2 s are up)
    attention = [(path, rng) for path, rng in requests if "/attention/c/" in path]
    assert attention and all(rng.startswith("bytes=") for _, rng in attention)  # ranges of one shard only
    assert remote.get("/api/thumbnail/0.png").data.startswith(b"\x89PNG")


def test_a_store_without_complete_images_still_serves_a_page(tmp_path):
    from attnstore.store import AttnStore, StoreShape

    path = str(tmp_path / "empty.zarr")
    store = AttnStore.create(path, StoreShape(2, 2, 4, 8), {"model_id": "x", "model_family": "idefics3"})
    store.allocate(["a.png"], ["a.png"])  # a slot whose extraction never finished
    client = create_app(path).server.test_client()
    layout = client.get("/_dash-layout").get_data(as_text=True)
    assert "this store has no complete image yet" in layout
    body = client.get("/api/initialize").get_json()
    assert body == {"success": False, "error": "the store has no complete image yet"}
    response = client.post(GEN, json={"word": "a", "layer": 0, "head": 0})
    assert response.status_code == 404


def test_the_page_arrives_with_the_permalink_view_drawn(client, state):
    key = int(state.image(1).query_position[-2])
    link = f"http://127.0.0.1:5001/?image=1&token={key}&layer=0&head=3&mode=max&norm=image"
    layout = client.get("/_dash-layout", headers={"Referer": link}).get_json()
    found = {}

    def walk(node):
        if isinstance(node, dict):
            props = node.get("props", {})
            if props.get("id") in ("view-state", "heatmap", "notice"):
                found[props["id"]] = props
            for value in props.values() if "props" in node else node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(layout)
    view = json.loads(found["view-state"]["children"])
    assert (view["image"], view["token"], view["layer"], view["head"], view["mode"]) == (1, key, 0, 3, "max")
    assert found["heatmap"]["figure"]["layout"]["images"][0]["source"] == "/api/image/1.png"
    bad = client.get("/_dash-layout", headers={"Referer": "http://h/?image=1&layer=99"}).get_data(as_text=True)
    assert "layer=99 in the link is not in 0-1" in bad
