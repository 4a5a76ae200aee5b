"""Remote and single-file stores: fsspec URLs, storage options, and zip copies.

A store path is a local folder, a `.zip` copy made by `attnstore pack` (read-only), or an fsspec
URL: `s3://bucket/path` (s3fs; read and write) or `https://host/path` (read-only; the server must
answer HTTP Range requests: shards are read by byte range). Storage options (endpoint, credentials, anonymous
access, headers ...) come from the caller, else from the ATTNSTORE_STORAGE_OPTIONS environment
variable (a JSON object), so every command and the explorer accept them without a flag of their
own. s3fs also reads the usual AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import fsspec

from attnstore.errors import AttnstoreError, InvalidArgument, StoreError

STORAGE_OPTIONS_ENV = "ATTNSTORE_STORAGE_OPTIONS"
READ_ONLY_PROTOCOLS = ("http", "https")


def is_url(path: str) -> bool:
    return "://" in str(path)


def is_zip(path: str) -> bool:
    return str(path).lower().rstrip("/").endswith(".zip")


def protocol(path: str) -> str:
    return str(path).split("://", 1)[0].lower() if is_url(path) else "file"


def parse_storage_options(text: str | None) -> dict | None:
    """The JSON object of a `--storage-options` flag (None if not given), with a one-line error."""
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidArgument("storage_options", f"is not valid JSON ({err.msg}): {text[:80]}") from err
    if not isinstance(value, dict):
        raise InvalidArgument("storage_options", 'must be a JSON object, e.g. \'{"endpoint_url": "http://..."}\'')
    return value


def resolve_storage_options(path: str, storage_options: dict | None = None) -> dict | None:
    """Options to pass for `path`: the caller's, else ATTNSTORE_STORAGE_OPTIONS; None for local paths
    (zarr refuses storage options for them)."""
    if not is_url(path):
        return None
    if storage_options is not None:
        return storage_options
    env = os.environ.get(STORAGE_OPTIONS_ENV)
    if not env:
        return None
    try:
        return parse_storage_options(env)
    except AttnstoreError as err:
        raise AttnstoreError(f"{STORAGE_OPTIONS_ENV}: {err}") from err


def store_like(path: str, storage_options: dict | None = None, mode: str = "r"):
    """What to hand zarr / xarray for `path`: (store or path, storage options to pass along).

    A `.zip` becomes a read-only `zarr.storage.ZipStore` (zarr 3.1 does not open a plain `.zip`
    path); a remote zip is read through fsspec's `zip::` chaining.
    """
    options = resolve_storage_options(path, storage_options)
    writing = mode != "r"
    if writing and (is_zip(path) or protocol(path) in READ_ONLY_PROTOCOLS):
        raise StoreError(f"'{path}' is read-only (zip copy or http): write to a folder or an s3:// store instead")
    if protocol(path) in READ_ONLY_PROTOCOLS:
        check_range_requests(path if is_zip(path) else str(path).rstrip("/") + "/zarr.json", options)
    if not is_zip(path):
        if not writing and not is_url(path):  # only regular files inside the store are read
            from attnstore.store.safety import CheckedLocalStore

            return CheckedLocalStore(str(path), read_only=True), options
        return str(path), options
    if is_url(path):
        chained = {protocol(path): options} if options else None
        return f"zip::{path}", chained
    from zarr.storage import ZipStore

    if not Path(path).is_file():
        raise StoreError(f"no attnstore store at '{path}' (no such zip file)")
    if not zipfile.is_zipfile(path):  # ZipStore opens lazily: check now for a one-line error
        raise StoreError(f"'{path}' is not a readable zip file")
    return ZipStore(path, mode="r"), None


def check_range_requests(url: str, storage_options: dict | None = None) -> None:
    """Fail clearly if the http(s) server ignores Range requests: sharded reads over such a server
    (e.g. `python -m http.server`) would otherwise fail later with a misleading checksum error."""
    fs = fsspec.filesystem(protocol(url), **(storage_options or {}))
    try:
        head = fs.cat_file(url, start=0, end=2)
    except FileNotFoundError as err:
        raise StoreError(f"no attnstore store at '{url.removesuffix('/zarr.json')}' ({url} not found)") from err
    except (OSError, ValueError) as err:
        raise StoreError(f"cannot read '{url}': {err}") from err
    if len(head) != 2:
        raise StoreError(
            f"the server of '{url}' ignores HTTP Range requests, which sharded stores need: serve it with a "
            "range-capable server (nginx, caddy, an S3 bucket ...), not `python -m http.server`"
        )
