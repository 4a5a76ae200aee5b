"""The "auto" reader of a store Dataset, opened on its first attention read.

Commands that read no attention row (`attnstore info`, listings) never import tensorstore.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence

import numpy as np
import xarray as xr

from attnstore.store.readers.base import AttentionReader
from attnstore.store.readers.choice import choose_backend, open_reader
from attnstore.store.readers.tensorstore_reader import Unsupported, kvstore_spec
from attnstore.store.remote import store_like


def _planned_backend(path: str, storage_options: dict | None) -> str:
    """What "auto" will open, told without importing tensorstore (its import alone costs ~0.6 s of
    CPU, more than the rest of `attnstore info`): installed, and a kvstore it has for this path."""
    if importlib.util.find_spec("tensorstore") is None:
        return "zarr-python (tensorstore: tensorstore is not installed)"
    try:
        driver = kvstore_spec(path, storage_options)["driver"]
    except Unsupported as why:
        return f"zarr-python (tensorstore: {why})"
    return f"tensorstore ({driver} kvstore), decoded by numcodecs; opened on the first attention read"


class LazyReader(AttentionReader):
    """The "auto" reader of a store Dataset, opened on its first attention read (`open_reader`):
    commands that read no attention row (`info`, listings) never import tensorstore."""

    name = "auto"  # the opened reader's name once opened

    def __init__(self, path: str, storage_options: dict | None, shape: tuple[int, ...], fill_value):
        super().__init__(shape, fill_value, _planned_backend(path, storage_options))
        self.path, self.storage_options = path, storage_options
        self._reader: AttentionReader | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # dask may ship a graph to other processes: no lock
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def opened(self) -> AttentionReader:
        """The real reader (opened once, bound to the Dataset's shape)."""
        with self._lock:
            if self._reader is None:
                reader = open_reader(self.path, self.storage_options, "auto")
                reader.bound_to(self.shape)
                reader.checks = self.checks  # `attach`'s missing-row checks: the reader that reads applies them
                self._reader, self.detail, self.name = reader, reader.detail, reader.name
            return self._reader

    def read_rows(self, image: int, rows: Sequence[int]) -> np.ndarray:
        return self.opened().read_rows(image, rows)

    def read_image_rows(self, image: int, rows: slice = slice(None)) -> np.ndarray:
        return self.opened().read_image_rows(image, rows)

    def read_variable(self, name: str, region: tuple[slice, ...]) -> np.ndarray | None:
        return self.opened().read_variable(name, region)


def dataset_reader(path: str, storage_options: dict | None, backend: str | None, var: xr.Variable) -> AttentionReader:
    """The reader `open_dataset` attaches: a forced backend opens now (its errors are the open's),
    "auto" on the first attention read (`LazyReader`)."""
    if choose_backend(backend) != "auto":
        return open_reader(path, storage_options, backend)
    store_like(path, storage_options)  # the checks (and one-line errors) of every other read
    return LazyReader(path, storage_options, var.shape, var.encoding.get("_FillValue", 0))
