"""A second store beside the first (`attnstore serve A.zarr --compare B.zarr`): the same token's map
in store B, and per layer how B's attention differs (Jensen-Shannon divergence of the image-attention
distributions, image-share difference), from `ds.attn.compare`.

Images are matched by image_name (`shared_images`), tokens by position and text (`matched_rows`).
The panel is in the page only when the app was built with a second store (`create_app(compare=...)`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import dash
import numpy as np
from dash import Input

from attnstore.analysis.studies import matched_rows, shared_images
from attnstore.errors import NotFound
from attnstore.render.scale import colourbar_title
from attnstore.render.text import quoted
from explorer import figures, ids, views
from explorer.callbacks import follow_token, image_url, outputs
from explorer.layout import Page, side_panel
from explorer.state import StoreState
from explorer.views import ViewParams

COLUMN = "side"
FIGURE_PX = 300


@dataclass
class Compared:
    """The view in store B and how B differs from A for the token  # jsd, share_diff [layer]."""

    params: ViewParams  # the same token in B (B's image index)
    data: views.ViewMap
    jsd: np.ndarray
    share_diff: np.ndarray


def other_params(state: StoreState, params: ViewParams) -> ViewParams:
    """The view's image and token in store B (by image name, then position and token text)."""
    other = state.compare
    pairs = state.cached("compare-pairs", lambda: shared_images(state.ds, other.ds))
    meta = state.image(params.image)
    if params.image not in pairs:
        raise NotFound(f"image {quoted(meta.name)} is not in {other.label}", "image")
    image_b = pairs[params.image]
    img_b = other.image(image_b).img
    rows_a, rows_b = matched_rows(meta.img, img_b, "text")
    row = meta.query_of(params.token)
    hit = np.flatnonzero(rows_a == row)
    if not hit.size:
        raise NotFound(
            f"token #{params.token} {quoted(meta.display[params.token])} has no stored row with the same text "
            f"at the same position in {other.label}",
            "position",
        )
    position = int(np.asarray(img_b["query_position"].values)[rows_b[hit[0]]])
    return replace(params, image=image_b, token=position)


def compare_view(state: StoreState, params: ViewParams) -> Compared:
    """B's map of the view, and the token's per-layer JSD and image-share difference B - A."""
    other = state.compare
    params_b = other_params(state, params)
    data = views.heatmap(other, params_b)
    table = state.cached(
        "compare", lambda: state.ds.attn.compare(other=other.ds, images=[params.image], queries="text"),
        key=params.image, maxsize=16,
    )  # fmt: skip
    row = np.flatnonzero(table["position"].values == params.token)[0]
    jsd = np.asarray(table["jsd"].values[row], np.float32)  # [layer]
    share_diff = np.asarray(table["share_diff"].values[row], np.float32).mean(-1)  # [layer]: mean over heads
    return Compared(params_b, data, jsd, share_diff)


def layout(page: Page) -> list:
    other = page.state.compare
    title = f"Compared with {other.label if other else '?'}"
    graphs = (ids.COMPARE_FIGURE, ids.COMPARE_CHART)
    return side_panel(title, "the same token in the second store", info=ids.COMPARE_INFO, graphs=graphs)


def register(app: dash.Dash, state: StoreState) -> None:
    targets = outputs((ids.COMPARE_FIGURE, "figure"), (ids.COMPARE_CHART, "figure"), (ids.COMPARE_INFO, "children"))
    picture = image_url(app)

    # Not `follows_view`: the panel reads the settled view's colour top (cmax) as well as its params.
    @app.callback(*targets, Input(ids.SETTLED, "data"), prevent_initial_call=True)
    def compare_panel(view_json):
        return follow_token(view_json, lambda params: _panel(state, params, view_json, picture), _blank)


def _blank(reason: str) -> tuple:
    hint = figures.empty_figure(reason)
    return hint, hint, reason


def _panel(state: StoreState, params: ViewParams, view_json: str, image_url) -> tuple:
    """B's map on A's picture (one colour scale), the per-layer differences, and the line above them."""
    shown = compare_view(state, params)
    cmax = max(shown.data.cmax, json.loads(view_json).get("cmax") or 0.0)  # one colour scale for A and B
    geom = views.geometry(state.compare, shown.params.image)
    # The same picture as A's (matched by name): the browser has it already; B's geometry places B's cells.
    picture = image_url(params.image)
    title = colourbar_title(shown.data.share, params.scale)
    figure = figures.overlay_figure(geom, picture, shown.data.tiles, shown.data.glob, cmax, height_px=FIGURE_PX,
                                    colourbar=title, compact=True)  # fmt: skip
    info = f"{state.compare.label}: image {shown.params.image}, {shown.data.result.spec.describe()}, same colour scale"
    return figure, figures.compare_figure(shown.jsd, shown.share_diff, params.layer), info
