"""The token strip: every token of the prompt and the answer, image tokens grouped into tile chips.

The server sends the strip's items once per image (`ids.STRIP_DATA`, from `explorer.tokens`); the
browser draws them and handles clicks and keys (assets/explorer.js), so a click costs one request.
"""

from __future__ import annotations

import dash
from dash import ClientsideFunction, Input, Output, dcc, html

from explorer import ids
from explorer.layout import Page
from explorer.state import StoreState

COLUMN = "center"


def layout(page: Page) -> list:
    items = {"image": page.params.image, "items": page.state.image(page.params.image).items} if page.has_view else None
    legend = html.Div(
        [
            html.Span("prompt", className="legend tok-prompt"),
            html.Span("answer", className="legend tok-answer"),
            html.Span("special", className="legend tok-special"),
            html.Span("▦ image tile (click to expand)", className="legend chip-legend"),
        ],
        className="strip-legend",
    )
    return [
        dcc.Store(id=ids.STRIP_DATA, data=items),
        dcc.Store(id=ids.JS_SINK),
        legend,
        html.Div(id=ids.STRIP, className="strip", tabIndex="0"),
    ]


def register(app: dash.Dash, state: StoreState) -> None:
    @app.callback(Output(ids.STRIP_DATA, "data"), Input(ids.IMAGE, "data"), prevent_initial_call=True)
    def strip_data(image):
        """The token strip's items of the image (drawn by assets/explorer.js)."""
        return None if image is None else {"image": int(image), "items": state.image(int(image)).items}

    app.clientside_callback(
        ClientsideFunction("attnstore", "drawStrip"),
        Output(ids.JS_SINK, "data"),
        Input(ids.STRIP_DATA, "data"),
        Input(ids.TOKEN, "data"),
        Input(ids.REVERSE_DATA, "data"),
    )
