"""The zarr-python reader: every store and storage option fsspec understands."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attnstore.errors import StoreError
from attnstore.store.readers.base import ATTENTION, AttentionReader
from attnstore.store.remote import store_like
from attnstore.store.threads import read_concurrently


class ZarrReader(AttentionReader):
    """zarr-python: one basic-slice read per row (a list index would decode the whole shard)."""

    name = "zarr"

    def __init__(self, array, detail: str = "zarr-python"):
        super().__init__(array.shape, array.fill_value, detail)
        self.array = array

    @classmethod
    def open(cls, path: str, storage_options: dict | None = None, detail: str = "zarr-python") -> ZarrReader:
        import zarr

        target, options = store_like(path, storage_options)
        try:
            group = zarr.open_group(store=target, mode="r", zarr_format=3, storage_options=options)
            return cls(group[ATTENTION], detail)
        except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError) as err:
            raise StoreError(f"no attnstore store at '{path}'") from err

    def read_rows(self, image: int, rows: Sequence[int]) -> np.ndarray:
        image, rows = self._check(image, rows)
        out = np.empty((len(rows), *self.shape[1:3], self.shape[4]), np.float16)  # [row, layer, head, key]

        def read(i: int) -> None:
            out[i] = self.array[image, :, :, rows[i], : self.shape[4]]

        read_concurrently(read, range(len(rows)))  # zarr decodes in its event loop: the threads only wait
        if self.checks is not None:  # an absent chunk reads as the fill value: a stored row sums to 1
            self._require_stored(image, [r for r, row in zip(rows, out) if not row.view(np.uint16).any()])
        return out

    def read_image_rows(self, image: int, rows: slice = slice(None)) -> np.ndarray:
        image, _ = self._check(image, [])
        rows = slice(*rows.indices(self.shape[3]))  # within the bound (`bound_to`), not the live array
        block = self.array[image, :, :, rows, : self.shape[4]]  # [layer, head, row, key]: one read of the shard
        if self.checks is not None:  # an absent chunk reads as the fill value: a stored row sums to 1
            stored = block.view(np.uint16).any(axis=(0, 1, 3))  # [row]
            self._require_stored(image, np.arange(rows.start, rows.stop, rows.step)[~stored])
        return np.moveaxis(block, 2, 0)
