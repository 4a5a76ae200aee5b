"""The study panels in chromium: modality allocation, attention sinks and a second store compared,
on an explorer served with `compare=` (as `attnstore serve A --compare B`)."""

from __future__ import annotations

import numpy as np
import pytest
from support.servers import served

from explorer import views
from explorer.panels import sinks

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def live(synthetic_store, tmp_path_factory):
    """The explorer on the shared synthetic store beside a second run over its first two images."""
    from attnstore.extraction.synthetic import make_synthetic_store
    from explorer import create_app

    other = make_synthetic_store(str(tmp_path_factory.mktemp("compare") / "other.zarr"), n_images=2, seed=5)
    with served(create_app(synthetic_store, compare=other)) as live:
        yield live


def sinks_text_of_layer(layer: int) -> str:
    return f"() => document.getElementById('sinks-info')?.textContent.startsWith('layer {layer}:')"


def test_the_study_panels_render_and_follow_the_view(ui, live):
    v = ui.open()
    page = ui.page
    page.wait_for_function("() => document.querySelectorAll('#modality-chart .scatterlayer .trace').length === 8")
    assert "mean over the answer tokens of 3 images" in page.inner_text("#modality-info")
    params = views.ViewParams(**{k: v[k] for k in ("image", "token", "layer", "head", "mode", "over", "norm", "k")})
    keys, first = sinks.layer_sinks(live.state, params)
    page.wait_for_function(sinks_text_of_layer(v["layer"]))
    assert page.inner_text("#sinks-info") == sinks.describe(live.state, params, keys, first)
    names = page.evaluate("() => document.querySelector('#heatmap .js-plotly-plot').data.map(t => t.name)")
    assert names[-1] == "sinks"  # the marks' trace of the main figure
    page.wait_for_selector("#compare-figure .heatmaplayer")
    page.wait_for_function("() => document.querySelectorAll('#compare-chart .barlayer .trace').length === 1")
    assert "same colour scale" in page.inner_text("#compare-info")
    # another layer: the sinks text follows once the view settles
    page.locator("#layer-slider [role=slider]").first.focus()
    page.keyboard.press("ArrowLeft")
    ui.wait_view(f"v.layer === {v['layer'] - 1}")
    page.wait_for_function(sinks_text_of_layer(v["layer"] - 1))


def test_an_image_the_second_store_lacks_says_so(ui):
    ui.open("?image=2")
    ui.page.wait_for_function("() => document.getElementById('compare-info')?.textContent.includes('is not in')")


def test_sink_marks_are_drawn_on_the_main_figure(page, synthetic_store):
    """A store with a sink planted on one image key: the main figure crosses that key's cell."""
    from attnstore.schema import TokenKind
    from attnstore.store import open_dataset
    from explorer import create_app, figures

    ds = open_dataset(synthetic_store).load()
    key = int(np.flatnonzero(ds["token_kind"].values[0] == int(TokenKind.IMAGE_TILE))[5])
    attention = ds["attention"].values.copy()
    attention[0, :, :, :, key] = 0.5
    ds["attention"].values = attention
    with served(create_app(ds)) as live:
        page.goto(live.url)
        page.wait_for_function(f"() => document.getElementById('sinks-info')?.textContent.includes('#{key} (tile')")
        page.wait_for_function(
            "() => { const d = document.querySelector('#heatmap .js-plotly-plot')?.data;"
            " return d && (d[d.length - 1].x || []).length === 1; }"
        )
        x, y = page.evaluate(
            "() => { const t = document.querySelector('#heatmap .js-plotly-plot').data.at(-1);"
            " return [t.x[0], t.y[0]]; }"
        )
        geom = views.geometry(live.state, 0)
        assert figures.key_at(geom, x, y) == key
