"""In chromium: click a patch of the heatmap and see where that patch looks (its map and text bars)."""

from __future__ import annotations

import numpy as np
import pytest
from support.servers import served

from explorer import ids, views

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def live(image_rows_store):
    """The explorer on a store with the image patches' rows (`--queries text+image`)."""
    from explorer import create_app

    with served(create_app(image_rows_store)) as live:
        yield live


def test_clicking_a_patch_shows_where_it_looks(ui, live):
    ui.open()
    state = live.state
    geom = views.geometry(state, 0)
    r, c = 4, 9
    key = int(geom.tiles.keys[r, c])
    x, y = ui.figure_point(geom.tiles.x_edges[c : c + 2].mean(), geom.tiles.y_edges[r : r + 2].mean())
    ui.page.mouse.click(x, y)
    info = f"document.getElementById('{ids.PATCH_QUERY_INFO}').innerText"
    ui.page.wait_for_function(f"() => {info}.startsWith('patch token #{key} ')", timeout=15_000)
    v = ui.view()
    # the panel's map: the patch's stored row, at the view's layer and head (read without the explorer)
    q = int(np.flatnonzero(np.asarray(state.ds["query_position"].values[0]) == key)[0])
    row = np.asarray(state.ds["attention"][0, v["layer"], v["head"], q, :].values, np.float32)
    z = ui.page.evaluate(f"() => document.querySelector('#{ids.PATCH_QUERY_MAP} .js-plotly-plot').data[0].z[{r}][{c}]")
    assert z == pytest.approx(float(row[key]), rel=1e-3)
    bars = ui.page.locator(f"#{ids.PATCH_QUERY_TEXT} .js-plotly-plot .bars path")
    assert bars.count() >= 3  # the text tokens before the image, drawn as bars
    assert f"#{key} " in ui.page.inner_text("#reverse-info")  # the reverse view answers the same click
    # off: the panel stops, the reverse view stays
    ui.page.get_by_label("show where the clicked patch looks").uncheck()
    ui.page.wait_for_function(f"() => {info}.startsWith('off')", timeout=15_000)
