"""The explorer in chromium: every check reads the app's exposed view state and compares with the store."""

from __future__ import annotations

import csv
import io
import json
import urllib.request
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from attnstore import analysis
from attnstore.schema import TokenKind
from explorer import views

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def answer_keys(state, image: int) -> list[int]:
    meta = state.image(image)
    kinds = np.asarray(meta.img["token_kind"].values)
    return [int(p) for p in meta.query_position if kinds[p] == TokenKind.GENERATED]


def stored_value(state, image: int, layer: int, head: int, token: int, grid_row: int, grid_col: int) -> float:
    """The store's own number for one tile-grid cell, read without the explorer's code."""
    meta = state.image(image)
    q = int(np.flatnonzero(meta.query_position == token)[0])
    kinds = np.asarray(meta.img["token_kind"].values)
    rows, cols = np.asarray(meta.img["patch_row"].values), np.asarray(meta.img["patch_col"].values)
    key = np.flatnonzero((kinds == TokenKind.IMAGE_TILE) & (rows == grid_row) & (cols == grid_col))[0]
    return float(np.float32(state.ds["attention"][image, layer, head, q, key].values))


def test_load_shows_a_labelled_explorer(ui, live):
    v = ui.open()
    page = ui.page
    assert "random-weight demo" in page.inner_text("#random-badge")
    assert page.locator("#token-strip .chip").count() == 3 * 4 + 1  # image 0 has 3 x 4 tiles + the global view
    assert page.locator("#token-strip .tok-answer.clickable").count() == len(answer_keys(live.state, 0))
    assert v["token"] == views.default_params(live.state).token and v["tiles"] is not None  # measured
    assert page.locator("#token-strip .tok.sel").get_attribute("data-k") == str(v["token"])
    assert "?" + v["permalink"] in page.url
    page.wait_for_selector("#gallery .gallery-item")
    assert page.locator("#gallery .gallery-item").count() == live.state.n_heads
    assert page.locator(".card").count() == 3


def test_click_token_shows_the_stored_values(ui, live):
    ui.open()
    key = answer_keys(live.state, 0)[5]  # " jacket"
    v = ui.click_token(key)
    assert (v["image"], v["token"], v["mode"], v["norm"]) == (0, key, "head", "raw")
    for r, c in [(0, 0), (5, 17), (23, 31)]:
        assert v["tiles"][r][c] == stored_value(live.state, 0, v["layer"], v["head"], key, r, c)
    assert "jacket" in ui.page.inner_text("#status")
    # arrow keys move the selection to the neighbouring token
    before = ui.renders()
    ui.page.keyboard.press("ArrowRight")
    ui.wait_render(before)
    assert ui.wait_view(f"v.token === {answer_keys(live.state, 0)[6]}")["query"] == v["query"] + 1


def test_layer_slider_and_escape(ui, live):
    v = ui.open()
    thumb = ui.page.locator("#layer-slider [role=slider]").first
    thumb.focus()
    before = ui.renders()
    ui.page.keyboard.press("ArrowLeft")
    ui.wait_render(before)
    v = ui.wait_view("v.layer === 0")
    assert v["tiles"][3][3] == stored_value(live.state, 0, 0, v["head"], v["token"], 3, 3)
    ui.page.locator("body").click(position={"x": 5, "y": 400})  # focus leaves the slider
    ui.page.keyboard.press("Escape")
    v = ui.wait_view("v.token === null")
    assert v["tiles"] is None
    ui.page.wait_for_function("() => !document.querySelector('#token-strip .tok.sel')")  # highlight cleared
    ui.page.wait_for_function("() => location.search.includes('token=none')")


def test_permalink_round_trip(ui, live):
    key = answer_keys(live.state, 1)[2]
    query = f"?image=1&token={key}&layer=0&head=2&mode=max&over=heads&norm=image"
    v = ui.open(query)
    assert (v["image"], v["token"], v["layer"], v["head"], v["mode"], v["over"], v["norm"]) == (
        1,
        key,
        0,
        2,
        "max",
        "heads",
        "image",
    )
    expected = views.heatmap(
        live.state, views.ViewParams(image=1, token=key, layer=0, head=2, mode="max", norm="image")
    ).tiles
    got = np.array([[np.nan if x is None else x for x in row] for row in v["tiles"]], np.float32)
    np.testing.assert_array_equal(got, expected)
    assert ui.page.locator("#mode input[value=max]").is_checked()
    ui.page.reload()
    ui.wait_render(0)
    again = ui.view()
    assert {k: again[k] for k in ("image", "token", "layer", "head", "mode", "norm")} == {
        k: v[k] for k in ("image", "token", "layer", "head", "mode", "norm")
    }


def test_bad_permalink_shows_a_clear_message(ui):
    v = ui.open("?image=9&layer=1&head=8&token=abc")
    notice = ui.page.inner_text("#notice")
    assert "image=9 in the link is not in 0-2" in notice and "head=8" in notice
    assert v["image"] == 0 and v["layer"] == 1 and v["tiles"] is not None  # what was valid is kept
    assert "Traceback" not in ui.page.content()


def test_reverse_view_from_a_patch_click(ui, live):
    ui.open()
    meta = live.state.image(0)
    geom = views.geometry(live.state, 0)
    r, c = 10, 20
    key = int(geom.tiles.keys[r, c])
    x, y = ui.figure_point(
        (geom.tiles.x_edges[c] + geom.tiles.x_edges[c + 1]) / 2, (geom.tiles.y_edges[r] + geom.tiles.y_edges[r + 1]) / 2
    )
    ui.page.mouse.click(x, y)
    ui.page.wait_for_function(f"() => document.getElementById('reverse-info').innerText.includes('#{key} ')")
    v = ui.view()
    values = analysis.reverse_attention(meta.img, [key], layers=[v["layer"]], heads=[v["head"]]).values
    top_key = int(meta.query_position[int(np.argmax(values))])
    ui.page.wait_for_selector("#token-strip .tok.rev")
    assert (
        ui.page.locator(f'#token-strip .tok[data-k="{top_key}"]').evaluate("e => e.style.getPropertyValue('--rev')")
        == "1.000"
    )
    assert "tile 2,3, sub-patch 2,4" in ui.page.inner_text("#reverse-info")
    # the same from an expanded tile chip: a cell is one patch token
    ui.page.locator(".chip-label", has_text="tile 1,1").click()
    cell = ui.page.locator(".chip.open .cell").nth(9)
    cell_key = int(cell.get_attribute("data-k"))
    cell.click()
    ui.page.wait_for_function(f"() => document.getElementById('reverse-info').innerText.includes('#{cell_key} ')")
    assert "tile 1,1, sub-patch 1,1" in ui.page.inner_text("#reverse-info")


def test_exports_download(ui, live):
    v = ui.open()
    downloads = {}
    for button in ("grid CSV", "figure SVG", "heatmap PNG", "overlay PNG"):
        with ui.page.expect_download() as info:
            ui.page.get_by_role("button", name=button).click()
        downloads[button] = (info.value.suggested_filename, open(info.value.path(), "rb").read())
    name, data = downloads["grid CSV"]
    assert name.endswith("_grid.csv") and f"tok{v['token']}" in name
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert len(rows) == 12 * 64 + 64
    cell = next(r for r in rows if r["view"] == "tiles" and r["grid_row"] == "4" and r["grid_col"] == "9")
    assert float(cell["value"]) == pytest.approx(v["tiles"][4][9], rel=1e-6)
    svg = ET.fromstring(downloads["figure SVG"][1])
    assert svg.tag.endswith("svg") and len(list(svg.iter("{http://www.w3.org/2000/svg}rect"))) > 12 * 64
    meta = live.state.image(0)
    assert Image.open(io.BytesIO(downloads["overlay PNG"][1])).size == (meta.width, meta.height)
    assert Image.open(io.BytesIO(downloads["heatmap PNG"][1])).size == (32 * 16, 24 * 16)


def test_gallery_matrix_and_play(ui, live):
    ui.open()
    ui.page.locator('#gallery .gallery-item[data-head="3"]').click()
    assert ui.wait_view("v.head === 3")["mode"] == "head"
    ui.page.wait_for_selector("#matrix .js-plotly-plot .heatmaplayer")
    # click the matrix cell (layer 0, head 1): map its data coordinates to the page
    ui.page.locator("#matrix").scroll_into_view_if_needed()  # below the fold under the view controls
    box = ui.page.locator("#matrix .js-plotly-plot").bounding_box()
    px, py = ui.page.evaluate(
        """() => { const gd = document.querySelector('#matrix .js-plotly-plot');
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            return [xa._offset + xa.l2p(1), ya._offset + ya.l2p(0)]; }"""
    )
    ui.page.mouse.click(box["x"] + px, box["y"] + py)
    v = ui.wait_view("v.layer === 0 && v.head === 1")
    assert v["tiles"][0][0] == stored_value(live.state, 0, 0, 1, v["token"], 0, 0)
    ui.page.get_by_role("button", name="▶ play").click()
    ui.wait_view("v.layer === 1")  # the timer steps to the next layer
    ui.page.get_by_role("button", name="❚❚ pause").click()


def test_picker_search_and_pick(ui, live):
    ui.open()
    ui.page.fill("#picker-search", "00002")
    ui.page.wait_for_function("() => document.querySelectorAll('.card').length === 1")
    before = ui.renders()
    ui.page.locator(".card").first.click()
    ui.wait_render(before)
    v = ui.wait_view("v.image === 2")
    assert v["token"] == answer_keys(live.state, 2)[0]
    assert ui.page.locator("#token-strip .chip").count() == 2 * 2 + 1  # image 2 has 2 x 2 tiles
    assert len(v["tiles"]) == 16 and len(v["tiles"][0]) == 16


def test_rest_on_the_live_server(live):
    request = urllib.request.Request(
        live.url + "api/generate_attention_map",
        method="POST",
        data=json.dumps({"word": "beach", "layer": 1, "head": 0}).encode(),
        headers={"Content-Type": "application/json"},
    )
    body = json.loads(urllib.request.urlopen(request, timeout=10).read())
    assert body["success"] and live.state.image(0).token_text[body["word_index"]] == "Ġbeach"
    bad = urllib.request.Request(
        live.url + "api/generate_attention_map",
        method="POST",
        data=b"{oops",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bad, timeout=10)
    assert err.value.code == 400 and json.loads(err.value.read())["success"] is False


def test_a_token_before_the_image_says_why_its_map_is_blank(ui, live):
    ui.open()
    meta = live.state.image(0)
    key = next(int(p) for p in meta.query_position if p < meta.first_image_key)
    v = ui.click_token(key)
    assert v["vmax"] == 0.0
    assert "comes before the image: causal attention cannot see image patches" in ui.page.inner_text("#status")


def test_an_opened_chip_stays_in_view_and_the_reverse_colours_keep_tokens_readable(ui):
    ui.open()
    page = ui.page
    page.locator(".chip-label", has_text="tile 1,1").click()
    cell = page.locator(".chip.open .cell").nth(20)
    cell.click()
    page.wait_for_selector("#token-strip .tok.rev")
    page.wait_for_timeout(300)  # let every update of the strip land
    inside = page.evaluate(
        """() => { const box = document.getElementById('token-strip').getBoundingClientRect();
            const chip = document.querySelector('.chip.open .chip-body').getBoundingClientRect();
            return chip.top >= box.top - 1 && chip.bottom <= box.bottom + 1; }"""
    )
    assert inside, "the opened chip scrolled out of the strip"
    assert page.locator(".chip.open .cell.cell-sel").count() == 1
    plain, marked = page.evaluate(
        """() => { const style = (e) => { const s = getComputedStyle(e); return [s.backgroundColor, s.color,
                   s.backgroundImage]; };
            const probe = document.createElement('span'); probe.className = 'tok tok-prompt';
            document.getElementById('token-strip').appendChild(probe);
            const out = [style(probe), style(document.querySelector('#token-strip .tok-prompt.rev'))];
            probe.remove(); return out; }"""
    )
    assert marked == plain  # the token keeps its colours; the share is a bar under it


def test_the_view_controls_are_above_the_fold_at_1024_px(browser, live):
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    page = context.new_page()
    page.goto(live.url)
    page.wait_for_function("() => (window.__attnRenders || 0) > 0", timeout=15_000)
    for selector in ("#layer-slider", "#head-slider", "#mode", "#norm", "#heatmap"):
        box = page.locator(selector).bounding_box()
        assert box["y"] < 768 and box["x"] + box["width"] <= 1024, selector
    assert page.locator("#norm").bounding_box()["y"] + page.locator("#norm").bounding_box()["height"] <= 768
    context.close()


def test_the_page_carries_the_ids_the_script_reads(ui):
    from explorer import ids

    ui.open()
    carried = ui.page.get_attribute(f"[{ids.JS_IDS_ATTRIBUTE}]", ids.JS_IDS_ATTRIBUTE)
    assert json.loads(carried) == ids.for_js()
