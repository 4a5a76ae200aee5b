"""One view drawn: the main figure (or its Patch), the view-state JSON, the status line and any message.

Shared by the main callback and by the page layout, which draws the first view
itself (no callback round trip before the first heatmap).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from dash import Patch, html

from attnstore.errors import AttnstoreError
from explorer import figures, views
from explorer.state import StoreState
from explorer.views import NORMS, ViewParams

DEFAULT_STYLE = {"cmap": "viridis", "opacity": 0.6, "grid_lines": True}


@dataclass
class Drawn:
    figure: dict | Patch
    view_json: str  # the hidden view-state element's text
    status: list
    message: str


def style_of(cmap: str | None, opacity: float | None, grid: list | bool | None) -> dict:
    """Display options from the controls' values (None = default)."""
    return {
        "cmap": cmap or DEFAULT_STYLE["cmap"],
        "opacity": float(DEFAULT_STYLE["opacity"] if opacity is None else opacity),
        "grid_lines": bool(grid),
    }


def draw(
    state: StoreState,
    params: ViewParams,
    style: dict,
    drawn_image: int | None,
    image_url: Callable[[int], str],
    changed: Collection[str] = ("cmap", "opacity", "grid_lines"),
) -> Drawn:
    """Draw `params`: the whole figure if `drawn_image` is another image, else a Patch of the values
    (and of the style entries named in `changed`). Bad views give a message, not an exception."""
    start = time.perf_counter()
    data, message = None, ""
    if params.token is not None:
        try:
            data = views.heatmap(state, params)
        except AttnstoreError as err:
            message = str(err)
    geom = views.geometry(state, params.image)
    tiles, glob, vmax = (data.tiles, data.glob, data.vmax) if data else (None, None, None)
    if drawn_image != params.image:
        fig = figures.overlay_figure(
            geom, image_url(params.image), tiles, glob, vmax, style["cmap"], style["opacity"], style["grid_lines"]
        )
    else:
        fig = figures.heatmap_patch(
            geom,
            tiles,
            glob,
            vmax,
            cmap=style["cmap"] if "cmap" in changed else None,
            opacity=style["opacity"] if "opacity" in changed else None,
            grid_lines=style["grid_lines"] if "grid_lines" in changed else None,
        )
    server_ms = (time.perf_counter() - start) * 1e3
    payload = json.dumps(views.view_state(params, data, style, server_ms))
    return Drawn(fig, payload, status(state, params, data), message)


def status(state: StoreState, params: ViewParams, data: views.HeatmapData | None) -> list:
    """The line under the token strip: image, token, what is shown."""
    meta = state.image(params.image)
    if params.token is None or data is None:
        return [html.B(meta.name), " · no token selected: click a token of the prompt or the answer"]
    return [
        html.B(meta.name),
        " · token ",
        html.Span(repr(meta.display[params.token]), className="status-token"),
        f" #{params.token}",
        f" · {params.describe()} · {NORMS[params.norm]} · max {data.vmax:.3g}",
    ]
