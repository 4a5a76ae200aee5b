"""attnstore: store and explore the attention of vision-language models.

    import attnstore as at
    ds = at.open_dataset("store.zarr")          # xarray.Dataset (image, layer, head, query, key)
    grid = ds.attn.heatmap(token="dog", image=0) # the `ds.attn` accessor is registered on import
    ds.attn.show("dog", image=0)                 # the explorer's figure, inline in Jupyter
    at.explore(ds)                               # the whole explorer in a notebook cell

Importing attnstore loads the store, the analysis and the accessor; never torch or
transformers (only running a model needs them: `attnstore.models`, `attnstore.extraction.extract`).
"""

from attnstore import analysis  # noqa: F401  (registers the `ds.attn` accessor)
from attnstore._version import __version__
from attnstore.analysis import MapSpec, compute_map
from attnstore.errors import AttnstoreError
from attnstore.store import open_dataset

__all__ = ["AttnstoreError", "MapSpec", "analysis", "compute_map", "explore", "open_dataset", "__version__"]


def __getattr__(name: str):
    """`attnstore.explore(store)`: the explorer inline in a notebook (or a browser tab). A front end,
    so imported on first use only: `import attnstore` stays the light core (no Dash app built)."""
    if name == "explore":
        from explorer.jupyter import explore

        return explore
    raise AttributeError(f"module 'attnstore' has no attribute {name!r}")
