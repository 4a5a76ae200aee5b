"""Lazy access to one store for the explorer, with small LRU caches.

Nothing here loads the attention array: a clicked token reads one stored chunk
(`attnstore.analysis.token_weights`, i.e. `attention[image, :, :, q, :n_key]`
with basic slices on a `chunks=None` Dataset) and keeps the last few rows. The
store may be a local path or any fsspec URL (s3://, https:// with range requests).
Instances are created per app by `create_app`; there is no module-level state.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from PIL import Image

from attnstore import analysis
from attnstore.errors import AttnstoreError
from attnstore.schema import TokenKind
from attnstore.store import open_dataset
from explorer.tokens import display_text, strip_items, tokenizer_style

THUMB_SIDE = 96


class LRU:
    """A small thread-safe least-recently-used cache (values are computed outside the lock)."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
        value = make()
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._data)


@dataclass
class ImageMeta:
    """Everything about one image except its attention, in memory."""

    index: int
    img: xr.Dataset  # `analysis.select_image` result: attention lazy, per-key variables loaded
    name: str
    prompt: str
    answer: str
    width: int  # display copy in the store (pixels)
    height: int
    query_position: np.ndarray  # [query] sequence position of each stored row
    key_query: np.ndarray  # [key] query row of each position, -1 if no row is stored
    token_text: list[str]  # [key] raw token text
    display: list[str]  # [key] token text as a reader sees it (explorer.tokens.display_text)
    items: list[dict]  # token strip items (explorer.tokens.strip_items)

    @property
    def n_query(self) -> int:
        return int(self.query_position.shape[0])

    @property
    def n_key(self) -> int:
        return len(self.token_text)

    def query_of(self, key: int) -> int:
        """Query row of the token at sequence position `key`; explains why when there is none."""
        if not 0 <= key < self.n_key:
            raise AttnstoreError(f"token #{key} does not exist: image {self.index} has {self.n_key} tokens")
        row = int(self.key_query[key])
        if row < 0:
            raise AttnstoreError(
                f"token #{key} {self.token_text[key]!r} has no stored attention row "
                "(the store keeps text rows only): pick a text token"
            )
        return row

    def default_token(self) -> int | None:
        """First answer token (else the last stored row): what a fresh view shows."""
        kinds = np.asarray(self.img["token_kind"].values)
        answer = [int(p) for p in self.query_position if kinds[p] == TokenKind.GENERATED]
        if answer:
            return answer[0]
        return int(self.query_position[-1]) if self.n_query else None


class StoreState:
    """One store opened lazily, plus caches of recently used images, rows and pictures.

    Parameters
    ----------
    source : store path, fsspec URL, or an already opened Dataset (`open_dataset(..., chunks=None)`).
    storage_options : fsspec options for remote stores.
    """

    def __init__(self, source: str | xr.Dataset, storage_options: dict | None = None):
        if isinstance(source, xr.Dataset):
            self.ds, self.label = source, str(source.encoding.get("source", "dataset"))
        else:
            self.ds, self.label = open_dataset(str(source), storage_options=storage_options), str(source)
        self.attrs = dict(self.ds.attrs)
        self.n_images = int(self.ds.sizes["image"])
        self.n_layers = int(self.ds.sizes["layer"])
        self.n_heads = int(self.ds.sizes["head"])
        self._catalog: dict[str, np.ndarray] | None = None
        self._images = LRU(64)  # ~0.3 MB each; 8 thrashed when a team clicked through 20 images (3x the CPU)
        self._rows = LRU(64)  # (image, query, norm) -> [layer, head, key] float32
        self._stats = LRU(64)
        self._pictures = LRU(16)
        self._thumbs = LRU(512)
        self._reverse = LRU(32)
        self._derived: dict[str, LRU] = {}

    def cached(self, kind: str, key: Hashable, make: Callable[[], Any], maxsize: int = 16) -> Any:
        """A per-store cache for things derived by other modules (e.g. figure geometry per image)."""
        cache = self._derived.setdefault(kind, LRU(maxsize))
        return cache.get(key, make)

    # -- store-level ----------------------------------------------------------------------
    @property
    def random_weights(self) -> bool:
        return bool(self.attrs.get("random_weights", False))

    @property
    def model_id(self) -> str:
        return str(self.attrs.get("model_id", "?"))

    def catalog(self) -> dict[str, np.ndarray]:
        """Names, answers (lower-cased copies for search) and complete flags of every image  # [image]."""
        if self._catalog is None:
            names = np.array([str(n) for n in self.ds["image_name"].values], dtype=str)
            answers = np.array([str(a) for a in self.ds["answer"].values], dtype=str)
            self._catalog = {
                "name": names,
                "answer": answers,
                "search": np.char.lower(np.char.add(np.char.add(names, " "), answers)),
                "complete": np.asarray(self.ds["complete"].values).astype(bool),
            }
        return self._catalog

    def first_image(self) -> int | None:
        done = np.flatnonzero(self.catalog()["complete"])
        return int(done[0]) if done.size else None

    def check_image(self, image: Any) -> int:
        """`image` as a valid, complete image index, or an AttnstoreError saying what is wrong."""
        try:
            index = int(image)
        except (TypeError, ValueError):
            raise AttnstoreError(f"image {image!r} is not a number") from None
        if not 0 <= index < self.n_images:
            raise AttnstoreError(
                f"image {index} does not exist: the store has {self.n_images} images (0-{self.n_images - 1})"
            )
        if not self.catalog()["complete"][index]:
            raise AttnstoreError(f"image {index} is not complete in the store (extraction unfinished)")
        return index

    # -- per image ------------------------------------------------------------------------
    def image(self, index: int) -> ImageMeta:
        index = self.check_image(index)
        return self._images.get(index, lambda: self._load_image(index))

    def _load_image(self, index: int) -> ImageMeta:
        img = analysis.select_image(self.ds, index)
        qpos = np.asarray(img["query_position"].values, np.int64)  # [query]
        texts = [str(t) for t in img["token_text"].values]
        key_query = np.full(len(texts), -1, np.int64)
        key_query[qpos] = np.arange(qpos.shape[0])
        style = tokenizer_style(texts)
        items = strip_items(
            texts,
            np.asarray(img["token_kind"].values),
            np.asarray(img["patch_tile"].values),
            np.asarray(img["patch_row"].values),
            np.asarray(img["patch_col"].values),
            qpos,
            int(img["tile_cols"].values),
        )
        return ImageMeta(
            index=index,
            img=img,
            name=str(img["image_name"].values),
            prompt=str(img["prompt"].values),
            answer=str(img["answer"].values),
            width=int(img.sizes["pixel_x"]),
            height=int(img.sizes["pixel_y"]),
            query_position=qpos,
            key_query=key_query,
            token_text=texts,
            display=[display_text(t, style) for t in texts],
            items=items,
        )

    def weights(self, index: int, query: int, norm: str = "raw") -> xr.DataArray:
        """One token's attention  # [layer, head, key] float32, normalised (`analysis.normalise`); cached."""
        meta = self.image(index)

        def make() -> xr.DataArray:
            raw = self._rows.get((index, query, "raw"), lambda: analysis.token_weights(meta.img, query))
            return analysis.normalise(raw, meta.img, norm)

        return make() if norm == "raw" else self._rows.get((index, query, norm), make)

    def stats(self, index: int, query: int) -> dict[str, xr.DataArray]:
        """Image share and entropy of one token for every layer and head  # [layer, head]; cached."""
        meta = self.image(index)

        def make() -> dict[str, xr.DataArray]:
            raw = self.weights(index, query, "raw")
            return {"share": analysis.image_share(raw, meta.img), "entropy": analysis.entropy(raw, meta.img)}

        return self._stats.get((index, query), make)

    def reverse(self, index: int, keys: tuple[int, ...], layers=None, heads=None) -> xr.DataArray:
        """Attention of every stored text row to `keys`  # [query]; reads the image's rows once, cached."""
        meta = self.image(index)
        lkey = tuple(layers) if layers is not None else None
        hkey = tuple(heads) if heads is not None else None
        return self._reverse.get(
            (index, keys, lkey, hkey),
            lambda: analysis.reverse_attention(meta.img, list(keys), layers=layers, heads=heads).load(),
        )

    # -- pictures ---------------------------------------------------------------------------
    def pixels(self, index: int) -> np.ndarray:
        """The display copy of an image  # [y, x, rgb] uint8 (one chunk read)."""
        return np.asarray(self.image(index).img["pixels"].values)

    def picture_png(self, index: int) -> bytes:
        return self._pictures.get(("png", index), lambda: _png(self.pixels(index)))

    def thumbnail_png(self, index: int) -> bytes:
        """A small PNG of the image (built on first request only: 10k images cost nothing up front)."""
        if not 0 <= index < self.n_images:
            raise AttnstoreError(f"image {index} does not exist: the store has {self.n_images} images")

        def make() -> bytes:
            h, w = (int(v) for v in self.ds[["image_height", "image_width"]].isel(image=index).to_array().values)
            pixels = np.asarray(self.ds["pixels"].isel(image=index, pixel_y=slice(0, h), pixel_x=slice(0, w)).values)
            picture = Image.fromarray(pixels)
            picture.thumbnail((THUMB_SIDE, THUMB_SIDE))
            return _png(np.asarray(picture))

        return self._thumbs.get(index, make)


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)  # speed over size: served once
    return buf.getvalue()
