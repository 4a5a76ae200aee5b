"""Attention sinks of the current layer: the image tokens the sink detector flags in the selected
token's attention, crossed on the main figure, and the first position's share (StreamingLLM)."""

from __future__ import annotations

import dash
import numpy as np
from dash import Input, Output, no_update

from attnstore.analysis import sink_keys
from attnstore.errors import AttnstoreError
from attnstore.render.text import quoted
from explorer import figures, ids, views
from explorer.callbacks import settled_view
from explorer.layout import Page, side_panel
from explorer.state import StoreState
from explorer.views import ViewParams

COLUMN = "side"
SHOWN = 6  # sink tokens named in the text (all of them are marked on the figure)


def layout(page: Page) -> list:
    return side_panel("Attention sinks", "image tokens that take outsized attention in most heads of the layer",
                      info=ids.SINKS_INFO)  # fmt: skip


def layer_sinks(state: StoreState, params: ViewParams) -> tuple[list[int], float]:
    """The detected sink image tokens of the view's layer  # positions, and the share of the token's
    attention on position 0 (mean over the layer's heads).

    `sink_keys` per layer on the token's raw weights: the detector of the `no_sinks` normalisation and
    of the `sinks` analysis (a key whose median over heads exceeds 20x the median image key's)."""
    meta = state.image(params.image)
    row = meta.query_of(params.token)

    def make():
        weights = state.ds.attn.weights(params.image, row)  # [layer, head, key]
        flagged = sink_keys(weights, meta.img, bos=False, first_image=False, per=("layer",)).values  # [layer, key]
        first = weights.values[:, :, 0].mean(-1)  # [layer]
        return flagged, first  # [layer, key], [layer]

    flagged, first = state.cached("sinks", make, key=(params.image, row), maxsize=64)
    return [int(k) for k in np.flatnonzero(flagged[params.layer])], float(first[params.layer])


def describe(state: StoreState, params: ViewParams, keys: list[int], first: float) -> str:
    geom = views.geometry(state, params.image)
    meta = state.image(params.image)
    head = f"layer {params.layer}: position 0 {quoted(meta.display[0])} takes {first:.0%} of the token's attention"
    if not keys:
        return f"{head}; no image token is a sink"
    named = ", ".join(f"#{k} ({figures.describe_key(geom, k)})" for k in keys[:SHOWN])
    more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    return f"{head}; sinks (crossed on the image): {named}{more}"


def register(app: dash.Dash, state: StoreState) -> None:
    # Not `follows_view`: without a token the panel still clears the crosses of the previous view.
    targets = Output(ids.SINKS_INFO, "children"), Output(ids.FIGURE, "figure", allow_duplicate=True)

    # never on the click path: after the heatmap, once the view settles
    @app.callback(*targets, Input(ids.SETTLED, "data"), prevent_initial_call=True)
    def mark_sinks(view_json):
        params = settled_view(view_json)
        if params is None:
            return "select a token", no_update
        geom = views.geometry(state, params.image)
        if params.token is None:
            return "select a token", figures.mark_sinks(geom, [])
        try:
            keys, first = layer_sinks(state, params)
        except AttnstoreError as err:
            return str(err), figures.mark_sinks(geom, [])
        return describe(state, params, keys, first), figures.mark_sinks(geom, keys)
