"""Figure factories of the explorer: pure functions from arrays to plotly figures, Patches, SVG and CSV.

The main figure draws the image once as a layout image and the attention as
heatmap traces on top (DESIGN.md §5): a click only replaces the traces' `z`
through a `dash.Patch`. Cells are placed by the store's geometry (`patch_box`
of each grid cell), never by assumed tile sizes: the stitched tile grid lies on
the image, the global view's grid on a half-size copy beside it.
"""

from __future__ import annotations

import base64
import csv
import io
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np
import plotly.graph_objects as go
import xarray as xr
from dash import Patch

from attnstore import analysis, render

PANEL_SCALE = 0.5  # global view panel size relative to the image
GAP = 0.04  # gap between image and global panel, fraction of the image width
TILE_LINE = {"color": "rgba(255,255,255,0.85)", "width": 1.5}
PANEL_LINE = {"color": "rgba(120,120,120,0.9)", "width": 1}
TRACE_TILES, TRACE_GLOBAL, TRACE_MARK = 0, 1, 2
HOVER = "%{customdata[1]} · sub-patch %{customdata[2]}<br>value %{z:.4g}<br>token #%{customdata[0]}<extra></extra>"


@dataclass(frozen=True)
class Panel:
    """One grid of patch cells drawn over (a copy of) the image.

    Arrays are per grid cell; figure coordinates are pixels of the display image
    (y grows downwards), offset by the panel's position.
    """

    x_edges: np.ndarray  # [cols + 1] figure x of the cell edges
    y_edges: np.ndarray  # [rows + 1] figure y of the cell edges
    keys: np.ndarray  # [rows, cols] key index of each cell, -1 where no token
    labels: np.ndarray  # [rows, cols] "tile r,c" / "global image"
    subs: np.ndarray  # [rows, cols] "r,c" position of the cell inside its tile / view
    boxes: np.ndarray  # [rows, cols, 4] normalised (x0, y0, x1, y1) on the original image, NaN where no token
    x0: float  # where the panel's picture sits (figure coords)
    y0: float
    width: float
    height: float
    lines_x: tuple[float, ...] = ()  # tile boundaries (figure coords)
    lines_y: tuple[float, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        return self.keys.shape

    def customdata(self) -> list:
        """Hover data per cell  # [rows, cols, 3] (key, where, sub-patch)."""
        return np.stack([self.keys.astype(object), self.labels, self.subs], axis=-1).tolist()


@dataclass(frozen=True)
class FigureGeometry:
    """Where everything of one image goes in the main figure."""

    width: int  # display image size (pixels)
    height: int
    tiles: Panel | None
    glob: Panel | None

    @property
    def extent(self) -> tuple[float, float]:
        """(x, y) size of the whole figure area."""
        if self.glob is None:
            return float(self.width), float(self.height)
        return self.glob.x0 + self.glob.width, float(self.height)


def figure_geometry(img: xr.Dataset, width: int, height: int) -> FigureGeometry:
    """Geometry of the main figure from one image's store variables (`analysis.select_image`)."""
    tiles = _panel(img, "tiles", 0.0, 0.0, width, height) if int(img["grid_rows"].values) else None
    glob = None
    if int(img["global_rows"].values):
        x0 = width * (1 + GAP) if tiles is not None else 0.0
        scale = PANEL_SCALE if tiles is not None else 1.0
        glob = _panel(img, "global", x0, 0.0, width * scale, height * scale)
    return FigureGeometry(width, height, tiles, glob)


def _panel(img: xr.Dataset, view: str, x0: float, y0: float, width: float, height: float) -> Panel:
    n_key = img.sizes["key"]
    keys = analysis.patch_grid(xr.DataArray(np.arange(n_key, dtype=np.float32), dims="key"), img, view).values
    keys = np.where(np.isfinite(keys), keys, -1).astype(np.int64)  # [rows, cols]
    boxes = np.moveaxis(analysis.patch_grid(img["patch_box"].transpose("box", "key"), img, view).values, 0, -1)
    rows, cols = keys.shape
    xs = _edges(boxes[..., 0], boxes[..., 2], along=1)  # [cols + 1] normalised
    ys = _edges(boxes[..., 1], boxes[..., 3], along=0)  # [rows + 1]
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    if view == "tiles":
        tile_rows, tile_cols = int(img["tile_rows"].values), int(img["tile_cols"].values)
        sub_r, sub_c = rows // max(tile_rows, 1), cols // max(tile_cols, 1)
        labels = np.char.add(
            np.char.add("tile ", (r // sub_r + 1).astype(str)), np.char.add(",", (c // sub_c + 1).astype(str))
        )
        subs = np.char.add(np.char.add((r % sub_r).astype(str), ","), (c % sub_c).astype(str))
        lines_x = tuple(float(x0 + width * xs[i]) for i in range(sub_c, cols, sub_c))
        lines_y = tuple(float(y0 + height * ys[i]) for i in range(sub_r, rows, sub_r))
    else:
        labels = np.full(keys.shape, "global image", dtype=object)
        subs = np.char.add(np.char.add(r.astype(str), ","), c.astype(str))
        lines_x = lines_y = ()
    return Panel(
        x_edges=x0 + width * xs,
        y_edges=y0 + height * ys,
        keys=keys,
        labels=np.asarray(labels, dtype=object),
        subs=np.asarray(subs, dtype=object),
        boxes=boxes,
        x0=x0,
        y0=y0,
        width=width,
        height=height,
        lines_x=lines_x,
        lines_y=lines_y,
    )


def _edges(start: np.ndarray, stop: np.ndarray, along: int) -> np.ndarray:
    """Cell edges along one grid axis from the cells' boxes (a lattice: cells of one column share x).

    start, stop : # [rows, cols] normalised box starts / ends; `along` = 1 for x (columns), 0 for y (rows).
    Returns # [n + 1]; a line without any token gets an evenly spaced edge.
    """
    n = start.shape[along]
    lines = [np.take(start, i, axis=along) for i in range(n)]
    lo = np.array([np.nanmin(v) if np.isfinite(v).any() else np.nan for v in lines])
    hi = float(np.nanmax(stop)) if np.isfinite(stop).any() else 1.0
    even = np.linspace(0.0, 1.0, n + 1)
    lo = np.where(np.isnan(lo), even[:-1], lo)
    return np.append(lo, hi).astype(np.float64)


# -- colours ---------------------------------------------------------------------------------


def colorscale(name: str, n: int = 11) -> list[list]:
    """A plotly colour scale from `attnstore.render`'s lookup table, so PNG exports and the figure match."""
    lut = render.colormap_lut(name)
    at = np.linspace(0, lut.shape[0] - 1, n).round().astype(int)
    return [[i / (n - 1), f"rgb({r},{g},{b})"] for i, (r, g, b) in enumerate(lut[at])]


# -- the main figure -------------------------------------------------------------------------


def _nan_grid(panel: Panel | None) -> np.ndarray:
    return np.full(panel.shape if panel is not None else (1, 1), np.nan, np.float32)


def grid_shapes(geom: FigureGeometry, grid_lines: bool) -> list[dict]:
    """Tile boundaries (if `grid_lines`) and the global panel's frame, as layout shapes."""
    shapes: list[dict] = []
    if grid_lines and geom.tiles is not None:
        t = geom.tiles
        shapes += [_line(x, t.y0, x, t.y0 + t.height, TILE_LINE) for x in t.lines_x]
        shapes += [_line(t.x0, y, t.x0 + t.width, y, TILE_LINE) for y in t.lines_y]
    if geom.glob is not None and geom.tiles is not None:
        g = geom.glob
        shapes.append(
            {
                "type": "rect",
                "xref": "x",
                "yref": "y",
                "x0": g.x0,
                "y0": g.y0,
                "x1": g.x0 + g.width,
                "y1": g.y0 + g.height,
                "line": PANEL_LINE,
                "layer": "above",
            }
        )
    return shapes


def _line(x0: float, y0: float, x1: float, y1: float, style: dict) -> dict:
    return {
        "type": "line",
        "xref": "x",
        "yref": "y",
        "x0": x0,
        "y0": y0,
        "x1": x1,
        "y1": y1,
        "line": style,
        "layer": "above",
    }


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
    height_px: int | None = None,
) -> dict:
    """The main figure (a plotly figure dict): the image (drawn once) with the heatmap traces over it.

    Parameters
    ----------
    geom : `figure_geometry` of the image.
    image_src : URL or data URI of the display image.
    tiles, glob : # [grid_row, grid_col], # [global_row, global_col] values (None = no overlay yet).
    vmax : top of the colour scale (bottom is 0).
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
                "text": f"global view (whole image, {g.shape[0]}x{g.shape[1]} tokens)",
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
    layout = {
        "images": images,
        "annotations": annotations,
        "shapes": grid_shapes(geom, grid_lines),
        "coloraxis": {
            "colorscale": colorscale(cmap),
            "cmin": 0.0,
            "cmax": vmax if vmax else 1.0,
            "colorbar": {"thickness": 12, "len": 0.8, "title": {"text": "attention", "side": "right"}},
        },
        "xaxis": {"range": [0, w], "visible": False, "constrain": "domain"},
        "yaxis": {"range": [h, 0], "visible": False, "scaleanchor": "x", "constrain": "domain"},
        "margin": {"l": 4, "r": 4, "t": 4, "b": 4},
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
    return {"data": [*traces, mark], "layout": layout}


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


def heatmap_patch(
    geom: FigureGeometry,
    tiles: np.ndarray | None,
    glob: np.ndarray | None,
    vmax: float | None,
    cmap: str | None = None,
    opacity: float | None = None,
    grid_lines: bool | None = None,
) -> Patch:
    """The per-click update of `overlay_figure`: new values and colour range; colours, opacity and
    lines only when given (None = unchanged), so plotly redraws as little as possible."""
    patch = Patch()
    for index, panel, values in ((TRACE_TILES, geom.tiles, tiles), (TRACE_GLOBAL, geom.glob, glob)):
        if panel is None:
            continue
        patch["data"][index]["z"] = _nan_grid(panel) if values is None else values
        if opacity is not None:
            patch["data"][index]["opacity"] = opacity
    patch["layout"]["coloraxis"]["cmax"] = vmax if vmax else 1.0
    if cmap is not None:
        patch["layout"]["coloraxis"]["colorscale"] = colorscale(cmap)
    if grid_lines is not None:
        patch["layout"]["shapes"] = grid_shapes(geom, grid_lines)
    return patch


def mark_patch(geom: FigureGeometry, key: int | None) -> Patch:
    """Outline the image patch of token `key` (the reverse view's patch); None removes the mark."""
    patch = Patch()
    x, y = [], []
    for panel in (geom.tiles, geom.glob):
        if panel is None or key is None:
            continue
        where = np.argwhere(panel.keys == key)
        for r, c in where:
            x.append(float((panel.x_edges[c] + panel.x_edges[c + 1]) / 2))
            y.append(float((panel.y_edges[r] + panel.y_edges[r + 1]) / 2))
    patch["data"][TRACE_MARK]["x"] = x
    patch["data"][TRACE_MARK]["y"] = y
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


def empty_figure(text: str, height: int = 160) -> go.Figure:
    """A blank chart with a hint in the middle."""
    fig = go.Figure()
    fig.add_annotation(text=text, showarrow=False, font={"color": "#888", "size": 12})
    return _small_layout(fig, height, xaxis={"visible": False}, yaxis={"visible": False})


# -- gallery ---------------------------------------------------------------------------------


def gallery_order(share: np.ndarray, ent: np.ndarray, sort: str) -> list[int]:
    """Head order of the gallery: "head" (index), "share" (most image attention first) or
    "entropy" (most focused first)."""
    if sort == "share":
        return [int(i) for i in np.argsort(-share, kind="stable")]
    if sort == "entropy":
        return [int(i) for i in np.argsort(ent, kind="stable")]
    return list(range(share.shape[0]))


def thumbnail_uri(grid: np.ndarray, cmap: str, vmax: float | None = None, cell_px: int = 3) -> str:
    """A small PNG data URI of one head's grid (own colour range unless `vmax`)."""
    image = render.heatmap_image(grid, cmap=cmap, cell_px=cell_px, vmin=0.0, vmax=vmax)
    return "data:image/png;base64," + base64.b64encode(render.png_bytes(image)).decode()


# -- exports ---------------------------------------------------------------------------------


def grid_csv(geom: FigureGeometry, tiles: np.ndarray | None, glob: np.ndarray | None) -> str:
    """The view's values as CSV, one row per image patch token (long format)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["view", "grid_row", "grid_col", "where", "sub_patch", "key", "x0", "y0", "x1", "y1", "value"])
    for view, panel, values in (("tiles", geom.tiles, tiles), ("global", geom.glob, glob)):
        if panel is None or values is None:
            continue
        for r, c in np.argwhere(panel.keys >= 0):
            box = panel.boxes[r, c]
            writer.writerow(
                [
                    view,
                    r,
                    c,
                    panel.labels[r, c],
                    panel.subs[r, c],
                    panel.keys[r, c],
                    *(f"{v:.6f}" for v in box),
                    f"{float(values[r, c]):.8g}",
                ]
            )
    return out.getvalue()


def overlay_svg(
    geom: FigureGeometry,
    image_href: str,
    tiles: np.ndarray | None,
    glob: np.ndarray | None,
    vmax: float | None,
    cmap: str = "viridis",
    opacity: float = 0.6,
    grid_lines: bool = True,
    title: str = "",
) -> str:
    """The main figure as standalone SVG text: image(s), one rect per cell, tile lines, a colour bar."""
    w, h = geom.extent
    bar_w, pad, title_h = 14.0, 10.0, 22.0 if title else 0.0
    total_w, total_h = w + pad + bar_w + 50, h + title_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{total_w:.0f}" height="{total_h:.0f}" viewBox="0 0 {total_w:.1f} {total_h:.1f}">'
    ]
    if title:
        parts.append(f'<text x="4" y="15" font-family="sans-serif" font-size="13">{escape(title)}</text>')
    parts.append(f'<g transform="translate(0,{title_h})">')
    lut = render.colormap_lut(cmap)
    top = vmax if vmax else 1.0
    for panel, values in ((geom.tiles, tiles), (geom.glob, glob)):
        if panel is None:
            continue
        parts.append(
            f'<image x="{panel.x0:.2f}" y="{panel.y0:.2f}" width="{panel.width:.2f}" '
            f'height="{panel.height:.2f}" preserveAspectRatio="none" xlink:href="{escape(image_href)}"/>'
        )
        if values is None:
            continue
        parts.append(f'<g opacity="{opacity:.3f}">')
        for r, c in np.argwhere(np.isfinite(values)):
            x0, x1 = panel.x_edges[c], panel.x_edges[c + 1]
            y0, y1 = panel.y_edges[r], panel.y_edges[r + 1]
            rgb = lut[int(round(np.clip(values[r, c] / top, 0, 1) * (lut.shape[0] - 1)))]
            parts.append(
                f'<rect x="{x0:.2f}" y="{y0:.2f}" width="{x1 - x0:.2f}" height="{y1 - y0:.2f}" '
                f'fill="#{rgb[0]:02x}{rgb[1]:02x}{rgb[2]:02x}"><title>{values[r, c]:.4g}</title></rect>'
            )
        parts.append("</g>")
    for shape in grid_shapes(geom, grid_lines):
        style = shape["line"]
        if shape["type"] == "line":
            parts.append(
                f'<line x1="{shape["x0"]:.2f}" y1="{shape["y0"]:.2f}" x2="{shape["x1"]:.2f}" '
                f'y2="{shape["y1"]:.2f}" stroke="{style["color"]}" stroke-width="{style["width"]}"/>'
            )
        else:
            parts.append(
                f'<rect x="{shape["x0"]:.2f}" y="{shape["y0"]:.2f}" width="{shape["x1"] - shape["x0"]:.2f}" '
                f'height="{shape["y1"] - shape["y0"]:.2f}" fill="none" stroke="{style["color"]}"/>'
            )
    parts.append(_svg_colorbar(lut, w + pad, 0.0, bar_w, h, top))
    parts.append("</g></svg>")
    return "\n".join(parts)


def _svg_colorbar(lut: np.ndarray, x: float, y: float, width: float, height: float, top: float) -> str:
    stops = "".join(
        f'<stop offset="{i / 10:.2f}" stop-color="#{r:02x}{g:02x}{b:02x}"/>'
        for i, (r, g, b) in enumerate(lut[np.linspace(lut.shape[0] - 1, 0, 11).round().astype(int)])
    )
    return (
        f'<defs><linearGradient id="cbar" x1="0" y1="0" x2="0" y2="1">{stops}</linearGradient></defs>'
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" fill="url(#cbar)"/>'
        f'<text x="{x + width + 3:.1f}" y="{y + 10:.1f}" font-family="sans-serif" font-size="10">{top:.3g}</text>'
        f'<text x="{x + width + 3:.1f}" y="{y + height:.1f}" font-family="sans-serif" font-size="10">0</text>'
    )


def overlay_png(
    pixels: np.ndarray,
    geom: FigureGeometry,
    tiles: np.ndarray | None,
    vmax: float | None,
    cmap: str = "viridis",
    opacity: float = 0.6,
) -> bytes:
    """The tile heatmap blended over the image (`attnstore.render.overlay`), as PNG bytes."""
    if geom.tiles is None or tiles is None:
        return render.png_bytes(pixels)
    return render.png_bytes(
        render.overlay(pixels, tiles, geom.tiles.boxes, alpha=opacity, cmap=cmap, vmin=0.0, vmax=vmax)
    )


def heatmap_png(grid: np.ndarray | None, vmax: float | None, cmap: str = "viridis", cell_px: int = 16) -> bytes:
    """The grid alone (NaN transparent), `cell_px` pixels per cell, as PNG bytes."""
    grid = np.full((1, 1), np.nan) if grid is None else grid
    return render.png_bytes(render.heatmap_image(grid, cmap=cmap, cell_px=cell_px, vmin=0.0, vmax=vmax))
