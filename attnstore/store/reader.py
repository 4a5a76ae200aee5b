"""Open attnstore stores for reading (xarray), and check what a path holds."""

from __future__ import annotations

import re
import warnings

import pandas as pd
import xarray as xr
import zarr
from xarray.indexes import PandasIndex

from attnstore._version import __version__
from attnstore.errors import StoreError
from attnstore.schema import FORMAT_NAME, SCHEMA_VERSION
from attnstore.store.readers.choice import choose_backend
from attnstore.store.readers.lazy import dataset_reader
from attnstore.store.remote import is_url, is_zip, store_like
from attnstore.store.safety import check_declared, store_declared
from attnstore.store.xarray_glue import attach

# What zarr raises for a damaged, empty or deeply nested zarr.json (json's errors are ValueErrors)
METADATA_ERRORS = (ValueError, TypeError, KeyError, RecursionError, AttributeError)
NOT_FOUND = (FileNotFoundError, NotADirectoryError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError)


def check_target(path: str) -> None:
    """A local path that exists must be a folder (or a .zip copy)."""
    from pathlib import Path

    if not is_url(path) and not is_zip(path) and Path(path).exists() and not Path(path).is_dir():
        raise StoreError(f"'{path}' is a file, not a store directory")


def check_attrs(attrs: dict, path: str) -> None:
    if attrs.get("format") != FORMAT_NAME:
        raise StoreError(f"'{path}' is a zarr group but not an attnstore store")
    version = attrs.get("schema_version")
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"store '{path}' has schema version {version}; this attnstore ({__version__}) reads version "
            f"{SCHEMA_VERSION}"
        )


def exists(path: str, storage_options: dict | None = None) -> bool:
    """Whether `path` holds a zarr group (raises StoreError if its metadata cannot be read)."""
    try:
        open_group(path, storage_options)
    except StoreError as err:
        if isinstance(err.__cause__, NOT_FOUND) or err.__cause__ is None and "no attnstore store" in str(err):
            return False
        raise  # there is something, but damaged: never taken for "no store" (a writer would overwrite it)
    return True


def open_group(
    path: str, storage_options: dict | None = None, use_consolidated: bool | None = None, check: bool = True
) -> zarr.Group:
    """The store's zarr group, read-only (metadata only), with every array's declared shape and dtype
    checked against the schema before anything is read (`attnstore.store.safety`).

    Raises StoreError (one line): no store, unreadable (damaged, empty, deeply nested) metadata, or
    a declared shape or dtype the schema does not allow (unless `check` is False: `validate` lists them).
    """
    target, options = store_like(path, storage_options)
    try:
        group = zarr.open_group(
            store=target, mode="r", zarr_format=3, storage_options=options, use_consolidated=use_consolidated
        )
        declared = store_declared(group)
    except NOT_FOUND as err:
        raise StoreError(f"no attnstore store at '{path}'") from err
    except METADATA_ERRORS as err:
        raise metadata_error(path, err) from err
    if check:
        check_declared(declared, path)
    return group


def metadata_error(path: str, err: BaseException) -> StoreError:
    first = (str(err).strip().splitlines() or [""])[0][:160]
    why = f"{type(err).__name__}: {first}"
    return StoreError(f"store '{path}' is damaged: its metadata (zarr.json) cannot be read ({why})")


def with_dimension_indexes(ds: xr.Dataset) -> xr.Dataset:
    """`ds` with the pandas index of each dimension coordinate (layer, head, box) that xarray's open makes.

    Made here from the loaded values: xarray's own default indexes ask dask whether the lazy values
    are a dask array, which imports dask (~0.3 s of CPU) on commands that never compute with it."""
    coords = {name: var.load() for name, var in ds.variables.items() if var.dims == (name,)}
    indexes = {name: PandasIndex(pd.Index(var.values, name=name), name) for name, var in coords.items()}
    return ds.assign_coords(xr.Coordinates(coords, indexes=indexes))


def open_dataset(
    path: str, storage_options: dict | None = None, chunks=None, read_backend: str | None = None
) -> xr.Dataset:
    """Open a store as an xarray Dataset, lazily, and check its schema.

    `chunks=None` (the default) gives lazy numpy-backed arrays: basic slices read
    only the chunks they touch, the fastest path for interactive use. Pass dask
    chunks for out-of-core analysis (attention then gets one task per image shard,
    or per row block if `chunks` sets a `query` size).

    The attention array reads through `attnstore.store.readers` (tensorstore when it can
    open the store, zarr-python otherwise; `read_backend` or ATTNSTORE_READ_BACKEND force one).
    """
    choose_backend(read_backend)  # a bad name fails before any read
    check_target(path)
    open_group(path, storage_options)  # declared shapes and dtypes checked before xarray loads coordinates
    target, options = store_like(path, storage_options)
    try:
        with warnings.catch_warnings():  # attention's dask chunks are replaced below (`attach`)
            warnings.filterwarnings("ignore", "The specified chunks separate", UserWarning)
            warnings.filterwarnings("ignore", "Numcodecs codecs are not in the Zarr", UserWarning)  # store/codecs.py
            ds = xr.open_zarr(target, chunks=chunks, storage_options=options, zarr_format=3,
                              create_default_indexes=False)  # fmt: skip
        ds = with_dimension_indexes(ds)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError) as err:
        raise StoreError(f"no attnstore store at '{path}'") from err
    except (RecursionError, TypeError) as err:
        raise metadata_error(path, err) from err
    except ValueError as err:  # no consolidated metadata, and a writer killed while growing the arrays
        if "conflicting sizes" not in str(err):
            raise metadata_error(path, err) from err
        dim = re.search(r"dimension ('[^']*')", str(err))
        raise StoreError(
            f"store '{path}' is half-written (its arrays disagree on {dim.group(1) if dim else 'a dimension'}): "
            "rerun the extract command that wrote it (it repairs the store)"
        ) from err
    check_attrs(ds.attrs, path)
    ds = attach(ds, dataset_reader(path, storage_options, read_backend, ds["attention"].variable), chunks)
    ds.encoding["source"] = str(path)  # where it came from (`ds.attn.summary()`), as xarray's own open does
    return ds
