"""Where an image's grids go in a picture: the stitched tile grid over the image, the global
view's grid on a half-size copy beside it, cell edges and tile lines, all from the store's
geometry (`patch_box` of each grid cell), never from assumed tile sizes.

Shared below the explorer's figures and the map exports (SVG), so both draw the same layout.
Coordinates are pixels of the display image (y grows downwards).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from attnstore.analysis.grid import patch_grid
from attnstore.analysis.grounding import object_index
from attnstore.schema import OBJECT_BOX, OBJECT_LABEL, TARGET_OBJECT

PANEL_SCALE = 0.5  # global view panel size relative to the image


GAP = 0.04  # gap between image and global panel, fraction of the image width


TILE_LINE = {"color": "rgba(255,255,255,0.85)", "width": 1.5}


PANEL_LINE = {"color": "rgba(120,120,120,0.9)", "width": 1}


OBJECT_LINE = {"color": "rgba(255,255,255,0.95)", "width": 1.5, "dash": "dot"}
TARGET_LINE = {"color": "#ff2d55", "width": 2.5}  # the object the question is about


@dataclass(frozen=True)
class ObjectBox:
    """One object of an image: its label and normalised (x0, y0, x1, y1) box on the original image."""

    label: str
    box: tuple[float, float, float, float]
    target: bool = False  # the object the image's question is about


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
    objects: tuple[ObjectBox, ...] = ()  # the store's object boxes of the image, if it has any

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
    return FigureGeometry(width, height, tiles, glob, object_boxes(img))


def object_boxes(img: xr.Dataset) -> tuple[ObjectBox, ...]:
    """The object boxes of one image (`select_image`); empty slots and stores without boxes give none."""
    if OBJECT_BOX not in img:
        return ()
    target = object_index(img, TARGET_OBJECT) if TARGET_OBJECT in img else -1
    labels = [str(v) for v in img[OBJECT_LABEL].values]
    boxes = np.asarray(img[OBJECT_BOX].values, np.float64)  # [object, 4]
    return tuple(
        ObjectBox(label, tuple(float(v) for v in box), i == target)
        for i, (label, box) in enumerate(zip(labels, boxes, strict=True))
        if label and np.isfinite(box).all()
    )


def _panel(img: xr.Dataset, view: str, x0: float, y0: float, width: float, height: float) -> Panel:
    n_key = img.sizes["key"]
    keys = patch_grid(xr.DataArray(np.arange(n_key, dtype=np.float32), dims="key"), img, view).values
    keys = np.where(np.isfinite(keys), keys, -1).astype(np.int64)  # [rows, cols]
    boxes = np.moveaxis(patch_grid(img["patch_box"].transpose("box", "key"), img, view).values, 0, -1)
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


LABEL_FONT = {"size": 11, "color": "#ffffff", "shadow": "0 0 2px #000, 0 0 3px #000"}  # white on a dark halo:
# readable on any picture and on the red box (red text on the red line was not)


def object_shapes(geom: FigureGeometry, labels: bool = True) -> list[dict]:
    """The object boxes as rectangles on the image and on the global view's copy; labelled (if
    `labels`) on the main picture only: the global copy is small and its labels were clipped."""
    shapes = []
    panels = [p for p in (geom.tiles, geom.glob) if p is not None]
    for i, panel in enumerate(panels):
        for obj in geom.objects:
            x0, y0, x1, y1 = obj.box
            shape = {
                "type": "rect",
                "xref": "x",
                "yref": "y",
                "x0": panel.x0 + panel.width * x0,
                "y0": panel.y0 + panel.height * y0,
                "x1": panel.x0 + panel.width * x1,
                "y1": panel.y0 + panel.height * y1,
                "line": TARGET_LINE if obj.target else OBJECT_LINE,
                "layer": "above",
                "name": obj.label,
            }
            if labels and i == 0:
                text = obj.label + (" (asked)" if obj.target else "")
                # inside the box's top-left corner: a label above the box leaves the picture at its top edge
                shape["label"] = {
                    "text": text,
                    "textposition": "top left",
                    "font": {**LABEL_FONT, "weight": 700 if obj.target else 400},
                }
            shapes.append(shape)
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
