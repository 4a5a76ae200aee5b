"""The batched scan that `aggregate_token` and the studies share (`attnstore.analysis.scan`)."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

import attnstore.analysis as A
from attnstore.analysis import scan as S
from attnstore.analysis.grid import place_on_grid
from attnstore.errors import InvalidArgument
from attnstore.store import AttnStore, open_dataset
from attnstore.store.xarray_glue import reader_of


def test_scan_batches_hand_each_image_its_selection_in_order(synthetic_store):
    ds = open_dataset(synthetic_store)
    names = [str(n) for n in ds["image_name"].values]
    seen, threads = [], set()

    def per_image(img, image):
        threads.add(threading.get_ident())
        loaded = all(img.variables[v]._in_memory for v in S.TEXT_VARS)
        seen.append(image)
        if image == 1:
            return None  # nothing to report: kept as None in its batch
        return {"image": image, "name": str(img["image_name"].values), "loaded": loaded,
                "n_key": img.sizes["key"]}  # fmt: skip

    batches = list(S.scan_batches(ds, per_image, [0, 1, 2], batch_size=2, variables=(*S.TEXT_VARS, "image_name")))
    assert [len(b) for b in batches] == [2, 1] and batches[0][1] is None
    results = [r for b in batches for r in b if r is not None]
    assert [r["image"] for r in results] == [0, 2]
    assert [r["name"] for r in results] == [names[0], names[2]]
    assert all(r["loaded"] for r in results)  # the batch's small variables came preloaded
    assert [r["n_key"] for r in results] == [int(ds["n_key"].values[i]) for i in (0, 2)]  # valid extents
    assert sorted(seen) == [0, 1, 2] and threading.get_ident() not in threads  # dask worker threads


def test_scan_drops_nones_and_skips_incomplete_images(synthetic_store, tmp_path):
    path = tmp_path / "store.zarr"
    shutil.copytree(synthetic_store, path)
    AttnStore.open(str(path)).group["complete"][1] = 0  # image 1 half-written
    ds = open_dataset(str(path))
    parts = S.scan(ds, lambda img, image: {"image": image}, batch_size=1)
    assert [p["image"] for p in parts] == [0, 2]
    assert [p["image"] for p in S.scan(ds, lambda img, image: {"image": image}, images=[2, 1])] == [2]
    # aggregate_token scans the same way: an incomplete image is not used even when it is listed
    table = A.aggregate_token(ds, "a", k=5, grid_size=8, images=[0, 1, 2])
    assert sorted(set(table["image"].values.tolist())) == [0, 2]


@pytest.mark.parametrize("images, batch_size", [([5], 32), ([0], 0)])
def test_scan_rejects_bad_arguments(synthetic_store, images, batch_size):
    ds = open_dataset(synthetic_store)
    with pytest.raises(InvalidArgument):
        S.scan(ds, lambda img, image: None, images=images, batch_size=batch_size)


def test_aggregate_progress_counts_every_image_once(synthetic_store):
    ds = open_dataset(synthetic_store)
    done = []
    A.aggregate_token(ds, "a", k=5, grid_size=8, batch_size=2, on_image=done.append)
    assert done == [2, 1] and np.sum(done) == ds.sizes["image"]


def test_batch_arrays_equal_the_selection_of_each_image(synthetic_store):
    ds = open_dataset(synthetic_store)
    names = (*S.TEXT_VARS, "patch_box", "image_name", "tile_rows", "grid_cols")
    lo, sub = S.preload(ds, [1, 2], names)
    batch = S.BatchArrays(sub, lo, names)
    for image in (1, 2):
        img, arrays = A.select_image(ds, image), batch.image(image)
        assert set(arrays) == {n for n in names if n in ds}
        for name, values in arrays.items():  # cut to the image's valid extents, like select_image
            want = img[name].values
            assert values.shape == want.shape and values.dtype == want.dtype, name
            np.testing.assert_array_equal(values, want, err_msg=name)  # NaN boxes equal, strings compared


def test_token_rows_and_grid_placement_read_arrays_like_the_selection(synthetic_store):
    ds = open_dataset(synthetic_store)
    lo, sub = S.preload(ds, [0], (*S.GRID_VARS, "token_text"))
    img, arrays = A.select_image(ds, 0), S.BatchArrays(sub, lo, (*S.GRID_VARS, "token_text")).image(0)
    for token in ("a", "@answer", "A"):
        assert A.token_occurrences(arrays, token) == A.token_occurrences(img, token)
    vals = np.random.default_rng(0).random((2, img.sizes["key"]), dtype=np.float32)
    for view in ("tiles", "global", "tile"):
        got, dims = place_on_grid(vals, arrays, view)
        want, want_dims = place_on_grid(vals, img, view)
        assert dims == want_dims and np.array_equal(got, want, equal_nan=True)


@pytest.mark.parametrize("kwargs", [{}, {"normalise_mode": "image", "layers": [1], "k": 3}, {"method": "mean"}])
def test_aggregate_on_arrays_equals_aggregate_on_selections(synthetic_store, kwargs):
    """A store's reader: images as arrays (`BatchArrays`); plain xarray: `select_image` per image."""
    import xarray as xr

    fast = open_dataset(synthetic_store)
    plain = xr.open_zarr(synthetic_store, zarr_format=3)
    assert reader_of(fast) is not None and reader_of(plain) is None
    got, want = (A.aggregate_token(ds, "a", grid_size=8, batch_size=2, **kwargs) for ds in (fast, plain))
    assert set(got.variables) == set(want.variables) and got.sizes == want.sizes
    for name in want.variables:
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)
