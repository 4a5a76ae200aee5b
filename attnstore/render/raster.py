"""Grids -> pictures: colour-mapped heatmaps and overlays on the original pixels (pure functions).

Heatmaps are upsampled nearest-neighbour and each grid cell is placed by the store's geometry
(`patch_box`), so the patch grid stays visible and every tile grid (any R x C, or the global
thumbnail) lands where the model saw it.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from attnstore.analysis.grid import lattice_cells
from attnstore.errors import InvalidArgument
from attnstore.render.colors import colorize

if TYPE_CHECKING:  # PIL is imported where a picture is made: `import attnstore` stays lighter
    from PIL import Image


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
    row, col = lattice_cells(boxes, width, height)  # [height], [width]
    # Rows then columns with `take` (contiguous copies): ~50x faster than one 2-D fancy index.
    canvas = grid_rgba.take(np.maximum(row, 0), axis=0).take(np.maximum(col, 0), axis=1)  # [height, width, 4]
    canvas[row < 0] = 0
    canvas[:, col < 0] = 0
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
    from PIL import Image

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
    from PIL import Image

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


def png_bytes(image: Image.Image | np.ndarray, compress_level: int = 6) -> bytes:
    """Encode an image (PIL or uint8 array) as PNG (`compress_level` 1 = fastest, 9 = smallest)."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()
