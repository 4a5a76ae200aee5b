"""Localisation heads (Kang et al., CVPR 2025, arXiv 2503.06287, "Your Large Vision-Language Model
Only Needs A Few Attention Heads For Visual Grounding"): heads whose last-prompt-token attention is
both large on the image (criterion 1) and concentrated in one spatial blob (criterion 2)."""

from __future__ import annotations

import threading

import numpy as np
import xarray as xr

from attnstore.analysis.grid import patch_grid
from attnstore.analysis.kernels import fp16_to_fp32, key_runs, take_keys
from attnstore.analysis.keys import image_key_mask
from attnstore.analysis.scan import GRID_VARS, scan
from attnstore.analysis.select import read_rows_fp16, select_image
from attnstore.analysis.studies import plots
from attnstore.analysis.studies.base import Option, names_of, query_rows, register, stack
from attnstore.analysis.studies.stats import elbow_index, spatial_entropy
from attnstore.errors import InvalidArgument
from attnstore.schema import KEY

THRESHOLDS = ("mean", "2mean")  # or a fraction of the map's maximum
WEIGHTS = ("size", "mass")


def binarise(grid: np.ndarray, threshold: str | float = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Foreground cells of attention maps and their excess over the cut  # [..., r, c] (NaN = no token)
    -> (bool, float).

    "mean": cells above the map's mean over its cells; "2mean": above twice the mean (the
    authors' released code); a number q in (0, 1]: cells >= q x the map's maximum. All-zero maps
    have no foreground. The excess (value - cut on foreground cells, else 0) is what "mass"
    weighting sums per component.
    """
    valid = np.isfinite(grid)
    g = np.where(valid, grid, 0.0)
    if threshold in THRESHOLDS:
        mean = g.sum((-2, -1), keepdims=True) / np.maximum(valid.sum((-2, -1), keepdims=True), 1)
        cut = mean * (2.0 if threshold == "2mean" else 1.0)
        mask = valid & (g > cut)
    else:
        top = g.max((-2, -1), keepdims=True, initial=0.0)
        cut = float(threshold) * top
        mask = valid & (g >= cut) & (top > 0)
    return mask, np.where(mask, g - cut, 0.0)


def _check_threshold(threshold) -> str | float:
    if threshold in THRESHOLDS:
        return threshold
    try:
        q = float(threshold)
    except (TypeError, ValueError):
        q = float("nan")
    if not 0 < q <= 1:
        raise InvalidArgument(
            "threshold", f"must be mean, 2mean or a fraction of the maximum in (0, 1], not {threshold!r}"
        )
    return q


@register(
    "localisation",
    "localisation heads: last prompt token's image attention (elbow) and spatial entropy of its map",
    plot=plots.localisation,
    label="localisation heads",
    options=(
        Option("threshold", str, "mean | 2mean | a fraction of the map's maximum"),
        Option("connectivity", int, "4 or 8 neighbours"),
        Option("weight", str, "components weighed by size | mass"),
        Option("view", str, "tiles | global grid"),
        Option("top", int, "lowest-entropy heads kept per image"),
    ),
)
def localisation_heads(
    ds: xr.Dataset,
    threshold: str | float = "mean",
    connectivity: int = 8,
    weight: str = "size",
    view: str = "tiles",
    top: int = 10,
    all_heads: bool = False,
    cache_mb: float = 1024,
    images=None,
    num_workers: int = 2,
    batch_size: int = 32,
) -> xr.Dataset:
    """Both criteria of Kang et al. for every image, layer and head, and the heads they select.

    Per image (the last prompt token's row, whose prediction starts the answer):
    `image_sum` [image, layer, head] = its attention on the image-patch keys (criterion 1);
    `spatial_entropy` = -sum p_i log p_i over the connected components of the binarised map on
    the `view` grid, p_i = component size / foreground size (criterion 2); `components`.
    As in the paper, criterion 2 is computed for the heads above the elbow only (NaN elsewhere),
    unless `all_heads`.

    Over the dataset: `mean_image_sum` [layer, head]; `above_elbow` = heads whose mean image_sum
    is above the elbow of its sorted curve; `frequency` = the fraction of images in which the head
    is among the `top` lowest-entropy heads above the elbow; `head_rank` (1 = most often selected).

    Two passes, one read: the first reads each image's row (criterion 1) and keeps its image-key
    weights as stored (float16, ~0.6 MB an image at 30 x 9 heads) while they fit in `cache_mb`;
    the second computes criterion 2 from them (images beyond the cache are read again).

    Parameters
    ----------
    threshold : "mean" (cells above the map's mean), "2mean" (above twice the mean) or a fraction
        of the map's maximum.
    connectivity : 4 or 8 neighbours.
    weight : what p_i measures: "size" (cells of the component) or "mass" (its attention above the
        cut, as the authors' released code).
    view : "tiles" (the stitched tile grid) or "global" (the thumbnail's grid).
    """
    threshold = _check_threshold(threshold)
    if connectivity not in (4, 8):
        raise InvalidArgument("connectivity", f"must be 4 or 8, not {connectivity}")
    if weight not in WEIGHTS:
        raise InvalidArgument("weight", f"must be size or mass, not {weight!r}")
    if view not in ("tiles", "global"):
        raise InvalidArgument("view", f"must be tiles or global, not {view!r}")
    if top < 1:
        raise InvalidArgument("top", f"must be at least 1, not {top}")
    n_layers, n_heads = ds.sizes["layer"], ds.sizes["head"]
    budget = _Budget(cache_mb * 1e6)

    def first_pass(img: xr.Dataset, image: int) -> dict | None:
        found = image_key_rows(img, view)
        if found is None:
            return None
        a16, cells = found
        return {
            "image": np.array([image]),
            "image_sum": fp16_to_fp32(a16).sum(-1)[None],
            "cells": cells,
            "a16": a16 if budget.take(a16.nbytes) else None,
        }

    parts = scan(ds, first_pass, images, num_workers, batch_size, name="localisation", variables=GRID_VARS)
    empty = np.zeros((0, n_layers, n_heads))
    image = stack(parts, "image", np.zeros(0, int))
    image_sum = stack(parts, "image_sum", empty).astype(np.float32)
    heads = select_by_elbow(image_sum)
    chosen = np.ones(n_layers * n_heads, bool) if all_heads else heads["above_elbow"].values.reshape(-1)
    entropy = np.full((len(parts), n_layers * n_heads), np.nan, np.float32)
    count = np.zeros((len(parts), n_layers * n_heads), np.int32)

    def second_pass(lo: int, hi: int) -> None:  # criterion 2 for the chosen heads of images lo..hi-1
        for n in range(lo, hi):
            part = parts[n]
            a16 = (
                part["a16"]
                if part["a16"] is not None
                else image_key_rows(select_image(ds, int(part["image"][0])), view)[0]
            )
            grid = cell_grid(fp16_to_fp32(a16.reshape(n_layers * n_heads, -1)[chosen]), part["cells"])  # [chosen, r, c]
            mask, excess = binarise(grid, threshold)
            weights = excess if weight == "mass" else None
            entropy[n, chosen], count[n, chosen] = spatial_entropy(mask, connectivity, weights=weights)
            part["a16"] = None  # free as we go

    import dask

    task = dask.delayed(second_pass, name="attnstore-localisation-2", pure=False)
    step = max(1, min(batch_size, -(-len(parts) // (2 * num_workers))))  # a few tasks per worker
    calls = [
        task(lo, min(lo + step, len(parts)), dask_key_name=f"localisation-2-{lo}") for lo in range(0, len(parts), step)
    ]
    dask.compute(*calls, scheduler="threads", num_workers=num_workers)
    entropy, count = entropy.reshape(-1, n_layers, n_heads), count.reshape(-1, n_layers, n_heads)
    dims = ("image", "layer", "head")
    out = xr.Dataset(
        {
            "image_sum": (dims, image_sum, {"long_name": "last prompt token's attention on the image (criterion 1)"}),
            "spatial_entropy": (dims, entropy, {"long_name": "entropy over connected components (criterion 2)"}),
            "components": (dims, count),
        },
        coords={
            "image": image,
            "image_name": ("image", names_of(ds, image)),
            "layer": np.arange(n_layers),
            "head": np.arange(n_heads),
        },
        attrs={
            "analysis": "localisation",
            "threshold": str(threshold),
            "connectivity": connectivity,
            "weight": weight,
            "view": view,
            "top": top,
            "criterion_2_for": "every head" if all_heads else "heads above the elbow",
            "reference": "Kang et al. 2025, arXiv 2503.06287",
        },
    )
    return out.merge(heads).merge(select_by_entropy(entropy, heads["above_elbow"].values, image_sum, top))


class _Budget:
    """Bytes the first pass may keep for the second (thread-safe)."""

    def __init__(self, limit: float):
        self.left, self._lock = limit, threading.Lock()

    def take(self, n: int) -> bool:
        with self._lock:
            if n > self.left:
                return False
            self.left -= n
            return True


def image_key_rows(img: xr.Dataset, view: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The last prompt row on the image-patch keys, as stored  # [layer, head, image key] float16, and
    the `view` grid as positions among those keys  # [r, c] int (-1 = no token); None without the row."""
    rows = query_rows(img, "last_prompt")
    if not len(rows):
        return None
    keys = np.flatnonzero(image_key_mask(img).values)
    a16 = take_keys(read_rows_fp16(img, [int(rows[0])])[0], key_runs(keys))
    at = np.full(img.sizes[KEY], np.nan, np.float32)
    at[keys] = np.arange(keys.size)
    cells = patch_grid(xr.DataArray(at, dims=(KEY,)), img, view).values  # the grid, by the store's geometry
    return a16, np.where(np.isfinite(cells), cells, -1).astype(np.int64)


def cell_grid(values: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Values on image keys -> their grid  # [maps, image key], [r, c] -> [maps, r, c]; NaN = no token."""
    return (
        np.where(cells >= 0, values[:, np.maximum(cells, 0)], np.nan)
        if values.shape[1]
        else np.full((values.shape[0], *cells.shape), np.nan, np.float32)
    )


def select_by_elbow(image_sum: np.ndarray) -> xr.Dataset:
    """Criterion 1 over the dataset  # [image, layer, head] -> mean and above-the-elbow [layer, head]."""
    n_img, n_layers, n_heads = image_sum.shape
    mean = image_sum.mean(0) if n_img else np.zeros((n_layers, n_heads), np.float32)
    flat = mean.reshape(-1)
    order = np.argsort(-flat, kind="stable")
    above = np.zeros(flat.size, bool)
    above[order[: elbow_index(flat[order]) + 1]] = True
    dims = ("layer", "head")
    return xr.Dataset(
        {"mean_image_sum": (dims, mean.astype(np.float32)), "above_elbow": (dims, above.reshape(mean.shape))}
    )


def select_by_entropy(entropy: np.ndarray, above: np.ndarray, image_sum: np.ndarray, top: int) -> xr.Dataset:
    """Criterion 2: per image, the `top` lowest-entropy heads above the elbow; their frequency and rank."""
    n_img, n_layers, n_heads = entropy.shape
    flat_above = above.reshape(-1)
    ent = entropy.reshape(n_img, -1)
    ent = np.where(flat_above[None] & np.isfinite(ent), ent, np.inf)  # NaN: no image map in this image
    k = min(top, int(flat_above.sum()))
    picked = np.zeros(ent.shape, bool)
    if k and n_img:
        np.put_along_axis(picked, np.argsort(ent, axis=1, kind="stable")[:, :k], True, axis=1)
        picked &= np.isfinite(ent)
    frequency = picked.mean(0) if n_img else np.zeros(ent.shape[1])
    mean = image_sum.mean(0).reshape(-1) if n_img else np.zeros(ent.shape[1])
    rank = np.empty(ent.shape[1], np.int32)
    rank[np.lexsort((-mean, -frequency))] = np.arange(1, ent.shape[1] + 1)  # ties: larger image attention first
    dims, shape = ("layer", "head"), (n_layers, n_heads)
    return xr.Dataset(
        {"frequency": (dims, frequency.reshape(shape).astype(np.float32)), "head_rank": (dims, rank.reshape(shape))}
    )
