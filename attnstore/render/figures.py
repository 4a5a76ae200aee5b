"""Figure factories of attention maps: pure functions from arrays to plotly figures (no Dash).

Shared by the explorer (`explorer.figures` adds its Dash Patches and the panels' own charts) and the
notebook (`ds.attn.show`, `show_heads`, `show_layers`), so a map in a notebook is the explorer's
figure with the same values. The main figure draws the image once as a layout image and the
attention as heatmap traces on top. Where cells go comes from `attnstore.render.geometry` (the
store's `patch_box` of each grid cell, never assumed tile sizes).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

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


def layout_shapes(geom: FigureGeometry, grid_lines: bool, boxes: bool, compact: bool = False) -> list[dict]:
    """Tile lines (if `grid_lines`), the global panel's frame, and object boxes (if `boxes`; labelled
    on the main picture, none when `compact`: small labels overlap)."""
    return grid_shapes(geom, grid_lines) + (object_shapes(geom, labels=not compact) if boxes else [])


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


def head_tops(grids: np.ndarray, share: np.ndarray, shared_top: float | None, scale: str) -> list[float]:
    """The colour top of each head's thumbnail (`attnstore.render.scale.colour_top`): its own maximum,
    or the token's one shared top; a head with a negligible image share faded either way.

    grids : # [head, grid_row, grid_col]; share : # [head] image share of each head.
    """
    own = [float(np.nanmax(g)) if np.isfinite(g).any() else 0.0 for g in grids]
    return [colour_top(o, float(s), shared_top, scale) for o, s in zip(own, share, strict=True)]
