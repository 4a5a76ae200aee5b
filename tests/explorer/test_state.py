"""Lazy store access: a click reads only its own chunk; caches (on ds.attn) keep recent rows; clear errors;
a store an extraction is still writing is followed without a restart."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from zarr.storage import LocalStore, WrapperStore

from attnstore.errors import AttnstoreError, StoreError
from explorer.state import StoreState


class CountingStore(WrapperStore):
    """Records the bytes read per key (byte-range reads of shards included)."""

    def __init__(self, store):
        super().__init__(store)
        self.reads: list[tuple[str, int]] = []

    async def get(self, key, prototype, byte_range=None):
        buf = await self._store.get(key, prototype, byte_range)
        self.reads.append((key, 0 if buf is None else len(buf)))
        return buf

    def _with_store(self, store):  # zarr re-wraps stores (e.g. read-only copies)
        return type(self)(store)


def test_a_click_reads_one_attention_chunk(synthetic_store):
    counting = CountingStore(LocalStore(synthetic_store, read_only=True))
    ds = xr.open_zarr(counting, chunks=None, zarr_format=3)
    state = StoreState(ds)
    meta = state.image(1)
    attention_bytes = ds["attention"].isel(image=1).size * 2  # the whole image, fp16
    row_bytes = attention_bytes // ds.sizes["query"]  # one stored chunk (1, L, H, 1, K) uncompressed
    counting.reads.clear()
    state.ds.attn.weights(1, meta.query_of(meta.default_token()))
    read = [(k, n) for k, n in counting.reads if k.startswith("attention/")]
    assert read and sum(n for _, n in read) < 2 * row_bytes + 4096  # one compressed chunk (+ the shard index)
    assert sum(n for _, n in read) < attention_bytes / 5
    counting.reads.clear()
    state.ds.attn.weights(1, meta.query_of(meta.default_token()))  # the same token again: served from the cache
    assert not [k for k, _ in counting.reads if k.startswith("attention/")]


def test_normalised_rows_are_cached_per_mode(state):
    meta = state.image(0)
    q = meta.query_of(meta.default_token())
    a = state.ds.attn.weights(0, q, "image")
    assert state.ds.attn.weights(0, q, "image") is a
    assert float(a.sum("key").max()) == pytest.approx(1.0, rel=1e-4)  # renormalised over image keys


def test_query_of_explains_tokens_without_rows(state):
    meta = state.image(0)
    with pytest.raises(AttnstoreError, match="no stored attention row"):
        meta.query_of(10)
    with pytest.raises(AttnstoreError, match="does not exist"):
        meta.query_of(meta.n_key + 5)


def test_check_image(state):
    assert state.check_image("2") == 2
    for bad, words in [(3, "does not exist"), (-1, "does not exist"), ("two", "not a number"), (None, "not a number")]:
        with pytest.raises(AttnstoreError, match=words):
            state.check_image(bad)


def test_catalog_and_pictures(state):
    cat = state.catalog()
    assert cat["name"].tolist() == [f"synthetic_{i:05d}.png" for i in range(3)]
    assert cat["complete"].all()
    png = state.thumbnail_png(2)
    assert png.startswith(b"\x89PNG")
    assert state.thumbnail_png(2) is png
    pixels = state.pixels(0)
    assert pixels.shape == (480, 640, 3)  # cropped to the valid extent of the display copy


def test_missing_store_is_a_store_error(tmp_path):
    with pytest.raises(StoreError):
        StoreState(str(tmp_path / "nothing.zarr"))


def test_url_stores_open(synthetic_store):
    state = StoreState("file://" + synthetic_store)
    meta = state.image(0)
    assert np.isfinite(np.asarray(state.ds.attn.weights(0, meta.query_of(meta.default_token())))).all()
