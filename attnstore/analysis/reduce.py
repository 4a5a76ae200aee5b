"""Reductions of attention rows: per-head statistics (image share, entropy), the map methods that
combine layers and heads into one map (a registry: `METHODS`), rollout and reverse attention.

Nothing here loops over layers or heads in Python (attention rollout is a product over layers and
so is sequential over layers, with every head and key vectorised).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from attnstore.analysis.kernels import entropy_np, entropy_topk_np, image_share_np, key_runs, scatter_np, take_keys
from attnstore.analysis.keys import image_key_mask
from attnstore.analysis.registry import Registry
from attnstore.analysis.select import as_indexer, select_layers_heads
from attnstore.errors import InvalidArgument
from attnstore.schema import KEY, QUERY

METHODS = Registry("method")  # map methods: layers x heads -> one map


def image_share(weights: xr.DataArray, img: xr.Dataset) -> xr.DataArray:
    """Fraction of each row on image-patch keys (tiles + global)  # [..., key] -> [...]; 0 for zero rows."""
    mask = image_key_mask(img).values
    return xr.apply_ufunc(
        image_share_np, weights, kwargs={"mask": mask}, input_core_dims=[[KEY]], dask="parallelized",
        output_dtypes=[np.float32],
    )  # fmt: skip


def entropy(weights: xr.DataArray, img: xr.Dataset, keys: str = "all") -> xr.DataArray:
    """Normalised entropy (0..1) of each row's distribution over image keys  # [..., key] -> [...].

    The image-key weights are renormalised to sum 1 and the entropy divided by log N
    (N = number of image keys). All-zero rows give 0.
    """
    runs = key_runs(np.flatnonzero(image_key_mask(img, keys).values))
    return xr.apply_ufunc(
        lambda w: entropy_np(take_keys(w, runs)), weights, input_core_dims=[[KEY]], dask="parallelized",
        output_dtypes=[np.float32],
    )  # fmt: skip


def entropy_topk(weights: xr.DataArray, img: xr.Dataset, k: int = 10, keys: str = "all") -> xr.DataArray:
    """The seed's entropy-weighted top-k map  # [..., layer, head, key] -> [..., key].

    For each layer/head: a = the token's weights on the N image keys; keep the k largest
    (all ties at the k-th value), renormalise them to sum 1; weight = sum(a) x (1 - H / log N)
    with H the entropy of a / sum(a). The map is the weighted sum over layers and heads,
    normalised to sum 1. Heads without image attention get weight 0 (never NaN); k > N
    keeps every key. Non-image keys are 0.
    """
    mask = image_key_mask(img, keys).values
    idx = np.flatnonzero(mask)
    runs = key_runs(idx)
    return xr.apply_ufunc(
        lambda w: scatter_np(entropy_topk_np(take_keys(w, runs), k), idx, mask.shape[0]),
        weights.transpose(..., "layer", "head", KEY),
        input_core_dims=[["layer", "head", KEY]],
        output_core_dims=[[KEY]],
        dask="parallelized",
        output_dtypes=[np.float32],
        dask_gufunc_kwargs={"allow_rechunk": True},  # layer/head/key are core dims: one chunk each
    )


def reduce_heads(
    weights: xr.DataArray,
    img: xr.Dataset,
    method: str = "mean",
    layers=None,
    heads=None,
    k: int = 10,
    keys: str = "all",
) -> xr.DataArray:
    """Combine layers and heads into one map  # [..., layer, head, key] -> [..., key].

    Parameters
    ----------
    method : "mean", "max", "entropy_topk" (the seed's, see `entropy_topk`) or "rollout"
        (attention rollout from the row given by `weights`' `query` coord, see `rollout`).
    layers, heads : int, slice, list or None (= all).
    k : top-k for "entropy_topk".
    keys : image keys used by "entropy_topk": "all", "tiles" or "global".
    """
    return METHODS[method].func(weights, img, layers=layers, heads=heads, k=k, keys=keys)


# Each method: fn(weights [..., layer, head, key], img, *, layers, heads, k, keys) -> [..., key].


@METHODS.register("mean", "mean over the selected layers and heads")
def _mean(weights, img, *, layers, heads, k, keys):
    return select_layers_heads(weights, layers, heads).mean(("layer", "head"))


@METHODS.register("max", "max over the selected layers and heads")
def _max(weights, img, *, layers, heads, k, keys):
    return select_layers_heads(weights, layers, heads).max(("layer", "head"))


@METHODS.register(
    "entropy_topk", "top-k per head, weighted by image share x (1 - entropy)", label="entropy-weighted top-k"
)
def _entropy_topk(weights, img, *, layers, heads, k, keys):
    return entropy_topk(select_layers_heads(weights, layers, heads), img, k=k, keys=keys)


@METHODS.register("rollout", "attention rollout through the selected layers (head mean)")
def _rollout(weights, img, *, layers, heads, k, keys):
    if QUERY not in weights.coords:
        raise InvalidArgument(
            "method", "rollout needs the query row: pass weights from token_weights or call rollout()"
        )
    return rollout(img, int(weights[QUERY]), layers=layers, heads=heads)


def rollout(img: xr.Dataset, query: int, layers=None, heads=None, residual: float = 0.5) -> xr.DataArray:
    """Attention rollout (Abnar & Zuidema 2020) of one query row  # -> [key].

    R = prod over layers (last first) of (residual I + (1 - residual) A_l), A_l the head mean
    (over the selected heads); the result is row `query` of R.

    Limitation: a store keeps only the query rows it was extracted with (text rows by
    default), so rows of image/special positions are unknown. They are taken as identity
    (the token's representation passes through the layer unchanged). With `--queries all`
    every row is stored and the rollout is exact.
    """
    att = select_layers_heads(img["attention"], layers, heads)  # [layer, head, query, key]
    a = np.asarray(att.mean("head").values, np.float32)  # [layer, query, key]
    positions = np.asarray(img["query_position"].values)
    n_key = img.sizes[KEY]
    v = np.zeros(n_key, np.float32)
    v[positions[query]] = 1.0
    for layer_rows in a[::-1]:  # sequential by nature: a product of matrices, last layer first
        mixed = v.copy()  # identity rows for positions that are not stored
        mixed[positions] = 0.0
        mixed += v[positions] @ layer_rows
        v = residual * v + (1.0 - residual) * mixed
    return xr.DataArray(v, dims=(KEY,), attrs={"method": "rollout", "exact": bool(positions.size == n_key)})


def reverse_attention(img: xr.Dataset, keys, layers=None, heads=None, method: str = "mean") -> xr.DataArray:
    """How much each query token attends to the given key position(s)  # -> [query].

    Sums the attention over `keys` (int, slice or list of key indices), then reduces over
    the selected layers and heads with `method` ("mean" or "max").
    """
    if method not in ("mean", "max"):
        raise InvalidArgument("method", f"of reverse attention must be mean or max, not {method!r}")
    att = select_layers_heads(img["attention"], layers, heads)  # [layer, head, query, key]
    if isinstance(keys, slice):
        att = att.isel({KEY: keys})
    else:  # read the span with a basic slice, then pick in memory (a list index on a store is slow)
        idx = np.asarray(as_indexer(keys)) % att.sizes[KEY]
        att = att.isel({KEY: slice(int(idx.min()), int(idx.max()) + 1)}).load().isel({KEY: idx - idx.min()})
    summed = att.astype(np.float32).sum(KEY)
    return getattr(summed, method)(("layer", "head"))
