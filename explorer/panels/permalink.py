"""The URL as a permalink of the view: restored on load and on back/forward, rewritten on every change.

The browser side (assets/explorer.js `viewChanged`) keeps the URL current and tells the side panels,
once the view has settled, that they may follow it (`ids.SETTLED`).
"""

from __future__ import annotations

import dash
from dash import ClientsideFunction, Input, Output, State, dcc, no_update

from explorer import ids, views
from explorer.callbacks import VIEW_CONTROLS, outputs, settled_view
from explorer.layout import Page
from explorer.state import StoreState

COLUMN = "hidden"


def layout(page: Page) -> list:
    return [dcc.Location(id=ids.URL, refresh=False), dcc.Store(id=ids.URL_SINK)]


def register(app: dash.Dash, state: StoreState) -> None:
    @app.callback(
        *outputs(*VIEW_CONTROLS, (ids.SCALE, "value"), (ids.NOTICE, "children")),
        Input(ids.URL, "search"),
        State(ids.VIEW_STATE, "children"),
        prevent_initial_call=True,  # dcc.Location sets `search` when it mounts, and on back/forward
    )
    def restore(search, view_json):
        """The URL's view (the page usually shows it already: then nothing changes)."""
        if state.first_image() is None:
            return (no_update,) * 9
        params, problems = views.parse_query(search, state)
        if params == settled_view(view_json):
            return (no_update,) * 9
        notice = "Permalink problem: " + "; ".join(problems) if problems else ""
        p = params
        return (p.image, p.token, p.layer, p.head, p.mode, p.over, p.norm, p.scale, notice)

    app.clientside_callback(
        ClientsideFunction("attnstore", "viewChanged"),
        Output(ids.URL_SINK, "data"),
        Input(ids.VIEW_STATE, "children"),
    )
