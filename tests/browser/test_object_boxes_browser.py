"""Object boxes in Chromium: drawn on the first view, toggled off and on, and the head gallery
sorted by grounding (a store of demo scenes run through the tiny random model)."""

from __future__ import annotations

import numpy as np
import pytest
from support.servers import served

from explorer import views

# JS: how many of the main figure's layout shapes are object boxes (they carry the object's name)
COUNT_BOXES = "() => (document.querySelector('#heatmap .js-plotly-plot')?.layout?.shapes || [])" \
              ".filter(s => s.name).length"  # fmt: skip


@pytest.fixture(scope="module")
def live(scene_store):
    from explorer import create_app

    with served(create_app(scene_store)) as live:
        yield live


def test_boxes_toggle_and_gallery_sorts_by_grounding(ui, live):
    v = ui.open()
    state = live.state
    n_boxes = 2 * len(views.geometry(state, v["image"]).objects)  # on the image and the global view
    assert n_boxes > 0 and ui.page.evaluate(COUNT_BOXES) == n_boxes
    ui.page.get_by_text("object boxes (the asked one in red)").click()
    ui.page.wait_for_function(f"() => ({COUNT_BOXES})() === 0")
    ui.page.get_by_text("object boxes (the asked one in red)").click()
    ui.page.wait_for_function(f"() => ({COUNT_BOXES})() === {n_boxes}")

    ui.page.get_by_text("on the object's box").click()
    params = views.ViewParams(image=v["image"], token=v["token"], layer=v["layer"], head=v["head"])
    lift = views.head_grounding(state, params).lift  # [head]
    expected = [int(h) for h in np.argsort(-lift, kind="stable")]
    # wait for the whole order (the best head may also be first by index: the unsorted gallery)
    ui.page.wait_for_function(
        f"() => Array.from(document.querySelectorAll('#gallery .gallery-item')).map(e => +e.dataset.head).join() "
        f"=== '{','.join(map(str, expected))}'"
        " && document.querySelector('#gallery .gallery-item .gallery-meta').textContent.includes('box')"
    )
    heads = ui.page.eval_on_selector_all("#gallery .gallery-item", "els => els.map(e => +e.dataset.head)")
    assert heads == expected
