"""The URL as a permalink of the view: restored on load and on back/forward, rewritten on every change.

The browser side (assets/explorer.js `viewChanged`) keeps the URL current and tells the side panels,
once the view has settled, that they may follow it (`ids.SETTLED`).
"""

from __future__ import annotations

import json

import dash
from dash import ClientsideFunction, Input, Output, State, dcc, no_update

from explorer import ids, views
from explorer.layout import Page
from explorer.state import StoreState
from explorer.views import ViewParams

COLUMN = "hidden"


def settled_view(view_json: str | None) -> ViewParams | None:
    """The view the main figure shows (from its view-state JSON). Side panels follow it once it has
    settled, so the heatmap is computed and drawn first and rapid changes (arrow keys, layer play)
    do not queue side-panel work."""
    if not view_json:
        return None
    view = json.loads(view_json)
    return ViewParams(**{k: view[k] for k in ("image", "token", "layer", "head", "mode", "over", "norm", "k")})


def layout(page: Page) -> list:
    return [dcc.Location(id=ids.URL, refresh=False), dcc.Store(id=ids.URL_SINK)]


def register(app: dash.Dash, state: StoreState) -> None:
    @app.callback(
        Output(ids.IMAGE, "data"),
        Output(ids.TOKEN, "data"),
        Output(ids.LAYER, "value"),
        Output(ids.HEAD, "value"),
        Output(ids.MODE, "value"),
        Output(ids.OVER, "value"),
        Output(ids.NORM, "value"),
        Output(ids.NOTICE, "children"),
        Input(ids.URL, "search"),
        State(ids.VIEW_STATE, "children"),
        prevent_initial_call=True,  # dcc.Location sets `search` when it mounts, and on back/forward
    )
    def restore(search, view_json):
        """The URL's view (the page usually shows it already: then nothing changes)."""
        if state.first_image() is None:
            return (no_update,) * 8
        params, problems = views.parse_query(search, state)
        if params == settled_view(view_json):
            return (no_update,) * 8
        notice = "Permalink problem: " + "; ".join(problems) if problems else ""
        return (params.image, params.token, params.layer, params.head, params.mode, params.over, params.norm, notice)

    app.clientside_callback(
        ClientsideFunction("attnstore", "viewChanged"),
        Output(ids.URL_SINK, "data"),
        Input(ids.VIEW_STATE, "children"),
    )
