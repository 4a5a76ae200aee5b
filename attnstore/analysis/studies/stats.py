"""Numpy kernels of the analyses: AUROC with bootstrap intervals, the elbow of a sorted curve,
connected components and spatial entropy of binarised maps, Jensen-Shannon divergence.

All vectorised over the leading (map / head) axes; the only Python loops are over bootstrap
replicates (in blocks) and over label-propagation sweeps.
"""

from __future__ import annotations

import importlib.util

import numpy as np


# -- AUROC -------------------------------------------------------------------------------------
def _sorted_runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort each column and find its tie runs  # [n, c] -> order, run start, run stop  (each [n, c])."""
    n = values.shape[0]
    order = np.argsort(values, axis=0, kind="stable")
    s = np.take_along_axis(values, order, axis=0)
    idx = np.arange(n)[:, None]
    new_run = np.ones(s.shape, bool)
    new_run[1:] = s[1:] != s[:-1]
    start = np.maximum.accumulate(np.where(new_run, idx, 0), axis=0)
    ends_here = np.ones(s.shape, bool)
    ends_here[:-1] = new_run[1:]
    stop = np.minimum.accumulate(np.where(ends_here, idx + 1, n)[::-1], axis=0)[::-1]
    return order, start, stop


def auroc(values: np.ndarray, positive: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Area under the ROC curve of each column as a score for `positive`  # [n, c] -> [b, c].

    AUROC = P(score of a positive > score of a negative) + P(tie) / 2 (the Mann-Whitney U / n1 n0).
    `weights` # [b, n] are case weights (bootstrap counts); None = one replicate of weight 1.
    NaN where a replicate has no positive or no negative weight.
    """
    values = np.asarray(values, np.float64)
    pos = np.asarray(positive, bool)
    w = np.ones((1, values.shape[0])) if weights is None else np.asarray(weights, np.float64)
    if values.shape[0] == 0:
        return np.full((w.shape[0], values.shape[1]), np.nan)
    order, start, stop = _sorted_runs(values)
    pos_sorted = pos[order]  # [n, c]
    out = np.empty((w.shape[0], values.shape[1]))
    for lo in range(0, w.shape[0], 16):  # blocks of replicates: bounded memory
        wb = w[lo : lo + 16][:, order]  # [b, n, c]
        wneg = np.where(pos_sorted, 0.0, wb)
        cum = np.concatenate([np.zeros((wb.shape[0], 1, wb.shape[2])), np.cumsum(wneg, axis=1)], axis=1)
        below = np.take_along_axis(cum, np.broadcast_to(start, wb.shape), axis=1)
        tied = np.take_along_axis(cum, np.broadcast_to(stop, wb.shape), axis=1) - below
        wpos = np.where(pos_sorted, wb, 0.0)
        n_pos, n_neg = wpos.sum(1), wneg.sum(1)  # [b, c]
        wins = (wpos * (below + 0.5 * tied)).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[lo : lo + 16] = np.where((n_pos > 0) & (n_neg > 0), wins / (n_pos * n_neg), np.nan)
    return out


def cluster_bootstrap_weights(groups: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """Case weights of `n_boot` bootstrap replicates that resample whole groups (images)  # [b, n].

    Rows of one image are not independent (one answer, one picture), so the image is the unit
    that is resampled; each row gets its image's draw count.
    """
    ids, inverse = np.unique(np.asarray(groups), return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(ids.size, np.full(ids.size, 1.0 / ids.size), size=n_boot) if ids.size else None
    return counts[:, inverse].astype(np.float64) if counts is not None else np.zeros((n_boot, 0))


# -- elbow -------------------------------------------------------------------------------------
def elbow_index(sorted_desc: np.ndarray) -> int:
    """Index of the elbow of a descending curve: the point farthest from the chord joining the first
    and the last point, both axes scaled to 0-1 (the max-distance form of Kneedle, Satopaa et al.
    2011; below the chord for the usual convex curve of a few large heads and a long tail). Values
    at indices <= the elbow are "above the elbow". A curve of <= 2 points or a flat one: the end."""
    y = np.asarray(sorted_desc, np.float64)
    n = y.size
    if n <= 2 or y[0] == y[-1]:
        return n - 1
    x = np.linspace(0.0, 1.0, n)
    yn = (y - y[-1]) / (y[0] - y[-1])
    return int(np.argmax(np.abs((1.0 - x) - yn)))  # the chord is y = 1 - x


# -- connected components, spatial entropy ----------------------------------------------------
_NEIGHBOURS = {
    4: ((0, 1), (1, 0), (0, -1), (-1, 0)),
    8: ((0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1)),
}


def label_components(mask: np.ndarray, connectivity: int = 8) -> np.ndarray:
    """Connected components of boolean maps  # [..., r, c] -> [..., r, c] int (0 = background).

    Each foreground cell ends with the smallest flat index (+1) of its component, found by
    min-label propagation over the neighbours with pointer jumping (labels point at cells of
    their own component, so `label = label[label]` shortcuts long chains); every map at once.
    """
    if connectivity not in _NEIGHBOURS:
        raise ValueError(f"connectivity must be 4 or 8, not {connectivity}")
    lead, (r, c) = mask.shape[:-2], mask.shape[-2:]
    m = mask.reshape(int(np.prod(lead)), r, c)
    big = np.iinfo(np.int64).max
    flat = np.arange(m.shape[0] * r * c, dtype=np.int64).reshape(m.shape)
    label = np.where(m, flat, big)
    while True:
        padded = np.pad(label, ((0, 0), (1, 1), (1, 1)), constant_values=big)
        best = label
        for dy, dx in _NEIGHBOURS[connectivity]:  # a fixed 4 or 8 shifts: vectorised over every map
            best = np.minimum(best, padded[:, 1 + dy : 1 + dy + r, 1 + dx : 1 + dx + c])
        best = np.where(m, best, big)
        fg = best < big
        jumped = best.copy()
        jumped[fg] = best.reshape(-1)[best[fg]]  # pointer jumping
        if np.array_equal(jumped, label):
            break
        label = jumped
    out = np.where(m, label - flat[:, :1, :1] + 1, 0)  # per-map labels 1.. (smallest cell index + 1)
    return out.reshape(*lead, r, c)


def component_sizes(
    mask: np.ndarray, connectivity: int = 8, backend: str = "auto", weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of boolean maps  # [maps, r, c] -> (map of each component, its size).

    The size is the number of cells, or the sum of `weights` # [maps, r, c] over the component.
    backend "scipy" labels every map in one C call (`scipy.ndimage.label` on the stack, with a
    structure that never links two maps); "numpy" uses `label_components`; "auto" takes scipy
    when it is installed. Both give the same components (tested).
    """
    if backend == "auto":
        backend = "scipy" if importlib.util.find_spec("scipy") is not None else "numpy"
    cells = mask.shape[-2] * mask.shape[-1]
    if backend == "scipy":
        from scipy import ndimage

        structure = np.zeros((3, 3, 3), bool)
        structure[1] = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
        labels, n = ndimage.label(mask, structure=structure)  # [maps, r, c], numbered in scan order
        flat = labels.reshape(-1)
        sizes = np.bincount(flat, None if weights is None else weights.reshape(-1), minlength=n + 1)[1:]
        last = np.maximum.accumulate(labels.reshape(len(mask), -1).max(1))  # [maps] largest label so far
        return np.searchsorted(last, np.arange(1, n + 1)), sizes  # scan order: map k holds labels up to last[k]
    labels = label_components(mask, connectivity).reshape(len(mask), -1)  # [maps, cells]
    fg = labels > 0
    ids = (np.arange(len(mask))[:, None] * (cells + 1) + labels)[fg]  # component ids, unique across maps
    found, inverse = np.unique(ids, return_inverse=True)
    sizes = np.bincount(inverse, None if weights is None else weights.reshape(len(mask), -1)[fg], len(found))
    return found // (cells + 1), sizes


def spatial_entropy(
    mask: np.ndarray, connectivity: int = 8, backend: str = "auto", weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Spatial entropy of binary maps over their connected components  # [..., r, c] -> ([...], [...]).

    H = -sum_i p_i log p_i with p_i = |C_i| / sum_j |C_j| (natural log), |C| the component's number of
    cells, or its sum of `weights` [..., r, c] when given: 0 for one blob, larger for scattered
    attention. Returns (entropy, number of components); NaN entropy for an empty map.
    """
    lead, (r, c) = mask.shape[:-2], mask.shape[-2:]
    n_maps = int(np.prod(lead))
    if r * c == 0 or n_maps == 0:  # no grid (no image tokens of this view)
        return np.full(lead, np.nan), np.zeros(lead, np.int64)
    w = None if weights is None else weights.reshape(n_maps, r, c)
    map_of, sizes = component_sizes(mask.reshape(n_maps, r, c), connectivity, backend, w)
    total = np.bincount(map_of, weights=sizes, minlength=n_maps)  # foreground (cells or weight) per map
    p = sizes / np.where(total > 0, total, 1.0)[map_of]
    entropy = np.bincount(map_of, weights=-p * np.log(np.where(p > 0, p, 1.0)), minlength=n_maps)
    entropy = np.where(total > 0, entropy, np.nan)
    return entropy.reshape(lead), np.bincount(map_of, minlength=n_maps).reshape(lead)


# -- divergences -------------------------------------------------------------------------------
def _xlogx_sum(a: np.ndarray) -> np.ndarray:
    """sum(a log a) over the last axis, 0 log 0 = 0  # [..., n] -> [...] (one SIMD log, no masked ops)."""
    return np.einsum("...n,...n->...", a, np.log(np.maximum(a, np.float32(1e-30))))


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (bits, 0..1) of non-negative weights over the last axis, each
    renormalised to sum 1  # [..., n] -> [...]; NaN where either has no weight.

    JSD = H(m) - (H(p) + H(q)) / 2 with m = (p + q) / 2; H(x / S) = log S - sum(x log x) / S,
    so p and q are never normalised in memory (three logs per key in all, float32)."""
    p, q = np.asarray(p, np.float32), np.asarray(q, np.float32)
    sp, sq = p.sum(-1), q.sum(-1)
    valid = (sp > 0) & (sq > 0)
    ip, iq = 1.0 / np.where(sp > 0, sp, 1.0), 1.0 / np.where(sq > 0, sq, 1.0)
    m = p * (0.5 * ip)[..., None]
    m += q * (0.5 * iq)[..., None]
    h_p = np.log(np.where(sp > 0, sp, 1.0)) - _xlogx_sum(p) * ip
    h_q = np.log(np.where(sq > 0, sq, 1.0)) - _xlogx_sum(q) * iq
    jsd = (-_xlogx_sum(m) - 0.5 * (h_p + h_q)) / np.log(2.0)
    return np.where(valid, np.clip(jsd, 0.0, 1.0), np.nan)
