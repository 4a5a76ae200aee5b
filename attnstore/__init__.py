"""attnstore: store and explore the attention of vision-language models.

import attnstore as at
ds = at.open_dataset("store.zarr")   # xarray.Dataset (image, layer, head, query, key)
"""

__version__ = "0.1.0"

from attnstore.errors import AttnstoreError  # noqa: E402
from attnstore.store import open_dataset  # noqa: E402

__all__ = ["AttnstoreError", "open_dataset", "__version__"]
