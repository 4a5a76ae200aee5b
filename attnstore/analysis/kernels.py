"""Numpy kernels behind the reductions: fast fp16 -> fp32, k-th largest, entropy, entropy-weighted top-k.

Plain arrays in, plain arrays out (the xarray layer is in `reduce`, `keys` and `aggregate`).
"""

from __future__ import annotations

import numpy as np


def fp16_to_fp32(a: np.ndarray) -> np.ndarray:
    """Exact float16 -> float32, ~10x faster than numpy's `astype` (measured: astype dominated aggregates).

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


def mean_fp32(a: np.ndarray) -> np.ndarray:
    """The mean over axis 0 as float32  # [row, ...] float16 -> [...]: equal to fp16_to_fp32(a).mean(0)
    (numpy sums axis 0 row by row too), converting one row at a time: no [row, ...] float32
    temporary, whose fresh pages cost more than the sums (8 x 30 x 9 x 884: 0.9 -> 0.7 ms, measured)."""
    if len(a) == 0:
        return fp16_to_fp32(a).mean(0)  # numpy's NaN (and warning) for no rows
    total = np.zeros(a.shape[1:], np.float32)
    for row in a:
        total += fp16_to_fp32(row)
    total /= np.float32(len(a))
    return total


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


def entropy_np(a: np.ndarray, total: np.ndarray | None = None) -> np.ndarray:
    """Normalised entropy (0..1) over the last axis of non-negative weights; 0 for zero rows or N <= 1.

    a : # [..., n] float32; total : its sum over the last axis, if already known.
    """
    n = a.shape[-1]
    total = a.sum(-1) if total is None else total
    if n <= 1:
        return np.zeros(total.shape, np.float32)
    safe = np.where(total > 0, total, 1.0)
    # H = log S - sum(a log a) / S: no per-weight division. 0 log 0 = 0 via log(max(a, tiny)): a zero
    # weight multiplies a finite log. (`np.log(..., where=a > 0)` takes numpy's masked, non-SIMD loop:
    # 6.5x slower, measured at 30 x 9 x 830.)
    log_a = np.maximum(a, np.finfo(np.float32).tiny, dtype=np.result_type(a, np.float32))
    np.log(log_a, out=log_a)
    alog = np.einsum("...n,...n->...", a, log_a)
    h = (np.log(safe) - alog / safe) / np.log(n)
    return np.where(total > 0, np.clip(h, 0.0, 1.0), 0.0).astype(np.float32)


def image_share_np(w: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fraction of each row on the masked keys  # [..., key] -> [...]; 0 for zero rows."""
    total = w.sum(-1)
    on_image = w @ mask.astype(w.dtype)  # a matrix-vector product: no masked copy
    return np.where(total > 0, on_image / np.where(total > 0, total, 1.0), 0.0).astype(np.float32)


def entropy_topk_np(
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
    ent = entropy_np(a, attn_sum) if ent is None else ent
    weight = attn_sum * (1.0 - ent)  # 0 for heads without image attention
    # Threshold at the k-th largest value; ties at the threshold are all kept (deterministic).
    top = a * (a >= kth_largest(a, k)[..., None])
    top_sum = top.sum(-1)
    scale = np.where(top_sum > 0, weight / np.where(top_sum > 0, top_sum, 1.0), 0.0)
    combined = np.einsum("...lhn,...lh->...n", top, scale.astype(np.float32))
    total = combined.sum(-1, keepdims=True)
    return np.where(total > 0, combined / np.where(total > 0, total, 1.0), 0.0).astype(np.float32)


def key_runs(idx: np.ndarray) -> list[slice]:
    """Sorted key indices as runs of consecutive keys (image patches come in blocks)."""
    idx = np.asarray(idx)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts, stops = idx[np.r_[0, breaks]], idx[np.r_[breaks - 1, idx.size - 1]] + 1
    return [slice(int(a), int(b)) for a, b in zip(starts, stops)]


def take_keys(a: np.ndarray, runs: list[slice]) -> np.ndarray:
    """`np.take(a, idx, axis=-1)` for the keys of `runs`: block copies, ~5x faster (8x on rows cut
    from a reader's buffer: np.take gathers a strided view slowly; measured)."""
    if not runs:
        return a[..., :0].copy()
    return np.concatenate([a[..., run] for run in runs], axis=-1)


def scatter_np(values: np.ndarray, idx: np.ndarray, n_key: int) -> np.ndarray:
    """Values on keys `idx` -> every key (0 elsewhere)  # [..., m] -> [..., n_key]."""
    out = np.zeros(values.shape[:-1] + (n_key,), np.float32)
    out[..., idx] = values
    return out
