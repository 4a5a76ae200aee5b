"""Remote stores: s3:// (local moto server) for extract / info / validate, https:// (range server) for
reading, and zip copies made by `attnstore pack` that xarray opens directly."""

import json
import shutil
import zipfile

import numpy as np
import pytest
import xarray as xr
import zarr
from support.servers import BUCKET

from attnstore.cli import main
from attnstore.errors import AttnstoreError, StoreError
from attnstore.extraction.pipeline import ExtractSettings, WriteOptions, image_items, run_extraction
from attnstore.store import AttnStore, open_dataset
from attnstore.store.remote import STORAGE_OPTIONS_ENV, parse_storage_options, resolve_storage_options


def assert_same(a: xr.Dataset, b: xr.Dataset) -> None:
    assert list(a.data_vars) == list(b.data_vars) and a.attrs == b.attrs
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_extract_to_s3_then_info_validate_and_read(tmp_path, images, tiny_model_path, tiny_adapter, s3_endpoint):
    url = f"s3://{BUCKET}/run.zarr"
    args = ["extract", "--image-dir", str(images), "--model", str(tiny_model_path), "--max-new-tokens", "3"]
    assert main([*args, "--limit", "2", "--out", url, "--no-progress"]) == 0
    assert main(["info", url]) == 0 and main(["validate", url]) == 0  # endpoint from AWS_ENDPOINT_URL
    local = str(tmp_path / "local.zarr")
    paths = sorted(images.glob("*.png"))[:2]
    run_extraction(tiny_adapter, paths, "Can you describe this image?", local, image_dir=str(images), max_new_tokens=3)
    remote, here = open_dataset(url), open_dataset(local)
    assert [str(n) for n in remote.image_name.values] == ["img00.png", "img01.png"]
    for name in ("attention", "token_id", "patch_box", "pixels", "answer", "complete"):
        np.testing.assert_array_equal(remote[name].values, here[name].values, err_msg=name)


def test_s3_with_storage_options_and_distributed_writers(tmp_path, images, tiny_model_path, s3_endpoint, monkeypatch):
    from distributed import Client, LocalCluster

    from attnstore.extraction.distributed import run_distributed

    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the flag / the options say where S3 is
    url = f"s3://{BUCKET}/flag.zarr"
    flag = json.dumps({"endpoint_url": s3_endpoint})
    items = image_items(sorted(images.glob("*.png"))[:2], "Describe.", str(images))
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            report = run_distributed(
                str(tiny_model_path),
                items,
                url,
                settings=ExtractSettings(max_new_tokens=2),
                write=WriteOptions(storage_options={"endpoint_url": s3_endpoint}),
                client=client,
                show_progress=False,
            )
    assert sorted(report.written) == ["img00.png", "img01.png"]
    copy = str(tmp_path / "copy.zip")
    assert main(["pack", url, copy, "--storage-options", flag]) == 0  # a single-file copy of an S3 store
    monkeypatch.setenv(STORAGE_OPTIONS_ENV, flag)  # what `serve`, `heatmap`, `info` ... fall back to
    ds = open_dataset(url)
    assert ds.complete.values.all() and ds.sizes["image"] == 2
    assert_same(open_dataset(copy), ds)


@pytest.fixture
def served_store(tmp_path, synthetic_store, http_server):
    root = tmp_path / "www"
    shutil.copytree(synthetic_store, root / "s.zarr")
    return http_server(root), str(root / "s.zarr")


def test_https_store_reads_like_the_local_one(served_store, capsys):
    base, local = served_store
    url = f"{base}/s.zarr"
    assert_same(open_dataset(url), open_dataset(local))
    ds = open_dataset(url)  # one token's heatmap row: a partial (range) read inside a shard
    np.testing.assert_array_equal(
        ds.attention.isel(image=1, query=5).values, open_dataset(local).attention.isel(image=1, query=5).values
    )
    assert main(["validate", url]) == 0
    with pytest.raises(StoreError, match="read-only"):
        AttnStore.open(url)
    with pytest.raises(StoreError, match="no attnstore store"):
        open_dataset(f"{base}/missing.zarr")


def test_server_without_range_support_gives_a_clear_error(tmp_path, synthetic_store, http_server, capsys):
    root = tmp_path / "www"
    shutil.copytree(synthetic_store, root / "s.zarr")
    url = http_server(root, ranges=False) + "/s.zarr"
    with pytest.raises(StoreError, match="ignores HTTP Range requests"):
        open_dataset(url)
    assert main(["validate", url]) == 1
    err = capsys.readouterr().err
    assert "Range" in err and "checksum" not in err and "Traceback" not in err


def test_pack_makes_a_zip_that_xarray_and_attnstore_open(tmp_path, synthetic_store, http_server, capsys):
    out = tmp_path / "www" / "copy.zip"
    out.parent.mkdir()
    assert main(["pack", synthetic_store, str(out)]) == 0
    assert "copy.zip" in capsys.readouterr().out
    with zipfile.ZipFile(out) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
        assert "zarr.json" in zf.namelist() and "attention/zarr.json" in zf.namelist()
    local = open_dataset(synthetic_store)
    assert_same(xr.open_zarr(zarr.storage.ZipStore(str(out), mode="r"), chunks=None), local)
    assert_same(xr.open_zarr(f"zip::{out}", chunks=None), local)
    assert_same(open_dataset(str(out)), local)
    assert_same(open_dataset(http_server(out.parent) + "/copy.zip"), local)  # a zip shared over https
    assert main(["info", str(out)]) == 0 and main(["validate", str(out)]) == 0
    with pytest.raises(StoreError, match="read-only"):
        AttnStore.open(str(out))
    assert main(["pack", synthetic_store, str(out)]) == 1  # exists
    assert "--overwrite" in capsys.readouterr().err


def test_pack_refuses_unfinished_stores_and_bad_targets(tmp_path, synthetic_store, capsys):
    path = tmp_path / "s.zarr"
    shutil.copytree(synthetic_store, path)
    AttnStore.open(str(path)).group["complete"][1] = 0
    assert main(["pack", str(path), str(tmp_path / "a.zip")]) == 1
    assert "1 image(s)" in capsys.readouterr().err and not (tmp_path / "a.zip").exists()
    assert main(["pack", str(path), str(tmp_path / "a.zip"), "--allow-incomplete"]) == 0
    assert int(open_dataset(str(tmp_path / "a.zip")).complete.values.sum()) == 2
    assert main(["pack", str(path), str(tmp_path / "a.tar")]) == 1
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(StoreError, match="not a readable zip"):
        open_dataset(str(tmp_path / "bad.zip"))


def test_storage_options_parsing(monkeypatch):
    assert parse_storage_options('{"anon": true}') == {"anon": True}
    assert parse_storage_options(None) is None
    with pytest.raises(AttnstoreError, match="not valid JSON"):
        parse_storage_options("{anon: true}")
    with pytest.raises(AttnstoreError, match="JSON object"):
        parse_storage_options("[1]")
    monkeypatch.setenv(STORAGE_OPTIONS_ENV, '{"anon": true}')
    assert resolve_storage_options("s3://b/s.zarr") == {"anon": True}
    assert resolve_storage_options("s3://b/s.zarr", {"key": "k"}) == {"key": "k"}  # the caller's win
    assert resolve_storage_options("local/s.zarr") is None  # zarr refuses options for local paths
    monkeypatch.setenv(STORAGE_OPTIONS_ENV, "nope")
    with pytest.raises(AttnstoreError, match=STORAGE_OPTIONS_ENV):
        resolve_storage_options("s3://b/s.zarr")
