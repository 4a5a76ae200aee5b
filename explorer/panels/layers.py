"""Where the token looks, layer by layer: image share per layer (chart) and the layer x head matrix
of image share or entropy; a matrix cell jumps to that layer and head."""

from __future__ import annotations

import dash
from dash import Input, dcc, no_update

from explorer import figures, ids, views
from explorer.callbacks import follows_view, outputs
from explorer.layout import Page, side_panel
from explorer.state import StoreState

COLUMN = "side"


def layout(page: Page) -> list:
    metric = dcc.RadioItems(id=ids.MATRIX_METRIC, options={"share": "image share", "entropy": "entropy"},
                            value="share", inline=True, className="radio-inline")  # fmt: skip
    share_tip = "fraction of the token's attention on image patches"
    return [
        *side_panel("Image share per layer", share_tip, hint=None, graphs=[ids.SHARE]),
        *side_panel("Layer × head", hint="click a cell to jump there", graphs=[ids.MATRIX], controls=metric),
    ]


def register(app: dash.Dash, state: StoreState) -> None:
    charts = outputs((ids.SHARE, "figure"), (ids.MATRIX, "figure"))

    @follows_view(app, charts, lambda reason: (figures.empty_figure(reason),) * 2, [Input(ids.MATRIX_METRIC, "value")])
    def layer_charts(params, metric) -> tuple:
        stats = views.layer_head_stats(state, params)
        return (
            figures.share_figure(stats["share"], params.layer, params.head),
            figures.matrix_figure(stats[metric or "share"], metric or "share", params.layer, params.head),
        )

    cell = outputs((ids.LAYER, "value"), (ids.HEAD, "value"), (ids.MODE, "value"), duplicate=True)

    @app.callback(*cell, Input(ids.MATRIX, "clickData"), prevent_initial_call=True)
    def jump_to_cell(click):
        """A cell of the layer x head matrix: show that layer and head alone."""
        if not click or not click.get("points"):
            return no_update, no_update, no_update
        point = click["points"][0]
        return int(point["y"]), int(point["x"]), "head"
