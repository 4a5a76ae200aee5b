"""The URL as a permalink of the view: restored on load and on back/forward, rewritten on every change.

The browser side (assets/explorer.js `viewChanged`) keeps the URL current and tells the side panels,
once the view has settled, that they may follow it (`ids.SETTLED`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

import dash
from dash import ClientsideFunction, Input, Output, State, dcc, no_update

from attnstore.errors import AttnstoreError
from explorer import ids, views
from explorer.layout import Page
from explorer.state import StoreState
from explorer.views import ViewParams

COLUMN = "hidden"
T = TypeVar("T")


def settled_view(view_json: str | None) -> ViewParams | None:
    """The view the main figure shows (from its view-state JSON). Side panels follow it once it has
    settled, so the heatmap is computed and drawn first and rapid changes (arrow keys, layer play)
    do not queue side-panel work."""
    if not view_json:
        return None
    view = json.loads(view_json)
    return ViewParams(**{k: view[k] for k in views.URL_KEYS if k in view})


def follow_token(view_json: str | None, show: Callable[[ViewParams], T], blank: Callable[[str], T]) -> T:
    """What a side panel shows for the settled view: `show(params)`, or `blank(reason)` when no token
    is selected or the store refuses the view (the reason is the library's message)."""
    params = settled_view(view_json)
    if params is None or params.token is None:
        return blank("select a token")
    try:
        return show(params)
    except AttnstoreError as err:
        return blank(str(err))


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
        Output(ids.SCALE, "value"),
        Output(ids.NOTICE, "children"),
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
