"""Dataset-level aggregates: every occurrence of a token across a store, summarised per occurrence,
plus the mean map on a common normalised grid; streamed as dask tasks, bounded memory.

The per-head summaries of the default method (entropy_topk) run in a compiled kernel
(`attnstore.analysis.fused`, numba, imported on first use) when numba is installed
(`pip install "attnstore[fast]"`), else in the numpy kernels: the same numbers (to ~1e-6),
~3x less CPU. ATTNSTORE_KERNELS=numpy in the environment forces the numpy kernels.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from attnstore.analysis.grid import place_on_grid, resample_density
from attnstore.analysis.kernels import entropy_np, entropy_topk_np, fp16_to_fp32, key_runs, scatter_np, take_keys
from attnstore.analysis.keys import normalise
from attnstore.analysis.reduce import METHODS, reduce_heads, rollout
from attnstore.analysis.scan import image_list, scan_batches
from attnstore.analysis.select import ImageVariables, read_rows_fp16, select_layers_heads, values_of
from attnstore.analysis.tokens import TokenNotFoundError, token_occurrences
from attnstore.errors import InvalidArgument, check_output_file
from attnstore.schema import BOX_CORNERS, IMAGE_PATCH_KINDS, KEY, TokenKind, kind_mask
from attnstore.store.xarray_glue import reader_of

AGGREGATE_GRID = 32  # side of the common normalised grid the per-occurrence maps are averaged on


AGGREGATE_FORMATS = (".csv", ".parquet", ".nc", ".zarr")


def summarise_rows(
    img: xr.Dataset,
    rows: list[int],
    method: str = "entropy_topk",
    layers=None,
    heads=None,
    k: int = 10,
    normalise_mode: str = "raw",
    grid_size: int = AGGREGATE_GRID,
) -> xr.Dataset:
    """Per-occurrence summaries of some query rows of one image.

    Returns a Dataset over `occurrence` (one per row): image_share and entropy (means over
    the selected layers/heads of the raw rows), map_entropy (of the combined map), the
    peak of the map (key, view, grid row/col, box), and `density` [occurrence, y, x]: the
    map's tile grid resampled onto a grid_size x grid_size normalised grid (`resample_density`).
    """
    columns = _summarise(img, read_rows_fp16(img, rows), rows, method, layers, heads, k, normalise_mode, grid_size)
    density = columns.pop("density")
    return xr.Dataset({name: ("occurrence", v) for name, v in columns.items()}).assign(
        density=(("occurrence", "y", "x"), density)
    )


_ROW_DIMS = ("occurrence", "layer", "head", KEY)  # rows read for some query rows of one image


def _is_topk_path(method: str, normalise_mode: str) -> bool:
    """Whether the map comes from the head statistics alone (`_head_stats`'s top-k, compiled when
    numba is there): entropy_topk, raw or image normalisation. Other methods need the xarray path."""
    return method == "entropy_topk" and normalise_mode in ("raw", "image")


def _summarise(img: ImageVariables, w16, rows, method, layers, heads, k, normalise_mode, grid_size) -> dict:
    """`summarise_rows` as plain columns (cheap to concatenate across thousands of images), from the
    rows read  # w16 [occurrence, layer, head, key] float16. `img` may be the image's variables as
    arrays for entropy_topk with the raw or image normalisation (the compiled kernel's methods); the
    other methods need its selection (`select_image`)."""
    if layers is not None or heads is not None:
        w16 = select_layers_heads(xr.DataArray(w16, dims=_ROW_DIMS), layers, heads).values
    value = values_of(img)
    mask = kind_mask(value("token_kind"), IMAGE_PATCH_KINDS)  # [key] image keys (`image_key_mask`)
    idx = np.flatnonzero(mask)
    fast_topk = _is_topk_path(method, normalise_mode)
    runs = key_runs(idx), key_runs(np.flatnonzero(~mask))  # image keys, other keys
    attn_sum, row_sum, heads_ent, top_maps = _all_head_stats(w16, runs, k, normalise_mode, fast_topk)
    if fast_topk:
        maps = scatter_np(top_maps, idx, mask.shape[0])  # [occ, key]
    elif method == "rollout":
        maps = np.stack([rollout(img, r, layers=layers, heads=heads).values for r in rows])
    else:
        w = xr.DataArray(fp16_to_fp32(w16), dims=_ROW_DIMS)
        maps = reduce_heads(normalise(w, img, normalise_mode), img, method=method, k=k).values
    on_image = np.where(mask, maps, -np.inf)  # [occ, key]
    peak, best = on_image.argmax(-1), on_image.max(-1)  # [occ]
    has_peak = np.isfinite(best) & (best > 0)
    kind = value("token_kind")[peak]
    key_box = value("patch_box")  # [key, box]
    box = np.where(has_peak[:, None], key_box[peak], np.nan)  # [occ, 4]
    # The maps and the patch boxes (what `grid_boxes` places) onto the tile grid in one call: ~0.3 ms less per image.
    placed, _ = place_on_grid(np.concatenate([maps, np.asarray(key_box.T, np.float32)]), img, "tiles")
    grid, cell_boxes = placed[: len(rows)], np.moveaxis(placed[len(rows) :], 0, -1)  # [occ, r, c], [r, c, box]
    positions = value("query_position")[rows]
    texts = value("token_text")
    return {
        "query": np.asarray(rows, np.int32),
        "position": positions.astype(np.int32),
        "token": np.array([str(texts[p]) for p in positions], dtype=object),
        "image_share": np.where(row_sum > 0, attn_sum / np.where(row_sum > 0, row_sum, 1), 0).mean((1, 2)),
        "entropy": heads_ent.mean((1, 2)).astype(np.float32),
        "map_entropy": entropy_np(take_keys(maps, runs[0])),
        "peak_key": np.where(has_peak, peak, -1).astype(np.int32),
        "peak_view": np.array([_view_name(k) if p else "" for k, p in zip(kind, has_peak)], dtype=object),
        "peak_row": np.where(has_peak, value("patch_row")[peak], -1).astype(np.int16),
        "peak_col": np.where(has_peak, value("patch_col")[peak], -1).astype(np.int16),
        **{f"peak_{c}": box[:, i].astype(np.float32) for i, c in enumerate(BOX_CORNERS)},
        "peak_value": np.where(has_peak, best, np.nan).astype(np.float32),
        "density": resample_density(grid, cell_boxes, grid_size),  # [occ, y, x]
    }


def _all_head_stats(w16: np.ndarray, runs: tuple[list[slice], list[slice]], k: int, normalise_mode: str, topk: bool):
    """`_head_stats` of every occurrence: the compiled kernel for the top-k map when it is there
    and the values are finite and non-negative, else numpy."""
    fused = fused_kernel() if topk else None
    stats = fused.head_stats(w16, *runs, k, normalise_mode == "image") if fused else None
    if stats is not None:
        return stats
    # One occurrence at a time: ~1 MB fp32 temporaries (30 x 9 x 832) instead of ~8 MB ones for 8
    # occurrences, which cost ~1.5x the CPU (fresh pages, cache misses; measured).
    stats = [_head_stats(w16[i : i + 1], runs, k, normalise_mode, topk) for i in range(len(w16))]
    return tuple(np.concatenate([st[j] for st in stats]) if topk or j < 3 else None for j in range(4))


def fused_kernel():
    """`attnstore.analysis.fused`, or None: numba is not installed, or ATTNSTORE_KERNELS=numpy.
    Imported on first use: numba's import and the kernel's load from numba's cache cost ~0.6 s
    (compiling it without the cache, ~4-5 s)."""
    if os.environ.get("ATTNSTORE_KERNELS", "").lower() == "numpy":
        return None
    try:
        from attnstore.analysis import fused
    except ModuleNotFoundError as err:
        if err.name != "numba":
            raise
        return None
    return fused


def _head_stats(w16: np.ndarray, runs: tuple[list[slice], list[slice]], k: int, normalise_mode: str, topk: bool):
    """Image-key sums, row sums, entropies  # each [occ, layer, head]; and the entropy-weighted top-k
    map on the image keys  # [occ, n] (None unless `topk`), from rows  # [occ, layer, head, key] float16
    and the runs of image keys and of the other keys (`key_runs`)."""
    # Gather the image keys on the 2-byte values, then convert only those (shared by every summary).
    a = fp16_to_fp32(take_keys(w16, runs[0]))  # [occ, layer, head, n]
    attn_sum = a.sum(-1)  # [occ, layer, head]
    row_sum = attn_sum + fp16_to_fp32(take_keys(w16, runs[1])).sum(-1)
    heads_ent = entropy_np(a, attn_sum)
    if not topk:
        return attn_sum, row_sum, heads_ent, None
    # Same kernel as reduce_heads, reusing the sums and entropies: "image" renormalisation
    # only changes attn_sum (top-k renormalisation and entropy are scale-free).
    sums = attn_sum if normalise_mode == "raw" else (attn_sum > 0).astype(np.float32)
    return attn_sum, row_sum, heads_ent, entropy_topk_np(a, k, attn_sum=sums, ent=heads_ent)


def _view_name(kind: int) -> str:
    return "global" if kind == TokenKind.IMAGE_GLOBAL else "tile"


def _image_summary(img: ImageVariables, image: int, token: str, opts: dict, reader=None) -> dict | None:
    """Columns for every occurrence of `token` in one image (None if it does not occur). `img`: the
    image's selection (`select_image`), or its variables as arrays (`scan.BatchArrays.image`), whose
    rows `reader` (the store's `AttentionReader`) then reads."""
    rows = token_occurrences(img, token)
    if not rows:
        return None
    value = values_of(img)
    if reader is None:
        w16 = read_rows_fp16(img, rows)  # [occ, layer, head, key]
    else:
        w16 = reader.read_rows(image, rows)[..., : value("token_kind").shape[0]]  # the image's keys
    n = len(rows)
    return {
        "image": np.full(n, image, np.int32),
        "image_name": np.array([str(value("image_name"))] * n, dtype=object),
        "occurrence_index": np.arange(n, dtype=np.int32),
        "tile_rows": np.full(n, int(value("tile_rows")), np.int16),
        "tile_cols": np.full(n, int(value("tile_cols")), np.int16),
        **_summarise(img, w16, rows, **opts),
    }


_SMALL_VARS = (
    "query_position",
    "token_text",
    "token_kind",
    "patch_row",
    "patch_col",
    "patch_box",
    "n_query",
    "n_key",
    "image_name",
    "tile_rows",
    "tile_cols",
    "grid_rows",
    "grid_cols",
)  # what `_image_summary` reads besides attention: preloaded batch by batch


def aggregate_token(
    ds: xr.Dataset,
    token: str,
    method: str = "entropy_topk",
    layers=None,
    heads=None,
    k: int = 10,
    normalise_mode: str = "raw",
    grid_size: int = AGGREGATE_GRID,
    images: list[int] | None = None,
    num_workers: int = 2,
    batch_size: int = 32,
    on_image=None,
) -> xr.Dataset:
    """Every occurrence of a token across a store: one row per (image, occurrence) + the mean map.

    Streams (`attnstore.analysis.scan`): images are processed as dask tasks (threads,
    `num_workers`) in batches of `batch_size`, each task reading only its image's token rows
    (one chunk per row), so memory stays bounded whatever the store size. Only complete images
    (of `images`, if given) are used.

    Returns
    -------
    xr.Dataset with per-occurrence variables over `occurrence` (image, image_name,
    occurrence_index, query, position, token, image_share, entropy, map_entropy, peak_*,
    tile_rows, tile_cols) and `mean_map` / `count` [y, x]: the mean of the per-occurrence
    density maps on a common grid_size x grid_size grid over the normalised image (tile
    views only; 1 = uniform attention over the image, see `resample_density`).
    """
    METHODS.check(method)
    opts = dict(method=method, layers=layers, heads=heads, k=k, normalise_mode=normalise_mode, grid_size=grid_size)
    todo = image_list(ds, images)
    # The compiled kernel's methods need only numpy: images as arrays, rows read by the store's reader.
    reader = reader_of(ds) if _is_topk_path(method, normalise_mode) else None
    summary = functools.partial(_image_summary, token=token, opts=opts, reader=reader)
    parts, total, count = [], np.zeros((grid_size, grid_size)), np.zeros((grid_size, grid_size))
    arrays = reader is not None
    batches = scan_batches(ds, summary, todo, num_workers, batch_size, "aggregate", _SMALL_VARS, arrays)
    for results in batches:
        for result in filter(None, results):
            dens = result.pop("density")
            total += np.nansum(dens, axis=0)
            count += np.isfinite(dens).sum(0)
            parts.append(result)
        if on_image:
            on_image(len(results))
    if not parts:
        raise TokenNotFoundError(f"token '{token}' occurs in none of the {len(todo)} complete images")
    table = xr.Dataset({name: ("occurrence", np.concatenate([p[name] for p in parts])) for name in parts[0]})
    mean = np.where(count > 0, total / np.where(count > 0, count, 1), np.nan).astype(np.float32)
    centres = (np.arange(grid_size) + 0.5) / grid_size
    return (
        table.assign(
            mean_map=(("y", "x"), mean, {"long_name": "mean attention density (1 = uniform over the image)"}),
            count=(("y", "x"), count.astype(np.int32)),
        )
        .assign_coords(y=centres, x=centres)
        .assign_attrs(
            token=token,
            method=method,
            k=k,
            normalise=normalise_mode,
            layers=str(layers),
            heads=str(heads),
            grid=f"{grid_size}x{grid_size} normalised image grid; tile maps resampled by patch_box, / cell area",
        )
    )


WHOLE_DATASET_FORMATS = (".nc", ".zarr")  # hold an xr.Dataset as it is (tables need one file per set of dims)


def save_whole(result: xr.Dataset, path: Path) -> list[Path]:
    """Write a Dataset whole as .nc or .zarr; returns the files written."""
    if path.suffix.lower() == ".nc":
        result.to_netcdf(path)
    else:
        with warnings.catch_warnings():  # zarr notes that consolidated metadata is not in the v3 spec yet
            warnings.simplefilter("ignore")
            result.to_zarr(path, mode="w", zarr_format=3, consolidated=True)
    return [path]


def save_aggregate(result: xr.Dataset, path: str | Path) -> list[Path]:
    """Write an `aggregate_token` result: .csv / .parquet (table + `<stem>_mean_map` beside it),
    .nc or .zarr (one Dataset). Returns the files written."""
    path = Path(path)
    suffix = check_aggregate_output(path)
    if suffix in WHOLE_DATASET_FORMATS:
        return save_whole(result, path)
    table = result.drop_vars(["mean_map", "count", "x", "y"]).to_dataframe()
    mean = result["mean_map"].to_pandas()  # rows = y, columns = x
    mean_path = path.with_name(f"{path.stem}_mean_map{suffix}")
    if suffix == ".csv":
        table.to_csv(path)
        mean.to_csv(mean_path)
    else:
        table.to_parquet(path)
        mean.columns = [f"{c:.6g}" for c in mean.columns]
        mean.to_parquet(mean_path)
    return [path, mean_path]


def check_aggregate_output(path: str | Path) -> str:
    """The output's format (suffix), after checking it can be written here (before any work is done)."""
    suffix = check_output_file(path, "out", AGGREGATE_FORMATS)
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise InvalidArgument(
            "out", "ends in .parquet, which needs pyarrow (pip install pyarrow); or use .csv/.nc/.zarr"
        )
    if suffix == ".nc" and not any(importlib.util.find_spec(m) for m in ("netCDF4", "h5netcdf", "scipy")):
        raise InvalidArgument("out", "ends in .nc, which needs netCDF4, h5netcdf or scipy (pip install h5netcdf)")
    return suffix
