"""Two stores (two models, prompts or runs) over the images they share: per layer and head, how
much more one looks at the image, and how differently it spreads its attention over the image."""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from attnstore.analysis.kernels import fp16_to_fp32, key_runs, take_keys
from attnstore.analysis.keys import image_key_mask
from attnstore.analysis.scan import TEXT_VARS, ahead, image_list, preload, scan_batches
from attnstore.analysis.select import read_rows_fp16, select_image
from attnstore.analysis.studies import plots
from attnstore.analysis.studies.base import QUERIES, Option, names_of, query_rows, register, stack
from attnstore.analysis.studies.stats import jensen_shannon
from attnstore.errors import InvalidArgument


def _open(other) -> xr.Dataset:
    if isinstance(other, xr.Dataset):
        return other
    if not other:
        raise InvalidArgument("other", "is missing: give the second store")
    from attnstore.store import open_dataset

    return open_dataset(str(other))


def shared_images(ds: xr.Dataset, other: xr.Dataset) -> dict[int, int]:
    """Complete images of `ds` -> the complete image of `other` with the same image_name."""
    theirs = {str(other["image_name"].values[j]): j for j in image_list(other)}
    return {i: theirs[n] for i in image_list(ds) if (n := str(ds["image_name"].values[i])) in theirs}


def image_rows(img: xr.Dataset, rows: np.ndarray) -> np.ndarray:
    """The rows' weights on image-patch keys  # [row, layer, head, image key] float32 (gathered as stored)."""
    runs = key_runs(np.flatnonzero(image_key_mask(img).values))
    return fp16_to_fp32(take_keys(read_rows_fp16(img, [int(r) for r in rows]), runs))  # 8x np.take's speed here


def matched_rows(img_a: xr.Dataset, img_b: xr.Dataset, queries: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the two images holding the same token at the same position  # ([n], [n]); the rows of
    A are those of `queries`."""
    rows_a = query_rows(img_a, queries)
    pos_a = np.asarray(img_a["query_position"].values)[rows_a]
    pos_b = np.asarray(img_b["query_position"].values)
    row_of_b = {int(p): r for r, p in enumerate(pos_b)}
    text_a, text_b = np.asarray(img_a["token_text"].values), np.asarray(img_b["token_text"].values)
    pairs = [
        (int(r), row_of_b[int(p)])
        for r, p in zip(rows_a, pos_a)
        if int(p) in row_of_b and int(p) < text_b.size and str(text_a[p]) == str(text_b[p])
    ]
    return np.array([a for a, _ in pairs], int), np.array([b for _, b in pairs], int)


@register(
    "compare",
    "two stores over their shared images: image-attention difference per head, Jensen-Shannon divergence per token",
    plot=plots.compare,
    label="compare two stores",
    options=(Option("other", str, "the second store (path or URL)"), QUERIES),
)
def compare_stores(
    ds: xr.Dataset,
    other=None,
    queries: str = "generated",
    jsd_per_head: bool = False,
    images=None,
    num_workers: int = 2,
    batch_size: int = 32,
) -> xr.Dataset:
    """Compare `ds` (A) with `other` (B, a Dataset or a store path) over the images both hold.

    Images are matched by image_name, tokens by sequence position and token text (so two runs
    of one model on the same prompt match everywhere; different prompts match where they agree).

    Returns
    -------
    xr.Dataset: per matched token `share_a`, `share_b`, `share_diff` (= B - A) [row, layer, head]:
    the attention on image-patch keys; `jsd` [row, layer]: Jensen-Shannon divergence (bits, 0-1)
    of the token's two image-attention distributions in each layer (the head mean, renormalised
    over the image keys; NaN when the two images do not have the same image keys, or either has
    no image weight); with `jsd_per_head`, `jsd` [row, layer, head] of each head's distribution
    (9x the logs: slower). `mean_share_diff` [layer, head] and `mean_jsd` over the matched tokens.
    attrs: shared / compared images, matched tokens.
    """
    other = _open(other)
    for dim in ("layer", "head"):
        if ds.sizes[dim] != other.sizes[dim]:
            raise InvalidArgument(
                "other", f"has {other.sizes[dim]} {dim}s, this store {ds.sizes[dim]}: compare per {dim} needs the same"
            )
    pairs = shared_images(ds, other)
    if images is not None:
        wanted = set(image_list(ds, images))
        pairs = {i: j for i, j in pairs.items() if i in wanted}

    batch_b: dict[int, tuple[int, xr.Dataset]] = {}  # A's image -> its B batch (lo, small variables loaded)

    def per_image(img_a: xr.Dataset, image: int) -> dict | None:
        lo, sub = batch_b[image]
        img_b = select_image(sub, pairs[image] - lo)
        rows_a, rows_b = matched_rows(img_a, img_b, queries)
        if not rows_a.size:
            return None
        a, b = image_rows(img_a, rows_a), image_rows(img_b, rows_b)  # [row, layer, head, image key]
        jsd_shape = a.shape[:3] if jsd_per_head else a.shape[:2]
        if a.shape[-1] != b.shape[-1]:  # different image keys: no common support
            jsd = np.full(jsd_shape, np.nan)
        else:  # per head, or the token's distribution in each layer (the head mean)
            jsd = jensen_shannon(a, b) if jsd_per_head else jensen_shannon(a.mean(2), b.mean(2))
        positions = np.asarray(img_a["query_position"].values)[rows_a]
        texts = np.asarray(img_a["token_text"].values)
        return {
            "image": np.full(rows_a.size, image),
            "position": positions.astype(np.int32),
            "token": np.array([str(texts[p]) for p in positions], object),
            "share_a": a.sum(-1),
            "share_b": b.sum(-1),
            "jsd": jsd.astype(np.float32),
        }

    todo = image_list(ds, list(pairs))
    batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
    # One scan over every batch (A's next batch preloads while this one computes), and B's batches
    # preloaded one ahead the same way: each B batch is in `batch_b` before its A batch runs.
    results = scan_batches(ds, per_image, todo, num_workers, batch_size, "compare", TEXT_VARS)
    parts = []
    for batch, (lo, sub) in zip(batches, ahead(lambda b: preload(other, [pairs[i] for i in b], TEXT_VARS), batches)):
        batch_b.update(dict.fromkeys(batch, (lo, sub)))
        parts += [part for part in next(results) if part is not None]
    shape = (0, ds.sizes["layer"], ds.sizes["head"])
    image = stack(parts, "image", np.zeros(0, int))
    share_a = stack(parts, "share_a", np.zeros(shape, np.float32))
    share_b = stack(parts, "share_b", np.zeros(shape, np.float32))
    jsd_dims = ("row", "layer", "head") if jsd_per_head else ("row", "layer")
    jsd = stack(parts, "jsd", np.zeros(shape[: len(jsd_dims)], np.float32))
    dims = ("row", "layer", "head")
    with warnings.catch_warnings():  # all-NaN columns (no image keys): NaN is the answer
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_jsd = np.nanmean(jsd, axis=0) if len(jsd) else np.full(jsd.shape[1:], np.nan)
        mean_diff = (share_b - share_a).mean(0) if len(jsd) else np.full(shape[1:], np.nan)
    return xr.Dataset(
        {
            "share_a": (dims, share_a),
            "share_b": (dims, share_b),
            "share_diff": (dims, share_b - share_a),
            "jsd": (jsd_dims, jsd),
            "mean_share_diff": (("layer", "head"), mean_diff.astype(np.float32)),
            "mean_jsd": (jsd_dims[1:], mean_jsd.astype(np.float32)),
        },
        coords={
            "image": ("row", image),
            "image_name": ("row", names_of(ds, image)),
            "position": ("row", stack(parts, "position", np.zeros(0, np.int32))),
            "token": ("row", stack(parts, "token", np.zeros(0, object))),
            "layer": np.arange(shape[1]),
            "head": np.arange(shape[2]),
        },
        attrs={
            "analysis": "compare",
            "queries": queries,
            "shared_images": len(pairs),
            "compared_images": len(np.unique(image)),
            "matched_tokens": int(image.size),
        },
    )
