"""What every dataset-level analysis shares: the `ANALYSES` registry (and each one's plot), which
query rows an analysis reads, and the batched scan over a store's images.

The scan follows `aggregate_token`: images in batches, the batch's small variables preloaded in one
multi-chunk read per variable, one dask task per image (threads), each reading only the rows it
needs (one stored chunk per row). Per-image results are plain column dicts, concatenated once.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import xarray as xr

from attnstore.analysis.aggregate import _preload
from attnstore.analysis.kernels import fp16_to_fp32
from attnstore.analysis.registry import Registry
from attnstore.analysis.select import read_rows_fp16, select_image
from attnstore.errors import InvalidArgument
from attnstore.schema import TokenKind

ANALYSES = Registry("analysis")  # name -> fn(ds, **options) -> xr.Dataset (a tidy table)
PLOTS: dict[str, Callable] = {}  # name -> fn(result: xr.Dataset) -> matplotlib Figure

QUERY_SETS = ("generated", "prompt", "text", "last_prompt")


def register(name: str, summary: str, plot: Callable, label: str | None = None) -> Callable[[Callable], Callable]:
    """Register a dataset-level analysis and its plot (`ANALYSES`, `PLOTS`)."""

    def add(func: Callable) -> Callable:
        ANALYSES.register(name, summary, label)(func)
        PLOTS[name] = plot
        return func

    return add


def query_rows(img: xr.Dataset, queries: str) -> np.ndarray:
    """Stored query rows of one image  # [n] int: "generated" (answer tokens), "prompt" (every stored
    row before the answer: prompt text and template specials), "text" (every stored row) or
    "last_prompt" (the last prompt row: the token whose next-token prediction starts the answer)."""
    if queries not in QUERY_SETS:
        raise InvalidArgument("queries", f"must be one of {', '.join(QUERY_SETS)}, not {queries!r}")
    positions = np.asarray(img["query_position"].values)
    generated = np.asarray(img["token_kind"].values)[positions] == int(TokenKind.GENERATED)
    if queries == "generated":
        return np.flatnonzero(generated)
    if queries == "prompt":
        return np.flatnonzero(~generated)
    if queries == "last_prompt":
        return np.flatnonzero(~generated)[-1:]
    return np.arange(positions.size)


def read_rows_fp32(img: xr.Dataset, rows: np.ndarray) -> np.ndarray:
    """Rows as float32  # [row, layer, head, key]; an empty selection gives 0 rows."""
    if len(rows) == 0:
        att = img["attention"]
        return np.zeros((0, att.sizes["layer"], att.sizes["head"], att.sizes["key"]), np.float32)
    return fp16_to_fp32(read_rows_fp16(img, [int(r) for r in rows]))


def image_list(ds: xr.Dataset, images=None) -> list[int]:
    """Complete images (all of them, or those among `images`) in store order."""
    complete = np.asarray(ds["complete"].values).astype(bool)
    if images is None:
        return [int(i) for i in np.flatnonzero(complete)]
    n = ds.sizes["image"]
    picked = [int(i) for i in images]
    if any(not 0 <= i < n for i in picked):
        raise InvalidArgument("images", f"{picked[:8]} is outside 0-{n - 1} (the store has {n} images)")
    return [i for i in picked if complete[i]]


ROW_VARS = ("query_position", "token_kind", "n_query", "n_key")  # what finding the rows of `queries` needs
TEXT_VARS = (*ROW_VARS, "token_text")
GRID_VARS = (*ROW_VARS, "patch_tile", "patch_row", "patch_col", "tile_rows", "tile_cols", "grid_rows", "grid_cols",
             "global_rows", "global_cols")  # fmt: skip


def scan(
    ds: xr.Dataset,
    per_image: Callable[[xr.Dataset, int], dict | None],
    images=None,
    num_workers: int = 2,
    batch_size: int = 32,
    name: str = "study",
    variables: tuple[str, ...] = ROW_VARS,
) -> list[dict]:
    """`per_image(img, image)` over the complete images, as dask tasks on threads, batch by batch.

    `img` is `select_image` of the image with the small `variables` loaded (one read per variable
    for the whole batch; the next batch's are read while this one computes); the returned column
    dicts (None = nothing to report) come back in image order.
    """
    import dask

    if num_workers < 1 or batch_size < 1:
        raise InvalidArgument("num_workers", "and batch_size must be at least 1")
    todo = image_list(ds, images)
    batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]

    def one(sub: xr.Dataset, local: int, image: int) -> dict | None:
        return per_image(select_image(sub, local), image)

    task = dask.delayed(one, name=f"attnstore-{name}", pure=False)  # named: ds is never hashed
    parts: list[dict] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="attnstore-preload") as preload:
        upcoming = preload.submit(_preload, ds, batches[0], variables) if batches else None
        for n, batch in enumerate(batches):
            lo, sub = upcoming.result()
            if n + 1 < len(batches):
                upcoming = preload.submit(_preload, ds, batches[n + 1], variables)
            calls = [task(sub, i - lo, i, dask_key_name=f"{name}-image-{i}") for i in batch]
            parts += [p for p in dask.compute(*calls, scheduler="threads", num_workers=num_workers) if p is not None]
    return parts


def stack(parts: list[dict], key: str, empty: np.ndarray) -> np.ndarray:
    """Concatenate one column of the per-image parts (`empty` when there are none)."""
    return np.concatenate([p[key] for p in parts]) if parts else empty


def names_of(ds: xr.Dataset, images: np.ndarray) -> np.ndarray:
    """Image names of image indices  # [n] str (object)."""
    names = ds.attn.cached("names", lambda: [str(n) for n in ds["image_name"].values])
    return np.array([names[int(i)] for i in images], dtype=object)
