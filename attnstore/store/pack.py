"""`attnstore pack`: a finished store copied into one uncompressed zip file."""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import fsspec

from attnstore.errors import AttnstoreError, InvalidArgument, StoreError
from attnstore.store.journal import fault_point, write_error_message
from attnstore.store.reader import open_dataset
from attnstore.store.remote import is_zip, resolve_storage_options

COPY_BLOCK = 1 << 22  # bytes per read while packing: shards can be ~100 MB, never hold one whole
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date: members carry no packing time


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
    try:
        total = _write_zip(fs, root, files, partial)
        fault_point(str(out))  # the rename: a pack killed before it leaves `out` as it was
        partial.replace(out)
    except BaseException as err:
        partial.unlink(missing_ok=True)  # no partial file left behind (a SIGKILL aside: the next pack replaces it)
        if isinstance(err, OSError):
            raise StoreError(write_error_message(out, err)) from err
        raise
    return PackReport(files=len(files), bytes=total)


def _write_zip(fs, root: str, files: list[str], target: Path) -> int:
    """The store's files into one uncompressed zip at `target`; returns the bytes stored.

    Every member gets the same fixed date, so packing one store twice gives byte-identical zips."""
    total = 0
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name in files:
            member = name[len(root.rstrip("/")) :].lstrip("/")
            fault_point(member)
            info = zipfile.ZipInfo(member, date_time=ZIP_DATE)
            with fs.open(name, "rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                shutil.copyfileobj(src, dst, COPY_BLOCK)
            total += zf.getinfo(member).file_size
    return total
