"""One live explorer (werkzeug in a thread) and one chromium per test module."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.servers import served

from explorer.screenshot import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="module")
def live(synthetic_store):
    """The explorer on the shared synthetic store."""
    from explorer import create_app

    with served(create_app(synthetic_store)) as live:
        yield live


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh tab; JavaScript errors fail the test."""
    context = browser.new_context(viewport={"width": 1500, "height": 1000}, accept_downloads=True)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    yield tab
    context.close()
    assert not errors, errors


class Explorer:
    """A tab on the live explorer, with the waits and reads the tests share."""

    def __init__(self, page, live):
        self.page, self.live, self.url = page, live, live.url

    def open(self, query: str = "") -> dict:
        self.page.goto(self.url + query)
        self.wait_render(0)
        return self.view()

    def renders(self) -> int:
        """How many times the heatmap has been drawn (assets/explorer.js counts plotly_afterplot)."""
        return int(self.page.evaluate("window.__attnRenders || 0"))

    def wait_render(self, before: int) -> None:
        self.page.wait_for_function(f"() => (window.__attnRenders || 0) > {before}", timeout=15_000)

    def view(self) -> dict:
        """The current view as the app exposes it (hidden #view-state element)."""
        return json.loads(self.page.inner_text("#view-state"))

    def wait_view(self, predicate: str) -> dict:
        """Wait until the view-state JSON `v` satisfies a JS expression, e.g. "v.layer === 0"."""
        self.page.wait_for_function(
            f"() => {{ const e = document.getElementById('view-state'); if (!e || !e.textContent) return false;"
            f" const v = JSON.parse(e.textContent); return {predicate}; }}",
            timeout=15_000,
        )
        return self.view()

    def click_token(self, key: int) -> dict:
        before = self.renders()
        self.page.locator(f'#token-strip .tok[data-k="{key}"]').click()
        self.wait_render(before)
        return self.wait_view(f"v.token === {key}")

    def figure_point(self, x: float, y: float) -> tuple[float, float]:
        """Page pixel of figure coordinates (x, y) of the main heatmap."""
        box = self.page.locator("#heatmap .js-plotly-plot").bounding_box()
        px, py = self.page.evaluate(
            """([x, y]) => { const gd = document.querySelector('#heatmap .js-plotly-plot');
                const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
                return [xa._offset + xa.l2p(x), ya._offset + ya.l2p(y)]; }""",
            [x, y],
        )
        return box["x"] + px, box["y"] + py


@pytest.fixture
def ui(page, live) -> Explorer:
    return Explorer(page, live)
