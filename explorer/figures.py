"""Figure factories of the explorer: pure functions from arrays to plotly figures and Patches.

The main figure, the layer charts and the gallery's colour tops live in `attnstore.render.figures`
(pure plotly, shared with the notebook's `ds.attn.show`) and are re-exported here. A click only
replaces the heatmap traces' `z` through a `dash.Patch`; files (PNG, CSV, SVG) come from
`attnstore.render.export_map` only.
"""

from __future__ import annotations

import base64

import numpy as np
import plotly.graph_objects as go
from dash import Patch

from attnstore import render
from attnstore.render.colors import plotly_colorscale
from attnstore.render.figures import (  # noqa: F401  (the pure factories, shared with the notebook)
    HOVER,
    TRACE_GLOBAL,
    TRACE_MARK,
    TRACE_SINKS,
    TRACE_TILES,
    _small_layout,
    head_tops,
    layout_shapes,
    map_values,
    matrix_figure,
    overlay_figure,
    share_figure,
)
from attnstore.render.geometry import FigureGeometry


def heatmap_patch(
    geom: FigureGeometry,
    tiles: np.ndarray | None,
    glob: np.ndarray | None,
    vmax: float | None,
    cmap: str | None = None,
    opacity: float | None = None,
    grid_lines: bool | None = None,
    boxes: bool | None = None,
    colourbar: str | None = None,
) -> Patch:
    """The per-click update of `overlay_figure`: new values and colour range; colours, opacity and
    lines only when given (None = unchanged), so plotly redraws as little as possible."""
    patch = Patch()
    z, cmax = map_values(geom, tiles, glob, vmax)
    for index, values in z.items():
        patch["data"][index]["z"] = values
        if opacity is not None:
            patch["data"][index]["opacity"] = opacity
    patch["layout"]["coloraxis"]["cmax"] = cmax
    if colourbar is not None:
        patch["layout"]["coloraxis"]["colorbar"]["title"]["text"] = colourbar
    if cmap is not None:
        patch["layout"]["coloraxis"]["colorscale"] = plotly_colorscale(cmap)
    if grid_lines is not None or boxes is not None:  # one list holds both: the caller gives both
        patch["layout"]["shapes"] = layout_shapes(geom, bool(grid_lines), bool(boxes))
    return patch


def key_centres(geom: FigureGeometry, keys) -> tuple[list[float], list[float]]:
    """Figure coordinates (x, y) of the cell centres of image tokens `keys` (on every grid that has them)."""
    x, y = [], []
    wanted = np.asarray(list(keys), np.int64)
    for panel in (geom.tiles, geom.glob):
        if panel is None or not wanted.size:
            continue
        for r, c in np.argwhere(np.isin(panel.keys, wanted)):
            x.append(float((panel.x_edges[c] + panel.x_edges[c + 1]) / 2))
            y.append(float((panel.y_edges[r] + panel.y_edges[r + 1]) / 2))
    return x, y


def mark_patch(geom: FigureGeometry, key: int | None) -> Patch:
    """Outline the image patch of token `key` (the reverse view's patch); None removes the mark."""
    patch = Patch()
    x, y = key_centres(geom, [] if key is None else [key])
    patch["data"][TRACE_MARK]["x"] = x
    patch["data"][TRACE_MARK]["y"] = y
    return patch


def mark_sinks(geom: FigureGeometry, keys) -> Patch:
    """Cross the cells of the attention-sink image tokens `keys` (empty: no marks)."""
    patch = Patch()
    x, y = key_centres(geom, keys)
    patch["data"][TRACE_SINKS]["x"] = x
    patch["data"][TRACE_SINKS]["y"] = y
    return patch


def key_at(geom: FigureGeometry, x: float, y: float) -> int | None:
    """The image token whose cell contains figure point (x, y), or None (dcc.Graph's clickData has x/y but
    not a heatmap's customdata)."""
    for panel in (geom.tiles, geom.glob):
        if panel is None:
            continue
        col = int(np.searchsorted(panel.x_edges, x, side="right")) - 1
        row = int(np.searchsorted(panel.y_edges, y, side="right")) - 1
        if 0 <= row < panel.shape[0] and 0 <= col < panel.shape[1] and panel.keys[row, col] >= 0:
            return int(panel.keys[row, col])
    return None


def describe_key(geom: FigureGeometry, key: int) -> str:
    """Where an image token lies, e.g. "tile 2,3, sub-patch 4,5" (or "not an image patch")."""
    for panel in (geom.tiles, geom.glob):
        if panel is None:
            continue
        hits = np.argwhere(panel.keys == key)
        if hits.size:
            r, c = hits[0]
            return f"{panel.labels[r, c]}, sub-patch {panel.subs[r, c]}"
    return "not an image patch"


def reverse_figure(labels: list[str], values: np.ndarray, top: int = 15) -> go.Figure:
    """Text tokens that attend most to the chosen patch (top `top`, largest first).

    labels : # [query] token text of each stored row; values : # [query]
    """
    order = np.argsort(-np.nan_to_num(values, nan=-1.0))[:top]
    fig = go.Figure(
        go.Bar(
            x=values[order],
            y=[labels[i] for i in order],
            orientation="h",
            marker_color="#e4572e",
            hovertemplate="%{y}<br>%{x:.4g}<extra></extra>",
        )
    )
    return _small_layout(
        fig,
        max(160, 18 * len(order) + 40),
        yaxis={"autorange": "reversed", "automargin": True},
        xaxis={"title": {"text": "attention to the patch"}, "gridcolor": "#eee"},
    )


KIND_COLOURS = {"prompt": "#4c78a8", "image": "#54a24b", "generated": "#f58518", "special": "#9d9d9d"}


def modality_figure(token: np.ndarray, mean: np.ndarray | None, kinds: list[str], layer: int) -> go.Figure:
    """The token's attention mass per layer on each token type (solid) beside the dataset mean (dotted).

    token : # [layer, kind]; mean : # [layer, kind] or None (not available); kinds : the names of `kind`.
    """
    layers = np.arange(token.shape[0])
    traces = []
    for k, kind in enumerate(kinds):
        colour = KIND_COLOURS.get(kind, "#333")
        hover = f"layer %{{x}}<br>{kind}: %{{y:.1%}}"
        line = {"color": colour, "width": 2}
        traces.append(
            go.Scatter(x=layers, y=token[:, k], mode="lines+markers", name=kind, marker={"size": 4}, line=line,
                       hovertemplate=hover + " (token)<extra></extra>")
        )  # fmt: skip
        if mean is not None:  # one legend entry per kind: the legend's title explains the dotted lines
            line = {"color": colour, "width": 1.5, "dash": "dot"}
            traces.append(
                go.Scatter(x=layers, y=mean[:, k], mode="lines", name=f"{kind} (dataset)", line=line,
                           hovertemplate=hover + " (dataset mean)<extra></extra>", showlegend=False)
            )  # fmt: skip
    fig = go.Figure(traces)
    fig.add_vline(x=layer, line={"color": "#e4572e", "width": 1})
    _small_layout(
        fig,
        200,
        yaxis={"range": [0, 1], "tickformat": ".0%", "title": {"text": "attention mass"}, "gridcolor": "#eee"},
        xaxis={"title": {"text": "layer"}, "dtick": max(1, token.shape[0] // 10)},
    )
    # a legend of one entry per kind under a title, inside the figure: 8 entries overflowed
    # the side column at 1500 px into a legend with its own scroll bar
    legend = {"orientation": "h", "y": -0.3, "yanchor": "top", "font": {"size": 10}}
    if mean is not None:
        legend["title"] = {"text": "dotted: dataset mean", "side": "top", "font": {"size": 10, "color": "#666"}}
    fig.update_layout(showlegend=True, legend=legend, height=250, margin={"l": 40, "r": 8, "t": 8, "b": 80})
    return fig


def compare_figure(jsd: np.ndarray, share_diff: np.ndarray, layer: int) -> go.Figure:
    """Per layer, how the second store's attention differs for the token: Jensen-Shannon divergence of the
    image-attention distributions (bars, bits) and the image-share difference B - A (line, mean over heads).

    jsd : # [layer]; share_diff : # [layer]
    """
    layers = np.arange(jsd.shape[0])
    colours = np.where(layers == layer, "#e4572e", "#72b7b2")
    fig = go.Figure(
        [
            go.Bar(
                x=layers,
                y=jsd,
                marker_color=colours.tolist(),
                name="JSD",
                hovertemplate="layer %{x}<br>JSD %{y:.3f} bits<extra></extra>",
            ),
            go.Scatter(
                x=layers,
                y=share_diff,
                mode="lines+markers",
                name="share B - A",
                yaxis="y2",
                line={"color": "#222", "width": 1.5},
                marker={"size": 4},
                hovertemplate="layer %{x}<br>image share B - A %{y:+.1%}<extra></extra>",
            ),
        ]
    )
    return _small_layout(
        fig,
        190,
        yaxis={"range": [0, 1], "title": {"text": "JSD (bits)"}, "gridcolor": "#eee"},
        yaxis2={
            "overlaying": "y",
            "side": "right",
            "range": [-1, 1],
            "tickformat": "+.0%",
            "showgrid": False,
            "title": {"text": "share B - A"},
        },
        xaxis={"title": {"text": "layer"}, "dtick": max(1, jsd.shape[0] // 10)},
        bargap=0.15,
    )


def empty_figure(text: str, height: int = 160) -> go.Figure:
    """A blank chart with a hint in the middle."""
    fig = go.Figure()
    fig.add_annotation(text=text, showarrow=False, font={"color": "#888", "size": 12})
    return _small_layout(fig, height, xaxis={"visible": False}, yaxis={"visible": False})


# -- gallery ---------------------------------------------------------------------------------


def gallery_order(share: np.ndarray, ent: np.ndarray, sort: str, lift: np.ndarray | None = None) -> list[int]:
    """Head order of the gallery: "head" (index), "share" (most image attention first),
    "entropy" (most focused first) or "grounding" (highest in-box lift first; `lift` # [head],
    NaN last; by index without one)."""
    if sort == "grounding" and lift is not None:
        return [int(i) for i in np.argsort(-np.nan_to_num(lift, nan=-np.inf), kind="stable")]
    if sort == "share":
        return [int(i) for i in np.argsort(-share, kind="stable")]
    if sort == "entropy":
        return [int(i) for i in np.argsort(ent, kind="stable")]
    return list(range(share.shape[0]))


def thumbnail_uri(grid: np.ndarray, cmap: str, vmax: float | None = None, cell_px: int = 3) -> str:
    """A small PNG data URI of one head's grid (own colour range unless `vmax`)."""
    image = render.heatmap_image(grid, cmap=cmap, cell_px=cell_px, vmin=0.0, vmax=vmax)
    return "data:image/png;base64," + base64.b64encode(render.png_bytes(image)).decode()
