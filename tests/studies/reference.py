"""Plain-loop references (one image, layer, head, row and key at a time) for tests/studies."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

IMAGE_KINDS = (2, 3)  # image_tile, image_global
GROUPS = {"prompt": (1,), "image": (2, 3), "generated": (5,), "special": (6, 4)}


def image_arrays(ds, i: int) -> dict:
    """The valid extents of image i, read plainly (float64 attention)."""
    nq, nk = int(ds["n_query"].values[i]), int(ds["n_key"].values[i])
    return {
        "att": ds["attention"].values[i, :, :, :nq, :nk].astype(np.float64),  # [layer, head, query, key]
        "qpos": ds["query_position"].values[i, :nq],
        "kind": ds["token_kind"].values[i, :nk],
        "text": [str(t) for t in ds["token_text"].values[i, :nk]],
        "row": ds["patch_row"].values[i, :nk],
        "col": ds["patch_col"].values[i, :nk],
        "grid": (int(ds["grid_rows"].values[i]), int(ds["grid_cols"].values[i])),
    }


def generated_rows(a: dict) -> list[int]:
    return [r for r, p in enumerate(a["qpos"]) if a["kind"][p] == 5]


def last_prompt_row(a: dict) -> int | None:
    rows = [r for r, p in enumerate(a["qpos"]) if a["kind"][p] != 5]
    return rows[-1] if rows else None


def image_keys(a: dict) -> list[int]:
    return [k for k, kind in enumerate(a["kind"]) if kind in IMAGE_KINDS]


def components(mask: np.ndarray, connectivity: int, weights: np.ndarray | None = None) -> list[float]:
    """Sizes (cells, or sums of `weights`) of the connected components of a 2-D mask, by breadth-first search."""
    steps = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    if connectivity == 8:
        steps += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    seen = np.zeros(mask.shape, bool)
    sizes = []
    for y in range(mask.shape[0]):
        for x in range(mask.shape[1]):
            if not mask[y, x] or seen[y, x]:
                continue
            seen[y, x] = True
            queue, size = deque([(y, x)]), 0
            while queue:
                cy, cx = queue.popleft()
                size += 1 if weights is None else weights[cy, cx]
                for dy, dx in steps:
                    ny, nx = cy + dy, cx + dx
                    if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
            sizes.append(size)
    return sizes


def spatial_entropy(mask: np.ndarray, connectivity: int, weights: np.ndarray | None = None) -> float:
    sizes = components(mask, connectivity, weights)
    total = sum(sizes)
    if total == 0:
        return math.nan
    return -sum(s / total * math.log(s / total) for s in sizes if s > 0)


def auroc(scores: list[float], positive: list[bool]) -> float:
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    if not pos or not neg:
        return math.nan
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def jsd(p: list[float], q: list[float]) -> float:
    sp, sq = sum(p), sum(q)
    if sp <= 0 or sq <= 0:
        return math.nan
    p = [x / sp for x in p]
    q = [x / sq for x in q]
    out = 0.0
    for a, b in zip(p, q):
        m = (a + b) / 2
        out += 0.5 * (a * math.log2(a / m) if a > 0 else 0) + 0.5 * (b * math.log2(b / m) if b > 0 else 0)
    return out
