"""Open attnstore stores for reading (xarray), and check what a path holds."""

from __future__ import annotations

import re
import warnings

import xarray as xr
import zarr

from attnstore._version import __version__
from attnstore.errors import StoreError
from attnstore.schema import FORMAT_NAME, SCHEMA_VERSION
from attnstore.store.backend import attach, choose_backend, dataset_reader
from attnstore.store.remote import is_url, is_zip, store_like
from attnstore.store.threads import read_concurrently  # noqa: F401  (its old home: callers import it from here)


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
    try:
        target, storage_options = store_like(path, storage_options)
        zarr.open_group(store=target, mode="r", zarr_format=3, storage_options=storage_options)
    except (StoreError, FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        return False
    return True


def open_dataset(
    path: str, storage_options: dict | None = None, chunks=None, read_backend: str | None = None
) -> xr.Dataset:
    """Open a store as an xarray Dataset, lazily, and check its schema.

    `chunks=None` (the default) gives lazy numpy-backed arrays: basic slices read
    only the chunks they touch, the fastest path for interactive use. Pass dask
    chunks for out-of-core analysis (attention then gets one task per image shard,
    or per row block if `chunks` sets a `query` size).

    The attention array reads through `attnstore.store.backend` (tensorstore when it can
    open the store, zarr-python otherwise; `read_backend` or ATTNSTORE_READ_BACKEND force one).
    """
    choose_backend(read_backend)  # a bad name fails before any read
    check_target(path)
    target, options = store_like(path, storage_options)
    try:
        with warnings.catch_warnings():  # attention's dask chunks are replaced below (`attach`)
            warnings.filterwarnings("ignore", "The specified chunks separate", UserWarning)
            ds = xr.open_zarr(target, chunks=chunks, storage_options=options, zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError) as err:
        raise StoreError(f"no attnstore store at '{path}'") from err
    except ValueError as err:  # no consolidated metadata, and a writer killed while growing the arrays
        if "conflicting sizes" not in str(err):
            raise
        dim = re.search(r"dimension ('[^']*')", str(err))
        raise StoreError(
            f"store '{path}' is half-written (its arrays disagree on {dim.group(1) if dim else 'a dimension'}): "
            "rerun the extract command that wrote it (it repairs the store)"
        ) from err
    check_attrs(ds.attrs, path)
    return attach(ds, dataset_reader(path, storage_options, read_backend, ds["attention"].variable), chunks)
