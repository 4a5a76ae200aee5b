"""Every head of the current layer as a small map, sortable by image share, focus or (stores with
object boxes) grounding; a click shows it."""

from __future__ import annotations

import dash
import numpy as np
from dash import Input, Output, State, dcc, html

from attnstore.render.scale import negligible
from explorer import figures, ids, views
from explorer.callbacks import follows_view
from explorer.layout import Page, panel_head
from explorer.state import StoreState

COLUMN = "center"


SORTS = {"head": "by index", "share": "by image share", "entropy": "most focused"}
GROUNDING_SORT = {"grounding": "on the object's box"}  # stores with object boxes


def layout(page: Page) -> list:
    sort = dcc.RadioItems(id=ids.GALLERY_SORT, options={**SORTS, **(GROUNDING_SORT if page.state.has_objects else {})},
                          value="head", inline=True, className="radio-inline")  # fmt: skip
    return [panel_head("Heads of this layer", controls=sort), html.Div(id=ids.GALLERY, className="gallery")]


def register(app: dash.Dash, state: StoreState) -> None:
    own = [Input(ids.GALLERY_SORT, "value"), State(ids.CMAP, "value")]

    @follows_view(app, [Output(ids.GALLERY, "children")], _blank, own)
    def gallery(params, sort, cmap):
        return _items(state, params, sort, cmap)


def _blank(reason: str) -> html.Div:
    blank = {"select a token": "select a token to see every head of the layer"}
    return html.Div(blank.get(reason, reason), className="hint")


def _items(state: StoreState, params, sort: str | None, cmap: str | None) -> list:
    """The gallery's thumbnails in the chosen order, each on the view's colour scale."""
    grids = views.head_grids(state, params)  # [head, grid_row, grid_col]
    stats = views.layer_head_stats(state, params)
    grounding = views.head_grounding(state, params) if state.has_objects else None
    share, ent = stats["share"][params.layer], stats["entropy"][params.layer]
    lift = grounding.lift if grounding else None
    top = views.shared_top(state, params)
    tops = figures.head_tops(grids, share, top, params.scale)
    items = [_item(h, grids[h], share[h], ent[h], None if lift is None else lift[h], params.head, cmap, grounding,
                   tops[h]) for h in figures.gallery_order(share, ent, sort or "head", lift)]  # fmt: skip
    if params.scale == "shared":
        items.insert(0, html.Div(f"one colour scale for every layer and head: 0 to {top:.3g}", className="hint"))
    if sort == "grounding" and grounding is None:
        items.insert(0, html.Div("no object box to check this token against: sorted by index", className="hint"))
    return items


def _item(
    h: int, grid, share: float, ent: float, lift: float | None, current: int, cmap, grounding, top=None
) -> html.Div:
    """One head's thumbnail (colour range 0..`top`), its numbers, and (with an object to check) its
    in-box lift; a head with a negligible image share is dimmed and badged."""
    lift = lift if lift is not None and np.isfinite(lift) else None  # NaN: no attention on the image at all
    meta = f"image {share:.0%} · H {ent:.2f}" + ("" if lift is None else f" · box {lift:.1f}x")
    title = f"head {h}: {share:.1%} of attention on the image, entropy {ent:.3f}"
    if lift is not None:
        title += f", {lift:.2f}x chance inside the {grounding.label} box"
    faint = negligible(share)
    badge = [html.Div(f"≈{share:.0%} on image", className="gallery-badge")] if faint else []
    return html.Div(
        [
            html.Img(src=figures.thumbnail_uri(grid, cmap or "viridis", top), className="gallery-img"),
            html.Div(f"head {h}", className="gallery-title"),
            html.Div(meta, className="gallery-meta"),
            *badge,  # drawn over the thumbnail (explorer.css)
        ],
        className="gallery-item" + (" current" if h == current else "") + (" negligible" if faint else ""),
        title=title + " (click to show)",
        **{"data-head": str(h)},
    )
