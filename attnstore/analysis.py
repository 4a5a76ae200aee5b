"""Analysis of stored attention: pure xarray -> xarray functions, vectorised, dask-friendly.

Typical use (one token of one image)::

    img = select_image(ds, 0)                       # valid extents, no image dim
    q = find_token(img, "jacket")                   # query row of the first "Ġjacket"
    w = token_weights(img, q)                       # [layer, head, key] float32
    m = reduce_heads(normalise(w, img, "no_sinks"), img, "entropy_topk", k=10)  # [key]
    grid = patch_grid(m, img, view="tiles")         # [grid_row, grid_col], NaN where no token

or the same through the Dataset accessor registered on import::

    ds.attn.heatmap(token="jacket", image=0, layers=slice(0, 30), method="entropy_topk", k=10)

Nothing here loops over layers or heads in Python (attention rollout is a product over
layers and so is sequential over layers, with every head and key vectorised). Geometry
always comes from the store's per-image variables (token_kind, patch_row/col, grid sizes).
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import xarray as xr

from attnstore.errors import AttnstoreError
from attnstore.schema import BOX_CORNERS, IMAGE_PATCH_KINDS, KEY, QUERY, TokenKind, kind_mask

HEADS_METHODS = ("mean", "max", "entropy_topk", "rollout")
NORMALISE_MODES = ("raw", "image", "no_sinks")
VIEWS = ("tiles", "global", "tile")
IMAGE_KEY_SETS = ("all", "tiles", "global")  # which image-patch keys count as "the image"
BPE_MARKERS = "ĠĊ▁"  # GPT-2 byte-level space/newline, SentencePiece space
# Small per-image variables that `select_image` loads at once (cheap; reused by every call).
_SMALL_VARS = ("query_position", "token_id", "token_text", "token_kind", "patch_tile", "patch_row", "patch_col",
               "patch_box")


class TokenNotFoundError(AttnstoreError):
    """The requested token text does not occur among the stored query rows."""


# -- selection -------------------------------------------------------------------------------


_EXTENT_VARS = ("n_query", "n_key", "image_height", "image_width")
_extents_cache: dict[int, dict[str, np.ndarray]] = {}  # id(ds) -> extents; entries die with the Dataset


def image_extents(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Per-image valid extents (n_query, n_key, image_height, image_width)  # each [image].

    Read once per opened Dataset and cached (they are a few bytes per image), so selecting an
    image costs no extra reads. Reopen the store to see images written after opening.
    """
    cached = _extents_cache.get(id(ds))
    if cached is None:
        cached = {name: np.asarray(ds[name].values) for name in _EXTENT_VARS if name in ds}
        _extents_cache[id(ds)] = cached
        weakref.finalize(ds, _extents_cache.pop, id(ds), None)  # Datasets are unhashable: key by id
    return cached


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
        raise AttnstoreError(f"image {image} out of range: the store has {n_images} images")
    ext = image_extents(ds)
    sel = {"image": image, QUERY: slice(0, int(ext["n_query"][image])), KEY: slice(0, int(ext["n_key"][image]))}
    if "pixels" in ds and "image_height" in ext:
        sel.update(pixel_y=slice(0, int(ext["image_height"][image])), pixel_x=slice(0, int(ext["image_width"][image])))
    img = ds.isel(sel)
    lazy = [img[name].variable for name in _SMALL_VARS if name in img and not img[name].variable._in_memory]
    # In place (a DataArray shares its Dataset's Variable); the reads run concurrently in zarr's event loop.
    list(_io_pool().map(lambda var: var.load(), lazy))
    return img


@functools.cache
def _io_pool() -> ThreadPoolExecutor:
    """Threads that only wait on store reads (several small variables at once)."""
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="attnstore-read")


def token_weights(img: xr.Dataset, query: int) -> xr.DataArray:
    """Attention of one query row over every key, every layer and head.

    Reads one stored chunk (`attention[layer, head, query, :n_key]`).

    Returns
    -------
    xr.DataArray  # [layer, head, key] float32, with a scalar `query` coord (the row index)
    """
    n = img.sizes[QUERY]
    if not -n <= query < n:
        raise AttnstoreError(f"query row {query} out of range: this image has {n} stored rows")
    row = img["attention"].isel({QUERY: query})
    if _is_dask(row):
        return row.astype(np.float32).assign_coords({QUERY: query % n})
    return row.copy(data=fp16_to_fp32(row.values)).assign_coords({QUERY: query % n})  # reads one chunk


def query_tokens(img: xr.Dataset) -> np.ndarray:
    """Raw token text of each stored query row  # [query] str."""
    positions = img["query_position"].values
    texts = np.asarray(img["token_text"].values)[positions]
    return np.array([str(t) for t in texts], dtype=str)  # StringDType -> fixed width (numpy 2 needs the loop)


def strip_bpe(token: str) -> str:
    """Token text without BPE space/newline markers or surrounding whitespace."""
    return token.strip(BPE_MARKERS).strip()


def token_occurrences(img: xr.Dataset, text: str) -> list[int]:
    """Query rows whose token matches `text`: BPE-aware exact match, else case-insensitive."""
    tokens = query_tokens(img)
    wanted = strip_bpe(text)
    stripped = np.array([strip_bpe(t) for t in tokens], dtype=str)
    rows = np.flatnonzero((stripped == wanted) | (tokens == text))
    if rows.size == 0:
        rows = np.flatnonzero(np.char.lower(stripped) == wanted.lower())
    return [int(r) for r in rows]


def find_token(img: xr.Dataset, text: str, occurrence: int = 0) -> int:
    """Query row index of a token given by its text.

    Parameters
    ----------
    img : one image (`select_image`).
    text : e.g. "jacket"; matches "Ġjacket" / "▁jacket"; case-insensitive if no exact match.
    occurrence : which match (0 = first, -1 = last).

    Raises
    ------
    TokenNotFoundError : with the closest token texts when there is no match.
    """
    rows = token_occurrences(img, text)
    if not rows:
        raise TokenNotFoundError(_not_found_message(img, text))
    if not -len(rows) <= occurrence < len(rows):
        raise TokenNotFoundError(
            f"token '{text}' occurs {len(rows)} time(s) (rows {rows[:10]}); occurrence {occurrence} does not exist"
        )
    return rows[occurrence]


def _not_found_message(img: xr.Dataset, text: str) -> str:
    words = sorted({strip_bpe(t) for t in query_tokens(img)} - {""})
    lowered = {w.lower(): w for w in words}
    close = [lowered[w] for w in difflib.get_close_matches(strip_bpe(text).lower(), list(lowered), n=5, cutoff=0.5)]
    hint = f"; close matches: {', '.join(repr(c) for c in close)}" if close else ""
    return f"token '{text}' not found among the {len(words)} distinct text tokens of this image{hint}"


# -- key sets ---------------------------------------------------------------------------------


def image_key_mask(img: xr.Dataset, keys: str = "all") -> xr.DataArray:
    """Boolean mask of image-patch keys  # [key]: "all" (tiles + global), "tiles" or "global"."""
    kinds = {"all": IMAGE_PATCH_KINDS, "tiles": (TokenKind.IMAGE_TILE,), "global": (TokenKind.IMAGE_GLOBAL,)}
    if keys not in kinds:
        raise AttnstoreError(f"image keys must be one of {', '.join(IMAGE_KEY_SETS)}, not '{keys}'")
    kind = img["token_kind"]
    return xr.DataArray(kind_mask(np.asarray(kind.values), kinds[keys]), dims=kind.dims)


def sink_keys(
    weights: xr.DataArray,
    img: xr.Dataset,
    factor: float = 20.0,
    bos: bool = True,
    first_image: bool = True,
) -> xr.DataArray:
    """Attention-sink keys  # [key] bool.

    Sinks are keys that soak up attention whatever the query (DESIGN.md §4): the first
    sequence position (BOS), the first image-patch token, and any image key whose median
    weight across the non-key dims (layers, heads, ...) exceeds `factor` x the median over
    image keys. The median (not the mean) makes a head that legitimately focuses on one
    patch not count: a sink is large in most heads.
    """
    image = image_key_mask(img).values
    sink = np.zeros(image.shape, bool)
    if bos and sink.size:
        sink[0] = True
    if first_image and image.any():
        sink[np.argmax(image)] = True
    vals = np.asarray(weights.transpose(..., KEY).values)  # [..., key]
    rows = np.ascontiguousarray(vals.reshape(-1, vals.shape[-1]).T)  # [key, row]
    mid = rows.shape[1] // 2
    typical = np.partition(rows, mid, axis=1)[:, mid]  # [key] (upper) median; partition is the fast path
    if image.any():
        baseline = np.median(typical[image])
        sink |= image & (typical > factor * max(baseline, 1e-12))
    return xr.DataArray(sink, dims=(KEY,))


# -- normalisation / summaries ------------------------------------------------------------


def _renormalise(weights: xr.DataArray, keep: xr.DataArray) -> xr.DataArray:
    """Zero the keys outside `keep`, rescale each row to sum 1 (all-zero rows stay 0)."""
    kept = weights.where(keep, 0.0)
    total = kept.sum(KEY)
    return (kept / total.where(total > 0, 1.0)).astype(weights.dtype)


def normalise(weights: xr.DataArray, img: xr.Dataset, mode: str = "raw", sink_factor: float = 20.0) -> xr.DataArray:
    """Renormalise attention rows  # [..., key] -> [..., key].

    Modes
    -----
    raw : as stored (rows sum to 1 over every key, text included).
    image : only image-patch keys, rescaled to sum 1 per row; other keys 0.
    no_sinks : as "image", after setting the sink keys (`sink_keys`) to 0.
    """
    if mode == "raw":
        return weights
    if mode == "image":
        return _renormalise(weights, image_key_mask(img))
    if mode == "no_sinks":
        return _renormalise(weights, image_key_mask(img) & ~sink_keys(weights, img, factor=sink_factor))
    raise AttnstoreError(f"normalisation must be one of {', '.join(NORMALISE_MODES)}, not '{mode}'")


def image_share(weights: xr.DataArray, img: xr.Dataset) -> xr.DataArray:
    """Fraction of each row on image-patch keys (tiles + global)  # [..., key] -> [...]; 0 for zero rows."""
    mask = image_key_mask(img).values
    return xr.apply_ufunc(
        _image_share_np, weights, kwargs={"mask": mask}, input_core_dims=[[KEY]], dask="parallelized",
        output_dtypes=[np.float32],
    )  # fmt: skip


def _entropy_np(a: np.ndarray, total: np.ndarray | None = None) -> np.ndarray:
    """Normalised entropy (0..1) over the last axis of non-negative weights; 0 for zero rows or N <= 1.

    a : # [..., n] float32; total : its sum over the last axis, if already known.
    """
    n = a.shape[-1]
    total = a.sum(-1) if total is None else total
    if n <= 1:
        return np.zeros(total.shape, np.float32)
    safe = np.where(total > 0, total, 1.0)
    # H = log S - sum(a log a) / S: no per-weight division; log only where a > 0 (0 log 0 = 0).
    log_a = np.log(a, out=np.zeros_like(a), where=a > 0)
    alog = np.einsum("...n,...n->...", a, log_a)
    h = (np.log(safe) - alog / safe) / np.log(n)
    return np.where(total > 0, np.clip(h, 0.0, 1.0), 0.0).astype(np.float32)


def _image_share_np(w: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fraction of each row on the masked keys  # [..., key] -> [...]; 0 for zero rows."""
    total = w.sum(-1)
    on_image = w @ mask.astype(w.dtype)  # a matrix-vector product: no masked copy
    return np.where(total > 0, on_image / np.where(total > 0, total, 1.0), 0.0).astype(np.float32)


def entropy(weights: xr.DataArray, img: xr.Dataset, keys: str = "all") -> xr.DataArray:
    """Normalised entropy (0..1) of each row's distribution over image keys  # [..., key] -> [...].

    The image-key weights are renormalised to sum 1 and the entropy divided by log N
    (N = number of image keys). All-zero rows give 0.
    """
    idx = np.flatnonzero(image_key_mask(img, keys).values)
    return xr.apply_ufunc(
        lambda w: _entropy_np(np.take(w, idx, axis=-1)), weights, input_core_dims=[[KEY]], dask="parallelized",
        output_dtypes=[np.float32],
    )  # fmt: skip


# -- reductions over layers and heads -----------------------------------------------------


def _as_indexer(sel) -> slice | list[int]:
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
        idx = _as_indexer(sel)
        n = out.sizes[dim]
        if isinstance(idx, list) and any(not -n <= i < n for i in idx):
            raise AttnstoreError(f"{dim}s {idx} out of range: the store has {n} {dim}s (0-{n - 1})")
        out = out.isel({dim: idx})
        if out.sizes[dim] == 0:
            raise AttnstoreError(f"the {dim} selection {sel} is empty: the store has {n} {dim}s (0-{n - 1})")
    return out


def fp16_to_fp32(a: np.ndarray) -> np.ndarray:
    """Exact float16 -> float32, ~10x faster than numpy's `astype` (DESIGN.md §4: astype is slow).

    Moves the exponent/mantissa bits into place and rescales by 2**112, which also maps
    subnormals exactly. Arrays holding negative values, inf or NaN take numpy's path.
    """
    a = np.asarray(a)
    if a.dtype != np.float16:
        return a if a.dtype == np.float32 else a.astype(np.float32)
    h = a.view(np.uint16)
    if a.size == 0 or h.max() >= 0x7C00:  # negative, inf or NaN somewhere: numpy's path
        return a.astype(np.float32)
    bits = h.astype(np.uint32)  # finite non-negative (attention): bits are exponent + mantissa only
    bits <<= 13
    out = bits.view(np.float32)
    out *= np.float32(2.0**112)
    return out


def kth_largest(a: np.ndarray, k: int, groups: int = 8) -> np.ndarray:
    """The k-th largest value along the last axis  # [..., n] -> [...] (k > n: the smallest).

    Exact, via group maxima: the columns are split into n / groups groups of `groups`
    strided columns; the k groups with the largest maxima hold the row's k largest values
    (any value outside them is <= each of those k maxima), so only k x groups candidates are
    partitioned instead of n (~2.5x faster at n = 832, k = 10).
    """
    n = a.shape[-1]
    k = min(max(int(k), 1), n)
    if k * groups * 2 >= n:
        return np.partition(a, n - k, axis=-1)[..., n - k]
    width = -(-n // groups)
    pad = width * groups - n
    if pad:  # pad with the row minimum: never above the k-th largest of the real values
        a = np.concatenate([a, np.repeat(a.min(-1, keepdims=True), pad, axis=-1)], axis=-1)
    strided = a.reshape(a.shape[:-1] + (groups, width))  # [..., g, width]: group j = columns j, j+width, ...
    group_max = strided.max(-2)  # [..., width]
    best = np.argsort(group_max, axis=-1)[..., width - k :]  # [..., k] groups holding the top k
    lead = a.shape[:-1]
    rows = np.arange(int(np.prod(lead))).reshape(lead)[..., None, None] * (groups * width)
    flat = rows + np.arange(groups)[:, None] * width + best[..., None, :]  # [..., g, k] flat indices
    cand = np.take(a.reshape(-1), flat).reshape(lead + (groups * k,))  # faster than take_along_axis
    m = cand.shape[-1]
    return np.partition(cand, m - k, axis=-1)[..., m - k]


def _entropy_topk_np(
    a: np.ndarray, k: int, attn_sum: np.ndarray | None = None, ent: np.ndarray | None = None
) -> np.ndarray:
    """The seed's entropy-weighted top-k on numpy arrays (see `entropy_topk`).

    a : # [..., layer, head, n] non-negative image-key weights  ->  # [..., n]
    attn_sum, ent : # [..., layer, head] a's sums and normalised entropies, if already known.
    """
    n = a.shape[-1]
    if n == 0:
        return np.zeros(a.shape[:-3] + (n,), np.float32)
    a = fp16_to_fp32(a)
    attn_sum = a.sum(-1) if attn_sum is None else attn_sum  # [..., layer, head]
    ent = _entropy_np(a, attn_sum) if ent is None else ent
    weight = attn_sum * (1.0 - ent)  # 0 for heads without image attention
    # Threshold at the k-th largest value; ties at the threshold are all kept (deterministic).
    top = a * (a >= kth_largest(a, k)[..., None])
    top_sum = top.sum(-1)
    scale = np.where(top_sum > 0, weight / np.where(top_sum > 0, top_sum, 1.0), 0.0)
    combined = np.einsum("...lhn,...lh->...n", top, scale.astype(np.float32))
    total = combined.sum(-1, keepdims=True)
    return np.where(total > 0, combined / np.where(total > 0, total, 1.0), 0.0).astype(np.float32)


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
    return xr.apply_ufunc(
        lambda w: _scatter_np(_entropy_topk_np(np.take(w, idx, axis=-1), k), idx, mask.shape[0]),
        weights.transpose(..., "layer", "head", KEY),
        input_core_dims=[["layer", "head", KEY]],
        output_core_dims=[[KEY]],
        dask="parallelized",
        output_dtypes=[np.float32],
        dask_gufunc_kwargs={"allow_rechunk": True},  # layer/head/key are core dims: one chunk each
    )


def _scatter_np(values: np.ndarray, idx: np.ndarray, n_key: int) -> np.ndarray:
    """Values on keys `idx` -> every key (0 elsewhere)  # [..., m] -> [..., n_key]."""
    out = np.zeros(values.shape[:-1] + (n_key,), np.float32)
    out[..., idx] = values
    return out


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
    if method not in HEADS_METHODS:
        raise AttnstoreError(f"method must be one of {', '.join(HEADS_METHODS)}, not '{method}'")
    if method == "rollout":
        if QUERY not in weights.coords:
            raise AttnstoreError("rollout needs the query row: pass weights from token_weights or call rollout()")
        return rollout(img, int(weights[QUERY]), layers=layers, heads=heads)
    w = select_layers_heads(weights, layers, heads)
    if method == "mean":
        return w.mean(("layer", "head"))
    if method == "max":
        return w.max(("layer", "head"))
    return entropy_topk(w, img, k=k, keys=keys)


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
        raise AttnstoreError(f"reverse attention method must be mean or max, not '{method}'")
    att = select_layers_heads(img["attention"], layers, heads)  # [layer, head, query, key]
    if isinstance(keys, slice):
        att = att.isel({KEY: keys})
    else:  # read the span with a basic slice, then pick in memory (a list index on a store is slow)
        idx = np.asarray(_as_indexer(keys)) % att.sizes[KEY]
        att = att.isel({KEY: slice(int(idx.min()), int(idx.max()) + 1)}).load().isel({KEY: idx - idx.min()})
    summed = att.astype(np.float32).sum(KEY)
    return getattr(summed, method)(("layer", "head"))


# -- image-key views -------------------------------------------------------------------------


def patch_grid(values: xr.DataArray, img: xr.Dataset, view: str = "tiles") -> xr.DataArray:
    """Key values on an image grid, NaN where no token.

    Parameters
    ----------
    values : # [..., key]
    view : "tiles" -> [..., grid_row, grid_col], the stitched tile grid (grid_rows x grid_cols);
        "global" -> [..., global_row, global_col], the global thumbnail's grid;
        "tile" -> [..., tile, sub_row, sub_col], one grid per tile.
    """
    if view not in VIEWS:
        raise AttnstoreError(f"view must be one of {', '.join(VIEWS)}, not '{view}'")
    kind = np.asarray(img["token_kind"].values)
    row, col = np.asarray(img["patch_row"].values), np.asarray(img["patch_col"].values)
    wanted = TokenKind.IMAGE_GLOBAL if view == "global" else TokenKind.IMAGE_TILE
    mask = kind == int(wanted)
    vals = np.asarray(values.transpose(..., KEY).values, np.float32)  # [..., key]
    lead = [d for d in values.dims if d != KEY]
    if view == "global":
        shape, dims = (int(img["global_rows"]), int(img["global_cols"])), ("global_row", "global_col")
        index = (row[mask], col[mask])
    else:
        shape, dims = (int(img["grid_rows"]), int(img["grid_cols"])), ("grid_row", "grid_col")
        index = (row[mask], col[mask])
        if view == "tile":
            tr, tc = int(img["tile_rows"]), int(img["tile_cols"])
            sub = (shape[0] // tr, shape[1] // tc) if tr and tc else (0, 0)
            shape, dims = (tr * tc, *sub), ("tile", "sub_row", "sub_col")
            tile = np.asarray(img["patch_tile"].values)[mask]
            index = (tile, row[mask] % max(sub[0], 1), col[mask] % max(sub[1], 1))
    grid = np.full(vals.shape[:-1] + shape, np.nan, np.float32)
    grid[(..., *index)] = vals[..., mask]
    coords = {d: c for d, c in values.coords.items() if KEY not in values[d].dims}
    return xr.DataArray(grid, dims=(*lead, *dims), coords=coords, attrs={"view": view})


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


# -- helpers ---------------------------------------------------------------------------------


def _is_dask(da: xr.DataArray) -> bool:
    return da.chunks is not None


def parse_range(spec: str | None, n: int, what: str = "layers") -> list[int] | None:
    """'0-29', '3', '0,2,5-7' -> sorted list of indices (None for '' / 'all'); checked against n."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return None
    out: list[int] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError as err:
        raise AttnstoreError(f"--{what} '{spec}' is not a list of numbers or ranges like 0-29 or 0,3,5-7") from err
    bad = [i for i in out if not 0 <= i < n]
    if bad or not out:
        raise AttnstoreError(f"--{what} '{spec}' is outside 0-{n - 1} (the store has {n} {what})")
    return sorted(set(out))


# -- dataset-level aggregates -------------------------------------------------------------------

AGGREGATE_GRID = 32  # side of the common normalised grid the per-occurrence maps are averaged on
AGGREGATE_FORMATS = (".csv", ".parquet", ".nc", ".zarr")


def read_rows_fp16(img: xr.Dataset, rows: list[int]) -> np.ndarray:
    """Several query rows as stored  # -> [occurrence, layer, head, key] float16.

    One basic-slice read per row (a list index on `query` makes zarr decode whole shards),
    issued concurrently: each row is its own chunk.
    """
    att = img["attention"]
    return np.stack(list(_io_pool().map(lambda r: np.asarray(att.isel({QUERY: r}).values), rows)))


def read_rows(img: xr.Dataset, rows: list[int]) -> xr.DataArray:
    """Several query rows  # -> [occurrence, layer, head, key] float32 (see `read_rows_fp16`)."""
    att = img["attention"]
    dims = ("occurrence", *(d for d in att.dims if d != QUERY))
    coords = {d: att[d] for d in ("layer", "head") if d in att.coords}
    return xr.DataArray(fp16_to_fp32(read_rows_fp16(img, rows)), dims=dims, coords=coords)


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
    columns = _summarise(img, rows, method, layers, heads, k, normalise_mode, grid_size)
    density = columns.pop("density")
    return xr.Dataset({name: ("occurrence", v) for name, v in columns.items()}).assign(
        density=(("occurrence", "y", "x"), density)
    )


def _summarise(img, rows, method, layers, heads, k, normalise_mode, grid_size) -> dict[str, np.ndarray]:
    """`summarise_rows` as plain columns (cheap to concatenate across thousands of images)."""
    att = img["attention"]
    w16 = xr.DataArray(read_rows_fp16(img, rows), dims=("occurrence", *(d for d in att.dims if d != QUERY)))
    w16 = select_layers_heads(w16, layers, heads).values  # [occ, layer, head, key] float16
    mask = image_key_mask(img).values
    idx = np.flatnonzero(mask)
    # Gather the image keys on the 2-byte values, then convert only those (shared by every summary).
    a = fp16_to_fp32(np.take(w16, idx, axis=-1))  # [occ, layer, head, n]
    attn_sum = a.sum(-1)  # [occ, layer, head]
    row_sum = attn_sum + fp16_to_fp32(np.take(w16, np.flatnonzero(~mask), axis=-1)).sum(-1)
    heads_ent = _entropy_np(a, attn_sum)
    if method == "entropy_topk" and normalise_mode in ("raw", "image"):
        # Same kernel as reduce_heads, reusing the sums and entropies: "image" renormalisation
        # only changes attn_sum (top-k renormalisation and entropy are scale-free).
        sums = attn_sum if normalise_mode == "raw" else (attn_sum > 0).astype(np.float32)
        maps = _scatter_np(_entropy_topk_np(a, k, attn_sum=sums, ent=heads_ent), idx, mask.shape[0])  # [occ, key]
    elif method == "rollout":
        maps = np.stack([rollout(img, r, layers=layers, heads=heads).values for r in rows])
    else:
        w = xr.DataArray(fp16_to_fp32(w16), dims=("occurrence", "layer", "head", KEY))
        maps = reduce_heads(normalise(w, img, normalise_mode), img, method=method, k=k).values
    on_image = np.where(mask, maps, -np.inf)  # [occ, key]
    peak, best = on_image.argmax(-1), on_image.max(-1)  # [occ]
    has_peak = np.isfinite(best) & (best > 0)
    kind = np.asarray(img["token_kind"].values)[peak]
    box = np.where(has_peak[:, None], np.asarray(img["patch_box"].values)[peak], np.nan)  # [occ, 4]
    # The maps and the patch boxes (what `grid_boxes` places) onto the tile grid in one call: ~0.3 ms less per image.
    boxes_t = np.asarray(img["patch_box"].transpose("box", KEY).values, np.float32)  # [box, key]
    placed = patch_grid(xr.DataArray(np.concatenate([maps, boxes_t]), dims=("occurrence", KEY)), img, "tiles").values
    grid, cell_boxes = placed[: len(rows)], np.moveaxis(placed[len(rows) :], 0, -1)  # [occ, r, c], [r, c, box]
    positions = np.asarray(img["query_position"].values)[rows]
    texts = np.asarray(img["token_text"].values)
    return {
        "query": np.asarray(rows, np.int32),
        "position": positions.astype(np.int32),
        "token": np.array([str(texts[p]) for p in positions], dtype=object),
        "image_share": np.where(row_sum > 0, attn_sum / np.where(row_sum > 0, row_sum, 1), 0).mean((1, 2)),
        "entropy": heads_ent.mean((1, 2)).astype(np.float32),
        "map_entropy": _entropy_np(np.take(maps, idx, axis=-1)),
        "peak_key": np.where(has_peak, peak, -1).astype(np.int32),
        "peak_view": np.array([_view_name(k) if p else "" for k, p in zip(kind, has_peak)], dtype=object),
        "peak_row": np.where(has_peak, np.asarray(img["patch_row"].values)[peak], -1).astype(np.int16),
        "peak_col": np.where(has_peak, np.asarray(img["patch_col"].values)[peak], -1).astype(np.int16),
        **{f"peak_{c}": box[:, i].astype(np.float32) for i, c in enumerate(BOX_CORNERS)},
        "peak_value": np.where(has_peak, best, np.nan).astype(np.float32),
        "density": resample_density(grid, cell_boxes, grid_size),  # [occ, y, x]
    }


def _view_name(kind: int) -> str:
    return "global" if kind == TokenKind.IMAGE_GLOBAL else "tile"


def _image_summary(ds: xr.Dataset, image: int, token: str, opts: dict) -> dict[str, np.ndarray] | None:
    """Columns for every occurrence of `token` in one image (None if it does not occur)."""
    img = select_image(ds, image)
    rows = token_occurrences(img, token)
    if not rows:
        return None
    n = len(rows)
    return {
        "image": np.full(n, image, np.int32),
        "image_name": np.array([str(img["image_name"].values)] * n, dtype=object),
        "occurrence_index": np.arange(n, dtype=np.int32),
        "tile_rows": np.full(n, int(img["tile_rows"]), np.int16),
        "tile_cols": np.full(n, int(img["tile_cols"]), np.int16),
        **_summarise(img, rows, **opts),
    }


# What an aggregate task reads besides attention rows: loaded per batch of images at once.
_PRELOAD_VARS = ("query_position", "token_text", "token_kind", "patch_row", "patch_col", "patch_box", "n_query",
                 "n_key", "image_name", "tile_rows", "tile_cols", "grid_rows", "grid_cols")


def _preload(ds: xr.Dataset, images: list[int]) -> tuple[int, xr.Dataset]:
    """The images lo..hi of a batch with the small variables loaded: one multi-chunk read per
    variable (zarr fetches the chunks concurrently) instead of one read per image and variable."""
    lo, hi = int(min(images)), int(max(images)) + 1
    sub = ds[["attention", *(v for v in _PRELOAD_VARS if v in ds)]].isel(image=slice(lo, hi))
    list(_io_pool().map(lambda name: sub[name].variable.load(), [v for v in _PRELOAD_VARS if v in sub]))
    return lo, sub


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

    Streams: images are processed as dask tasks (threads, `num_workers`) in batches of
    `batch_size`, each task reading only its image's token rows (one chunk per row), so
    memory stays bounded whatever the store size. Only complete images are used.

    Returns
    -------
    xr.Dataset with per-occurrence variables over `occurrence` (image, image_name,
    occurrence_index, query, position, token, image_share, entropy, map_entropy, peak_*,
    tile_rows, tile_cols) and `mean_map` / `count` [y, x]: the mean of the per-occurrence
    density maps on a common grid_size x grid_size grid over the normalised image (tile
    views only; 1 = uniform attention over the image, see `resample_density`).
    """
    import dask

    if method not in HEADS_METHODS:
        raise AttnstoreError(f"method must be one of {', '.join(HEADS_METHODS)}, not '{method}'")
    opts = dict(method=method, layers=layers, heads=heads, k=k, normalise_mode=normalise_mode, grid_size=grid_size)
    todo = list(np.flatnonzero(np.asarray(ds["complete"].values).astype(bool))) if images is None else images
    parts, total, count = [], np.zeros((grid_size, grid_size)), np.zeros((grid_size, grid_size))
    task = dask.delayed(_image_summary, name="attnstore-aggregate", pure=False)  # named: ds is never hashed
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        lo, sub = _preload(ds, batch)
        calls = [task(sub, int(i) - lo, token, opts, dask_key_name=f"aggregate-image-{i}") for i in batch]
        for result in dask.compute(*calls, scheduler="threads", num_workers=num_workers):
            if result is not None:
                result["image"] += lo
                dens = result.pop("density")
                total += np.nansum(dens, axis=0)
                count += np.isfinite(dens).sum(0)
                parts.append(result)
        if on_image:
            on_image(len(batch))
    if not parts:
        raise TokenNotFoundError(f"token '{token}' occurs in none of the {len(todo)} complete images")
    table = xr.Dataset({name: ("occurrence", np.concatenate([p[name] for p in parts])) for name in parts[0]})
    mean = np.where(count > 0, total / np.where(count > 0, count, 1), np.nan).astype(np.float32)
    centres = (np.arange(grid_size) + 0.5) / grid_size
    return table.assign(
        mean_map=(("y", "x"), mean, {"long_name": "mean attention density (1 = uniform over the image)"}),
        count=(("y", "x"), count.astype(np.int32)),
    ).assign_coords(y=centres, x=centres).assign_attrs(
        token=token, method=method, k=k, normalise=normalise_mode, layers=str(layers), heads=str(heads),
        grid=f"{grid_size}x{grid_size} normalised image grid; tile maps resampled by patch_box, divided by cell area",
    )


def save_aggregate(result: xr.Dataset, path: str | Path) -> list[Path]:
    """Write an `aggregate_token` result: .csv / .parquet (table + `<stem>_mean_map` beside it),
    .nc or .zarr (one Dataset). Returns the files written."""
    path = Path(path)
    suffix = check_aggregate_output(path)
    if suffix == ".nc":
        result.to_netcdf(path)
        return [path]
    if suffix == ".zarr":
        with warnings.catch_warnings():  # zarr notes that consolidated metadata is not in the v3 spec yet
            warnings.simplefilter("ignore")
            result.to_zarr(path, mode="w", zarr_format=3, consolidated=True)
        return [path]
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
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in AGGREGATE_FORMATS:
        raise AttnstoreError(f"--out must end in {', '.join(AGGREGATE_FORMATS)}, not '{path.name}'")
    if not path.parent.is_dir():
        raise AttnstoreError(f"--out {path}: folder {path.parent} does not exist")
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise AttnstoreError("writing .parquet needs pyarrow (pip install pyarrow); or use --out with .csv/.nc/.zarr")
    if suffix == ".nc" and not any(importlib.util.find_spec(m) for m in ("netCDF4", "h5netcdf", "scipy")):
        raise AttnstoreError("writing .nc needs netCDF4, h5netcdf or scipy (pip install h5netcdf); or use .csv/.zarr")
    return suffix


# -- the Dataset accessor --------------------------------------------------------------------


@xr.register_dataset_accessor("attn")
class AttnAccessor:
    """`ds.attn`: labelled token heatmaps and summaries on an attnstore Dataset."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def image(self, image: int | str = 0) -> xr.Dataset:
        """One image by index or by `image_name`."""
        return select_image(self._ds, self.image_index(image))

    def image_index(self, image: int | str) -> int:
        if isinstance(image, (int, np.integer)):
            return int(image)
        names = [str(n) for n in self._ds["image_name"].values]
        if image in names:
            return names.index(image)
        if str(image).lstrip("-").isdigit():
            return int(image)
        close = difflib.get_close_matches(str(image), names, n=3)
        raise AttnstoreError(f"no image named '{image}' in the store" + (f"; close: {close}" if close else ""))

    def token(self, token: str | int, image: int | str = 0, occurrence: int = 0) -> xr.DataArray:
        """Weights of one token  # [layer, head, key]; `token` is text or a query row index."""
        img = self.image(image)
        q = token if isinstance(token, (int, np.integer)) else find_token(img, token, occurrence)
        return token_weights(img, int(q))

    def heatmap(
        self,
        token: str | int,
        image: int | str = 0,
        occurrence: int = 0,
        layers=None,
        heads=None,
        method: str = "entropy_topk",
        k: int = 10,
        view: str = "tiles",
        normalise_mode: str = "raw",
    ) -> xr.DataArray:
        """A token's map on an image grid (see `patch_grid`), NaN where no patch token."""
        img = self.image(image)
        q = token if isinstance(token, (int, np.integer)) else find_token(img, token, occurrence)
        w = normalise(token_weights(img, int(q)), img, normalise_mode)
        m = reduce_heads(w, img, method=method, layers=layers, heads=heads, k=k)
        grid = patch_grid(m, img, view=view)
        grid.attrs.update(method=method, k=k, normalise=normalise_mode, query=int(q))
        return grid

    def image_share(self, token: str | int, image: int | str = 0, occurrence: int = 0) -> xr.DataArray:
        """Fraction of the token's attention on image patches  # [layer, head]."""
        img = self.image(image)
        q = token if isinstance(token, (int, np.integer)) else find_token(img, token, occurrence)
        return image_share(token_weights(img, int(q)), img)

    def entropy(self, token: str | int, image: int | str = 0, occurrence: int = 0) -> xr.DataArray:
        """Normalised entropy of the token's image attention  # [layer, head]."""
        img = self.image(image)
        q = token if isinstance(token, (int, np.integer)) else find_token(img, token, occurrence)
        return entropy(token_weights(img, int(q)), img)


__all__ = [
    "AttnAccessor",
    "TokenNotFoundError",
    "entropy",
    "entropy_topk",
    "find_token",
    "grid_boxes",
    "image_key_mask",
    "image_share",
    "normalise",
    "patch_grid",
    "reduce_heads",
    "reverse_attention",
    "rollout",
    "select_image",
    "sink_keys",
    "token_occurrences",
    "token_weights",
]
