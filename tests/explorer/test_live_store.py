"""Reading while writing: `attnstore serve` on a store an extraction is still writing shows complete
images only, and picks up new ones without a restart."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from attnstore.extraction.synthetic import idefics3_tokens, synthetic_attention, token_layout
from attnstore.records import Extraction, query_positions
from attnstore.store import AttnStore
from explorer import create_app, ids
from explorer.state import StoreState


def extraction(rows: int, cols: int, n_layers: int, n_heads: int, seed: int) -> Extraction:
    """One synthetic image's extraction result (as the pipeline hands it to the writer)."""
    tokens, n_prompt = idefics3_tokens(rows, cols, 12)
    layout = token_layout(tokens, n_prompt)
    qrows = query_positions(layout.kind)
    attention = synthetic_attention(n_layers, n_heads, qrows, len(tokens), np.flatnonzero(layout.patch_tile >= 0),
                                    np.random.default_rng(seed))  # fmt: skip
    return Extraction(attention=attention, query_position=qrows, token_id=np.arange(len(tokens), dtype=np.int32),
                      token_text=tokens, layout=layout, prompt="Describe.", answer="a live zebra")  # fmt: skip


@pytest.fixture
def growing(synthetic_store, tmp_path):
    path = str(tmp_path / "growing.zarr")
    shutil.copytree(synthetic_store, path)
    return path


def picker(run_callback, app, shown=None) -> dict:
    """The picker's cards as {image: complete?} (a poll of its interval, as the browser sends it)."""
    out = run_callback(app, f"{ids.PICKER_LIST}.children", f"{ids.PICKER_POLL}.n_intervals",
                       {f"{ids.PICKER_POLL}.n_intervals": 1, f"{ids.PICKER_SEARCH}.value": "",
                        f"{ids.PICKER_PAGE}.data": shown})  # fmt: skip
    cards = out[ids.PICKER_LIST]["children"]
    return {int(c["props"]["children"][1]["props"]["children"][0]["props"]["children"].split(" ·")[0]):
            "incomplete" not in c["props"]["className"] for c in cards}  # fmt: skip


def test_a_served_store_follows_an_extraction(growing, run_callback):
    app = create_app(StoreState(growing, poll_seconds=0.0))  # check the store on every request
    client = app.server.test_client()
    assert picker(run_callback, app) == {0: True, 1: True, 2: True}
    writer = AttnStore.open(growing)
    (new,) = writer.allocate(["live.png"], ["live.png"])  # a running extraction reserves a slot ...
    assert new == 3
    assert picker(run_callback, app) == {0: True, 1: True, 2: True, 3: False}  # ... shown, but not openable
    body = {"word": "dog", "layer": 0, "head": 0, "image": 3}
    response = client.post("/api/generate_attention_map", json=body)
    assert response.status_code == 404 and "not complete" in response.get_json()["error"]
    assert client.post("/api/export", json={"token": "dog", "image": 3}).status_code == 404
    assert client.get("/api/image/3.png").status_code == 404
    state = app.attnstore_state
    result = extraction(2, 3, state.n_layers, state.n_heads, seed=7)
    writer.write_image(new, result, Image.new("RGB", (320, 240), "orange"), mark_complete=False)  # arrays only
    assert client.post("/api/generate_attention_map", json=body).status_code == 404  # still incomplete
    writer.mark_complete(new)  # ... and done: visible at the next check, no restart
    assert picker(run_callback, app) == {0: True, 1: True, 2: True, 3: True}
    generated = client.post("/api/generate_attention_map", json=body).get_json()
    assert generated["success"] and generated["image_index"] == 3
    kind = np.asarray(result.layout.kind)
    stored = np.asarray(state.ds["attention"][3, 0, 0, generated["query_row"], : kind.size].values, np.float32)
    assert generated["max_value"] == pytest.approx(float(stored[(kind == 2) | (kind == 3)].max()))
    assert client.get("/api/initialize?image=3").get_json()["answer"] == "a live zebra"


def test_the_store_is_not_reread_more_often_than_asked(growing):
    state = StoreState(growing, poll_seconds=3600.0)
    before = state.ds
    AttnStore.open(growing).allocate(["later.png"], ["later.png"])
    assert state.ds is before and state.n_images == 3  # not checked yet
    assert state.refresh() and state.n_images == 4  # an explicit check sees the new slot
    assert state.first_image() == 0 and not state.catalog()["complete"][3]
