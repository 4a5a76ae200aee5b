"""Key values -> image grids (the stitched tiles, the global thumbnail, one grid per tile), by the
store's per-image geometry; grids -> a common normalised raster (for dataset means)."""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from attnstore.analysis.select import ImageVariables, values_of
from attnstore.errors import InvalidArgument, NoGeometry
from attnstore.schema import KEY, TokenKind

VIEWS = ("tiles", "global", "tile")


def patch_grid(values: xr.DataArray, img: xr.Dataset, view: str = "tiles") -> xr.DataArray:
    """Key values on an image grid, NaN where no token.

    Parameters
    ----------
    values : # [..., key]
    view : "tiles" -> [..., grid_row, grid_col], the stitched tile grid (grid_rows x grid_cols);
        "global" -> [..., global_row, global_col], the global thumbnail's grid;
        "tile" -> [..., tile, sub_row, sub_col], one grid per tile.
    """
    if img.attrs.get("geometry") == "none":
        raise NoGeometry(f"no patch map: {img.attrs.get('geometry_note', 'the store has no patch geometry')}")
    vals = np.asarray(values.transpose(..., KEY).values, np.float32)  # [..., key]
    grid, dims = place_on_grid(vals, img, view)
    lead = [d for d in values.dims if d != KEY]
    coords = {d: c for d, c in values.coords.items() if KEY not in values[d].dims}
    return xr.DataArray(grid, dims=(*lead, *dims), coords=coords, attrs={"view": view})


def place_on_grid(vals: np.ndarray, img: ImageVariables, view: str = "tiles") -> tuple[np.ndarray, tuple[str, ...]]:
    """`patch_grid` on plain arrays: vals  # [..., key] -> (grid  # [..., *cell], the cell dims' names).
    `img`: one image (`select_image`), or its variables as arrays by name (`scan.BatchArrays.image`)."""
    if view not in VIEWS:
        raise InvalidArgument("view", f"must be one of {', '.join(VIEWS)}, not {view!r}")
    value = values_of(img)
    size = lambda name: int(value(name))
    kind = value("token_kind")
    row, col = value("patch_row"), value("patch_col")
    wanted = TokenKind.IMAGE_GLOBAL if view == "global" else TokenKind.IMAGE_TILE
    mask = kind == int(wanted)
    if (row[mask] < 0).any():  # image tokens without a cell (sequence-only mode): -1 would index the last one
        raise NoGeometry("no patch map: this store's image tokens have no patch geometry (geometry: none)")
    if view == "global":
        shape, dims = (size("global_rows"), size("global_cols")), ("global_row", "global_col")
        index = (row[mask], col[mask])
    else:
        shape, dims = (size("grid_rows"), size("grid_cols")), ("grid_row", "grid_col")
        index = (row[mask], col[mask])
        if view == "tile":
            tr, tc = size("tile_rows"), size("tile_cols")
            sub = (shape[0] // tr, shape[1] // tc) if tr and tc else (0, 0)
            shape, dims = (tr * tc, *sub), ("tile", "sub_row", "sub_col")
            tile = value("patch_tile")[mask]
            index = (tile, row[mask] % max(sub[0], 1), col[mask] % max(sub[1], 1))
    grid = np.full(vals.shape[:-1] + shape, np.nan, np.float32)
    grid[(..., *index)] = np.asarray(vals, np.float32)[..., mask]
    return grid, dims


def grid_boxes(img: xr.Dataset, view: str = "tiles") -> xr.DataArray:
    """Normalised box (x0, y0, x1, y1) of every cell of a `patch_grid` view  # [row, col, box]; NaN = no token."""
    boxes = patch_grid(img["patch_box"].transpose("box", KEY), img, view=view)  # [box, row, col]
    return boxes.transpose(..., "box")


def lattice_cells(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid cell under each pixel of a width x height raster covering the image, by geometry.

    boxes : # [rows, cols, 4] normalised (x0, y0, x1, y1) per cell (NaN where no token); the
        grid must be a lattice (one column shares x, one row shares y), as the stitched
        Idefics3 tiles and the global grid are.
    Returns (row of each raster row # [height], col of each raster column # [width]); -1 = no cell.
    """
    rows, cols = boxes.shape[:2]
    if rows == 0 or cols == 0:
        return np.full(height, -1), np.full(width, -1)
    with warnings.catch_warnings():  # all-NaN rows/columns are reported just below
        warnings.simplefilter("ignore", RuntimeWarning)
        x0, y0 = np.nanmin(boxes[..., 0], axis=0), np.nanmin(boxes[..., 1], axis=1)  # [cols], [rows]
        x_stop, y_stop = np.nanmax(boxes[..., 2]), np.nanmax(boxes[..., 3])
    if np.isnan(x0).any() or np.isnan(y0).any():
        raise ValueError("every grid row and column needs at least one box")
    return _axis_cells(y0, y_stop, height), _axis_cells(x0, x_stop, width)


def _axis_cells(starts: np.ndarray, stop: float, n: int) -> np.ndarray:
    centre = (np.arange(n) + 0.5) / n  # raster cell centres in [0, 1]
    cell = np.searchsorted(starts, centre, side="right") - 1
    return np.where((cell >= 0) & (centre < stop), cell, -1)


def resample_density(grid: np.ndarray, boxes: np.ndarray, size: int = 32) -> np.ndarray:
    """A map on its image's grid -> a size x size grid over the normalised image  # [..., r, c] -> [..., size, size].

    Each cell's value is divided by its area (fraction of the image), so the result is a
    density (a map summing to 1 over the image has mean 1 per unit area, whatever the grid):
    images split into different tile grids become comparable and can be averaged. Nearest
    cell by geometry; NaN where no cell covers the point.
    """
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])  # [r, c]
    density = grid / np.where(area > 0, area, np.nan)
    row, col = lattice_cells(boxes, size, size)
    out = density[..., np.maximum(row, 0)[:, None], np.maximum(col, 0)[None, :]]
    return np.where((row[:, None] >= 0) & (col[None, :] >= 0), out, np.nan).astype(np.float32)
