"""Figure factories of the explorer: pure functions from arrays to plotly figures and Patches.

The main figure draws the image once as a layout image and the attention as
heatmap traces on top: a click only replaces the traces' `z` through a
`dash.Patch`. Where cells go comes from `attnstore.render.geometry` (the store's
`patch_box` of each grid cell, never assumed tile sizes), shared with the map
exports; files (PNG, CSV, SVG) come from `attnstore.render.export_map` only.
"""

from __future__ import annotations

import base64

import numpy as np
import plotly.graph_objects as go
from dash import Patch

from attnstore import render
from attnstore.render.colors import plotly_colorscale
from attnstore.render.geometry import FigureGeometry, Panel, grid_shapes, object_shapes
from attnstore.render.scale import colour_top

TRACE_TILES, TRACE_GLOBAL, TRACE_MARK, TRACE_SINKS = 0, 1, 2, 3
HOVER = "%{customdata[1]} · sub-patch %{customdata[2]}<br>value %{z:.4g}<br>token #%{customdata[0]}<extra></extra>"


# -- the main figure -------------------------------------------------------------------------


def _nan_grid(panel: Panel | None) -> np.ndarray:
    return np.full(panel.shape if panel is not None else (1, 1), np.nan, np.float32)


def _heatmap_trace(panel: Panel | None, z: np.ndarray | None, opacity: float, name: str) -> dict:
    if panel is None:
        return {"type": "heatmap", "z": [[None]], "visible": False, "name": name, "coloraxis": "coloraxis"}
    return {
        "type": "heatmap",
        "z": _nan_grid(panel) if z is None else z,
        "x": panel.x_edges,
        "y": panel.y_edges,
        "customdata": panel.customdata(),
        "hovertemplate": HOVER,
        "coloraxis": "coloraxis",
        "opacity": opacity,
        "name": name,
    }


def overlay_figure(
    geom: FigureGeometry,
    image_src: str,
    tiles: np.ndarray | None = None,
    glob: np.ndarray | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
    opacity: float = 0.6,
    grid_lines: bool = True,
    boxes: bool = True,
    height_px: int | None = None,
    colourbar: str = "attention",
    compact: bool = False,
) -> dict:
    """The main figure (a plotly figure dict): the image (drawn once) with the heatmap traces over it.

    Parameters
    ----------
    geom : `figure_geometry` of the image.
    image_src : URL or data URI of the display image.
    tiles, glob : # [grid_row, grid_col], # [global_row, global_col] values (None = no overlay yet).
    vmax : top of the colour scale (bottom is 0; `attnstore.render.scale.colour_top`).
    boxes : draw the image's object boxes (`geom.objects`), the asked object highlighted.
    colourbar : the colour bar's title (`attnstore.render.scale.colourbar_title`: says the image share).
    compact : a small copy (the compare panel): a horizontal colour bar under the picture, a short
        caption under the global view, box labels only on the main picture.
    """
    w, h = geom.extent
    height_px = height_px or int(np.clip(760 * h / w + 10, 300, 620))  # about the column width times the aspect
    images = [_layout_image(image_src, 0, 0, geom.width, geom.height)]
    annotations = []
    if geom.glob is not None and geom.tiles is not None:
        g = geom.glob
        images.append(_layout_image(image_src, g.x0, g.y0, g.width, g.height))
        annotations.append(
            {
                "x": g.x0 + g.width / 2,
                "y": g.y0 + g.height,
                "xref": "x",
                "yref": "y",
                "yanchor": "top",
                "text": "global view" if compact else f"global view (whole image, {g.shape[0]}x{g.shape[1]} tokens)",
                "showarrow": False,
                "font": {"size": 11, "color": "#555"},
                "yshift": -4,
            }
        )
    mark = {
        "type": "scatter",
        "x": [],
        "y": [],
        "mode": "markers",
        "hoverinfo": "skip",
        "name": "patch",
        "marker": {"symbol": "square-open", "size": 16, "color": "#ff2d55", "line": {"width": 3}},
    }
    sinks = {
        "type": "scatter",
        "x": [],
        "y": [],
        "mode": "markers",
        "hoverinfo": "skip",
        "name": "sinks",
        "marker": {"symbol": "x-thin-open", "size": 10, "color": "#ffffff", "line": {"width": 2, "color": "#ffffff"}},
    }
    layout = {
        "images": images,
        "annotations": annotations,
        "shapes": layout_shapes(geom, grid_lines, boxes, compact),
        "coloraxis": {
            "colorscale": plotly_colorscale(cmap),
            "cmin": 0.0,
            "cmax": vmax if vmax else 1.0,
            "colorbar": _colourbar(colourbar, compact),
        },
        "xaxis": {"range": [0, w], "visible": False, "constrain": "domain"},
        "yaxis": {"range": [h, 0], "visible": False, "scaleanchor": "x", "constrain": "domain"},
        "margin": {"l": 4, "r": 4, "t": 4, "b": 48 if compact else 4},  # compact: room for the colour bar
        "height": height_px,
        "dragmode": False,
        "showlegend": False,
        "plot_bgcolor": "white",
        "paper_bgcolor": "white",
        "uirevision": "keep",
        "hoverlabel": {"bgcolor": "white"},
    }
    # A plain dict: plotly's validation of go.Figure costs ~20 ms here for nothing (tests validate it).
    traces = [_heatmap_trace(geom.tiles, tiles, opacity, "tiles"), _heatmap_trace(geom.glob, glob, opacity, "global")]
    return {"data": [*traces, mark, sinks], "layout": layout}


def _colourbar(title: str, compact: bool) -> dict:
    """The colour bar: beside the picture, or (compact) a thin bar under it, clear of the global view's caption."""
    if compact:
        return {"orientation": "h", "thickness": 8, "len": 0.9, "y": -0.02, "yanchor": "top",
                "title": {"text": title, "side": "top"}, "tickfont": {"size": 9}}  # fmt: skip
    return {"thickness": 12, "len": 0.8, "title": {"text": title, "side": "right"}}


def _layout_image(src: str, x: float, y: float, w: float, h: float) -> dict:
    return {
        "source": src,
        "xref": "x",
        "yref": "y",
        "x": x,
        "y": y,
        "sizex": w,
        "sizey": h,
        "sizing": "stretch",
        "layer": "below",
        "xanchor": "left",
        "yanchor": "top",
    }


def map_values(
    geom: FigureGeometry, tiles: np.ndarray | None, glob: np.ndarray | None, vmax: float | None
) -> tuple[dict[int, np.ndarray], float]:
    """What a new map changes in `overlay_figure`: the `z` of each heatmap trace the image has, by
    trace index  # [row, col] (NaN: no value), and the top of the colour range. The one source of
    the Dash Patch (`heatmap_patch`) and of the page's direct update (`GET /api/view`)."""
    panels = ((TRACE_TILES, geom.tiles, tiles), (TRACE_GLOBAL, geom.glob, glob))
    z = {index: _nan_grid(panel) if values is None else values for index, panel, values in panels if panel is not None}
    return z, (vmax if vmax else 1.0)


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


def layout_shapes(geom: FigureGeometry, grid_lines: bool, boxes: bool, compact: bool = False) -> list[dict]:
    """Tile lines (if `grid_lines`), the global panel's frame, and object boxes (if `boxes`; labelled
    on the main picture, none when `compact`: small labels overlap)."""
    return grid_shapes(geom, grid_lines) + (object_shapes(geom, labels=not compact) if boxes else [])


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


# -- small charts ------------------------------------------------------------------------------


def _small_layout(fig: go.Figure, height: int, **kw) -> go.Figure:
    fig.update_layout(
        height=height,
        margin={"l": 40, "r": 8, "t": 8, "b": 32},
        showlegend=False,
        plot_bgcolor="white",
        paper_bgcolor="white",
        font={"size": 11},
        **kw,
    )
    return fig


def share_figure(share: np.ndarray, layer: int, head: int) -> go.Figure:
    """Image share per layer of the selected token: mean over heads (bars) and the selected head (line).

    share : # [layer, head] fraction of attention on image-patch keys.
    """
    layers = np.arange(share.shape[0])
    colours = np.where(layers == layer, "#e4572e", "#4c78a8")
    fig = go.Figure(
        [
            go.Bar(
                x=layers,
                y=share.mean(1),
                marker_color=colours.tolist(),
                name="mean over heads",
                hovertemplate="layer %{x}<br>mean over heads %{y:.1%}<extra></extra>",
            ),
            go.Scatter(
                x=layers,
                y=share[:, head],
                mode="lines+markers",
                name=f"head {head}",
                line={"color": "#222", "width": 1.5},
                marker={"size": 4},
                hovertemplate="layer %{x}<br>head " + str(head) + " %{y:.1%}<extra></extra>",
            ),
        ]
    )
    return _small_layout(
        fig,
        170,
        yaxis={"range": [0, 1], "tickformat": ".0%", "title": {"text": "on image"}, "gridcolor": "#eee"},
        xaxis={"title": {"text": "layer"}, "dtick": max(1, share.shape[0] // 10)},
        bargap=0.15,
    )


def matrix_figure(values: np.ndarray, metric: str, layer: int, head: int) -> go.Figure:
    """Layer x head matrix of `metric` ("share" or "entropy") for the selected token; the current cell framed.

    values : # [layer, head]
    """
    n_layers, n_heads = values.shape
    title = "image share" if metric == "share" else "entropy (image keys)"
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=np.arange(n_heads),
            y=np.arange(n_layers),
            zmin=0,
            zmax=1,
            colorscale="Blues" if metric == "share" else "Purples",
            colorbar={"thickness": 8, "len": 0.9, "tickformat": ".0%" if metric == "share" else ".2f"},
            hovertemplate="layer %{y}, head %{x}<br>" + title + " %{z:.3f}<extra></extra>",
            xgap=1,
            ygap=1,
        )
    )
    fig.add_shape(
        type="rect", x0=head - 0.5, x1=head + 0.5, y0=layer - 0.5, y1=layer + 0.5, line={"color": "#e4572e", "width": 2}
    )
    return _small_layout(
        fig,
        max(180, 12 * n_layers + 50),
        xaxis={"title": {"text": "head"}, "dtick": 1 if n_heads <= 16 else None},
        yaxis={"title": {"text": "layer"}, "autorange": "reversed", "dtick": max(1, n_layers // 10)},
    )


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


def head_tops(grids: np.ndarray, share: np.ndarray, shared_top: float | None, scale: str) -> list[float]:
    """The colour top of each head's thumbnail (`attnstore.render.scale.colour_top`): its own maximum,
    or the token's one shared top; a head with a negligible image share faded either way.

    grids : # [head, grid_row, grid_col]; share : # [head] image share of each head.
    """
    own = [float(np.nanmax(g)) if np.isfinite(g).any() else 0.0 for g in grids]
    return [colour_top(o, float(s), shared_top, scale) for o, s in zip(own, share, strict=True)]


def thumbnail_uri(grid: np.ndarray, cmap: str, vmax: float | None = None, cell_px: int = 3) -> str:
    """A small PNG data URI of one head's grid (own colour range unless `vmax`)."""
    image = render.heatmap_image(grid, cmap=cmap, cell_px=cell_px, vmin=0.0, vmax=vmax)
    return "data:image/png;base64," + base64.b64encode(render.png_bytes(image)).decode()
