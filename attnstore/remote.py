"""Remote and single-file stores: fsspec URLs, storage options, and zip copies.

A store path is a local folder, a `.zip` copy made by `attnstore pack` (read-only), or an fsspec
URL: `s3://bucket/path` (s3fs; read and write) or `https://host/path` (read-only; the server must
answer HTTP Range requests, DESIGN.md §4). Storage options (endpoint, credentials, anonymous
access, headers ...) come from the caller, else from the ATTNSTORE_STORAGE_OPTIONS environment
variable (a JSON object), so every command and the explorer accept them without a flag of their
own. s3fs also reads the usual AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import fsspec

from attnstore.errors import AttnstoreError, StoreError

STORAGE_OPTIONS_ENV = "ATTNSTORE_STORAGE_OPTIONS"
READ_ONLY_PROTOCOLS = ("http", "https")
COPY_BLOCK = 1 << 22  # bytes per read while packing: shards can be ~100 MB, never hold one whole


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
        raise AttnstoreError(f"--storage-options is not valid JSON ({err.msg}): {text[:80]}") from err
    if not isinstance(value, dict):
        raise AttnstoreError('--storage-options must be a JSON object, e.g. \'{"endpoint_url": "http://..."}\'')
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


@dataclass
class PackReport:
    files: int
    bytes: int


def pack_store(
    path: str,
    out: str,
    storage_options: dict | None = None,
    allow_incomplete: bool = False,
    overwrite: bool = False,
) -> PackReport:
    """Copy a finished store (folder or s3://) into one uncompressed zip file.

    The zip holds the store's files at its root (ZIP_STORED: chunks are compressed already and
    stay readable by offset), so `attnstore.store.open_dataset("out.zip")` and
    `xarray.open_zarr(zarr.storage.ZipStore("out.zip", mode="r"))` open it directly. Written to
    `out.partial` first, renamed when complete: a killed pack never leaves a broken `out`.
    """
    from attnstore.store import open_dataset

    if is_zip(path):
        raise StoreError(f"'{path}' is already a zip copy")
    if not is_zip(out):
        raise AttnstoreError(f"the output must end in .zip, got '{out}'")
    if Path(out).exists() and not overwrite:
        raise AttnstoreError(f"'{out}' exists: pass --overwrite to replace it")
    ds = open_dataset(path, storage_options=storage_options)
    incomplete = int((ds["complete"].values == 0).sum())
    if incomplete and not allow_incomplete:
        raise StoreError(
            f"{incomplete} image(s) of '{path}' are incomplete: finish the run (rerun extract) or pass "
            "--allow-incomplete"
        )
    fs, root = fsspec.core.url_to_fs(path, **(resolve_storage_options(path, storage_options) or {}))
    try:
        files = sorted(fs.find(root))
    except (NotImplementedError, OSError, ValueError) as err:
        raise StoreError(f"cannot list the files of '{path}' ({err}): pack a local or s3:// store") from err
    partial = Path(str(out) + ".partial")
    total = 0
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name in files:
            member = name[len(root.rstrip("/")) :].lstrip("/")
            with fs.open(name, "rb") as src, zf.open(member, "w", force_zip64=True) as dst:
                shutil.copyfileobj(src, dst, COPY_BLOCK)
            total += zf.getinfo(member).file_size
    partial.replace(out)
    return PackReport(files=len(files), bytes=total)
