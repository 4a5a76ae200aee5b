"""`attnstore pack`: a finished store copied into one uncompressed zip file."""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import fsspec

from attnstore.errors import AttnstoreError, InvalidArgument, StoreError
from attnstore.store.reader import open_dataset
from attnstore.store.remote import is_zip, resolve_storage_options

COPY_BLOCK = 1 << 22  # bytes per read while packing: shards can be ~100 MB, never hold one whole


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
    if is_zip(path):
        raise StoreError(f"'{path}' is already a zip copy")
    if not is_zip(out):
        raise AttnstoreError(f"the output must end in .zip, got '{out}'")
    if Path(out).exists() and not overwrite:
        raise InvalidArgument("overwrite", f"is off and '{out}' exists: turn it on to replace it")
    ds = open_dataset(path, storage_options=storage_options)
    incomplete = int((ds["complete"].values == 0).sum())
    if incomplete and not allow_incomplete:
        raise StoreError(
            f"{incomplete} image(s) of '{path}' are incomplete: finish the run (rerun extract) or allow incomplete "
            "images",
            param="allow_incomplete",
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
