"""Chunk integrity: every chunk carries a crc32c checksum (a standard zarr v3 codec); a read that
fails it becomes a StoreError naming the damaged image, never a wrong map or a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import xarray as xr

from attnstore.errors import StoreError

CHECKSUM_MISMATCH = "checksum do not match"  # zarr's crc32c codec: "Stored and computed checksum do not match"


def is_checksum_error(err: BaseException) -> bool:
    """Whether `err` (or an exception it was raised from) is a chunk failing its crc32c checksum."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ValueError) and CHECKSUM_MISMATCH in str(err):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def damaged_image_error(ds: xr.Dataset, image: int) -> StoreError:
    """The error to show when image `image` of `ds` has a chunk that fails its checksum."""
    return StoreError(
        f"image {image} ({_image_name(ds, image)}) is damaged: a chunk of its data fails its checksum "
        "(changed on disk since it was written), so it cannot be shown; the other images are unaffected"
    )


def missing_chunk_error(label: str, variable: str, what: str = "") -> StoreError:
    """The error for a complete image (`label`: "index (name)") whose `variable` chunk is absent:
    zarr would read it as the fill value (an all-zero map, empty token texts)."""
    return StoreError(
        f"image {label} is damaged: its '{variable}' chunk{what} is missing from the store (deleted since it "
        "was written), so it cannot be shown; the other images are unaffected"
    )


def missing_rows_error(label: str, variable: str, rows: list[int]) -> StoreError:
    shown = ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
    return missing_chunk_error(label, variable, f" for query row(s) {shown}")


@contextmanager
def checksum_guard(ds: xr.Dataset, image: int) -> Iterator[None]:
    """Turn a checksum failure while reading image `image` into a StoreError naming it.

    Parameters
    ----------
    ds : the open store.
    image : index of the image being read.

    Examples
    --------
    >>> with checksum_guard(ds, 3):                          # doctest: +SKIP
    ...     grid = ds.attn.heatmap(token="dog", image=3)
    """
    try:
        yield
    except ValueError as err:
        if is_checksum_error(err):
            raise damaged_image_error(ds, image) from err
        raise


def _image_name(ds: xr.Dataset, image: int) -> str:
    try:
        return str(ds["image_name"].values[image])
    except Exception:  # the name's own chunk may be the damaged one
        return "name unreadable"
