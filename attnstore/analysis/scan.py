"""The batched scan over a store's images that every dataset-level computation shares
(`aggregate_token` and the studies of `attnstore.analysis.studies`).

Images go in batches: the batch's small variables are preloaded in one multi-chunk read per
variable (the next batch's while this one computes), then one dask task per image (threads), each
reading only the attention rows it needs (one stored chunk per row). Memory stays bounded by the
batch, whatever the store's size.

A task gets its image as `select_image` gives it (an xarray selection), or, for a hot path that
needs only numpy, as plain arrays cut from the batch's (`BatchArrays`): building an xarray selection
costs ~0.15-0.25 ms per image, a tenth of reading its rows (measured).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import xarray as xr

from attnstore.analysis.select import ImageVariables, require_stored, select_image
from attnstore.errors import InvalidArgument
from attnstore.schema import KEY, QUERY
from attnstore.store.xarray_glue import load_variables

ROW_VARS = ("query_position", "token_kind", "n_query", "n_key")  # what finding query rows needs
TEXT_VARS = (*ROW_VARS, "token_text")
GRID_VARS = (*ROW_VARS, "patch_tile", "patch_row", "patch_col", "tile_rows", "tile_cols", "grid_rows", "grid_cols",
             "global_rows", "global_cols")  # fmt: skip


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


def preload(ds: xr.Dataset, images: list[int], names: tuple[str, ...] = ROW_VARS) -> tuple[int, xr.Dataset]:
    """(lo, the images lo..hi of a batch with the small variables `names` loaded): one multi-chunk
    read per variable (chunks fetched concurrently) instead of one read per image and variable."""
    lo, hi = int(min(images)), int(max(images)) + 1
    sub = ds[["attention", *(v for v in names if v in ds)]].isel(image=slice(lo, hi))
    return lo, load_variables(sub, names)


def ahead(load: Callable, items: list) -> Iterator:
    """`load(item)` for each item in order, the next one loading on a thread while the caller works
    on this one (the reads mostly wait on storage)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="attnstore-preload") as pool:
        upcoming = pool.submit(load, items[0]) if items else None
        for n in range(len(items)):
            done = upcoming.result()
            if n + 1 < len(items):
                upcoming = pool.submit(load, items[n + 1])
            yield done


class BatchArrays:
    """A batch's preloaded small variables as numpy arrays  # each [image, ...]; `image(i)` gives one
    image's, cut to its valid extents like `select_image` (n_query rows, n_key keys)."""

    def __init__(self, sub: xr.Dataset, lo: int, names: tuple[str, ...]):
        self.lo = lo  # store index of the batch's first image
        self._arrays = {n: (sub.variables[n].dims[1:], np.asarray(sub.variables[n].values)) for n in names if n in sub}

    def image(self, image: int) -> dict[str, np.ndarray]:
        """Store image `image`'s variables by name, without the image axis (views, not copies)."""
        i = image - self.lo
        extent = {QUERY: int(self._arrays["n_query"][1][i]), KEY: int(self._arrays["n_key"][1][i])}
        # the trailing Ellipsis keeps a per-image scalar a 0-d array (a view), like select_image
        out = {name: values[(i, *_cut(dims, extent), ...)] for name, (dims, values) in self._arrays.items()}
        require_stored(out, lambda: str(image))  # scanned images are complete (`image_list`)
        return out


def _cut(dims: tuple[str, ...], extent: dict[str, int]) -> tuple[slice, ...]:
    """Each dim sliced to its extent (a dim without one: whole)."""
    return tuple(slice(0, extent[d]) if d in extent else slice(None) for d in dims)


def scan_batches(
    ds: xr.Dataset,
    per_image: Callable[[ImageVariables, int], dict | None],
    images: list[int],
    num_workers: int = 2,
    batch_size: int = 32,
    name: str = "scan",
    variables: tuple[str, ...] = ROW_VARS,
    arrays: bool = False,
) -> Iterator[list[dict | None]]:
    """`per_image(img, image)` over `images` (as given: `image_list` picks the complete ones), as
    dask tasks on threads; yields each batch's results in image order (None = nothing to report).

    `img` is `select_image` of the image with the small `variables` loaded; with `arrays`, those
    variables as numpy arrays instead (`BatchArrays.image`; `variables` must hold n_query and n_key).
    The next batch's are read (mostly waiting on storage) while this batch computes.
    """
    import dask

    if num_workers < 1 or batch_size < 1:
        raise InvalidArgument("num_workers", "and batch_size must be at least 1")
    batches = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
    for batch, (lo, sub) in zip(batches, ahead(lambda b: preload(ds, b, variables), batches)):
        # The batch is bound into the task's function, not passed as an argument: dask inspects
        # arguments for collections, ~2.5 ms per task on a Dataset (measured).
        if arrays:
            one = functools.partial(_one_image_arrays, per_image, BatchArrays(sub, lo, variables))
        else:
            one = functools.partial(_one_image, per_image, sub, lo)
        task = dask.delayed(one, name=f"attnstore-{name}", pure=False)
        calls = [task(i, dask_key_name=f"{name}-image-{i}") for i in batch]
        yield list(dask.compute(*calls, scheduler="threads", num_workers=num_workers))


def _one_image(per_image: Callable, sub: xr.Dataset, lo: int, image: int) -> dict | None:
    img = select_image(sub, image - lo)
    require_stored(img.variables, lambda: str(image))  # scanned images are complete (`image_list`)
    return per_image(img, image)


def _one_image_arrays(per_image: Callable, batch: BatchArrays, image: int) -> dict | None:
    return per_image(batch.image(image), image)


def scan(ds: xr.Dataset, per_image: Callable[[xr.Dataset, int], dict | None], images=None, num_workers: int = 2,
         batch_size: int = 32, name: str = "study", variables: tuple[str, ...] = ROW_VARS) -> list[dict]:  # fmt: skip
    """`per_image(img, image)` over the complete images (`image_list`): the column dicts it returns,
    in image order, without the Nones (see `scan_batches`)."""
    todo = image_list(ds, images)
    batches = scan_batches(ds, per_image, todo, num_workers, batch_size, name, variables)
    return [part for results in batches for part in results if part is not None]
