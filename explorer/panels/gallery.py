"""Every head of the current layer as a small map, sortable by image share or focus; a click shows it."""

from __future__ import annotations

import dash
from dash import Input, Output, State, dcc, html

from attnstore.errors import AttnstoreError
from explorer import figures, ids, views
from explorer.layout import Page
from explorer.panels.permalink import settled_view
from explorer.state import StoreState

COLUMN = "center"


def layout(page: Page) -> list:
    head = html.Div(
        [
            html.H3("Heads of this layer"),
            dcc.RadioItems(
                id=ids.GALLERY_SORT,
                options={"head": "by index", "share": "by image share", "entropy": "most focused"},
                value="head",
                inline=True,
                className="radio-inline",
            ),
        ],
        className="panel-head",
    )
    return [head, html.Div(id=ids.GALLERY, className="gallery")]


def register(app: dash.Dash, state: StoreState) -> None:
    @app.callback(
        Output(ids.GALLERY, "children"),
        Input(ids.SETTLED, "data"),
        Input(ids.GALLERY_SORT, "value"),
        State(ids.CMAP, "value"),
        prevent_initial_call=True,
    )
    def gallery(view_json, sort, cmap):
        params = settled_view(view_json)
        if params is None or params.token is None:
            return html.Div("select a token to see every head of the layer", className="hint")
        try:
            grids = views.head_grids(state, params)  # [head, grid_row, grid_col]
            stats = views.layer_head_stats(state, params)
        except AttnstoreError as err:
            return html.Div(str(err), className="hint")
        share, ent = stats["share"][params.layer], stats["entropy"][params.layer]
        return [
            html.Div(
                [
                    html.Img(src=figures.thumbnail_uri(grids[h], cmap or "viridis"), className="gallery-img"),
                    html.Div(f"head {h}", className="gallery-title"),
                    html.Div(f"image {share[h]:.0%} · H {ent[h]:.2f}", className="gallery-meta"),
                ],
                className="gallery-item" + (" current" if h == params.head else ""),
                title=f"head {h}: {share[h]:.1%} of attention on the image, entropy {ent[h]:.3f} (click to show)",
                **{"data-head": str(h)},
            )
            for h in figures.gallery_order(share, ent, sort or "head")
        ]
