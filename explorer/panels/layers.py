"""Where the token looks, layer by layer: image share per layer (chart) and the layer x head matrix
of image share or entropy; a matrix cell jumps to that layer and head."""

from __future__ import annotations

import dash
from dash import Input, Output, dcc, html, no_update

from attnstore.errors import AttnstoreError
from explorer import figures, ids, views
from explorer.layout import Page
from explorer.panels.permalink import settled_view
from explorer.state import StoreState

COLUMN = "side"


def layout(page: Page) -> list:
    return [
        html.H3("Image share per layer", title="fraction of the token's attention on image patches"),
        dcc.Graph(id=ids.SHARE, config={"displayModeBar": False}, className="small-figure"),
        html.Div(
            [
                html.H3("Layer × head"),
                dcc.RadioItems(
                    id=ids.MATRIX_METRIC,
                    options={"share": "image share", "entropy": "entropy"},
                    value="share",
                    inline=True,
                    className="radio-inline",
                ),
            ],
            className="panel-head",
        ),
        html.Div("click a cell to jump there", className="hint"),
        dcc.Graph(id=ids.MATRIX, config={"displayModeBar": False}, className="small-figure"),
    ]


def register(app: dash.Dash, state: StoreState) -> None:
    @app.callback(
        Output(ids.SHARE, "figure"),
        Output(ids.MATRIX, "figure"),
        Input(ids.SETTLED, "data"),
        Input(ids.MATRIX_METRIC, "value"),
        prevent_initial_call=True,  # runs once the main callback has produced the view
    )
    def layer_charts(view_json, metric):
        params = settled_view(view_json)
        if params is None or params.token is None:
            hint = figures.empty_figure("select a token")
            return hint, hint
        try:
            stats = views.layer_head_stats(state, params)
        except AttnstoreError as err:
            hint = figures.empty_figure(str(err))
            return hint, hint
        metric = metric or "share"
        return (
            figures.share_figure(stats["share"], params.layer, params.head),
            figures.matrix_figure(stats[metric], metric, params.layer, params.head),
        )

    @app.callback(
        Output(ids.LAYER, "value", allow_duplicate=True),
        Output(ids.HEAD, "value", allow_duplicate=True),
        Output(ids.MODE, "value", allow_duplicate=True),
        Input(ids.MATRIX, "clickData"),
        prevent_initial_call=True,
    )
    def jump_to_cell(click):
        """A cell of the layer x head matrix: show that layer and head alone."""
        if not click or not click.get("points"):
            return no_update, no_update, no_update
        point = click["points"][0]
        return int(point["y"]), int(point["x"]), "head"
