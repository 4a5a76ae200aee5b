"""Selecting what to read: one image at its valid extents, one token's rows, layers and heads.

A Dataset from `attnstore.store.open_dataset` reads attention through the store's read backend
(`attnstore.store.readers`): a clicked token reads one stored chunk, several rows of one image are
one reader call (each row its own chunk, decoded concurrently).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import numpy as np
import xarray as xr

from attnstore.analysis.kernels import fp16_to_fp32
from attnstore.errors import InvalidArgument
from attnstore.schema import KEY, QUERY, REQUIRED_PER_IMAGE, is_fill
from attnstore.store.integrity import missing_chunk_error
from attnstore.store.threads import read_concurrently
from attnstore.store.xarray_glue import reader_name

_SMALL_VARS = (
    "query_position",
    "token_id",
    "token_text",
    "token_kind",
    "patch_tile",
    "patch_row",
    "patch_col",
    "patch_box",
)


_EXTENT_VARS = ("n_query", "n_key", "image_height", "image_width", "complete")


def image_extents(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Per-image valid extents (n_query, n_key, image_height, image_width) and `complete`  # each [image].

    Read once per opened Dataset and kept in its accessor's cache (a few bytes per image), so
    selecting an image costs no extra reads. `ds.attn.refresh()` forgets them (new images).
    """
    return ds.attn.cached("extents", lambda: {name: np.asarray(ds[name].values) for name in _EXTENT_VARS if name in ds})


def select_image(ds: xr.Dataset, image: int) -> xr.Dataset:
    """One image, sliced to its valid extents.

    Parameters
    ----------
    ds : the store's Dataset (from `attnstore.store.open_dataset`, lazily opened or not).
    image : image index.

    Returns
    -------
    xr.Dataset without the image dim: `query[:n_query]`, `key[:n_key]`, `pixels` cropped to
    `image_height x image_width`. Attention and pixels stay lazy (basic slices only, so a
    later one-row read touches one chunk); the small per-key variables are loaded.
    """
    n_images = ds.sizes["image"]
    if not -n_images <= image < n_images:
        raise InvalidArgument("image", f"{image} is out of range: the store has {n_images} images")
    ext = image_extents(ds)
    sel = {"image": image, QUERY: slice(0, int(ext["n_query"][image])), KEY: slice(0, int(ext["n_key"][image]))}
    if "pixels" in ds and "image_height" in ext:
        sel.update(pixel_y=slice(0, int(ext["image_height"][image])), pixel_x=slice(0, int(ext["image_width"][image])))
    img = ds.isel(sel)
    small = [img.variables[name] for name in _SMALL_VARS if name in img.variables]  # no DataArray per lookup
    lazy = [var for var in small if not var._in_memory]
    # In place (a DataArray shares its Dataset's Variable); the reads run concurrently in zarr's event loop.
    read_concurrently(lambda var: var.load(), lazy)
    if "complete" in ext and ext["complete"][image]:
        require_stored(img.variables, lambda: f"{image % n_images} ({img['image_name'].values})")
    return img


def require_stored(variables: Mapping[str, object], label: Callable[[], str]) -> None:
    """Raise if a per-image variable a complete image always stores reads as its fill value only:
    its chunk is absent (zarr reads an absent chunk as the fill value, e.g. empty token texts)."""
    for name in REQUIRED_PER_IMAGE:
        var = variables.get(name)
        if var is None or (isinstance(var, xr.Variable) and not var._in_memory):
            continue  # not read here (pixels stay lazy: `validate --deep` checks them)
        values = np.asarray(var.values if isinstance(var, xr.Variable) else var)
        if values.size and is_fill(name, values):
            raise missing_chunk_error(label(), name)


def stored_pixels(img: xr.Dataset, image: int) -> np.ndarray:
    """The display copy of complete image `image` (`select_image`)  # [y, x, rgb] uint8.

    All fill value (black everywhere) means its chunk is missing: an error, not a black picture
    under a heatmap. (A truly all-black image is not told apart: zarr does not store it either.)
    """
    pixels = np.asarray(img["pixels"].values)
    if pixels.size and not pixels.any():
        raise missing_chunk_error(f"{image} ({img['image_name'].values})", "pixels")
    return pixels


ImageVariables = xr.Dataset | Mapping[str, np.ndarray]  # one image: `select_image`, or its variables as arrays


def values_of(img: ImageVariables) -> Callable[[str], np.ndarray]:
    """name -> one image's variable as a numpy array. `img`: a selection (`select_image`: a lazy
    variable is read on lookup), or the variables as arrays by name (`scan.BatchArrays.image`)."""
    if isinstance(img, xr.Dataset):
        var = img.variables  # plain Variables: a DataArray per lookup costs ~10 us
        return lambda name: np.asarray(var[name].values)
    return lambda name: np.asarray(img[name])


def token_weights(img: xr.Dataset, query: int) -> xr.DataArray:
    """Attention of one query row over every key, every layer and head.

    Reads one stored chunk (`attention[layer, head, query, :n_key]`).

    Returns
    -------
    xr.DataArray  # [layer, head, key] float32, with a scalar `query` coord (the row index)
    """
    n = img.sizes[QUERY]
    if not -n <= query < n:
        raise InvalidArgument("row", f"{query} is out of range: this image has {n} stored rows")
    row = img["attention"].isel({QUERY: query})
    if is_dask(row):
        return row.astype(np.float32).assign_coords({QUERY: query % n})
    # deep=False: the new data is given; a deep copy would also deep-copy the encoding, which holds the
    # store's reader (~0.4 ms a click, measured)
    return row.copy(deep=False, data=fp16_to_fp32(row.values)).assign_coords({QUERY: query % n})  # reads one chunk


def as_indexer(sel) -> slice | list[int]:
    """int / slice / list / None -> an isel indexer that keeps the dim."""
    if sel is None:
        return slice(None)
    if isinstance(sel, slice):
        return sel
    if isinstance(sel, (int, np.integer)):
        return [int(sel)]
    return [int(s) for s in sel]


def select_layers_heads(weights: xr.DataArray, layers=None, heads=None) -> xr.DataArray:
    """Subset of layers/heads (int, slice, list or None = all); errors name what exists."""
    out = weights
    for dim, sel in (("layer", layers), ("head", heads)):
        if dim not in out.dims:
            continue
        idx = as_indexer(sel)
        n = out.sizes[dim]
        if isinstance(idx, list) and any(not -n <= i < n for i in idx):
            raise InvalidArgument(f"{dim}s", f"{idx} out of range: the store has {n} {dim}s (0-{n - 1})")
        out = out.isel({dim: idx})
        if out.sizes[dim] == 0:
            raise InvalidArgument(f"{dim}s", f"selection {sel} is empty: the store has {n} {dim}s (0-{n - 1})")
    return out


def read_rows_fp16(img: xr.Dataset, rows: list[int]) -> np.ndarray:
    """Several query rows as stored  # -> [occurrence, layer, head, key] float16.

    Through a store's read backend: one read of the listed rows (one chunk each, decoded
    concurrently). Opened otherwise (plain `xarray.open_zarr`): one basic-slice read per row,
    issued concurrently, since a list index on `query` would make zarr decode whole shards.
    """
    att = img["attention"]
    if not reader_name(img):
        return np.stack(read_concurrently(lambda r: np.asarray(att.isel({QUERY: r}).values), rows))
    att = att.isel({QUERY: list(rows)})
    return np.moveaxis(np.asarray(att.values), att.dims.index(QUERY), 0)


def read_rows(img: xr.Dataset, rows: list[int]) -> xr.DataArray:
    """Several query rows  # -> [occurrence, layer, head, key] float32 (see `read_rows_fp16`)."""
    att = img["attention"]
    dims = ("occurrence", *(d for d in att.dims if d != QUERY))
    coords = {d: att[d] for d in ("layer", "head") if d in att.coords}
    return xr.DataArray(fp16_to_fp32(read_rows_fp16(img, rows)), dims=dims, coords=coords)


def is_dask(da: xr.DataArray) -> bool:
    return da.chunks is not None


# One comma-separated part of a layer/head selection: an ASCII number or lo-hi, spaces allowed around them.
# int() alone would also read "1_0" (10), "+3", and non-ASCII digits ("٣"), which the grammar does not promise.
_RANGE_PART = re.compile(r"[ \t]*([0-9]+)[ \t]*(?:-[ \t]*([0-9]+)[ \t]*)?")
_MAX_DIGITS = 18  # far above any layer or head count; longer numbers are out of range without int()


def parse_range(spec: str | None, n: int, what: str = "layers") -> list[int] | None:
    """'0-29', '3', '0,2,5-7' -> sorted list of indices (None for '' / 'all'); checked against n.

    Bounds are checked before a range is expanded, so '0-99999999999' fails at once; anything
    but ASCII numbers, ranges lo-hi with lo <= hi, commas, spaces and tabs is refused.
    """
    if spec is None or spec.strip(" \t").lower() in ("", "all"):
        return None
    picked: set[int] = set()
    for part in spec.split(","):
        match = _RANGE_PART.fullmatch(part)
        if not match:
            raise InvalidArgument(what, f"{short_repr(spec)} is not a list of numbers or ranges like 0-29 or 0,3,5-7")
        lo, hi = _bounded_int(match[1]), _bounded_int(match[2] or match[1])
        if 0 <= hi < lo < n:
            raise InvalidArgument(what, f"{short_repr(part.strip())} is reversed: write it low-high ({hi}-{lo})")
        if not 0 <= lo <= hi < n:
            raise InvalidArgument(what, f"{short_repr(spec)} is outside 0-{n - 1} (the store has {n} {what})")
        picked.update(range(lo, hi + 1))
    return sorted(picked)


def _bounded_int(digits: str) -> int:
    """An ASCII number; one too long to be any index reads as -1 (out of range) without converting it."""
    return int(digits) if len(digits.lstrip("0")) <= _MAX_DIGITS else -1


def short_repr(value, limit: int = 40) -> str:
    """repr() cut to `limit` characters: one printable line for a message, whatever the value holds."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
