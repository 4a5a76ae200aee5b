"""Completeness: a complete image whose chunk is missing is an error naming it, never a fill-value map.

zarr reads an absent chunk as the fill value: a deleted attention shard used to give an all-zero map
(exit 0, HTTP 200), a deleted token_text chunk empty token texts, and `validate --deep` missed
deleted token_text and pixels chunks and a store whose metadata declares another dtype.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from support.damage import declare_dtype

import attnstore.analysis  # noqa: F401  (registers ds.attn)
from attnstore.cli import main
from attnstore.errors import StoreError
from attnstore.store import open_dataset
from attnstore.store.readers.choice import BACKEND_ENV
from attnstore.store.validation import validate_store
from attnstore.store.xarray_glue import read_image_rows, read_rows

IMAGE_1 = r"image 1 \(synthetic_00001.png\) is damaged"


@pytest.fixture
def store(tmp_path, synthetic_store) -> Path:
    return Path(shutil.copytree(synthetic_store, tmp_path / "s.zarr"))


@pytest.fixture(params=["tensorstore", "zarr"])
def backend(request, monkeypatch) -> str:
    monkeypatch.setenv(BACKEND_ENV, request.param)
    return request.param


def delete_attention_shard(store: Path, image: int) -> None:
    (store / "attention" / "c" / str(image) / "0" / "0" / "0" / "0").unlink()


def query_word(store: Path, image: int) -> str:
    ds = open_dataset(str(store))
    position = int(ds["query_position"].values[image][5])
    return str(ds["token_text"].values[image][position])


def test_a_missing_attention_shard_is_an_error_not_a_zero_map(store, backend, capsys):
    word = query_word(store, 1)
    before = read_rows(open_dataset(str(store)), 0, [3])
    delete_attention_shard(store, 1)
    ds = open_dataset(str(store))
    assert ds.attn  # reads below go through the chosen backend
    with pytest.raises(StoreError, match=IMAGE_1 + r": its 'attention' chunk for query row\(s\) 3 is missing"):
        read_rows(ds, 1, [3])
    with pytest.raises(StoreError, match=IMAGE_1):
        ds.attn.heatmap(token=word, image=1)
    with pytest.raises(StoreError, match=IMAGE_1):
        np.asarray(ds["attention"].isel(image=1))  # a whole image, padding rows included
    np.testing.assert_array_equal(read_rows(ds, 0, [3]), before)  # the other images read as before
    assert read_image_rows(ds, 0).shape[0] == ds.sizes["query"]  # padding rows of a complete image: zeros, fine
    assert main(["heatmap", str(store), "--token", word, "--image", "1", "--output", str(store.parent / "h.png")]) == 1
    assert "image 1 (synthetic_00001.png) is damaged" in capsys.readouterr().err
    assert not (store.parent / "h.png").exists()


def test_padding_rows_and_incomplete_images_still_read_as_zeros(store, backend):
    import zarr

    zarr.open_array(store / "complete", mode="r+")[1] = 0  # an interrupted write: not complete
    delete_attention_shard(store, 1)
    ds = open_dataset(str(store))
    assert not read_rows(ds, 1, [3]).any()  # not complete: nothing is promised yet


def test_a_missing_token_text_chunk_is_an_error(store, backend, capsys):
    word = query_word(store, 1)
    (store / "token_text" / "c" / "1" / "0").unlink()
    ds = open_dataset(str(store))
    with pytest.raises(StoreError, match=IMAGE_1 + ": its 'token_text' chunk is missing"):
        ds.attn.image(1)
    assert ds.attn.image(0).sizes["key"] > 0
    assert main(["heatmap", str(store), "--token", word, "--image", "1", "--output", str(store.parent / "h.png")]) == 1
    assert "its 'token_text' chunk is missing" in capsys.readouterr().err  # was: "token not found"


def test_the_api_answers_an_error_for_a_missing_chunk(store):
    from explorer import create_app

    client = create_app(str(store)).server.test_client()
    fields = {"image": 1, "token_index": int(open_dataset(str(store))["query_position"].values[1][5]), "layer": 0}
    assert client.get("/api/view", query_string={**fields, "head": 0}).status_code == 200
    delete_attention_shard(store, 1)
    client = create_app(str(store)).server.test_client()
    response = client.get("/api/view", query_string={**fields, "head": 0})
    assert response.status_code >= 400
    assert "image 1 (synthetic_00001.png) is damaged" in response.get_json()["error"]
    payload = {"word": query_word(store, 1), "layer": 0, "head": 0, "image": 1}
    response = client.post("/api/generate_attention_map", json=payload)
    assert response.status_code >= 400 and "is damaged" in response.get_json()["error"]


def test_validate_deep_finds_missing_chunks_of_complete_images(store, capsys):
    (store / "token_text" / "c" / "1" / "0").unlink()
    (store / "pixels" / "c" / "2" / "0" / "0" / "0").unlink()
    (store / "token_kind" / "c" / "0" / "0").unlink()
    report = validate_store(str(store), deep=True)
    assert "image 1 (synthetic_00001.png): damaged, 'token_text': its chunk is missing" in "\n".join(report.problems)
    assert "image 2 (synthetic_00002.png): damaged, 'pixels': its chunk is missing" in "\n".join(report.problems)
    assert "image 0 (synthetic_00000.png): damaged, 'token_kind': its chunk is missing" in "\n".join(report.problems)
    assert sorted(report.damaged) == [0, 1, 2]
    assert main(["validate", str(store), "--deep"]) == 1


def test_validate_deep_names_missing_attention_rows(store):
    import zarr

    n_query = int(zarr.open_array(store / "n_query", mode="r")[1])
    delete_attention_shard(store, 1)
    report = validate_store(str(store), deep=True)
    assert f"'attention' query row(s) 0-{n_query - 1}: its chunk is missing" in "\n".join(report.problems)
    assert list(report.damaged) == [1]


@pytest.mark.parametrize(("name", "dtype"), [("attention", "float64"), ("n_query", "float32"), ("token_kind", "int16")])
def test_validate_checks_every_dtype_against_the_schema(store, name, dtype, capsys):
    declare_dtype(store, name, dtype)
    assert main(["validate", str(store), "--deep"]) == 1
    out = capsys.readouterr()
    assert f"array '{name}' is declared {dtype}, but the schema says" in out.out
    assert "Traceback" not in out.err


def test_an_intact_store_stays_valid(store):
    assert validate_store(str(store), deep=True).ok


@pytest.mark.parametrize("damage", ["attention", "token_text", "token_kind"])
def test_dataset_analyses_refuse_a_missing_chunk(store, damage):
    from attnstore.analysis import aggregate_token

    word = query_word(store, 1)
    if damage == "attention":
        delete_attention_shard(store, 1)
    else:
        (store / damage / "c" / "1" / "0").unlink()
    ds = open_dataset(str(store))
    with pytest.raises(StoreError, match=rf"image 1\b.* is damaged: its '{damage}' chunk"):
        aggregate_token(ds, word)
    assert aggregate_token(ds, word, images=[0, 2]) is not None  # the intact images still aggregate


def test_the_explorer_refuses_a_missing_picture(store):
    from explorer import create_app

    (store / "pixels" / "c" / "1" / "0" / "0" / "0").unlink()
    client = create_app(str(store)).server.test_client()
    response = client.get("/api/image/1.png")
    assert response.status_code >= 400 and "its 'pixels' chunk is missing" in response.get_json()["error"]
    assert client.get("/api/image/0.png").status_code == 200


def test_an_overlay_refuses_a_missing_picture(store, capsys):
    word = query_word(store, 1)
    (store / "pixels" / "c" / "1" / "0" / "0" / "0").unlink()
    png, overlay = store.parent / "h.png", store.parent / "o.png"
    args = ["heatmap", str(store), "--token", word, "--image", "1", "--output", str(png), "--overlay", str(overlay)]
    assert main(args) == 1
    assert "image 1 (synthetic_00001.png) is damaged: its 'pixels' chunk is missing" in capsys.readouterr().err
    assert not overlay.exists()
