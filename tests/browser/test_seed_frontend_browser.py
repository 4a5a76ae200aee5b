"""A client written to the seed viewer's frontend contract (tests/explorer/seed_client), served by
`create_seed_app` and driven in Debian chromium: tokens as objects, word_index + threshold sent,
heatmap / heatmap_width / heatmap_height / stats read and drawn."""

from __future__ import annotations

import base64
import io
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnstore import render

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CLIENT = Path(__file__).parent.parent / "explorer" / "seed_client"


@pytest.fixture(scope="module")
def seed_url(synthetic_store):
    from werkzeug.serving import make_server

    from explorer.seed_frontend import create_seed_app

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, create_seed_app(synthetic_store, CLIENT), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/", server.app.attnstore_state
    server.shutdown()
    thread.join(timeout=10)


def _generate(page, index: int, before: int) -> dict:
    page.locator(f'#tokens .tok[data-index="{index}"]').click()
    page.wait_for_function(f"() => window.__requests > {before}", timeout=15_000)
    page.wait_for_function("() => document.getElementById('heatmap').complete", timeout=15_000)
    return page.evaluate("window.__last")


def test_the_seed_contract_client_draws_a_heatmap(page, seed_url):
    url, state = seed_url
    meta = state.image(0)
    page.goto(url)
    page.wait_for_function("() => window.__ready === true", timeout=15_000)
    assert page.inner_text("#prompt") == meta.prompt
    assert page.locator("#tokens .tok").count() == meta.n_key
    assert page.locator("#tokens .tok.selectable").count() == meta.n_query

    dog = meta.token_text.index("Ġdog")
    page.fill("#layer", "1")
    page.fill("#head", "2")
    last = _generate(page, dog, 0)
    assert last["request"] == {"word": meta.display[dog], "word_index": dog, "layer": 1, "head": 2, "threshold": 0}
    response = last["response"]
    assert response["word_index"] == dog and response["token"] == "Ġdog"
    size = page.evaluate(
        "[document.getElementById('heatmap').naturalWidth, document.getElementById('heatmap').naturalHeight]"
    )
    assert size == [meta.width, meta.height] == [response["heatmap_width"], response["heatmap_height"]]
    stats = response["stats"]
    shown = page.inner_text("#stats").split()
    assert shown[::2] == ["min", "max"] and [float(v) for v in shown[1::2]] == [stats["min"], stats["max"]]

    page.fill("#threshold", str(stats["max"] * 2))  # above every value: the whole map is drawn as 0
    thresholded = _generate(page, dog, 1)["response"]
    assert thresholded["stats"] == stats
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(thresholded["heatmap"]))).convert("RGBA"))
    opaque = pixels[..., 3] > 0
    assert opaque.any() and (pixels[opaque][:, :3] == render.colormap_lut("viridis")[0]).all()
    assert page.inner_text("#error") == ""


def test_a_token_without_a_row_is_not_clickable(page, seed_url):
    url, state = seed_url
    page.goto(url)
    page.wait_for_function("() => window.__ready === true", timeout=15_000)
    image_token = state.image(0).token_text.index("<image>")
    assert "selectable" not in page.locator(f'#tokens .tok[data-index="{image_token}"]').get_attribute("class")
