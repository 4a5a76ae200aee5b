"""A reader behind a store Dataset's `attention` variable (xarray's lazy indexing), and reads through it."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from attnstore.schema import QUERY
from attnstore.store.readers.base import ATTENTION, AttentionReader, RowChecks
from attnstore.store.threads import read_concurrently

READER_OBJECT = "attnstore_reader"  # encoding key of the attention variable holding its reader (`reader_of`)


class AttentionArray(BackendArray):
    """The attention array for xarray's lazy indexing: every slice reads through a reader."""

    def __init__(self, reader: AttentionReader):
        self.reader = reader
        self.shape = reader.shape
        self.dtype = np.dtype(np.float16)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._read)

    def _read(self, key: tuple) -> np.ndarray:
        """Outer indexing: ints, slices or 1-d int arrays on [image, layer, head, query, key]."""
        for k, n, dim in zip(key, self.shape, ("image", "layer", "head", "query", "key")):
            if not isinstance(k, slice) and not np.all((-n <= np.asarray(k)) & (np.asarray(k) < n)):
                raise IndexError(f"{dim} index {k} is out of bounds for size {n}")  # as numpy and zarr
        image_k = key[0]
        if isinstance(image_k, (int, np.integer)):
            return self._read_image(int(image_k), key)
        images = _positions(image_k, self.shape[0])
        blocks = [self._read_image(int(i), key) for i in images]
        return np.stack(blocks) if blocks else np.empty((0, *self._rest_shape(key)), np.float16)

    def _read_image(self, image: int, key: tuple) -> np.ndarray:
        layer_k, head_k, query_k, key_k = key[1:]
        if isinstance(query_k, slice) and query_k.step in (None, 1):
            block = self.reader.read_image_rows(image, query_k)  # [row, layer, head, key]
        else:
            block = self.reader.read_rows(image, _positions(query_k, self.shape[3]))
        for axis, k in ((3, key_k), (2, head_k), (1, layer_k)):  # last axis first: int keys drop axes
            block = block[(slice(None),) * axis + (k,)]
        if isinstance(query_k, (int, np.integer)):
            return block[0]
        kept = sum(not isinstance(k, (int, np.integer)) for k in (layer_k, head_k))
        return np.moveaxis(block, 0, kept)  # rows back between head and key (a view: no copy)

    def _rest_shape(self, key: tuple) -> tuple[int, ...]:
        sizes = [len(_positions(k, n)) for k, n in zip(key[1:], self.shape[1:]) if not isinstance(k, (int, np.integer))]
        return tuple(sizes)


def _positions(k, n: int) -> list[int]:
    if isinstance(k, slice):
        return list(range(*k.indices(n)))
    if isinstance(k, (int, np.integer)):
        return [int(k)]
    return [int(i) for i in np.asarray(k).ravel()]


def attach(ds: xr.Dataset, reader: AttentionReader, chunks=None) -> xr.Dataset:
    """`ds` with its `attention` variable read through `reader` (lazily; dask-chunked if `chunks` is
    not None: one task per shard or row block, never per stored row)."""
    old = ds[ATTENTION].variable
    reader.bound_to(old.shape)  # the shape every other variable agrees on (a writer may be growing it)
    if "complete" in ds and "n_query" in ds:
        reader.checks = RowChecks(
            functools.partial(_required_rows, ds["complete"].variable, ds["n_query"].variable),
            functools.partial(_image_label, ds["image_name"].variable if "image_name" in ds else None),
        )
    data = indexing.LazilyIndexedArray(AttentionArray(reader))
    shard_chunks = attention_chunks(old, chunks if chunks is not None else {})
    preferred = {dim: old.shape[i] if size == -1 else size for i, (dim, size) in enumerate(shard_chunks.items())}
    encoding = {**old.encoding, READER_OBJECT: reader, "preferred_chunks": preferred}
    var = xr.Variable(old.dims, data, old.attrs, encoding)
    if chunks is not None:
        var = var.chunk(shard_chunks)
    return ds.assign({ATTENTION: var})


def _required_rows(complete: xr.Variable, n_query: xr.Variable, image: int) -> int:
    """Leading query rows image `image` must have stored: its n_query once complete, else none."""
    return int(n_query[image].values) if int(complete[image].values) else 0


def _image_label(names: xr.Variable | None, image: int) -> str:
    try:
        return f"{image} ({names[image].values})" if names is not None else str(image)
    except Exception:  # the name's own chunk may be the damaged one
        return f"{image} (name unreadable)"


def attention_chunks(var: xr.Variable, chunks) -> dict[str, int]:
    """Dask chunks of the attention variable: one image (whole shard) per task unless the caller asked
    for specific sizes of some dims; the query dim is never split finer than the caller asked."""
    wanted = chunks if isinstance(chunks, dict) else {}
    out = {dim: -1 for dim in var.dims}
    out["image"] = 1
    for dim, size in wanted.items():
        if dim in out and isinstance(size, int) and size > 0:
            out[dim] = size
    return out


def reader_of(ds: xr.Dataset) -> AttentionReader | None:
    """The reader behind a store Dataset's attention (also after selections); None if none was attached."""
    return ds[ATTENTION].encoding.get(READER_OBJECT) if ATTENTION in ds else None


def load_variables(ds: xr.Dataset, names: Sequence[str]) -> xr.Dataset:
    """`ds` (a store Dataset, or a selection of one) with the variables `names` loaded: numeric ones
    through the store's reader when it reads them (`read_variable`), the rest through xarray
    (zarr-python), each in one multi-chunk read, concurrently."""
    reader = reader_of(ds)

    def load(name: str) -> tuple[str, xr.Variable]:
        var = ds[name].variable
        region = _stored_region(var) if reader is not None else None
        values = None if region is None else reader.read_variable(name, region)
        if values is None or values.shape != var.shape or values.dtype != var.dtype:
            return name, var.load()
        return name, var.copy(deep=False, data=values)  # not deep: the encoding holds the reader

    return ds.assign(dict(read_concurrently(load, [n for n in names if n in ds])))


def _stored_region(var: xr.Variable) -> tuple[slice, ...] | None:
    """Where a lazily opened variable's values are in the stored array: its selection when that is
    one step-1 slice per axis (a basic selection of the store); None otherwise (loaded by xarray)."""
    data = var._data  # xarray's lazy wrappers: the selection is the LazilyIndexedArray's key
    while not isinstance(data, indexing.LazilyIndexedArray) and hasattr(data, "array"):
        data = data.array
    if not isinstance(data, indexing.LazilyIndexedArray) or not isinstance(data.key, indexing.BasicIndexer):
        return None
    stored = data.array.shape
    key = data.key.tuple
    if len(key) != len(stored) or not all(isinstance(k, slice) and k.step in (None, 1) for k in key):
        return None
    return tuple(slice(*k.indices(n)) for k, n in zip(key, stored))


def reader_name(ds: xr.Dataset) -> str:
    """Which reader the Dataset's attention goes through (one line), or "" if none was attached."""
    reader = reader_of(ds)
    return reader.detail if reader is not None else ""


def read_rows(source, image: int, rows: Sequence[int]) -> np.ndarray:
    """Query rows of one image  # -> [row, layer, head, key] float16.

    `source` is a reader or a store Dataset from `attnstore.store.open_dataset` (its whole
    `attention` variable, not a selection of it).
    """
    if isinstance(source, AttentionReader):
        return source.read_rows(image, rows)
    att = source[ATTENTION].isel(image=image, **{QUERY: list(rows)})  # one reader call for every row
    return np.moveaxis(np.asarray(att.values), att.dims.index(QUERY), 0)


def read_image_rows(source, image: int, rows: slice = slice(None)) -> np.ndarray:
    """A block of query rows of one image (default all)  # -> [row, layer, head, key] float16."""
    if isinstance(source, AttentionReader):
        return source.read_image_rows(image, rows)
    att = source[ATTENTION].isel(image=image, **{QUERY: rows})
    return np.moveaxis(np.asarray(att.values), att.dims.index(QUERY), 0)
