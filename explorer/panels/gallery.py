"""Every head of the current layer as a small map, sortable by image share, focus or (stores with
object boxes) grounding; a click shows it."""

from __future__ import annotations

import dash
import numpy as np
from dash import Input, Output, State, dcc, html

from attnstore.errors import AttnstoreError
from explorer import figures, ids, views
from explorer.layout import Page
from explorer.panels.permalink import settled_view
from explorer.state import StoreState

COLUMN = "center"


SORTS = {"head": "by index", "share": "by image share", "entropy": "most focused"}
GROUNDING_SORT = {"grounding": "on the object's box"}  # stores with object boxes


def layout(page: Page) -> list:
    head = html.Div(
        [
            html.H3("Heads of this layer"),
            dcc.RadioItems(
                id=ids.GALLERY_SORT,
                options={**SORTS, **(GROUNDING_SORT if page.state.has_objects else {})},
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
            grounding = views.head_grounding(state, params) if state.has_objects else None
        except AttnstoreError as err:
            return html.Div(str(err), className="hint")
        share, ent = stats["share"][params.layer], stats["entropy"][params.layer]
        lift = grounding.lift if grounding else None
        items = [_item(h, grids[h], share[h], ent[h], None if lift is None else lift[h], params.head, cmap, grounding)
                 for h in figures.gallery_order(share, ent, sort or "head", lift)]  # fmt: skip
        if sort == "grounding" and grounding is None:
            items.insert(0, html.Div("no object box to check this token against: sorted by index", className="hint"))
        return items


def _item(h: int, grid, share: float, ent: float, lift: float | None, current: int, cmap, grounding) -> html.Div:
    """One head's thumbnail, its numbers, and (with an object to check) its in-box lift."""
    lift = lift if lift is not None and np.isfinite(lift) else None  # NaN: no attention on the image at all
    meta = f"image {share:.0%} · H {ent:.2f}" + ("" if lift is None else f" · box {lift:.1f}x")
    title = f"head {h}: {share:.1%} of attention on the image, entropy {ent:.3f}"
    if lift is not None:
        title += f", {lift:.2f}x chance inside the {grounding.label} box"
    return html.Div(
        [
            html.Img(src=figures.thumbnail_uri(grid, cmap or "viridis"), className="gallery-img"),
            html.Div(f"head {h}", className="gallery-title"),
            html.Div(meta, className="gallery-meta"),
        ],
        className="gallery-item" + (" current" if h == current else ""),
        title=title + " (click to show)",
        **{"data-head": str(h)},
    )
