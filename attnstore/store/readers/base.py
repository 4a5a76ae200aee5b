"""The reader interface: what every read backend of the attention array answers, and the missing-row checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from attnstore.errors import InvalidArgument, StoreError
from attnstore.store.integrity import missing_rows_error

ATTENTION = "attention"


@dataclass(frozen=True)
class RowChecks:
    """What `attach` knows of a store Dataset that a reader needs: a row with no stored chunk reads as
    zeros; below `required_rows(image)` (n_query of a complete image, else 0) it is a deleted chunk,
    an error naming the image by `image_label(image)` ("index (name)"), never a map."""

    required_rows: Callable[[int], int]
    image_label: Callable[[int], str] = str

    def require_stored(self, image: int, absent: Sequence[int]) -> None:
        """Raise if any of the rows `absent` (read with no stored chunk) must be stored."""
        if not len(absent):
            return
        needed = self.required_rows(image)
        missing = sorted(int(r) for r in absent if r < needed)
        if missing:
            raise missing_rows_error(self.image_label(image), ATTENTION, missing)


class AttentionReader:
    """Reads the attention array of one store: `[image, layer, head, query, key]` float16."""

    name = ""

    def __init__(self, shape: tuple[int, ...], fill_value: float, detail: str):
        self.shape = tuple(int(s) for s in shape)  # [image, layer, head, query, key]
        self.fill_value = fill_value
        self.detail = detail  # one line for `attnstore info`
        self.checks: RowChecks | None = None  # set by `attach`: which absent rows are deleted chunks

    def read_rows(self, image: int, rows: Sequence[int]) -> np.ndarray:
        """Query rows of one image  # -> [row, layer, head, key] float16 (one stored chunk per row)."""
        raise NotImplementedError

    def read_variable(self, name: str, region: tuple[slice, ...]) -> np.ndarray | None:
        """A region of another (small) variable of the store, if this backend reads it faster than
        zarr-python; None: load it through xarray as usual."""
        return None

    def bound_to(self, shape: tuple[int, ...]) -> None:
        """Read only `shape` of the array: the shape the rest of the store agrees on.

        A writer grows an array before the store's consolidated metadata says so (and a killed
        writer may never say so): what lies beyond is not part of the store yet."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != len(self.shape) or any(s > n for s, n in zip(shape, self.shape)):
            raise StoreError(
                f"the attention array is {self.shape} but the store's metadata says {shape}: the store is "
                "half-written; rerun the extract command that wrote it (it repairs the store)"
            )
        self.shape = shape

    def read_image_rows(self, image: int, rows: slice = slice(None)) -> np.ndarray:
        """A block of query rows of one image (default: the whole shard)  # -> [row, layer, head, key]."""
        return self.read_rows(image, range(*rows.indices(self.shape[3])))

    def _require_stored(self, image: int, absent: Sequence[int]) -> None:
        """Raise if any of the rows `absent` (read with no stored chunk) must be stored (`RowChecks`)."""
        if self.checks is not None:
            self.checks.require_stored(image, absent)

    def _check(self, image: int, rows: Sequence[int]) -> tuple[int, list[int]]:
        n_images, n_rows = self.shape[0], self.shape[3]
        if not -n_images <= image < n_images:
            raise InvalidArgument("image", f"{image} is out of range: the store has {n_images} images")
        bad = [r for r in rows if not -n_rows <= r < n_rows]
        if bad:
            raise InvalidArgument("rows", f"{bad[:5]} are out of range: the store has {n_rows} rows per image")
        return image % n_images, [int(r) % n_rows for r in rows]
