"""`create_app(store)`: the explorer as a Dash app, composed of its panels, with no module-level state.

Each call opens its own `StoreState` (lazy store access; caches on the Dataset's `ds.attn`), sets a
layout built per visit (the panels of `PANELS`, with the URL's view already drawn; served from a
cache of serialised pages per store snapshot and URL: `serve_cached_layout`), and registers
each panel's callbacks and the REST routes on a fresh `dash.Dash`, so tests, `attnstore serve` and
WSGI hosts (gunicorn: ``create_app("store.zarr").server``) can mount as many apps as they like.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

import dash
import flask
import xarray as xr
from plotly.io.json import to_json_plotly

from explorer import api, callbacks, layout
from explorer.guard import guard
from explorer.panels import compare as compare_panel
from explorer.panels import (
    controls,
    exports,
    gallery,
    header,
    heatmap,
    layers,
    modality,
    patch_query,
    permalink,
    picker,
    reverse,
    sinks,
    strip,
)
from explorer.state import StoreState

ASSETS = Path(__file__).parent / "assets"
PAGES_CACHED = 8  # serialised pages kept per store snapshot: the default view and recent permalinks
# What Dash's page fetches only once its scripts have run (the layout, the callback graph, and the
# lazily loaded dcc chunks of the components the explorer shows), fetched at once instead, beside
# the scripts: `<link rel=preload>` in the page's index (the renderer's fetch reuses the response).
PRELOADS = (
    ("_dash-layout", 'as="fetch" crossorigin'),
    ("_dash-dependencies", 'as="fetch" crossorigin'),
    ("_dash-component-suites/dash/dcc/async-graph.js", 'as="script"'),
    ("_dash-component-suites/dash/dcc/async-slider.js", 'as="script"'),
    ("_dash-component-suites/dash/dcc/async-dropdown.js", 'as="script"'),
)
# Dash sends @babel/polyfill (core-js 2 + the generator runtime, 100 KB; ~30 ms of a page load, A/B)
# for browsers without ES2015+. Every browser React 18 runs in has those natively; what the
# renderer and dcc still call is `regeneratorRuntime`, which assets/regenerator-runtime-*.min.js
# (7 KB, an asset: it runs before the renderer) defines. The page leaves the polyfill out.
POLYFILL_SCRIPT = re.compile(r'<script src="[^"]*/deps/polyfill@[^"]*"></script>\s*')

# In page order within each panel's column (explorer.layout.COLUMNS).
PANELS = (
    header,
    permalink,
    picker,
    strip,
    heatmap,
    exports,
    gallery,
    controls,
    layers,
    modality,
    sinks,
    reverse,
    patch_query,
)


def create_app(
    store: str | xr.Dataset | StoreState,
    storage_options: dict | None = None,
    panels=PANELS,
    compare: str | xr.Dataset | StoreState | None = None,
    allowed_hosts: Iterable[str] = (),
    **dash_kwargs,
) -> dash.Dash:
    """Build the explorer for one store.

    Parameters
    ----------
    store : store path, fsspec URL (s3://, https://), or a Dataset opened with
        `attnstore.store.open_dataset` (keep the default ``chunks=None``: lazy, one chunk per click).
        A store given by path follows an extraction that is still writing it.
    storage_options : fsspec options for remote stores (e.g. ``{"anon": True}``).
    panels : the panel modules to show (see explorer/panels/__init__.py), in page order.
    compare : a second store (same forms as `store`) shown beside it: the compare panel is added
        after the side column's panels. Without it there is no compare panel.
    allowed_hosts : Host header names accepted besides the loopback ones (`explorer.guard`; "*": any).
    **dash_kwargs : passed to `dash.Dash` (e.g. ``url_base_pathname="/explorer/"``).

    Returns
    -------
    dash.Dash ; ``app.server`` is the Flask app, ``app.attnstore_state`` the store handle.

    Raises
    ------
    attnstore.errors.StoreError : no readable attnstore store at `store`.
    """
    state = store if isinstance(store, StoreState) else StoreState(store, storage_options)
    if compare is not None:
        state.compare = compare if isinstance(compare, StoreState) else StoreState(compare, storage_options)
        panels = tuple(panels) if compare_panel in panels else (*panels, compare_panel)
    elif compare_panel in panels:
        panels = tuple(p for p in panels if p is not compare_panel)  # nothing to compare with
    app = dash.Dash(
        __name__,
        assets_folder=str(ASSETS),
        title="attnstore explorer",
        update_title=None,
        **dash_kwargs,
    )

    app.layout = lambda: layout.page(state, callbacks.image_url(app), panels, heatmap.draw_page)
    serve_cached_layout(app, state)
    preload(app)
    leave_out_polyfill(app)
    for panel in panels:
        panel.register(app, state)
    api.register(app, state)
    # A client's unknown script path is its mistake: 404, not a logged traceback (Dash raises).
    app.server.register_error_handler(dash.exceptions.DependencyException, _no_such_script)
    guard(app.server, allowed_hosts)
    pin_per_request(app.server, [s for s in (state, state.compare) if s is not None])
    app.attnstore_state = state
    app.attnstore_panels = tuple(panels)
    return app


def _no_such_script(_err) -> flask.Response:
    return flask.Response("no such file\n", 404, mimetype="text/plain")


def serve_cached_layout(app: dash.Dash, state: StoreState) -> None:
    """Serve Dash's layout request from a cache of serialised pages, keyed by the page's URL query
    (the permalink) and held by the store snapshot (`StoreState.cached`: a reopened store, e.g. an
    extraction that added images, starts afresh). A page is a pure function of the two; building
    and serialising it costs 20-300 ms of every visit otherwise."""
    endpoint = app.config.routes_pathname_prefix + "_dash-layout"

    def serve() -> flask.Response:
        key = (layout.page_query(), _compare_snapshot(state))
        body = state.cached("page-json", lambda: to_json_plotly(app.get_layout()), key=key, maxsize=PAGES_CACHED)
        return flask.Response(body, mimetype="application/json")

    app.server.view_functions[endpoint] = serve


def _compare_snapshot(state: StoreState) -> int | None:
    """The compare store's current Dataset (its pages change when it is reopened)."""
    return None if state.compare is None else id(state.compare.ds)


def preload(app: dash.Dash) -> None:
    """Add `PRELOADS` to the page's index: fetched beside the scripts, not after them."""
    prefix = app.config.requests_pathname_prefix
    links = "".join(f'<link rel="preload" href="{prefix}{path}" {kind}>' for path, kind in PRELOADS)
    app.index_string = app.index_string.replace("{%css%}", "{%css%}\n        " + links, 1)


def leave_out_polyfill(app: dash.Dash) -> None:
    """The page's scripts without Dash's polyfill (`POLYFILL_SCRIPT`: why)."""
    interpolate = app.interpolate_index

    def interpolate_index(**parts) -> str:
        return interpolate(**{**parts, "scripts": POLYFILL_SCRIPT.sub("", parts.get("scripts", ""))})

    app.interpolate_index = interpolate_index


def warm_up(app: dash.Dash) -> threading.Thread:
    """Request the default view's page once, so the first visitor does not pay for first-use work
    (Dash's first-request set-up, imports, the first image's geometry, its picture, the page itself),
    then start the panels' store-level first-use work (`warm_panels`) in the background; returns
    that thread (daemon: it never holds the server up)."""
    state: StoreState = app.attnstore_state
    image = state.first_image()
    if image is not None:
        app.server.test_client().get(app.config.routes_pathname_prefix + "_dash-layout")
        state.picture_png(image)
    thread = threading.Thread(target=warm_panels, args=(app,), name="attnstore-warm-panels", daemon=True)
    thread.start()
    return thread


def warm_panels(app: dash.Dash) -> None:
    """Each panel's `warm(state)` (e.g. the modality panel's dataset mean: seconds of reading on a
    real store), at the lowest CPU priority, so the first visitor's clicks are not the ones that wait
    for it and do not share the CPU with it. A request that needs a value being made waits for it
    (`ds.attn.cached` makes a value once)."""
    lowest_cpu_priority()
    state: StoreState = app.attnstore_state
    state.pin()  # one snapshot of the store for all of it
    try:
        for panel in app.attnstore_panels:
            warm = getattr(panel, "warm", None)
            if warm is not None:
                try:
                    warm(state)
                except Exception:  # the panel makes it again on use, and reports its error then
                    pass
    finally:
        state.unpin()


def lowest_cpu_priority() -> None:
    """Give the calling thread the lowest CPU priority (nice 19). Linux only: there a thread is a task
    of its own; elsewhere the call would apply to the whole process (or to another one), so nothing."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass


def pin_per_request(server, states: list[StoreState]) -> None:
    """Every request (an API call or a Dash callback) reads one snapshot of each store (`StoreState.pin`)."""

    def pin() -> None:
        for state in states:
            state.pin()

    def unpin(_error=None) -> None:
        for state in states:
            state.unpin()

    server.before_request(pin)
    server.teardown_request(unpin)
