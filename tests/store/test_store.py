"""The store: opens with plain xarray/zarr, round-trips, appends, survives crashes, rejects bad targets."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from attnstore.errors import StoreError
from attnstore.extraction.pipeline import run_extraction
from attnstore.extraction.synthetic import _gradient_image
from attnstore.schema import ATTENTION_DIMS, SCHEMA_VERSION
from attnstore.store import AttnStore, StoreShape, open_dataset, round_mantissa

STANDARD_V3_CODECS = {"sharding_indexed", "bytes", "blosc", "zstd", "vlen-utf8", "crc32c", "transpose", "gzip"}


def test_plain_xarray_opens_without_warnings(synthetic_store):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(synthetic_store)
        assert ds["attention"].dims == ATTENTION_DIMS
        assert ds["attention"].dtype == np.float16
        assert ds.sizes["image"] == 3
        assert ds.attrs["schema_version"] == SCHEMA_VERSION


def test_every_array_uses_standard_codecs_and_reads_with_zarr(synthetic_store):
    group = zarr.open_group(synthetic_store, mode="r")
    for name, array in group.arrays():
        meta = json.loads(Path(synthetic_store, name, "zarr.json").read_text())
        codecs = {c["name"] for c in meta["codecs"]}
        for c in meta["codecs"]:
            codecs |= {inner["name"] for inner in c.get("configuration", {}).get("codecs", [])}
        assert codecs <= STANDARD_V3_CODECS, (name, codecs)
        assert array[...].shape == array.shape


def test_attention_chunking_one_row_per_chunk_one_shard_per_image(synthetic_store):
    att = zarr.open_group(synthetic_store, mode="r")["attention"]
    _, L, H, Q, K = att.shape
    assert att.chunks == (1, L, H, 1, K)
    assert att.shards == (1, L, H, Q, K)


def test_values_round_trip(tmp_path, tiny_adapter):
    image = _gradient_image(300, 200)
    from attnstore.extraction.extract import extract

    result = extract(tiny_adapter, image, "Describe.", max_new_tokens=3)
    store = AttnStore.create(
        str(tmp_path / "s.zarr"), StoreShape(2, 4, result.n_query + 5, result.n_key + 5), {"model_id": "m"}
    )
    (index,) = store.allocate(["a.png"], ["/a.png"])
    store.write_image(index, result, image)
    ds = open_dataset(str(tmp_path / "s.zarr"))
    img = ds.isel(image=0)
    np.testing.assert_array_equal(img.attention.values[:, :, : result.n_query, : result.n_key], result.attention)
    assert img.attention.values[:, :, result.n_query :].max() == 0  # padding
    assert list(img.token_text.values[: result.n_key]) == result.token_text
    assert int(img.n_query) == result.n_query and int(img.complete) == 1
    assert str(img.answer.values) == result.answer
    assert (int(img.original_width), int(img.original_height)) == (300, 200)
    pixels = img.pixels.values[: int(img.image_height), : int(img.image_width)]
    np.testing.assert_array_equal(pixels, np.asarray(image))


@pytest.mark.parametrize("keep_bits", [0, 3, 7, 10])
def test_round_mantissa_error_bound(keep_bits):
    rng = np.random.default_rng(0)
    values = rng.random(10000).astype(np.float16) * np.float16(0.9) + np.float16(1e-4)
    rounded = round_mantissa(values, keep_bits).astype(np.float64)
    rel = np.abs(rounded - values) / values.astype(np.float64)
    assert rel.max() <= 2.0 ** -(keep_bits + 1) + 1e-12
    kept = rounded.astype(np.float16).view(np.uint16) & ((1 << (10 - keep_bits)) - 1)
    assert (kept == 0).all()
    assert round_mantissa(np.zeros(3, np.float16), keep_bits).max() == 0
    if keep_bits == 10:
        np.testing.assert_array_equal(rounded, values)


def test_append_keeps_existing_images(tmp_path, tiny_adapter):
    paths = []
    for i, size in enumerate([(320, 240), (240, 320), (200, 200)]):
        paths.append(tmp_path / f"im{i}.png")
        _gradient_image(*size, seed=i).save(paths[-1])
    out = str(tmp_path / "s.zarr")
    run_extraction(tiny_adapter, paths[:2], "Describe.", out, max_new_tokens=2, show_progress=False)
    before = open_dataset(out).attention.values.copy()
    report = run_extraction(tiny_adapter, paths, "Describe.", out, max_new_tokens=2, show_progress=False)
    assert report.written == ["im2.png"] and sorted(report.skipped) == ["im0.png", "im1.png"]
    ds = open_dataset(out)
    assert ds.sizes["image"] == 3 and ds.complete.values.all()
    np.testing.assert_array_equal(ds.attention.values[:2, ..., : before.shape[-2], : before.shape[-1]], before)


def test_capacity_growth_keeps_data(synthetic_store, tmp_path):
    import shutil

    path = str(tmp_path / "copy.zarr")
    shutil.copytree(synthetic_store, path)
    before = open_dataset(path).attention.values
    store = AttnStore.open(path)
    store.ensure_capacity(store.query_capacity + 3, store.key_capacity + 7)
    after = open_dataset(path).attention.values
    assert after.shape[-2:] == (before.shape[-2] + 3, before.shape[-1] + 7)
    np.testing.assert_array_equal(after[..., : before.shape[-2], : before.shape[-1]], before)


def test_crash_mid_write_is_not_complete_and_rerun_finishes_once(tmp_path, tiny_adapter, monkeypatch):
    import attnstore.store.writer as store_module

    path = tmp_path / "a.png"
    _gradient_image(320, 240).save(path)
    out = str(tmp_path / "s.zarr")

    class Killed(BaseException):
        """Stands for SIGKILL (an ordinary exception mid-image is undone instead: the write unit's journal)."""

    def crash(image):
        raise Killed

    monkeypatch.setattr(store_module, "display_pixels", crash)  # dies after attention, before metadata
    with pytest.raises(Killed):
        run_extraction(tiny_adapter, [path], "Describe.", out, max_new_tokens=2, show_progress=False)
    ds = open_dataset(out)
    assert ds.sizes["image"] == 1 and int(ds.complete[0]) == 0
    monkeypatch.undo()
    report = run_extraction(tiny_adapter, [path], "Describe.", out, max_new_tokens=2, show_progress=False)
    assert report.written == ["a.png"]
    ds = open_dataset(out)
    assert ds.sizes["image"] == 1 and int(ds.complete[0]) == 1  # slot reused: complete exactly once


def test_bad_targets_give_store_errors(tmp_path, synthetic_store):
    a_file = tmp_path / "file.zarr"
    a_file.write_text("not a store")
    with pytest.raises(StoreError, match="is a file"):
        open_dataset(str(a_file))
    with pytest.raises(StoreError, match="is a file"):
        AttnStore.create(str(a_file), StoreShape(1, 1, 1, 1), {"model_id": "m"})
    with pytest.raises(StoreError, match="no attnstore store"):
        open_dataset(str(tmp_path / "missing.zarr"))
    plain = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    plain.attrs["hello"] = 1
    with pytest.raises(StoreError, match="not an attnstore store"):
        AttnStore.open(str(tmp_path / "plain.zarr"))
    with pytest.raises(StoreError, match="already exists"):
        AttnStore.create(synthetic_store, StoreShape(1, 1, 1, 1), {"model_id": "m"})


def test_other_schema_version_is_refused(tmp_path, synthetic_store):
    import shutil

    path = tmp_path / "old.zarr"
    shutil.copytree(synthetic_store, path)
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["schema_version"] = SCHEMA_VERSION + 1
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="schema version"):
        open_dataset(str(path))
    with pytest.raises(StoreError, match="schema version"):
        AttnStore.open(str(path))


def test_appending_with_another_model_is_refused(tmp_path, synthetic_store, tiny_adapter):
    import shutil

    path = tmp_path / "s.zarr"
    shutil.copytree(synthetic_store, path)
    image = tmp_path / "x.png"
    _gradient_image(64, 64).save(image)
    with pytest.raises(StoreError, match="model_id='synthetic'"):
        run_extraction(tiny_adapter, [image], "Describe.", str(path), show_progress=False)
    assert open_dataset(str(path)).sizes["image"] == 3
