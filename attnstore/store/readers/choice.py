"""Which reader opens a store: the `backend` argument, else ATTNSTORE_READ_BACKEND, else "auto".

"auto": tensorstore when it can open the store, zarr-python otherwise, with the reason in `reader.detail`.
"""

from __future__ import annotations

import os

from attnstore.errors import AttnstoreError, InvalidArgument, StoreError
from attnstore.store.readers.base import AttentionReader
from attnstore.store.readers.tensorstore_reader import TensorstoreReader, Unsupported
from attnstore.store.readers.zarr_reader import ZarrReader
from attnstore.store.remote import store_like

BACKEND_ENV = "ATTNSTORE_READ_BACKEND"
BACKENDS = ("auto", "tensorstore", "zarr")


def choose_backend(backend: str | None = None) -> str:
    """The requested backend: `backend`, else ATTNSTORE_READ_BACKEND, else "auto"."""
    name = (backend or os.environ.get(BACKEND_ENV) or "auto").strip().lower()
    if name not in BACKENDS:
        if backend:
            raise InvalidArgument("read_backend", f"must be one of {', '.join(BACKENDS)}, not '{name}'")
        raise AttnstoreError(f"{BACKEND_ENV} must be one of {', '.join(BACKENDS)}, not '{name}'")
    return name


def open_reader(path: str, storage_options: dict | None = None, backend: str | None = None) -> AttentionReader:
    """A reader of the store's attention array, with the backend chosen as the module doc says.

    Raises
    ------
    StoreError : `backend="tensorstore"` (or the variable) is forced and tensorstore cannot open the store.
    """
    name = choose_backend(backend)
    store_like(path, storage_options)  # the checks (and one-line errors) of every other read: zip, http ranges
    if name == "zarr":
        return ZarrReader.open(path, storage_options, detail=f"zarr-python (forced by {_forced_by(backend)})")
    try:
        return TensorstoreReader.open(path, storage_options)
    except Unsupported as why:
        if name == "tensorstore":
            message = f"the tensorstore read backend cannot read '{path}': {why}"
            raise StoreError(message, param="read_backend" if backend else None) from why
        return ZarrReader.open(path, storage_options, detail=f"zarr-python (tensorstore: {why})")


def _forced_by(backend: str | None) -> str:
    return "the read_backend option" if backend else BACKEND_ENV
