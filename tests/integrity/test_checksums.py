"""Chunk checksums: a flipped byte is found, named, and never shown as a map; older stores keep opening."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from support.damage import flip_attention_row
from zarr.codecs import Crc32cCodec

import attnstore.analysis  # noqa: F401  (registers ds.attn)
import attnstore.store.writer as writer
from attnstore.cli import main
from attnstore.errors import StoreError
from attnstore.extraction.synthetic import make_synthetic_store
from attnstore.store import open_dataset
from attnstore.store.integrity import checksum_guard, is_checksum_error
from attnstore.store.validation import validate_store


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path."""
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def codecs_of(arr: zarr.Array) -> tuple:
    """The codecs that encode each stored chunk (the inner ones for a sharded array)."""
    codecs = arr.metadata.codecs
    return codecs[0].codecs if arr.shards is not None else codecs


def row(ds, image: int, query: int) -> np.ndarray:
    """One stored query row, read as the explorer reads a click  # [layer, head, key]."""
    return ds["attention"].isel(image=image, query=query).values


@pytest.fixture
def store(tmp_path, synthetic_store) -> Path:
    """A private copy of the synthetic store (3 images) to damage."""
    return Path(shutil.copytree(synthetic_store, tmp_path / "s.zarr"))


def test_every_array_carries_a_crc32c(synthetic_store):
    group = zarr.open_group(synthetic_store, mode="r")
    for name in group.array_keys():
        assert isinstance(codecs_of(group[name])[-1], Crc32cCodec), name


def test_flipped_byte_is_an_error_not_a_wrong_map(store):
    ds = open_dataset(str(store))
    before = row(ds, 0, 2)  # image 0, query row 2, read while intact
    flip_attention_row(store, image=1, row=2)
    ds = open_dataset(str(store))
    np.testing.assert_array_equal(row(ds, 0, 2), before)  # other images read as before
    with pytest.raises(ValueError) as err:
        row(ds, 1, 2)
    assert is_checksum_error(err.value)
    with pytest.raises(StoreError, match=r"image 1 \(synthetic_00001.png\) is damaged"):
        with checksum_guard(ds, 1):
            row(ds, 1, 2)
    with checksum_guard(ds, 1):
        row(ds, 1, 3)  # an intact row of the same image still reads
    with pytest.raises(IndexError), checksum_guard(ds, 1):
        row(ds, 1, 10_000)  # other errors pass through unchanged


def test_validate_deep_names_the_damaged_image_and_row(store, capsys):
    flip_attention_row(store, image=1, row=5)
    (store / "token_text" / "c" / "2" / "0").write_bytes(b"\x00" * 40)  # another image, another array
    hashes = tree_hashes(store)
    assert main(["validate", str(store), "--deep"]) == 1
    out = capsys.readouterr().out
    assert "image 1 (synthetic_00001.png): damaged, 'attention' query row(s) 5: a chunk fails its crc32c" in out
    assert "image 2 (synthetic_00002.png): damaged, 'token_text'" in out
    assert "damaged image(s): 1 (synthetic_00001.png), 2 (synthetic_00002.png)" in out
    assert "image 0" not in out
    assert tree_hashes(store) == hashes  # a failing validate leaves the store byte-identical


def test_damaged_image_list_is_one_problem(store, capsys):
    (store / "complete" / "c" / "0").write_bytes(b"\x01" * 16)  # one chunk holds the flags of 4096 images
    hashes = tree_hashes(store)
    assert main(["validate", str(store), "--deep"]) == 1
    out = capsys.readouterr().out
    assert "images 0-2: damaged, 'complete':" in out
    assert "the image list cannot be read" in out
    assert tree_hashes(store) == hashes


def test_plain_validate_reports_damage_without_a_traceback(store, capsys):
    flip_attention_row(store, image=2, row=0)
    hashes = tree_hashes(store)
    assert main(["validate", str(store)]) == 1
    out = capsys.readouterr().out
    assert "image 2 (synthetic_00002.png): damaged, a chunk fails its crc32c checksum" in out
    assert tree_hashes(store) == hashes


def test_deep_validate_of_an_intact_store_is_valid(synthetic_store):
    report = validate_store(synthetic_store, deep=True)
    assert report.ok and report.damaged == {} and report.n_complete == 3


def test_stores_written_without_checksums_keep_opening(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(writer, "CHUNK_CHECKSUM", False)  # the codec pipeline before checksums
    old = make_synthetic_store(str(tmp_path / "old.zarr"), n_images=2)
    monkeypatch.undo()
    group = zarr.open_group(old, mode="r")
    assert not any(isinstance(c, Crc32cCodec) for n in group.array_keys() for c in codecs_of(group[n]))
    ds = open_dataset(old)
    assert ds.attn.heatmap(token="jacket", image=1).shape  # reads as before
    assert main(["validate", old, "--deep"]) == 0
    assert "2 complete, valid" in capsys.readouterr().out


def test_map_pipeline_names_the_damaged_image_instead_of_drawing(store, capsys):
    """What the explorer, the REST API and `attnstore heatmap` read goes through ds.attn: a damaged row
    is a one-line StoreError naming the image, and other rows of that image still draw."""
    from attnstore.analysis import MapSpec, compute_map
    from attnstore.cli import main

    ds = open_dataset(str(store))
    row_of_dog = compute_map(ds, MapSpec(image=1, token="dog")).row
    flip_attention_row(store, image=1, row=row_of_dog)
    ds = open_dataset(str(store))
    with pytest.raises(StoreError, match=r"image 1 \(synthetic_00001.png\) is damaged"):
        compute_map(ds, MapSpec(image=1, token="dog"))
    assert np.isfinite(compute_map(ds, MapSpec(image=1, token="jacket")).grid().values).any()
    assert main(["heatmap", str(store), "--token", "dog", "--image", "1", "--output", str(store.parent / "h.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is damaged" in err and not (store.parent / "h.png").exists()
