"""Page load in chromium: what the index preloads (the layout, the callback graph, dcc's lazy chunks)
is what the page uses, fetched once, beside the scripts rather than after them, and the explorer's
plotly bundle draws the page's figures (heatmap, bars) without errors."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# Every request of the page as (path, initiator, start, end), in ms since navigation.
FETCHES = """() => performance.getEntriesByType('resource').map(e => [new URL(e.name).pathname, e.initiatorType,
  e.startTime, e.responseEnd])"""


def test_the_preloaded_layout_and_chunks_are_fetched_once_beside_the_scripts(ui):
    ui.open("?layer=1")
    fetches = ui.page.evaluate(FETCHES)
    for path in ("/_dash-layout", "/_dash-dependencies", "/_dash-component-suites/dash/dcc/async-graph.js"):
        mine = [f for f in fetches if f[0] == path]
        assert len(mine) == 1 and mine[0][1] == "link", (path, mine)  # the preload's response was reused
    scripts_done = max(end for path, kind, _, end in fetches if kind == "script")
    (layout,) = [f for f in fetches if f[0] == "/_dash-layout"]
    assert layout[2] < scripts_done  # asked for while the scripts were still coming
    assert ui.view()["layer"] == 1  # the preloaded page is the permalink's view (its Referer)


def test_the_plotly_bundle_draws_the_figures(ui):
    ui.open()
    assert ui.page.evaluate("Plotly.version") == "4.1.1"
    assert ui.page.evaluate("document.querySelector('#heatmap .js-plotly-plot').data[0].type") == "heatmap"
    ui.click_token(ui.view()["token"])
    ui.page.wait_for_function("() => document.querySelectorAll('.small-figure .js-plotly-plot .bars').length > 0",
                              timeout=15_000)  # fmt: skip
