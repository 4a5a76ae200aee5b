"""Download buttons: the view's map as heatmap PNG, overlay PNG, long CSV or SVG.

The files come from `attnstore.render.export_map` of the library's `compute_map`, the one export
path the CLI and `POST /api/export` share, so a map downloaded here is byte-identical to theirs.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import dash
from dash import Input, Output, ctx, dcc, html, no_update

from attnstore.analysis import compute_map
from attnstore.errors import AttnstoreError
from attnstore.render import Style, export_map, file_name
from explorer import callbacks, ids
from explorer.layout import Page
from explorer.state import StoreState
from explorer.views import ViewParams

COLUMN = "center"
BUTTONS = {  # component id -> (label, export format)
    ids.EXPORT_HEATMAP_PNG: ("heatmap PNG", "png"),
    ids.EXPORT_OVERLAY_PNG: ("overlay PNG", "overlay"),
    ids.EXPORT_CSV: ("grid CSV", "csv"),
    ids.EXPORT_SVG: ("figure SVG", "svg"),
}


def layout(page: Page) -> list:
    buttons = [html.Button(label, id=cid, className="export-btn") for cid, (label, _) in BUTTONS.items()]
    return [html.Div([html.Span("Export:", className="export-label"), *buttons, dcc.Download(id=ids.DOWNLOAD)],
                     className="exports")]  # fmt: skip


def export_file(state: StoreState, params: ViewParams, fmt: str, style: Style) -> tuple[bytes, str]:
    """(file bytes, file name) of the view's map in format `fmt`."""
    result = compute_map(state.ds, params.spec(state))
    stem = PurePosixPath(state.image(params.image).name).stem
    return export_map(result, fmt, style), file_name(result, fmt, stem)


def register(app: dash.Dash, state: StoreState) -> None:
    @app.callback(
        Output(ids.DOWNLOAD, "data"),
        Output(ids.MESSAGE, "children", allow_duplicate=True),
        *(Input(cid, "n_clicks") for cid in BUTTONS),
        *callbacks.states(*callbacks.VIEW_CONTROLS, (ids.CMAP, "value"), (ids.OPACITY, "value"), (ids.GRID, "value")),
        prevent_initial_call=True,
    )
    def export(_a, _b, _c, _d, image, token, layer, head, mode, over, norm, cmap, opacity, grid):
        if image is None or token is None:
            return no_update, "nothing to export: select a token first"
        params = ViewParams.from_controls(image, token, layer, head, mode, over, norm)
        style = Style(cmap=cmap or "viridis", opacity=float(0.6 if opacity is None else opacity), grid_lines=bool(grid))
        try:
            data, name = export_file(state, params, BUTTONS[ctx.triggered_id][1], style)
        except AttnstoreError as err:
            return no_update, str(err)
        return dcc.send_bytes(data, name), ""
