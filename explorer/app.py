"""`create_app(store)`: the explorer as a Dash app, with no module-level state.

Each call opens its own `StoreState` (lazy store access + caches), sets a layout
built per visit (with the URL's view already drawn), and registers callbacks and
REST routes on a fresh `dash.Dash`, so tests,
`attnstore serve` and WSGI hosts (gunicorn: ``create_app("store.zarr").server``)
can mount as many apps as they like.
"""

from __future__ import annotations

from pathlib import Path

import dash
import xarray as xr

from explorer import api, callbacks, layout
from explorer.state import StoreState

ASSETS = Path(__file__).parent / "assets"


def create_app(
    store: str | xr.Dataset | StoreState,
    storage_options: dict | None = None,
    **dash_kwargs,
) -> dash.Dash:
    """Build the explorer for one store.

    Parameters
    ----------
    store : store path, fsspec URL (s3://, https://), or a Dataset opened with
        `attnstore.store.open_dataset` (keep the default ``chunks=None``: lazy, one chunk per click).
    storage_options : fsspec options for remote stores (e.g. ``{"anon": True}``).
    **dash_kwargs : passed to `dash.Dash` (e.g. ``url_base_pathname="/explorer/"``).

    Returns
    -------
    dash.Dash ; ``app.server`` is the Flask app, ``app.attnstore_state`` the store handle.

    Raises
    ------
    attnstore.errors.StoreError : no readable attnstore store at `store`.
    """
    state = store if isinstance(store, StoreState) else StoreState(store, storage_options)
    app = dash.Dash(
        __name__,
        assets_folder=str(ASSETS),
        title="attnstore explorer",
        update_title=None,
        **dash_kwargs,
    )
    app.layout = lambda: layout.page(state, lambda image: app.get_relative_path(f"/api/image/{image}.png"))
    callbacks.register(app, state)
    api.register(app, state)
    app.attnstore_state = state
    return app


def warm_up(app: dash.Dash) -> None:
    """Draw the default view once, so the first visitor does not pay for first-use work
    (imports, the first image's geometry, its picture)."""
    state: StoreState = app.attnstore_state
    image = state.first_image()
    if image is not None:
        layout.page(state, lambda i: f"/api/image/{i}.png")
        state.picture_png(image)
