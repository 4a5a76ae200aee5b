"""Token position <-> box on the original image.

A model turns an image into one or more *views*: the tiles of a split image
(Idefics3), a global thumbnail (Idefics3), one cropped or padded square (LLaVA),
a dynamic-resolution grid (Qwen2-VL). Each view is a regular grid of patch
tokens covering a known rectangle of the original image. Adapters describe the
views that the processor actually produced for an image; this module turns
them into per-position arrays for the store. Nothing here knows a model's
numbers: rows, cols and grid sizes always come from the processor's output.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from attnstore.schema import TokenKind


@dataclass(frozen=True)
class View:
    """One regular grid of patch tokens over a rectangle of the original image.

    Parameters
    ----------
    kind : TokenKind.IMAGE_TILE or TokenKind.IMAGE_GLOBAL
    region : (x0, y0, x1, y1), normalised to the original image; may extend
        outside [0, 1] when the processor padded the image (boxes are clipped).
    patch_rows, patch_cols : the token grid of this view.
    tile : tile index (row-major) for tiles, -1 for a global view.
    grid_offset : (row, col) of this view's first patch on the stitched grid.
    """

    kind: TokenKind
    region: tuple[float, float, float, float]
    patch_rows: int
    patch_cols: int
    tile: int = -1
    grid_offset: tuple[int, int] = (0, 0)

    @property
    def n_patches(self) -> int:
        return self.patch_rows * self.patch_cols


@dataclass
class ImageLayout:
    """Everything the store records about one sequence: kinds and image geometry.

    Arrays are per sequence position (length `n_key`).
    """

    kind: np.ndarray  # [key] int8 TokenKind
    patch_tile: np.ndarray  # [key] int16
    patch_row: np.ndarray  # [key] int16
    patch_col: np.ndarray  # [key] int16
    patch_box: np.ndarray  # [key, 4] float32
    tile_rows: int = 0
    tile_cols: int = 0
    grid_rows: int = 0
    grid_cols: int = 0
    global_rows: int = 0
    global_cols: int = 0
    views: list[View] = field(default_factory=list)

    @property
    def n_key(self) -> int:
        return int(self.kind.shape[0])


def empty_layout(kinds: np.ndarray) -> ImageLayout:
    """A layout with the given kinds and no image geometry yet."""
    n = kinds.shape[0]
    return ImageLayout(
        kind=kinds.astype(np.int8),
        patch_tile=np.full(n, -1, np.int16),
        patch_row=np.full(n, -1, np.int16),
        patch_col=np.full(n, -1, np.int16),
        patch_box=np.full((n, 4), np.nan, np.float32),
    )


def text_layout(tokens: list[str], specials: Collection[str], image_markers: Collection[str] = ()) -> ImageLayout:
    """A layout of `tokens` with no image geometry yet: the family's chat specials are SPECIAL, its image
    markers (placeholders, begin / end / break tokens) IMAGE_SPECIAL, the rest PROMPT_TEXT; placing the
    views then turns the placeholders into patches."""
    kinds = [
        TokenKind.SPECIAL if t in specials else TokenKind.IMAGE_SPECIAL if t in image_markers else TokenKind.PROMPT_TEXT
        for t in tokens
    ]
    return empty_layout(np.array(kinds, dtype=np.int8))


def view_boxes(view: View) -> np.ndarray:
    """Boxes of a view's patches in row-major token order, clipped to the image.

    Returns
    -------
    np.ndarray  # [patch, 4] float32 (x0, y0, x1, y1)
    """
    x0, y0, x1, y1 = view.region
    xs = np.linspace(x0, x1, view.patch_cols + 1)
    ys = np.linspace(y0, y1, view.patch_rows + 1)
    row, col = np.divmod(np.arange(view.n_patches), view.patch_cols)
    boxes = np.stack([xs[col], ys[row], xs[col + 1], ys[row + 1]], axis=1)
    return np.clip(boxes, 0.0, 1.0).astype(np.float32)


def place_view(layout: ImageLayout, view: View, positions: np.ndarray) -> None:
    """Write one view's geometry at its token positions (row-major order)."""
    if positions.shape[0] != view.n_patches:
        raise ValueError(f"view has {view.n_patches} patches but {positions.shape[0]} token positions")
    row, col = np.divmod(np.arange(view.n_patches), view.patch_cols)
    layout.kind[positions] = int(view.kind)
    layout.patch_tile[positions] = view.tile
    layout.patch_row[positions] = row + view.grid_offset[0]
    layout.patch_col[positions] = col + view.grid_offset[1]
    layout.patch_box[positions] = view_boxes(view)
    layout.views.append(view)


def tile_views(rows: int, cols: int, patch_rows: int, patch_cols: int) -> list[View]:
    """Views of an image stretched onto a rows x cols grid of equal tiles (row-major)."""
    return [
        View(
            kind=TokenKind.IMAGE_TILE,
            region=(c / cols, r / rows, (c + 1) / cols, (r + 1) / rows),
            patch_rows=patch_rows,
            patch_cols=patch_cols,
            tile=r * cols + c,
            grid_offset=(r * patch_rows, c * patch_cols),
        )
        for r in range(rows)
        for c in range(cols)
    ]


def global_view(patch_rows: int, patch_cols: int, region=(0.0, 0.0, 1.0, 1.0)) -> View:
    """A view of the whole image (a thumbnail, or the only view of single-grid models)."""
    return View(kind=TokenKind.IMAGE_GLOBAL, region=tuple(region), patch_rows=patch_rows, patch_cols=patch_cols)


def finish_grids(layout: ImageLayout) -> ImageLayout:
    """Derive the grid shapes (tile grid, stitched grid, global grid) from the placed views."""
    tiles = [v for v in layout.views if v.kind == TokenKind.IMAGE_TILE]
    globals_ = [v for v in layout.views if v.kind == TokenKind.IMAGE_GLOBAL]
    if tiles:
        layout.grid_rows = max(v.grid_offset[0] + v.patch_rows for v in tiles)
        layout.grid_cols = max(v.grid_offset[1] + v.patch_cols for v in tiles)
        layout.tile_rows = layout.grid_rows // tiles[0].patch_rows
        layout.tile_cols = layout.grid_cols // tiles[0].patch_cols
    if globals_:
        layout.global_rows = globals_[0].patch_rows
        layout.global_cols = globals_[0].patch_cols
    return layout


def box_to_pixels(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """A normalised box as integer pixel bounds (x0, y0, x1, y1) on an image of the given size."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return (round(x0 * width), round(y0 * height), round(x1 * width), round(y1 * height))
