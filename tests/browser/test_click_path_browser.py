"""The click path in chromium: a clicked token's map is drawn from GET /api/view before Dash's callback
is even asked, it is that token's map, and the page always ends on the view Dash draws (no early map
left behind by fast clicks), also when the app is mounted under a path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.servers import served

from attnstore.schema import TokenKind
from explorer import create_app, views
from explorer.views import ViewParams

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# The tiles grid of the first heatmap drawn from now on (the early map, when the page draws one).
RECORD_FIRST_DRAW = """() => { const gd = document.querySelector('#heatmap .js-plotly-plot'); window.__firstZ = null;
  gd.once('plotly_afterplot', () => { window.__firstZ = gd.data[0].z; }); }"""
FIGURE_TILES = "() => document.querySelector('#heatmap .js-plotly-plot').data[0].z"
# Request timings since the click: the early map's request, and Dash's callback requests.
REQUESTS = """(t0) => performance.getEntriesByType('resource').filter(e => e.startTime >= t0).map(e => [
  e.name.includes('/api/view?') ? 'view' : e.name.includes('_dash-update') ? 'dash' : 'other',
  e.startTime, e.responseEnd])"""


def text_keys(state, image: int) -> list[int]:
    meta = state.image(image)
    kinds = np.asarray(meta.img["token_kind"].values)
    return [int(p) for p in meta.query_position if kinds[p] == TokenKind.GENERATED]


def grid(values) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in values], np.float64)


def library_tiles(state, view: dict, token: int) -> np.ndarray:
    params = ViewParams(**{**{k: view[k] for k in views.URL_KEYS}, "token": token})
    return np.asarray(views.heatmap(state, params).tiles, np.float64)


def previews(page) -> int:
    return int(page.evaluate("window.__attnPreviews || 0"))


def test_a_click_draws_its_map_before_dash_is_asked(ui, live):
    view = ui.open()
    page = ui.page
    page.wait_for_load_state("networkidle")  # the side panels have followed the first view
    key = text_keys(live.state, 0)[3]
    assert key != view["token"]
    drawn_early, before = previews(page), ui.renders()
    page.evaluate(RECORD_FIRST_DRAW)
    t0 = page.evaluate("performance.now()")
    page.locator(f'#token-strip .tok[data-k="{key}"]').click()
    ui.wait_render(before)
    page.wait_for_function("() => window.__firstZ !== null")
    first = grid(page.evaluate("window.__firstZ"))
    ui.wait_view(f"v.token === {key}")
    assert previews(page) == drawn_early + 1
    np.testing.assert_array_equal(first, library_tiles(live.state, view, key))  # the clicked token's map
    requests = page.evaluate(REQUESTS, t0)
    early = [r for r in requests if r[0] == "view"]
    dash = [r for r in requests if r[0] == "dash"]
    assert len(early) == 1 and dash, requests
    assert early[0][2] <= min(start for _, start, _ in dash)  # Dash is asked once the map has arrived


def test_fast_arrow_keys_end_on_the_view_dash_draws(ui, live):
    ui.open()
    page = ui.page
    keys = text_keys(live.state, 0)
    view = ui.click_token(keys[1])
    for _ in range(4):  # no waiting between presses: early maps and callbacks overlap
        page.keyboard.press("ArrowRight")
    view = ui.wait_view(f"v.token === {keys[5]}")
    page.wait_for_load_state("networkidle")
    shown = grid(page.evaluate(FIGURE_TILES))
    np.testing.assert_array_equal(shown, grid(view["tiles"]))
    np.testing.assert_array_equal(shown, library_tiles(live.state, view, keys[5]))
    assert "#" + str(keys[5]) in page.inner_text("#status")


def test_the_early_map_under_a_url_prefix(page, synthetic_store):
    with served(create_app(synthetic_store, url_base_pathname="/explorer/")) as live:
        page.goto(live.url + "explorer/")
        page.wait_for_function("() => (window.__attnRenders || 0) > 0", timeout=15_000)
        page.wait_for_load_state("networkidle")
        key = text_keys(live.state, 0)[2]
        view_before = previews(page)
        page.locator(f'#token-strip .tok[data-k="{key}"]').click()
        page.wait_for_function(
            f"() => JSON.parse(document.getElementById('view-state').textContent).token === {key}", timeout=15_000
        )
        assert previews(page) == view_before + 1  # the map's request found the app under its prefix
        page.wait_for_load_state("networkidle")
        view = json.loads(page.inner_text("#view-state"))
        np.testing.assert_array_equal(grid(page.evaluate(FIGURE_TILES)), library_tiles(live.state, view, key))


# Holds back the next /api/view responses by the given milliseconds (window.__viewDelays, in order).
DELAY_VIEW_RESPONSES = """(delays) => { window.__viewDelays = delays; if (window.__fetchWrapped) return;
  window.__fetchWrapped = true; const plain = window.fetch;
  window.fetch = function (url) {
    const wait = String(url).includes('/api/view?') ? (window.__viewDelays.shift() || 0) : 0;
    return plain.apply(this, arguments).then(r => new Promise(ok => setTimeout(() => ok(r), wait))); }; }"""


def test_a_late_answer_never_replaces_a_newer_selection(ui, live):
    ui.open()
    page = ui.page
    page.wait_for_load_state("networkidle")
    keys = text_keys(live.state, 0)
    page.evaluate(DELAY_VIEW_RESPONSES, [600, 0])
    page.locator(f'#token-strip .tok[data-k="{keys[2]}"]').click()  # its answer comes last
    page.locator(f'#token-strip .tok[data-k="{keys[7]}"]').click()
    view = ui.wait_view(f"v.token === {keys[7]}")
    page.wait_for_timeout(900)  # the late answer has come (and was dropped)
    page.wait_for_load_state("networkidle")
    assert ui.view()["token"] == keys[7]
    np.testing.assert_array_equal(grid(page.evaluate(FIGURE_TILES)), library_tiles(live.state, view, keys[7]))


def test_escape_drops_a_selection_on_its_way(ui, live):
    ui.open()
    page = ui.page
    page.wait_for_load_state("networkidle")
    key = text_keys(live.state, 0)[4]
    drawn_early = previews(page)
    page.evaluate(DELAY_VIEW_RESPONSES, [500])
    page.locator(f'#token-strip .tok[data-k="{key}"]').click()
    page.keyboard.press("Escape")
    ui.wait_view("v.token === null")
    page.wait_for_timeout(800)
    page.wait_for_load_state("networkidle")
    assert ui.view()["token"] is None and previews(page) == drawn_early  # not drawn, Dash not told
    assert np.isnan(grid(page.evaluate(FIGURE_TILES))).all()  # no overlay
