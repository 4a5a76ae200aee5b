"""The store: one zarr v3 group per dataset (schema in `attnstore.schema`).

reader  open_dataset (xarray, lazy), check_attrs, exists
writer  AttnStore: create, grow, write one image, mark it complete
remote  fsspec URLs, storage options, zip copies
safety  reading untrusted stores: regular files inside the store only, declared shapes within limits
pack    a finished store as one zip file
"""

from attnstore.store.reader import check_attrs, exists, open_dataset
from attnstore.store.writer import (
    DEFAULT_KEEP_BITS,
    MAX_DISPLAY_SIDE,
    AttnStore,
    CapacityError,
    StoreShape,
    display_pixels,
    round_mantissa,
)

__all__ = [
    "DEFAULT_KEEP_BITS",
    "MAX_DISPLAY_SIDE",
    "AttnStore",
    "CapacityError",
    "StoreShape",
    "check_attrs",
    "display_pixels",
    "exists",
    "open_dataset",
    "round_mantissa",
]
