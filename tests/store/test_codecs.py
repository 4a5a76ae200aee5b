"""The attention codec chosen by measurement (issue 23): recorded, honoured, forced, readable without
attnstore; rounding (`--round`, detected on import); the map-faithful lossy mode's error bound."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from attnstore.analysis.fidelity import image_dataset, map_errors
from attnstore.cli.inspect import storage_lines
from attnstore.errors import InvalidArgument, StoreError
from attnstore.extraction.pipeline import storage_settings
from attnstore.extraction.synthetic import seed_style_extraction, synthetic_extraction
from attnstore.schema import IMAGE_PATCH_KINDS, kind_mask
from attnstore.store import AttnStore, StoreShape, open_dataset
from attnstore.store import codecs as C
from attnstore.store.lossy import map_quantise, renormalised_bound


def small_seed_style(decimals=3, seed=0):
    return seed_style_extraction((1, 2), 12, np.random.default_rng(seed), n_layers=3, n_heads=2, decimals=decimals)


def write_store(path: Path, extraction, **attrs) -> AttnStore:
    shape = StoreShape(*extraction.attention.shape[:2], extraction.n_query + 2, extraction.n_key + 3)
    store = AttnStore.create(str(path), shape, {"model_id": "test", **attrs}, first=extraction)
    (index,) = store.allocate(["a"], ["a"])
    store.write_image(index, extraction, Image.new("RGB", (40, 30)))
    store.consolidate()
    return store


def inner_codecs(path: Path) -> list[str]:
    meta = json.loads((path / "attention" / "zarr.json").read_text())
    return [c["name"] for c in meta["codecs"][0]["configuration"]["codecs"]]


def stored(path: Path, backend: str, extraction) -> np.ndarray:
    ds = open_dataset(str(path), read_backend=backend)
    return ds.attention.values[0, :, :, : extraction.n_query, : extraction.n_key]


def test_rounded_attention_gets_integer_codes_recorded_and_used(tmp_path):
    ex = small_seed_style()
    store = write_store(tmp_path / "s.zarr", ex)
    codec = dict(store.group.attrs)[C.CODEC_ATTR]
    assert codec["grid_decimals"] == 3 and codec["chosen_by"].startswith("measured")
    sizes = {name: f["bytes"] for name, f in codec["candidates"].items()}
    assert C.DEFAULT_CODEC in sizes and "codes3-blosc-zstd1-shuffle" in sizes
    assert sizes[codec["name"]] <= sizes[C.DEFAULT_CODEC]  # never larger than today's default
    assert codec["name"].startswith("codes3-")  # codes beat every fp16 pipeline on rounded rows
    assert inner_codecs(tmp_path / "s.zarr")[0] == "numcodecs.fixedscaleoffset"  # honoured in the array
    for backend in ("zarr", "tensorstore"):
        values = stored(tmp_path / "s.zarr", backend, ex)
        np.testing.assert_array_equal(values.view(np.uint16), ex.attention.view(np.uint16))
    lines = storage_lines(dict(store.group.attrs))
    assert lines[0].startswith(f"codec: {codec['name']}") and len(lines) == 1 + len(sizes)


def test_unrounded_attention_gets_a_core_codec_no_larger_than_the_default(tmp_path):
    ex = synthetic_extraction((1, 2), 6, np.random.default_rng(1), n_layers=2, n_heads=3)
    store = write_store(tmp_path / "s.zarr", ex)
    codec = dict(store.group.attrs)[C.CODEC_ATTR]
    assert codec["grid_decimals"] is None and codec["portable"]
    assert not any(name.startswith("codes") for name in codec["candidates"])
    assert codec["candidates"][codec["name"]]["bytes"] <= codec["candidates"][C.DEFAULT_CODEC]["bytes"]
    assert "numcodecs.fixedscaleoffset" not in inner_codecs(tmp_path / "s.zarr")


@pytest.mark.parametrize("name, inner", [("zstd3", "zstd"), ("blosc-zstd5-noshuffle", "blosc")])
def test_forced_codec_is_used_and_read_by_both_backends(tmp_path, name, inner):
    ex = small_seed_style(decimals=None)
    store = write_store(tmp_path / "s.zarr", ex, **storage_settings(codec=name))
    assert dict(store.group.attrs)[C.CODEC_ATTR]["name"] == name
    assert dict(store.group.attrs)[C.CODEC_ATTR]["chosen_by"].startswith("forced")
    assert inner_codecs(tmp_path / "s.zarr") == ["bytes", inner, "crc32c"]
    for backend in ("zarr", "tensorstore"):
        np.testing.assert_array_equal(stored(tmp_path / "s.zarr", backend, ex), ex.attention)
    with pytest.raises(StoreError, match=f"codec {name}"):  # an append asking for another codec
        AttnStore.open(str(tmp_path / "s.zarr")).check_compatible(
            StoreShape(3, 2, 1, 1), {"codec": "blosc-zstd1-shuffle" if name == "zstd3" else "zstd3"}
        )


def test_bad_codec_names_and_codes_off_the_grid_are_refused(tmp_path):
    with pytest.raises(InvalidArgument, match="not a codec"):
        storage_settings(codec="lz4")
    with pytest.raises(InvalidArgument, match="1-3"):
        storage_settings(round_decimals=5)
    with pytest.raises(InvalidArgument, match="not on it"):
        write_store(tmp_path / "s.zarr", small_seed_style(decimals=None), codec="codes3-zstd3")
    store = write_store(tmp_path / "r.zarr", small_seed_style())  # integer codes, then an unrounded image
    with pytest.raises(StoreError, match="not on it"):
        store.write_image(0, small_seed_style(decimals=None, seed=3), Image.new("RGB", (4, 4)))


def test_round_writes_what_seed_004_writes(tmp_path):
    ex = small_seed_style(decimals=None)
    store = write_store(tmp_path / "s.zarr", ex, **storage_settings(round_decimals=3))
    assert dict(store.group.attrs)["round_decimals"] == 3
    expected = np.round(ex.attention.astype(np.float32), 3).astype(np.float16)
    np.testing.assert_array_equal(stored(tmp_path / "s.zarr", "zarr", ex), expected)
    assert C.grid_decimals(expected) == 3 and C.grid_decimals(ex.attention) is None


def test_plain_xarray_reads_every_codec_without_attnstore(tmp_path):
    expected = {}
    for name in ("codes3-blosc-zstd5-shuffle", "zstd3", C.DEFAULT_CODEC):
        ex = small_seed_style()
        write_store(tmp_path / f"{name}.zarr", ex, codec=name)
        expected[name] = ex.attention.astype(np.float32).sum()
    script = (
        "import sys, warnings, xarray as xr\n"
        "warnings.simplefilter('ignore')\n"
        "ds = xr.open_zarr(sys.argv[1])\n"
        "assert 'attnstore' not in sys.modules\n"
        "print(float(ds.attention.values.astype('float32').sum()))\n"
    )
    for name, total in expected.items():
        out = subprocess.run([sys.executable, "-c", script, str(tmp_path / f"{name}.zarr")], capture_output=True,
                             text=True, check=True, cwd=tmp_path)  # fmt: skip
        assert float(out.stdout) == pytest.approx(float(total), rel=1e-6)


def test_store_without_codec_record_still_opens_and_reports_the_default(tmp_path):
    ex = small_seed_style(decimals=None)
    shape = StoreShape(3, 2, ex.n_query, ex.n_key)
    store = AttnStore.create(str(tmp_path / "s.zarr"), shape, {"model_id": "test"})  # no first image: default
    (index,) = store.allocate(["a"], ["a"])
    store.write_image(index, ex, Image.new("RGB", (4, 4)))
    del store.group.attrs[C.CODEC_ATTR]  # as every store written before issue 23
    store.consolidate()
    assert inner_codecs(tmp_path / "s.zarr") == ["bytes", "blosc", "crc32c"]
    assert storage_lines(dict(AttnStore.open(str(tmp_path / "s.zarr")).group.attrs))[0].startswith(
        f"codec: {C.DEFAULT_CODEC}"
    )
    for backend in ("zarr", "tensorstore"):
        np.testing.assert_array_equal(stored(tmp_path / "s.zarr", backend, ex), ex.attention)


def test_import_legacy_detects_rounding(tmp_path):
    import attnstore.legacy as L
    from tests.legacy.test_legacy import seed_tokens, write_seed004

    tokens = seed_tokens(1, 2)
    n = len(tokens)
    rng = np.random.default_rng(0)
    rounded = seed_style_extraction((1, 2), 8, rng, n_layers=2, n_heads=2)  # same token layout
    square = np.zeros((2, 2, n, n), np.float16)
    square[:, :, rounded.query_position] = rounded.attention[..., :n]
    write_seed004(tmp_path / "seed", tokens, square)
    L.import_legacy(tmp_path / "seed", tmp_path / "s.zarr")
    attrs = dict(AttnStore.open(str(tmp_path / "s.zarr")).group.attrs)
    assert attrs["round_decimals"] == 3 and attrs["round_source"] == "detected on import"
    assert attrs[C.CODEC_ATTR]["name"].startswith("codes3-")
    ds = open_dataset(str(tmp_path / "s.zarr"))
    positions = ds["query_position"].values[0]
    positions = positions[positions >= 0]
    np.testing.assert_array_equal(ds.attention.values[0, :, :, : positions.size, :n], square[:, :, positions])
    unrounded = square.astype(np.float32) + np.float32(1e-4) * (square > 0)
    write_seed004(tmp_path / "raw", tokens, unrounded)
    L.import_legacy(tmp_path / "raw", tmp_path / "r.zarr")
    assert "round_decimals" not in dict(AttnStore.open(str(tmp_path / "r.zarr")).group.attrs)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.002, 0.01, 0.05]), decimals=st.sampled_from([None, 3]))
def test_map_error_bound_holds_on_every_method_and_normalisation(seed, eps, decimals):
    """Single-head maps and their max over heads: raw <= eps, renormalised over image keys <=
    5 eps / (1 - 4 eps) of each map's maximum; every method x normalisation is measured for the attrs
    (mean, entropy_topk, rollout, and "no_sinks" when it drops more than 3 keys, have no bound by
    construction: docs/storage-figures.md)."""
    rng = np.random.default_rng(seed)
    ex = seed_style_extraction((1, 2), 6, rng, n_layers=2, n_heads=3, decimals=decimals)
    image = kind_mask(ex.layout.kind, IMAGE_PATCH_KINDS)  # the writer's image keys (tiles + global)
    lossy = map_quantise(ex.attention, image, eps)
    original = image_dataset(ex.attention, ex.layout.kind, ex.query_position)
    errors = map_errors(original, original.assign(attention=(original["attention"].dims, lossy)),
                        rows=list(range(ex.n_query)))  # fmt: skip
    assert errors["raw/head"] <= eps * (1 + 1e-3)
    assert errors["raw/max"] <= eps * (1 + 1e-3)
    # the max over heads of maps each within the bound is within it
    assert errors["image/head"] <= renormalised_bound(eps) * (1 + 1e-3)
    assert errors["image/max"] <= renormalised_bound(eps) * (1 + 1e-3)
    assert all(np.isfinite(v) for v in errors.values()) and len(errors) == 15


def test_map_error_mode_is_smaller_and_recorded(tmp_path):
    ex = small_seed_style(decimals=None)
    lossless = write_store(tmp_path / "a.zarr", ex)
    lossy = write_store(tmp_path / "b.zarr", ex, **storage_settings(map_error=0.01))

    def size(store):
        codec = dict(store.group.attrs)[C.CODEC_ATTR]
        return codec["candidates"][codec["name"]]["bytes"]

    assert size(lossy) < size(lossless)
    assert dict(lossy.group.attrs)["map_error"] == 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xr.open_zarr(tmp_path / "b.zarr").attention.values  # noqa: B018


def test_extraction_records_codec_and_lossy_map_errors(tmp_path, tiny_adapter):
    """A run with --map-error: the codec measured on its first image, every method x normalisation's
    error measured and recorded, and `info` prints both."""
    from attnstore.extraction.pipeline import WriteOptions, image_items, run_items
    from attnstore.extraction.synthetic import _gradient_image

    _gradient_image(300, 200).save(tmp_path / "a.png")
    out = str(tmp_path / "s.zarr")
    items = image_items([tmp_path / "a.png"], "Describe.")
    write = WriteOptions(storage=storage_settings(map_error=0.01))
    run_items(tiny_adapter, items, out, show_progress=False, write=write)
    attrs = dict(AttnStore.open(out).group.attrs)
    assert attrs[C.CODEC_ATTR]["chosen_by"].startswith("measured") and attrs["map_error"] == 0.01
    measured = attrs["map_error_measured"]
    assert len(measured) == 15 and measured["raw/head"] <= 0.01 * (1 + 1e-3)
    lines = storage_lines(attrs)
    assert any(line.startswith("map-faithful lossy") for line in lines)
    assert any("raw/head" in line for line in lines)
