"""The main figure: the image drawn once, the view's map over it, the status line above it.

The path of a click: this panel's callback -> `views.heatmap` (the store's cached state, then the
library's `compute_map`) -> `figures` (a Patch of the heatmap values). The page layout draws the
first view with the same `draw`, so the first heatmap needs no callback round trip.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import dash
from dash import Patch, State, ctx, dcc, html, no_update

from attnstore.errors import AttnstoreError
from attnstore.render.scale import colourbar_title, negligible, share_label
from attnstore.render.text import quoted
from explorer import callbacks, figures, ids, views
from explorer.layout import Page
from explorer.state import StoreState
from explorer.views import ViewParams

COLUMN = "center"
DEFAULT_STYLE = {"cmap": "viridis", "opacity": 0.6, "grid_lines": True, "boxes": True}
STYLE_IDS = {"cmap": ids.CMAP, "opacity": ids.OPACITY, "grid_lines": ids.GRID, "boxes": ids.BOXES}
SHAPE_STYLES = {"grid_lines", "boxes"}  # drawn as one list of layout shapes: a change to one redraws both
GRAPH_CONFIG = {
    "displaylogo": False,
    "scrollZoom": False,
    "modeBarButtonsToRemove": ["zoom2d", "pan2d", "select2d", "lasso2d", "autoScale2d"],
    "toImageButtonOptions": {"format": "svg", "filename": "attention"},
}


@dataclass
class Drawn:
    figure: dict | Patch
    view_json: str  # the hidden view-state element's text
    status: list
    message: str


def style_of(cmap: str | None, opacity: float | None, grid: list | bool | None, boxes: list | bool | None) -> dict:
    """Display options from the controls' values (None = default)."""
    return {
        "cmap": cmap or DEFAULT_STYLE["cmap"],
        "opacity": float(DEFAULT_STYLE["opacity"] if opacity is None else opacity),
        "grid_lines": bool(grid),
        "boxes": bool(boxes),
    }


def draw(
    state: StoreState,
    params: ViewParams,
    style: dict,
    drawn_image: int | None,
    image_url: Callable[[int], str],
    changed: Collection[str] = tuple(DEFAULT_STYLE),
) -> Drawn:
    """Draw `params`: the whole figure if `drawn_image` is another image, else a Patch of the values
    (and of the style entries named in `changed`). Bad views give a message, not an exception."""
    start = time.perf_counter()
    data, message = None, ""
    if params.token is not None and not state.no_patch_map:  # sequence-only stores: the picture and the note
        try:
            data = views.heatmap(state, params)
        except AttnstoreError as err:
            message = str(err)
    geom = views.geometry(state, params.image)
    tiles, glob, cmax = (data.tiles, data.glob, data.cmax) if data else (None, None, None)
    title = colourbar_title(data.share, params.scale) if data else "attention"
    if drawn_image != params.image:
        fig = figures.overlay_figure(geom, image_url(params.image), tiles, glob, cmax, **style, colourbar=title)
    else:
        changed = {*changed, *SHAPE_STYLES} if SHAPE_STYLES & set(changed) else set(changed)
        only = {k: v for k, v in style.items() if k in changed}
        fig = figures.heatmap_patch(geom, tiles, glob, cmax, **only, colourbar=title)
    server_ms = (time.perf_counter() - start) * 1e3
    payload = json.dumps(views.view_state(params, data, style, server_ms))
    return Drawn(fig, payload, status(state, params, data), message)


def judged_answer(state: StoreState, meta) -> list:
    """ " · answer 'red' ✓ right" (or "✗ wrong · expected purple") when the store has expected answers."""
    verdict = views.verdict(state, meta.index)
    if not verdict.css:
        return []
    answer = html.Span(quoted(meta.answer.strip()), className="status-answer")
    return [" · answer ", answer, " ", html.Span(verdict.text, className=f"verdict {verdict.css}")]


def status(state: StoreState, params: ViewParams, data: views.ViewMap | None) -> list:
    """The line above the figure: image, token, what is shown (and why it is blank, when it is)."""
    meta = state.image(params.image)
    if params.token is not None and state.no_patch_map:
        token = html.Span(quoted(meta.display[params.token]), className="status-token")
        return [html.B(meta.name), " · token ", token, f" #{params.token}",
                html.Div(state.no_patch_map, className="status-note")]  # fmt: skip
    if params.token is None or data is None:
        return [
            html.B(meta.name),
            *judged_answer(state, meta),
            " · no token selected: click a token of the prompt or the answer",
        ]
    line = [
        html.B(meta.name),
        *judged_answer(state, meta),
        " · token ",
        html.Span(quoted(meta.display[params.token]), className="status-token"),
        f" #{params.token}",
        f" · {data.result.spec.describe()} · max {data.vmax:.3g}",
        html.Span(
            f" · {share_label(data.share)}",
            className="status-share" + (" negligible" if negligible(data.share) else ""),
            title="how much of the token's attention this map holds: its share on the image's patches",
        ),
    ]
    if params.scale == "shared":
        line.append(f" · shared scale (top {data.cmax:.3g})")
    if data.note:
        line.append(html.Div(data.note, className="status-note"))
    return line


def draw_page(page: Page) -> Drawn:
    """The first view of a visit (explorer.layout.page)."""
    return draw(page.state, page.params, DEFAULT_STYLE, None, page.image_url)


def layout(page: Page) -> list:
    drawn = page.drawn
    return [
        html.Div(drawn.status if drawn else "", id=ids.STATUS, className="status"),
        dcc.Store(id=ids.DRAWN_IMAGE, data=page.params.image if drawn else None),
        dcc.Graph(id=ids.FIGURE, figure=drawn.figure if drawn else None, className="main-figure", config=GRAPH_CONFIG),
    ]


def register(app: dash.Dash, state: StoreState) -> None:
    image_url = callbacks.image_url(app)
    drawn_by = ((ids.FIGURE, "figure"), (ids.DRAWN_IMAGE, "data"), (ids.VIEW_STATE, "children"),
                (ids.STATUS, "children"), (ids.MESSAGE, "children"))  # fmt: skip
    style_controls = [(cid, "value") for cid in STYLE_IDS.values()]

    @app.callback(
        *callbacks.outputs(*drawn_by),
        *callbacks.inputs(*callbacks.VIEW_CONTROLS, *style_controls, (ids.SCALE, "value")),
        State(ids.DRAWN_IMAGE, "data"),
        prevent_initial_call=True,  # the page arrives with its first view drawn
    )
    def redraw(image, token, layer, head, mode, over, norm, cmap, opacity, grid, boxes, scale, drawn):
        """Heatmap of the view: the whole figure when the image changes, else a Patch of the values."""
        if image is None:
            return no_update, no_update, no_update, "", no_update
        params = ViewParams.from_controls(image, token, layer, head, mode, over, norm, scale=scale)
        triggered = set(ctx.triggered_prop_ids.values())
        changed = [name for name, cid in STYLE_IDS.items() if cid in triggered]
        out = draw(state, params, style_of(cmap, opacity, grid, boxes), drawn, image_url, changed)
        return out.figure, params.image, out.view_json, out.status, out.message
