"""What a visit costs the server: the page (Dash's layout) is built and serialised once per store
snapshot and URL, and the page's index asks for the layout and the lazily loaded chunks at once."""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading

import pytest

from attnstore.store import AttnStore
from explorer import create_app, layout
from explorer.app import PRELOADS, warm_up
from explorer.state import StoreState

PERMALINK = {"Referer": "http://127.0.0.1/?image=1&layer=1"}


@pytest.fixture
def builds(monkeypatch) -> list[int]:
    """Counts the pages built (`explorer.layout.page` calls)."""
    calls: list[int] = []
    page = layout.page

    def counted(*args, **kwargs):
        calls.append(1)
        return page(*args, **kwargs)

    monkeypatch.setattr(layout, "page", counted)
    return calls


def test_a_page_is_built_once_per_url(synthetic_store, builds):
    app = create_app(StoreState(synthetic_store))
    client = app.server.test_client()
    client.get("/_dash-layout")  # Dash's own first-request set-up builds one for its checks
    first = len(builds)
    default = client.get("/_dash-layout").get_data()
    assert client.get("/_dash-layout").get_data() == default and len(builds) == first
    linked = client.get("/_dash-layout", headers=PERMALINK).get_data()
    assert len(builds) == first + 1  # another URL, another page ...
    assert b'"id":"sel-image","data":1' in linked and b'"id":"sel-image","data":0' in default
    assert client.get("/_dash-layout", headers=PERMALINK).get_data() == linked and len(builds) == first + 1
    assert client.get("/_dash-layout").get_data() == default and len(builds) == first + 1  # ... both kept


def test_the_cached_page_is_the_page_built_for_the_visit(synthetic_store):
    """The cache changes nothing a visitor sees: what Dash would serve, but for the time it took."""
    from plotly.io.json import to_json_plotly

    app = create_app(StoreState(synthetic_store))
    with app.server.test_request_context("/_dash-layout", headers=PERMALINK):
        built = to_json_plotly(app.get_layout())
    served = app.server.test_client().get("/_dash-layout", headers=PERMALINK).get_data(as_text=True)
    assert without_timing(served) == without_timing(built)


def without_timing(page: str) -> str:
    return re.sub(r'server_ms\\": [0-9.]+', "", page)


def test_a_reopened_store_gets_a_fresh_page(synthetic_store, tmp_path, builds):
    path = str(tmp_path / "growing.zarr")
    shutil.copytree(synthetic_store, path)
    app = create_app(StoreState(path, poll_seconds=0.0))  # check the store on every request
    client = app.server.test_client()
    before = client.get("/_dash-layout").get_data(as_text=True)
    built = len(builds)
    AttnStore.open(path).allocate(["live.png"], ["live.png"])  # an extraction reserves a slot
    after = client.get("/_dash-layout").get_data(as_text=True)
    assert len(builds) == built + 1 and after != before
    assert "4 images" in after and "3 images" in before  # the header counts the new slot


def test_warm_up_leaves_the_default_page_ready(synthetic_store, builds):
    app = create_app(StoreState(synthetic_store))
    warm_up(app)
    built = len(builds)
    assert app.server.test_client().get("/_dash-layout").status_code == 200 and len(builds) == built


@pytest.mark.parametrize("base", ["/", "/explorer/"])
def test_the_index_preloads_what_exists(synthetic_store, base):
    """Each preload names a URL the server answers (a renamed dcc chunk would be fetched for nothing)."""
    app = create_app(StoreState(synthetic_store), url_base_pathname=base)
    client = app.server.test_client()
    index = client.get(base).get_data(as_text=True)
    hrefs = re.findall(r'<link rel="preload" href="([^"]+)"', index)
    assert hrefs == [base + path for path, _ in PRELOADS]
    for href in hrefs:
        assert client.get(href).status_code == 200, href


def test_the_index_leaves_out_the_polyfill_and_defines_the_generator_runtime_first(synthetic_store):
    """Dash's polyfill is not sent; the generator runtime the renderer calls is, before the renderer."""
    client = create_app(StoreState(synthetic_store)).server.test_client()
    scripts = re.findall(r'<script src="([^"]+)"', client.get("/").get_data(as_text=True))
    assert not [s for s in scripts if "polyfill" in s]
    (runtime,) = [i for i, s in enumerate(scripts) if "/assets/regenerator-runtime-" in s]
    (renderer,) = [i for i, s in enumerate(scripts) if "dash_renderer" in s]
    assert runtime < renderer
    assert b"regeneratorRuntime=runtime" in client.get(scripts[runtime]).get_data()


def test_warm_up_makes_the_panels_store_level_values_in_a_low_priority_thread(synthetic_store, monkeypatch):
    """`attnstore serve` starts the dataset means the modality panel needs before anyone asks, at the
    lowest CPU priority; the first view then reads them (made once, not again)."""
    from explorer import app as app_module
    from explorer.panels import modality

    priorities: list[int] = []
    lowest = app_module.lowest_cpu_priority

    def recorded() -> None:
        lowest()
        if sys.platform.startswith("linux"):
            priorities.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    monkeypatch.setattr(app_module, "lowest_cpu_priority", recorded)
    app = create_app(StoreState(synthetic_store))
    made: list[str] = []
    mean = modality.dataset_mean
    monkeypatch.setattr(modality, "dataset_mean", lambda state, q: made.append(q) or mean(state, q))
    warm_up(app).join(timeout=60)
    assert made == ["generated", "prompt"]
    if sys.platform.startswith("linux"):
        assert priorities == [19] and os.getpriority(os.PRIO_PROCESS, 0) != 19  # the thread only
    cache = app.attnstore_state.ds.attn._caches["explorer-modality-mean"]
    misses = cache.misses
    mean(app.attnstore_state, "generated")
    assert cache.misses == misses  # read, not made again
