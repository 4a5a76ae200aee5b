"""Arrays -> images: colour-mapped heatmaps and overlays on the original pixels (pure functions).

No matplotlib: colormaps are 256-entry numpy lookup tables interpolated from plotly's
sequential scales (a project dependency), so the CLI's PNGs and the explorer's plotly
figures use the same colours. Heatmaps are upsampled nearest-neighbour and each grid cell
is placed by the store's geometry (`patch_box`), so the patch grid stays visible and every
tile grid (any R x C, or the global thumbnail) lands where the model saw it.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image

from attnstore.analysis import lattice_cells
from attnstore.errors import AttnstoreError, InvalidArgument

CMAPS = ("viridis", "magma", "inferno", "plasma", "cividis", "turbo", "hot", "jet", "greys")


@lru_cache(maxsize=16)
def colormap_lut(name: str = "viridis", n: int = 256) -> np.ndarray:
    """Lookup table of a plotly sequential colour scale  # [n, 3] uint8."""
    import plotly.colors as pc

    scales = {k.lower(): v for k, v in vars(pc.sequential).items() if isinstance(v, list) and not k.startswith("_")}
    if name.lower() not in scales:
        raise AttnstoreError(f"unknown colormap '{name}'; try one of {', '.join(CMAPS)}")
    anchors = np.array([_rgb(c) for c in scales[name.lower()]], np.float64)  # [m, 3]
    at = np.linspace(0.0, 1.0, anchors.shape[0])
    t = np.linspace(0.0, 1.0, n)
    lut = np.stack([np.interp(t, at, anchors[:, ch]) for ch in range(3)], axis=1)
    return np.round(lut).astype(np.uint8)


def _rgb(colour: str) -> tuple[int, int, int]:
    if colour.startswith("#"):
        return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    inner = colour[colour.index("(") + 1 : colour.index(")")]
    return tuple(int(float(v)) for v in inner.split(",")[:3])


def colorize(
    values: np.ndarray, cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None
) -> np.ndarray:
    """Map values to RGBA  # [...] float -> [..., 4] uint8; NaN -> fully transparent.

    vmin/vmax default to the finite min/max; a constant map gets the lowest colour.
    """
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    lo = float(np.min(values[finite])) if vmin is None and finite.any() else (vmin or 0.0)
    hi = float(np.max(values[finite])) if vmax is None and finite.any() else (vmax if vmax is not None else 1.0)
    span = hi - lo if hi > lo else 1.0
    lut = colormap_lut(cmap)
    t = np.clip((np.where(finite, values, lo) - lo) / span, 0.0, 1.0)
    rgba = np.empty(values.shape + (4,), np.uint8)
    rgba[..., :3] = lut[np.round(t * (lut.shape[0] - 1)).astype(np.intp)]
    rgba[..., 3] = np.where(finite, 255, 0)
    return rgba


def uniform_boxes(rows: int, cols: int) -> np.ndarray:
    """Boxes of a regular grid over the whole image  # [rows, cols, 4] (x0, y0, x1, y1) in [0, 1]."""
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return np.stack([c / cols, r / rows, (c + 1) / cols, (r + 1) / rows], axis=-1).astype(np.float32)


def place_grid(grid_rgba: np.ndarray, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour placement of a coloured grid on a width x height canvas by geometry.

    grid_rgba : # [rows, cols, 4] uint8
    boxes : # [rows, cols, 4] normalised (x0, y0, x1, y1) of each cell (NaN where no token);
        the grid must be a lattice (cells of one column share x, of one row share y), as the
        stitched Idefics3 tiles and the global grid are.
    Returns # [height, width, 4] uint8, transparent outside the grid.
    """
    canvas = np.zeros((height, width, 4), np.uint8)
    row, col = lattice_cells(boxes, width, height)  # [height], [width]
    inside = (row[:, None] >= 0) & (col[None, :] >= 0)  # [height, width]
    if inside.any():
        canvas[inside] = grid_rgba[np.maximum(row, 0)[:, None], np.maximum(col, 0)[None, :]][inside]
    return canvas


def heatmap_image(
    grid: np.ndarray,
    cmap: str = "viridis",
    cell_px: int = 16,
    vmin: float | None = None,
    vmax: float | None = None,
    boxes: np.ndarray | None = None,
    size: tuple[int, int] | None = None,
) -> Image.Image:
    """The heatmap alone as an RGBA image (NaN cells transparent).

    grid : # [rows, cols] float. By default every cell is `cell_px` square; with `boxes` and
    `size=(width, height)` cells are placed by geometry on a canvas of that size.
    """
    grid = np.asarray(grid)
    rgba = colorize(grid, cmap, vmin, vmax)
    if boxes is None or size is None:
        if grid.size == 0:
            return Image.new("RGBA", (1, 1))
        big = rgba.repeat(cell_px, axis=0).repeat(cell_px, axis=1)
        return Image.fromarray(big, "RGBA")
    return Image.fromarray(place_grid(rgba, boxes, *size), "RGBA")


def overlay(
    pixels: np.ndarray,
    grid: np.ndarray,
    boxes: np.ndarray | None = None,
    alpha: float = 0.5,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
) -> Image.Image:
    """The heatmap blended over the original pixels, each cell on its own patch box.

    pixels : # [height, width, 3] uint8 (the store's display copy)
    grid : # [rows, cols] float, NaN where no token (those pixels stay untouched)
    boxes : # [rows, cols, 4] normalised cell boxes; default a regular grid over the image.
    alpha : opacity of the heatmap, 0..1.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InvalidArgument("overlay_alpha", f"must be between 0 and 1, got {alpha}")
    pixels = np.asarray(pixels, np.uint8)
    grid = np.asarray(grid)
    height, width = pixels.shape[:2]
    boxes = uniform_boxes(*grid.shape) if boxes is None else boxes
    layer = place_grid(colorize(grid, cmap, vmin, vmax), boxes, width, height)  # [h, w, 4]
    a = (layer[..., 3:4].astype(np.float32) / 255.0) * alpha
    blended = pixels.astype(np.float32) * (1.0 - a) + layer[..., :3].astype(np.float32) * a
    return Image.fromarray(np.round(blended).astype(np.uint8), "RGB")


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    """Encode an image (PIL or uint8 array) as PNG."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
