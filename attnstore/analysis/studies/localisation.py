"""Localisation heads (Kang et al., CVPR 2025, arXiv 2503.06287, "Your Large Vision-Language Model
Only Needs A Few Attention Heads For Visual Grounding"): heads whose last-prompt-token attention is
both large on the image (criterion 1) and concentrated in one spatial blob (criterion 2)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from attnstore.analysis.grid import patch_grid
from attnstore.analysis.keys import image_key_mask
from attnstore.analysis.studies import plots
from attnstore.analysis.studies.base import names_of, query_rows, read_rows_fp32, register, scan, stack
from attnstore.analysis.studies.stats import elbow_index, spatial_entropy
from attnstore.errors import InvalidArgument
from attnstore.schema import KEY

GROUNDING_VARS = ("object_box", "object_label")  # per-image object boxes, when the store has them


def binarise(grid: np.ndarray, threshold: str | float = "mean") -> np.ndarray:
    """Foreground cells of attention maps  # [..., r, c] (NaN = no token) -> bool.

    "mean": cells above the map's mean over its cells (the paper's rule; scale-free, no parameter);
    a number q in (0, 1]: cells >= q x the map's maximum. All-zero maps have no foreground.
    """
    valid = np.isfinite(grid)
    g = np.where(valid, grid, 0.0)
    n = valid.sum((-2, -1), keepdims=True)
    if threshold == "mean":
        cut = g.sum((-2, -1), keepdims=True) / np.maximum(n, 1)
        return valid & (g > cut)
    q = float(threshold)
    top = g.max((-2, -1), keepdims=True)
    return valid & (g >= q * top) & (top > 0)


def _check_threshold(threshold) -> str | float:
    if threshold == "mean":
        return threshold
    try:
        q = float(threshold)
    except (TypeError, ValueError):
        q = float("nan")
    if not 0 < q <= 1:
        raise InvalidArgument("threshold", f"must be 'mean' or a fraction of the maximum in (0, 1], not {threshold!r}")
    return q


@register(
    "localisation",
    "localisation heads: last prompt token's image attention (elbow) and spatial entropy of its map",
    plot=plots.localisation,
    label="localisation heads",
)
def localisation_heads(
    ds: xr.Dataset,
    threshold: str | float = "mean",
    connectivity: int = 8,
    view: str = "tiles",
    top: int = 10,
    images=None,
    num_workers: int = 2,
    batch_size: int = 32,
) -> xr.Dataset:
    """Both criteria of Kang et al. for every image, layer and head, and the heads they select.

    Per image (the last prompt token's row, whose prediction starts the answer):
    `image_sum` [image, layer, head] = its attention on the image-patch keys (criterion 1);
    `spatial_entropy` = -sum p_i log p_i over the connected components of the binarised map on
    the `view` grid, p_i = component size / foreground size (criterion 2); `components`.

    Over the dataset: `mean_image_sum` [layer, head]; `above_elbow` = heads whose mean image_sum
    is above the elbow of its sorted curve; `frequency` = the fraction of images in which the head
    is among the `top` lowest-entropy heads above the elbow; `head_rank` (1 = most often selected).

    Parameters
    ----------
    threshold : "mean" (cells above the map's mean) or a fraction of the map's maximum.
    connectivity : 4 or 8 neighbours.
    view : "tiles" (the stitched tile grid) or "global" (the thumbnail's grid).
    """
    threshold = _check_threshold(threshold)
    if connectivity not in (4, 8):
        raise InvalidArgument("connectivity", f"must be 4 or 8, not {connectivity}")
    if view not in ("tiles", "global"):
        raise InvalidArgument("view", f"must be tiles or global, not {view!r}")
    if top < 1:
        raise InvalidArgument("top", f"must be at least 1, not {top}")
    n_layers, n_heads = ds.sizes["layer"], ds.sizes["head"]

    def per_image(img: xr.Dataset, image: int) -> dict | None:
        rows = query_rows(img, "last_prompt")
        if not len(rows):
            return None
        w = read_rows_fp32(img, rows)[0]  # [layer, head, key]
        image_sum = w @ image_key_mask(img).values.astype(np.float32)  # [layer, head]
        grid = patch_grid(xr.DataArray(w, dims=("layer", "head", KEY)), img, view).values  # [layer, head, r, c]
        entropy, count = spatial_entropy(binarise(grid, threshold), connectivity)
        return {
            "image": np.array([image]),
            "image_sum": image_sum[None],
            "entropy": entropy[None],
            "components": count[None],
        }

    parts = scan(ds, per_image, images, num_workers, batch_size, name="localisation")
    empty = np.zeros((0, n_layers, n_heads))
    image = stack(parts, "image", np.zeros(0, int))
    image_sum = stack(parts, "image_sum", empty).astype(np.float32)
    entropy = stack(parts, "entropy", empty).astype(np.float32)
    dims = ("image", "layer", "head")
    out = xr.Dataset(
        {
            "image_sum": (dims, image_sum, {"long_name": "last prompt token's attention on the image (criterion 1)"}),
            "spatial_entropy": (dims, entropy, {"long_name": "entropy over connected components (criterion 2)"}),
            "components": (dims, stack(parts, "components", empty).astype(np.int32)),
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
            "view": view,
            "top": top,
            "reference": "Kang et al. 2025, arXiv 2503.06287",
        },
    )
    return out.merge(select_heads(image_sum, entropy, top)).merge(grounding_join(ds, out))


def select_heads(image_sum: np.ndarray, entropy: np.ndarray, top: int) -> xr.Dataset:
    """The dataset-level selection  # [image, layer, head] -> [layer, head] variables."""
    n_img, n_layers, n_heads = image_sum.shape
    mean = image_sum.mean(0) if n_img else np.zeros((n_layers, n_heads), np.float32)
    flat = mean.reshape(-1)
    order = np.argsort(-flat, kind="stable")
    above = np.zeros(flat.size, bool)
    above[order[: elbow_index(flat[order]) + 1]] = True
    # Per image: the `top` lowest-entropy heads among those above the elbow (NaN entropy = no image map).
    ent = np.where(above[None] & np.isfinite(entropy.reshape(n_img, -1)), entropy.reshape(n_img, -1), np.inf)
    k = min(top, int(above.sum()))
    picked = np.zeros(ent.shape, bool)
    if k and n_img:
        lowest = np.argsort(ent, axis=1, kind="stable")[:, :k]
        np.put_along_axis(picked, lowest, True, axis=1)
        picked &= np.isfinite(ent)
    frequency = picked.mean(0) if n_img else np.zeros(flat.size)
    rank = np.empty(flat.size, np.int32)
    rank[np.lexsort((-flat, -frequency))] = np.arange(1, flat.size + 1)  # ties: larger image attention first
    shape, dims = (n_layers, n_heads), ("layer", "head")
    return xr.Dataset(
        {
            "mean_image_sum": (dims, mean.astype(np.float32)),
            "above_elbow": (dims, above.reshape(shape)),
            "frequency": (dims, frequency.reshape(shape).astype(np.float32)),
            "head_rank": (dims, rank.reshape(shape)),
        }
    )


def grounding_join(ds: xr.Dataset, result: xr.Dataset) -> xr.Dataset:
    """Hook: the grounding scores of the selected heads' maps against the store's object boxes.

    Stores do not carry object boxes yet (`GROUNDING_VARS`); when they do, this joins a per image
    x head score (e.g. the fraction of the binarised map inside the box, or the pointing game) from
    the library's grounding metrics. Until then it adds nothing, whatever the store holds.
    """
    return xr.Dataset()
