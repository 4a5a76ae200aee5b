"""Read backends: tensorstore and zarr-python return the same fp16 values on every store shape
(padded, `--queries all`, grown after the first image, packed zip, http and s3 on the local test
servers); the choice is automatic, forceable and shown by `attnstore info`; damaged, rewritten and
late-written shards are noticed."""

from __future__ import annotations

import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from support.servers import BUCKET

from attnstore.cli import main
from attnstore.errors import AttnstoreError, InvalidArgument, StoreError
from attnstore.extraction.synthetic import _gradient_image, make_synthetic_store, synthetic_extraction
from attnstore.records import Extraction
from attnstore.store import AttnStore, StoreShape, open_dataset
from attnstore.store.pack import pack_store
from attnstore.store.readers.choice import BACKEND_ENV, open_reader
from attnstore.store.readers.lazy import LazyReader
from attnstore.store.xarray_glue import read_image_rows, read_rows, reader_name, reader_of


def extraction(grid: tuple[int, int], queries: str, n_answer: int, rng, n_layers: int = 2, n_heads: int = 3):
    return synthetic_extraction(grid, n_answer, rng, n_layers=n_layers, n_heads=n_heads, queries=queries, seq=4)


def write_store(path: Path, results: list[Extraction], capacity: tuple[int, int], queries: str) -> str:
    """A store of `results`, created with `capacity` (query, key): smaller than an image makes it grow."""
    first = results[0].attention
    shape = StoreShape(first.shape[0], first.shape[1], *capacity)
    store = AttnStore.create(str(path), shape, {"model_id": "test", "queries": queries})
    names = [f"img{i}.png" for i in range(len(results))]
    for index, result in zip(store.allocate(names, names), results):
        store.write_image(index, result, _gradient_image(64, 48, seed=index))
    return str(path)


@pytest.fixture(scope="module")
def stores(tmp_path_factory, synthetic_store):
    """Every store shape the suite builds: name -> path."""
    root = tmp_path_factory.mktemp("backend")
    rng = np.random.default_rng(5)
    all_queries = [extraction(g, "all", 5, rng) for g in [(1, 2), (2, 2)]]
    grown = [extraction(g, "text", n, rng) for g, n in [((1, 1), 3), ((2, 3), 9), ((1, 2), 4)]]
    paths = {
        "padded": synthetic_store,
        "queries all": write_store(root / "all.zarr", all_queries, (8, 16), "all"),
        # Capacity (4 rows, 16 keys) grows with the images: several shards per image along query and key.
        "grown": write_store(root / "grown.zarr", grown, (4, 16), "text"),
    }
    pack_store(synthetic_store, str(root / "padded.zip"))
    paths["zip"] = str(root / "padded.zip")
    return paths


def stored(path: str) -> np.ndarray:
    """The whole attention array read by zarr-python alone  # [image, layer, head, query, key]."""
    from attnstore.store.remote import store_like

    target, options = store_like(path)
    return zarr.open_group(store=target, mode="r", zarr_format=3, storage_options=options)["attention"][...]


def assert_bitwise(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype == np.float16
    np.testing.assert_array_equal(a.view(np.uint16), b.view(np.uint16))


@pytest.mark.parametrize("shape", ["padded", "queries all", "grown", "zip"])
def test_both_backends_return_the_stored_values(stores, shape):
    path = stores[shape]
    expected = np.moveaxis(stored(path), 3, 1)  # [image, row, layer, head, key]
    readers = {name: open_reader(path, backend=name) for name in ("tensorstore", "zarr")}
    assert {name: r.name for name, r in readers.items()} == {"tensorstore": "tensorstore", "zarr": "zarr"}
    n_rows = expected.shape[1]
    rows = [n_rows - 1, 0, 3, 3, -1]  # any order, repeats and negative indices
    for reader in readers.values():
        for image in range(expected.shape[0]):
            assert_bitwise(reader.read_image_rows(image), expected[image])
            assert_bitwise(reader.read_image_rows(image, slice(1, 5)), expected[image, 1:5])
            assert_bitwise(reader.read_rows(image, rows), expected[image, rows])
    if shape == "grown":  # the capacity grew past the first shard along both axes
        assert readers["tensorstore"].layout.shard[3:] == (4, 16)
        assert expected.shape[1] > 4 and expected.shape[4] > 16


def test_xarray_slices_read_through_the_reader(stores):
    path = stores["grown"]
    expected = stored(path)
    for backend in ("tensorstore", "zarr"):
        att = open_dataset(path, read_backend=backend)["attention"]
        assert reader_name(att.to_dataset()).startswith(backend)
        sel = att.isel(image=1, layer=1, query=[4, 0], key=slice(2, 30))
        assert sel.dims == ("head", "query", "key")
        assert_bitwise(sel.values, expected[1, 1][:, [4, 0], 2:30])
        assert_bitwise(att.isel(image=[2, 0], query=2).values, expected[[2, 0], :, :, 2])
        assert_bitwise(att.isel(image=slice(0, 3, 2), head=-1).values, expected[0:3:2, :, -1])
        with pytest.raises(IndexError):  # like numpy and zarr arrays
            att.isel(image=0, query=10_000).load()
        ds = open_dataset(path, read_backend=backend)
        assert_bitwise(read_rows(ds, 1, [5, 1]), np.moveaxis(expected[1][:, :, [5, 1]], 2, 0))
        assert_bitwise(read_image_rows(ds, 2, slice(0, 3)), np.moveaxis(expected[2][:, :, 0:3], 2, 0))


def test_dask_chunks_are_whole_shards_or_row_blocks(stores):
    path = stores["padded"]
    expected = stored(path)
    ds = open_dataset(path, chunks={})
    att = ds["attention"]
    assert att.chunks[0] == (1,) * expected.shape[0]  # one task per image ...
    assert att.chunks[3] == (expected.shape[3],)  # ... reading its whole shard, not one task per row
    assert_bitwise(att.values, expected)
    blocks = open_dataset(path, chunks={"query": 10})["attention"]
    assert set(blocks.chunks[3][:-1]) == {10}
    assert_bitwise(blocks.isel(image=2).values, expected[2])
    assert ds["n_key"].chunks is not None  # the other variables keep the requested dask chunks
    assert open_dataset(path)["attention"].chunk({}).chunks[3] == (expected.shape[3],)  # preferred: shards
    shipped = pickle.loads(pickle.dumps(blocks))  # dask may send the graph to other processes
    assert_bitwise(shipped.isel(image=1).values, expected[1])


def test_the_choice_is_automatic_forceable_and_shown_by_info(stores, monkeypatch, capsys):
    path = stores["padded"]
    assert open_reader(path).name == "tensorstore"
    assert open_reader(stores["zip"]).name == "tensorstore"  # tensorstore opens local zips itself
    monkeypatch.setenv(BACKEND_ENV, "zarr")
    assert open_reader(path).name == "zarr"
    assert main(["info", path]) == 0
    assert f"read backend: zarr-python (forced by {BACKEND_ENV})" in capsys.readouterr().out
    monkeypatch.setenv(BACKEND_ENV, "tensorstore")
    assert main(["info", path]) == 0
    assert "read backend: tensorstore (file kvstore)" in capsys.readouterr().out
    monkeypatch.setenv(BACKEND_ENV, "fast")
    with pytest.raises(AttnstoreError, match=f"{BACKEND_ENV} must be one of auto, tensorstore, zarr"):
        open_dataset(path)
    monkeypatch.delenv(BACKEND_ENV)
    with pytest.raises(InvalidArgument, match="must be one of") as err:
        open_dataset(path, read_backend="fast")
    assert err.value.param == "read_backend"


def test_zarr_reads_what_tensorstore_cannot_open(stores, monkeypatch):
    path = stores["padded"]
    monkeypatch.setitem(sys.modules, "tensorstore", None)  # as if it were not installed
    reader = open_reader(path)
    assert reader.name == "zarr" and "tensorstore is not installed" in reader.detail
    assert "tensorstore is not installed" in reader_name(open_dataset(stores["zip"]))
    with pytest.raises(StoreError, match="tensorstore read backend cannot read .* not installed"):
        open_reader(path, backend="tensorstore")


@pytest.mark.parametrize("tensorstore", [True, False], ids=["tensorstore", "zarr"])
def test_a_missing_row_read_lazily_names_the_image(synthetic_store, tmp_path, monkeypatch, tensorstore):
    """The "auto" reader opens the real one on the first attention read: `attach`'s missing-row checks
    reach it, so a deleted shard of a complete image is an error naming the image, never a zero map."""
    path = Path(shutil.copytree(synthetic_store, tmp_path / "s.zarr"))
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    if not tensorstore:
        monkeypatch.setitem(sys.modules, "tensorstore", None)  # "auto" falls back to zarr-python
    (path / "attention" / "c" / "1" / "0" / "0" / "0" / "0").unlink()
    ds = open_dataset(str(path))
    reader = reader_of(ds)
    assert isinstance(reader, LazyReader) and reader.name == "auto"  # not opened yet
    damaged = r"image 1 \(synthetic_00001.png\) is damaged"
    with pytest.raises(StoreError, match=damaged + r": its 'attention' chunk for query row\(s\) 3 is missing"):
        read_rows(ds, 1, [3])
    assert reader.name == ("tensorstore" if tensorstore else "zarr")  # the opened reader read it
    with pytest.raises(StoreError, match=damaged):
        np.asarray(ds["attention"].isel(image=1))  # a whole image through xarray


def test_s3_client_options_tensorstore_lacks_fall_back_to_zarr(s3_endpoint, stores, monkeypatch):
    import s3fs

    s3fs.S3FileSystem(endpoint_url=s3_endpoint).put(stores["padded"], f"{BUCKET}/opts.zarr", recursive=True)
    url = f"s3://{BUCKET}/opts.zarr"
    options = {"endpoint_url": s3_endpoint, "config_kwargs": {"connect_timeout": 5}}
    reader = open_reader(url, options)
    assert reader.name == "zarr" and "storage options ['config_kwargs']" in reader.detail
    assert_bitwise(reader.read_image_rows(1), np.moveaxis(stored(stores["padded"])[1], 2, 0))
    with pytest.raises(StoreError, match="tensorstore read backend cannot read"):
        open_reader(url, options, backend="tensorstore")


def test_remote_stores_read_alike(s3_endpoint, http_server, stores, tmp_path):
    import s3fs

    www = tmp_path / "www"
    shutil.copytree(stores["padded"], www / "s.zarr")
    shutil.copy(stores["zip"], www / "s.zip")
    base = http_server(www)
    s3fs.S3FileSystem(endpoint_url=s3_endpoint).put(stores["padded"], f"{BUCKET}/s.zarr", recursive=True)
    expected = np.moveaxis(stored(stores["padded"]), 3, 1)  # [image, row, layer, head, key]
    urls = {"http": f"{base}/s.zarr", "http zip": f"{base}/s.zip", "s3": f"s3://{BUCKET}/s.zarr"}
    for kind, url in urls.items():
        for backend in ("tensorstore", "zarr"):
            reader = open_reader(url, backend=backend)
            assert reader.name == backend, kind
            for image in range(expected.shape[0]):
                assert_bitwise(reader.read_image_rows(image), expected[image])
                assert_bitwise(reader.read_rows(image, [2, 0]), expected[image, [2, 0]])
    assert "http kvstore" in open_reader(urls["http"]).detail and "s3 kvstore" in open_reader(urls["s3"]).detail


def test_a_damaged_shard_index_is_an_error_not_wrong_values(stores, tmp_path):
    path = tmp_path / "damaged.zarr"
    shutil.copytree(stores["padded"], path)
    shard = path / "attention" / "c" / "1" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF  # inside the index, before its checksum
    shard.write_bytes(bytes(data))
    reader = open_reader(str(path), backend="tensorstore")
    assert reader.read_rows(0, [1]).shape[0] == 1  # other images still read
    with pytest.raises(StoreError, match="corrupt index"):
        reader.read_rows(1, [0])


def test_a_damaged_chunk_fails_its_checksum_with_both_backends(stores, tmp_path):
    from attnstore.store.validation import is_checksum_error

    path = tmp_path / "flipped.zarr"
    shutil.copytree(stores["padded"], path)
    reader = open_reader(str(path), backend="tensorstore")
    assert reader.layout.chunk_checksum  # the writer ends every chunk with a crc32c
    shard = path / "attention" / "c" / "1" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    offset, nbytes = (int(v) for v in np.frombuffer(bytes(data[-(16 * reader.shape[3] + 4) : -4]), "<u8")[4:6])
    data[offset + nbytes // 2] ^= 0x10  # inside row 2's chunk
    shard.write_bytes(bytes(data))
    for backend in ("tensorstore", "zarr"):
        reader = open_reader(str(path), backend=backend)
        assert reader.read_rows(1, [3]).any()  # the other rows of the image still read
        with pytest.raises(ValueError) as err:
            reader.read_rows(1, [3, 2])
        assert is_checksum_error(err.value), backend


def test_a_shard_rewritten_after_its_index_was_cached_is_read_again(tmp_path):
    path = make_synthetic_store(str(tmp_path / "s.zarr"), n_images=2)
    reader = open_reader(path, backend="tensorstore")
    before = reader.read_rows(1, [3, 4])
    store = AttnStore.open(path)
    result = extraction((3, 4), "text", 12, np.random.default_rng(9), n_layers=2, n_heads=4)
    store.write_image(1, result, _gradient_image(64, 48))
    after = reader.read_rows(1, [3, 4])  # the cached index is stale: noticed by the generation check
    assert not np.array_equal(before, after)
    assert_bitwise(after, np.moveaxis(stored(path)[1][:, :, [3, 4]], 2, 0))


def test_analysis_reads_rows_alike_through_the_reader_and_plain_xarray(stores):
    import xarray as xr

    from attnstore.analysis import read_rows_fp16, select_image

    path = stores["grown"]
    plain = xr.open_zarr(path, zarr_format=3)  # no reader attached: one basic-slice read per row
    for backend in ("tensorstore", "zarr"):
        ds = open_dataset(path, read_backend=backend)
        for image in range(ds.sizes["image"]):
            rows = [2, 0, 2]
            assert_bitwise(
                read_rows_fp16(select_image(ds, image), rows), read_rows_fp16(select_image(plain, image), rows)
            )


@pytest.mark.parametrize("mask", ["0110011101", "1111", "0000", "1000000001", "0"])
def test_key_runs_take_what_np_take_takes(mask):
    from attnstore.analysis.kernels import key_runs, take_keys

    idx = np.flatnonzero(np.array([c == "1" for c in mask]))
    a = np.random.default_rng(0).random((2, 3, len(mask))).astype(np.float16)
    np.testing.assert_array_equal(take_keys(a, key_runs(idx)), np.take(a, idx, axis=-1))


def test_an_image_written_after_the_reader_opened_is_read(tmp_path):
    rng = np.random.default_rng(3)
    results = [extraction((1, 2), "text", 4, rng) for _ in range(2)]
    path = write_store(tmp_path / "live.zarr", results[:1], (8, 40), "text")
    store = AttnStore.open(path)
    store.allocate(["late.png"], ["late.png"])
    reader = open_reader(path, backend="tensorstore")
    assert not reader.read_rows(1, [0]).any()  # not written yet: fill value, and not remembered
    store.write_image(1, results[1], _gradient_image(64, 48))
    assert_bitwise(reader.read_rows(1, [0, 2]), np.moveaxis(stored(path)[1][:, :, [0, 2]], 2, 0))
    assert reader.read_rows(1, [0]).any()
    with pytest.raises(InvalidArgument, match="out of range") as err:
        reader.read_rows(2, [0])
    assert err.value.param == "image"
    with pytest.raises(StoreError, match="no attnstore store"):
        open_reader(str(tmp_path / "nothing.zarr"))


SMALL = ("token_kind", "query_position", "patch_box", "n_key", "tile_rows", "token_text", "image_name")


@pytest.mark.parametrize("shape", ["padded", "queries all", "grown", "zip"])
@pytest.mark.parametrize("backend", ["tensorstore", "zarr"])
def test_small_variables_load_alike_through_the_reader(stores, shape, backend):
    """`load_variables` (the analyses' batch loads) gives what xarray loads, for slices of the store
    (read by tensorstore when it can) and for any other selection (xarray's own path)."""
    from attnstore.store.xarray_glue import load_variables, reader_of

    ds = open_dataset(stores[shape], read_backend=backend)
    n = ds.sizes["image"]
    region = (slice(1, n), slice(0, ds.sizes["key"]))
    for name in ("token_kind", "token_text"):  # tensorstore reads numbers and strings itself (`StringChunks`)
        fast = reader_of(ds).read_variable(name, region)
        assert (fast is not None) == (backend == "tensorstore"), name
        if fast is not None:
            assert fast.dtype == ds[name].dtype
            np.testing.assert_array_equal(fast, ds[name].values[1:n])
    for selection in (slice(0, n), slice(1, n), slice(None, None, -1), [n - 1, 0]):
        sub = ds[["attention", *SMALL]].isel(image=selection)
        loaded = load_variables(sub, SMALL)
        for name in SMALL:
            expected = ds[name].isel(image=selection).values
            assert loaded[name].dims == ds[name].dims and loaded[name].dtype == expected.dtype, name
            np.testing.assert_array_equal(loaded[name].values, expected, err_msg=f"{name} {selection}")


@pytest.mark.parametrize("name", ["token_kind", "token_text"])
def test_a_damaged_small_chunk_is_still_zarrs_checksum_error(stores, tmp_path, name):
    """A small variable's chunk that tensorstore cannot read (or whose crc32c fails) is read again by
    zarr-python, whose checksum error the integrity guard names."""
    from attnstore.store.validation import is_checksum_error
    from attnstore.store.xarray_glue import load_variables

    path = tmp_path / "flipped.zarr"
    shutil.copytree(stores["padded"], path)
    chunk = path / name / "c" / "1" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    ds = open_dataset(str(path), read_backend="tensorstore")
    assert load_variables(ds.isel(image=slice(0, 1)), [name])[name].values.size  # image 0 is fine
    assert reader_of(ds).read_variable(name, (slice(0, 2), slice(0, ds.sizes["key"]))) is None
    with pytest.raises(ValueError) as err:
        load_variables(ds.isel(image=slice(0, 2)), [name])
    assert is_checksum_error(err.value)


def test_strings_never_written_are_the_fill_value(tmp_path):
    """An image slot allocated but not written yet: its token texts are the fill value, as zarr reads them."""
    from attnstore.store.xarray_glue import reader_of

    path = tmp_path / "slots.zarr"
    make_synthetic_store(str(path), n_images=2)
    AttnStore.open(str(path)).allocate(["later.png"], ["later.png"])
    ds = open_dataset(str(path), read_backend="tensorstore")
    region = (slice(0, 3), slice(0, ds.sizes["key"]))
    fast = reader_of(ds).read_variable("token_text", region)
    assert fast is not None and (fast[2] == "").all()
    np.testing.assert_array_equal(fast, open_dataset(str(path), read_backend="zarr")["token_text"].values)
