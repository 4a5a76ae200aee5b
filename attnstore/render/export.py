"""Map exports: one `MapResult` -> file bytes (heatmap PNG, overlay PNG, image-size layer PNG,
long-format CSV, SVG, JSON).

The only place a map becomes a file: the CLI (`attnstore heatmap`), the explorer's download buttons
and the REST API (`/api/export`) all call `export_map`, so the same map exported from any of them is
byte-identical. Colours run from 0 to the map's largest value on any drawn grid (`MapResult.vmax`).
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import NamedTuple
from xml.sax.saxutils import escape

import numpy as np

from attnstore.analysis.grid import grid_boxes
from attnstore.analysis.maps import MapResult
from attnstore.analysis.select import stored_pixels
from attnstore.errors import InvalidArgument
from attnstore.render.colors import CMAPS, colorize, colormap_lut
from attnstore.render.geometry import FigureGeometry, figure_geometry, grid_shapes
from attnstore.render.raster import heatmap_image, overlay, place_grid, png_bytes
from attnstore.render.text import quoted, token_display


class Format(NamedTuple):
    """One export format: what its file is called and served as, and what writes it."""

    suffix: str
    mime: str
    write: Callable[[MapResult, Style], bytes]


@dataclass(frozen=True)
class Style:
    """How a map is drawn (not what it is: that is the MapSpec)."""

    cmap: str = "viridis"
    opacity: float = 0.6  # of the heatmap over the image (overlay PNG, SVG)
    grid_lines: bool = True  # tile boundaries in the SVG
    cell_px: int = 16  # pixels per grid cell of the heatmap PNG
    threshold: float | None = None  # cells below it drawn as 0 (the seed frontend's slider; layer PNG)

    def checked(self) -> Style:
        if self.cmap.lower() not in CMAPS:
            colormap_lut(self.cmap)  # any plotly sequential scale works; unknown ones raise
        if not 0.0 <= self.opacity <= 1.0:
            raise InvalidArgument("opacity", f"must be between 0 and 1, got {self.opacity}")
        if not 1 <= self.cell_px <= 256:
            raise InvalidArgument("cell_px", f"must be between 1 and 256, got {self.cell_px}")
        if self.threshold is not None and not np.isfinite(self.threshold):
            raise InvalidArgument("threshold", f"must be a finite number, got {self.threshold}")
        return self


def export_map(result: MapResult, fmt: str, style: Style = Style()) -> bytes:
    """The map as file bytes in format `fmt` (a key of FORMATS)."""
    if fmt not in FORMATS:
        raise InvalidArgument("format", f"must be one of {', '.join(FORMATS)}, not {fmt!r}")
    style = style.checked()
    return FORMATS[fmt].write(result, style)


def file_name(result: MapResult, fmt: str, stem: str) -> str:
    """e.g. 'beach_tok812_mean-L5H2-3_raw_heatmap.png' for downloads; one layer's one head is named
    as such ('beach_tok812_head-L5H2_raw_heatmap.png'), not as the mean it is computed by."""
    s = result.spec
    layers = "all" if s.layers is None else "-".join(map(str, s.layers[:4]))
    heads = "all" if s.heads is None else "-".join(map(str, s.heads[:4]))
    one_head = s.layers is not None and s.heads is not None and len(s.layers) == len(s.heads) == 1
    method = "head" if one_head and s.method in ("mean", "max") else s.method  # a mean/max of one head is that head
    return f"{stem}_tok{result.position}_{method}-L{layers}H{heads}_{s.normalise}{FORMATS[fmt].suffix}"


def title(result: MapResult, image_name: str) -> str:
    """The caption of a map: image, token, method, layers/heads, normalisation."""
    token = quoted(token_display(result.img, result.position))  # as the explorer shows it
    return f"{image_name} · token {token} #{result.position} · {result.spec.describe()}"


def _grid(result: MapResult) -> np.ndarray:
    """The spec's view as a plain array  # [rows, cols]."""
    return result.grid().values


def _heatmap_png(result: MapResult, style: Style) -> bytes:
    grid = _grid(result)
    grid = np.full((1, 1), np.nan) if grid.size == 0 else grid
    return png_bytes(heatmap_image(grid, cmap=style.cmap, cell_px=style.cell_px, vmin=0.0, vmax=result.vmax or None))


def _overlay_png(result: MapResult, style: Style) -> bytes:
    pixels = stored_pixels(result.img, result.spec.image)
    grid = _grid(result)
    if grid.size == 0:
        return png_bytes(pixels)
    boxes = grid_boxes(result.img, result.spec.view).values
    picture = overlay(pixels, grid, boxes, alpha=style.opacity, cmap=style.cmap, vmin=0.0, vmax=result.vmax or None)
    return png_bytes(picture)


def _geometry(result: MapResult) -> FigureGeometry:
    img = result.img
    return figure_geometry(img, int(img.sizes["pixel_x"]), int(img.sizes["pixel_y"]))


def _views(result: MapResult, geom: FigureGeometry):
    """(view name, panel, grid) for each grid the image has."""
    for view, panel in (("tiles", geom.tiles), ("global", geom.glob)):
        if panel is not None:
            yield view, panel, result.grid(view).values


def _csv(result: MapResult, style: Style) -> bytes:
    """One row per image patch token (long format), both grids."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["view", "grid_row", "grid_col", "where", "sub_patch", "key", "x0", "y0", "x1", "y1", "value"])
    for view, panel, values in _views(result, _geometry(result)):
        for r, c in np.argwhere(panel.keys >= 0):
            box = (f"{v:.6f}" for v in panel.boxes[r, c])
            row = [
                view,
                r,
                c,
                panel.labels[r, c],
                panel.subs[r, c],
                panel.keys[r, c],
                *box,
                f"{float(values[r, c]):.8g}",
            ]
            writer.writerow(row)
    return out.getvalue().encode()


def _svg(result: MapResult, style: Style) -> bytes:
    """The overlay as standalone SVG: the image (embedded PNG), one rect per cell, tile lines, a colour bar."""
    geom = _geometry(result)
    href = "data:image/png;base64," + base64.b64encode(png_bytes(stored_pixels(result.img, result.spec.image))).decode()
    name = str(result.img["image_name"].values)
    w, h = geom.extent
    caption = title(result, name)
    bar_w, pad, title_h = 14.0, 10.0, 22.0
    total_w, total_h = w + pad + bar_w + 50, h + title_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{total_w:.0f}" height="{total_h:.0f}" viewBox="0 0 {total_w:.1f} {total_h:.1f}">',
        f'<text x="4" y="15" font-family="sans-serif" font-size="13">{escape(caption)}</text>',
        f'<g transform="translate(0,{title_h})">',
    ]
    lut = colormap_lut(style.cmap)
    top = result.vmax or 1.0
    for _, panel, values in _views(result, geom):
        parts.append(
            f'<image x="{panel.x0:.2f}" y="{panel.y0:.2f}" width="{panel.width:.2f}" '
            f'height="{panel.height:.2f}" preserveAspectRatio="none" xlink:href="{href}"/>'
        )
        parts.append(f'<g opacity="{style.opacity:.3f}">')
        for r, c in np.argwhere(np.isfinite(values)):
            x0, x1 = panel.x_edges[c], panel.x_edges[c + 1]
            y0, y1 = panel.y_edges[r], panel.y_edges[r + 1]
            rgb = lut[int(round(np.clip(values[r, c] / top, 0, 1) * (lut.shape[0] - 1)))]
            parts.append(
                f'<rect x="{x0:.2f}" y="{y0:.2f}" width="{x1 - x0:.2f}" height="{y1 - y0:.2f}" '
                f'fill="#{rgb[0]:02x}{rgb[1]:02x}{rgb[2]:02x}"><title>{values[r, c]:.4g}</title></rect>'
            )
        parts.append("</g>")
    parts += [_svg_shape(shape) for shape in grid_shapes(geom, style.grid_lines)]
    parts.append(_svg_colorbar(lut, w + pad, 0.0, bar_w, h, top))
    parts.append("</g></svg>")
    return "\n".join(parts).encode()


def _svg_shape(shape: dict) -> str:
    line = shape["line"]
    if shape["type"] == "line":
        return (
            f'<line x1="{shape["x0"]:.2f}" y1="{shape["y0"]:.2f}" x2="{shape["x1"]:.2f}" '
            f'y2="{shape["y1"]:.2f}" stroke="{line["color"]}" stroke-width="{line["width"]}"/>'
        )
    return (
        f'<rect x="{shape["x0"]:.2f}" y="{shape["y0"]:.2f}" width="{shape["x1"] - shape["x0"]:.2f}" '
        f'height="{shape["y1"] - shape["y0"]:.2f}" fill="none" stroke="{line["color"]}"/>'
    )


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


def map_record(result: MapResult) -> dict:
    """The map as JSON-ready data: spec, token, vmax and both grids (None for NaN)."""
    spec = asdict(result.spec)
    record = {"spec": spec, "row": result.row, "position": result.position, "token": result.token,
              "description": result.spec.describe(), "vmax": result.vmax}  # fmt: skip
    for view in ("tiles", "global"):
        record[view] = json_grid(result.grid(view).values) if result.has_view(view) else None
    return record


def json_grid(grid: np.ndarray) -> list[list[float | None]]:
    """# [rows, cols] float32 -> nested lists with None for NaN (exact float32 values as Python floats)."""
    return [[None if np.isnan(v) else float(v) for v in row] for row in grid.tolist()]


def _json(result: MapResult, style: Style) -> bytes:
    return json.dumps(map_record(result), sort_keys=True).encode()


def _layer_png(result: MapResult, style: Style) -> bytes:
    """The heatmap alone on an image-size canvas, transparent where no token, cells placed by
    geometry (a page lays it over the image: the seed API's picture, drawn on every click)."""
    geom = _geometry(result)
    view, panel = ("tiles", geom.tiles) if geom.tiles is not None else ("global", geom.glob)
    grid = result.grid(view).values  # [grid_row, grid_col], NaN where no token
    if style.threshold is not None:  # weaker cells drawn as 0 (NaN stays transparent)
        grid = np.where(grid < style.threshold, 0.0, grid)
    size = int(result.img.sizes["pixel_x"]), int(result.img.sizes["pixel_y"])
    return layer_png(grid, panel.boxes, size, style.cmap, result.vmax or None)


def layer_png(grid: np.ndarray, boxes: np.ndarray, size: tuple[int, int], cmap: str, vmax: float | None) -> bytes:
    """`heatmap_image(grid, boxes=boxes, size=size)`'s pixels as PNG bytes  # grid [row, col]. A map
    has at most 256 colours plus transparent, so it is written as a palette PNG when it can: a
    quarter of RGBA's bytes to compress."""
    from PIL import Image

    rgba = colorize(grid, cmap, 0.0, vmax)  # [grid_row, grid_col, 4]
    flat = np.concatenate([np.zeros((1, 4), np.uint8), rgba.reshape(-1, 4)])  # transparent first: sorts to 0
    colours, inverse = np.unique(flat, axis=0, return_inverse=True)  # [n_colours, 4], [1 + cells]
    if len(colours) > 256:
        return png_bytes(heatmap_image(grid, cmap=cmap, vmin=0.0, vmax=vmax, boxes=boxes, size=size), compress_level=1)
    index = inverse.reshape(-1)[1:].reshape(rgba.shape[:2]).astype(np.uint8)  # [grid_row, grid_col]
    canvas = place_grid(index[..., None], boxes, *size)[..., 0]  # [height, width]; 0 outside the grid
    picture = Image.fromarray(canvas, "P")
    picture.putpalette(colours[:, :3].ravel().tolist())
    picture.info["transparency"] = bytes(colours[:, 3].tolist())
    return png_bytes(picture, compress_level=1)


FORMATS: dict[str, Format] = {  # the one registry: `export_map`, file names, the CLI and the REST API
    "png": Format("_heatmap.png", "image/png", _heatmap_png),
    "overlay": Format("_overlay.png", "image/png", _overlay_png),
    "csv": Format("_grid.csv", "text/csv", _csv),
    "svg": Format(".svg", "image/svg+xml", _svg),
    "json": Format(".json", "application/json", _json),
    "layer": Format("_layer.png", "image/png", _layer_png),
}
