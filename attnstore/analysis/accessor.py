"""`ds.attn`: the Dataset accessor (registered by `import attnstore`) and the home of every cache.

xarray keeps one accessor object per Dataset object, so caches here live exactly as long as the
opened store and never leak across stores (no module-level state).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import xarray as xr

from attnstore.analysis.cache import LRU
from attnstore.analysis.correctness import answer_correct
from attnstore.analysis.grounding import rank_heads, store_grounding
from attnstore.analysis.keys import normalise
from attnstore.analysis.maps import MapResult, MapSpec, compute_map
from attnstore.analysis.reduce import entropy, image_share
from attnstore.analysis.select import select_image, token_weights
from attnstore.analysis.studies import ANALYSES
from attnstore.analysis.tokens import ANSWER, find_token
from attnstore.errors import NotFound
from attnstore.schema import TARGET_OBJECT
from attnstore.store.integrity import checksum_guard

# images kept selected (~0.3 MB each; 8 thrashed a team clicking through 20 images), token rows (~1 MB each)
CACHE_SIZES = {"image": 64, "weights": 64}


@xr.register_dataset_accessor("attn")
class AttnAccessor:
    """`ds.attn`: token maps, per-head statistics and cached reads on an attnstore Dataset."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds
        self._caches: dict[str, LRU] = {}

    # -- caches ---------------------------------------------------------------------------------
    def cached(self, kind: str, make: Callable[[], Any], key: Hashable = None, maxsize: int | None = None) -> Any:
        """`make()` computed once per (`kind`, `key`) for this Dataset (LRU of `maxsize`)."""
        cache = self._caches.setdefault(kind, LRU(maxsize or CACHE_SIZES.get(kind, 16)))
        return cache.get(key, make)

    def refresh(self) -> None:
        """Forget everything cached (e.g. after images were added to the store by a writer)."""
        for cache in self._caches.values():
            cache.clear()

    # -- images and rows ---------------------------------------------------------------------------
    def image(self, image: int | str = 0) -> xr.Dataset:
        """One image by index or by `image_name` (`select_image`; cached)."""
        index = self.image_index(image)
        return self.cached("image", lambda: self._read(index, select_image, self._ds, index), key=index)

    def _read(self, image: int, read: Callable, *args):
        """`read(*args)`, a chunk failing its checksum reported as a StoreError naming `image`."""
        with checksum_guard(self._ds, image):
            return read(*args)

    def image_index(self, image: int | str) -> int:
        if isinstance(image, (int, np.integer)):
            return int(image)
        names = self.cached("names", lambda: [str(n) for n in self._ds["image_name"].values])
        if image in names:
            return names.index(image)
        if str(image).lstrip("-").isdigit():
            return int(image)
        close = difflib.get_close_matches(str(image), names, n=3)
        raise NotFound(f"no image named '{image}' in the store" + (f"; close: {close}" if close else ""), "image")

    def weights(self, image: int, row: int, normalise_mode: str = "raw") -> xr.DataArray:
        """One token's attention  # [layer, head, key] float32, normalised; reads one chunk, cached."""
        img = self.image(image)
        raw = self.cached("weights", lambda: self._read(image, token_weights, img, row), key=(image, row, "raw"))
        if normalise_mode == "raw":
            return raw
        return self.cached("weights", lambda: normalise(raw, img, normalise_mode), key=(image, row, normalise_mode))

    def token(self, token: str | int, image: int | str = 0, occurrence: int = 0) -> xr.DataArray:
        """Weights of one token  # [layer, head, key]; `token` is text or a query row index."""
        index = self.image_index(image)
        img = self.image(index)
        row = token if isinstance(token, (int, np.integer)) else find_token(img, token, occurrence)
        return self.weights(index, int(row))

    # -- maps ------------------------------------------------------------------------------------
    def map(self, spec: MapSpec | None = None, **fields) -> MapResult:
        """`compute_map` for `spec` (or a MapSpec built from `fields`)."""
        return compute_map(self._ds, spec if spec is not None else MapSpec(**fields))

    def heatmap(
        self,
        token: str | int,
        image: int | str = 0,
        occurrence: int = 0,
        layers=None,
        heads=None,
        method: str = "entropy_topk",
        k: int = 10,
        view: str = "tiles",
        normalise: str = "raw",
        keys: str = "all",
    ) -> xr.DataArray:
        """A token's map on an image grid (see `patch_grid`), NaN where no patch token.

        `token` is text (BPE-aware) or a stored query row; `layers`/`heads` an int, slice, list or
        None (= all). Returns a labelled DataArray (attrs: method, k, normalise, query, token, ...).
        """
        which = {"row": int(token)} if isinstance(token, (int, np.integer)) else {"token": token}
        spec = MapSpec(
            image=self.image_index(image), occurrence=occurrence, layers=self._indices("layer", layers),
            heads=self._indices("head", heads), method=method, k=k, normalise=normalise, keys=keys, view=view, **which,
        )  # fmt: skip
        return self.map(spec).grid()

    def _indices(self, dim: str, sel) -> tuple[int, ...] | None:
        if sel is None:
            return None
        every = range(self._ds.sizes[dim])
        if isinstance(sel, slice):
            return tuple(every[sel])
        if isinstance(sel, (int, np.integer)):
            return (int(sel),)
        return tuple(int(i) for i in sel)

    # -- figures (the explorer's, in a notebook: `attnstore.analysis.notebook`, imported on first use:
    # it brings attnstore.render, which `import attnstore` and `attnstore info` do without) ----------
    def show(self, token: str | int, image: int | str = 0, layer: int | None = None, head: int | None = None,
             method: str | None = None, normalise: str = "raw", **options):  # fmt: skip
        """The explorer's map of `token` over the image, as a plotly Figure (renders in Jupyter).

        One head when `layer` and `head` are given; else `method` (default "entropy_topk") over the
        heads of `layer`, the layers of `head`, or all. Options: k, occurrence, scale ("own" |
        "shared"), cmap, opacity, grid_lines, boxes."""
        from attnstore.analysis import notebook

        return notebook.show(self._ds, token, image, layer, head, method, normalise, **options)

    def show_heads(self, token: str | int, image: int | str = 0, layer: int = 0, **options):
        """The explorer's gallery: every head of `layer` for `token` (a plotly Figure)."""
        from attnstore.analysis import notebook

        return notebook.show_heads(self._ds, token, image, layer, **options)

    def show_layers(self, token: str | int, image: int | str = 0, layer: int = 0, head: int = 0, **options):
        """The explorer's layer panel: image share per layer and the layer x head chart (two figures)."""
        from attnstore.analysis import notebook

        return notebook.show_layers(self._ds, token, image, layer, head, **options)

    def plot_overlay(self, token: str | int, image: int | str = 0, layer: int | None = None,
                     head: int | None = None, method: str | None = None, ax=None, **options):  # fmt: skip
        """The map of `show` as a static matplotlib figure on `ax` (papers); returns the Axes."""
        from attnstore.analysis import notebook

        return notebook.plot_overlay(self._ds, token, image, layer, head, method, ax=ax, **options)

    def summary(self, max_rows: int = 20):
        """What `attnstore info` prints, as an object with an HTML view (thumbnails) in Jupyter."""
        from attnstore.store.summary import store_summary

        return store_summary(self._ds, max_rows=max_rows, thumbnails=True)

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()

    # -- per-head statistics --------------------------------------------------------------------------
    def image_share(self, token: str | int, image: int | str = 0, occurrence: int = 0) -> xr.DataArray:
        """Fraction of the token's attention on image patches  # [layer, head]."""
        return image_share(self.token(token, image, occurrence), self.image(image))

    def entropy(self, token: str | int, image: int | str = 0, occurrence: int = 0) -> xr.DataArray:
        """Normalised entropy of the token's image attention  # [layer, head]."""
        return entropy(self.token(token, image, occurrence), self.image(image))

    # -- dataset-level analyses (the `ANALYSES` registry) ------------------------------------------
    def __getattr__(self, name: str) -> Callable[..., xr.Dataset]:
        """`ds.attn.<analysis>(**options)`: any registered dataset-level analysis, e.g.
        `ds.attn.modality(queries="generated")` (see `attnstore.analysis.studies`)."""
        if name.startswith("_") or name not in ANALYSES:
            raise AttributeError(f"'{type(self).__name__}' has no attribute '{name}'")
        entry = ANALYSES[name]
        return functools.update_wrapper(functools.partial(entry.func, self._ds), entry.func)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *ANALYSES})

    # -- answers ---------------------------------------------------------------------------------------
    def answer_correct(self) -> xr.DataArray:
        """Per image: 1 the answer is right, 0 wrong, -1 unknown  # [image] int8 (named `answer_correct`:
        `ds.assign(answer_correct=ds.attn.answer_correct())` joins it; `visual_ratio(label="answer_correct")`
        uses it directly). From `expected_answer` or `pope_correct`; -1 everywhere in a store without either."""
        return self.cached("answer-correct", lambda: answer_correct(self._ds))

    # -- grounding (stores with object boxes) --------------------------------------------------------
    def grounding(
        self, token: str = ANSWER, target: str | int = TARGET_OBJECT, keys: str = "all", images=None
    ) -> xr.Dataset:
        """In-box share and pointing game of `token` on the `target` object's box, every image (or
        `images`) x layer x head; see `attnstore.analysis.grounding.store_grounding`."""
        return store_grounding(self._ds, token=token, target=target, keys=keys, images=images)

    def grounding_heads(
        self,
        token: str = ANSWER,
        target: str | int = TARGET_OBJECT,
        keys: str = "all",
        by: str = "inbox_lift",
        images=None,
    ) -> xr.Dataset:
        """Heads ranked by how well they localise the target object, best first (`rank_heads`)."""
        return rank_heads(self.grounding(token, target, keys, images), by=by)
