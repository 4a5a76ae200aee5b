"""Patches as queries: `--queries text+image` rows, `MapSpec.patch` through `compute_map`, and the
one-line errors of a store that has no row for the patch."""

from __future__ import annotations

import numpy as np
import pytest

from attnstore.analysis import MapSpec, compute_map, patch_at, text_spec
from attnstore.errors import InvalidArgument
from attnstore.records import QUERY_MODES, query_positions
from attnstore.schema import IMAGE_PATCH_KINDS, TEXT_KINDS, TokenKind, kind_mask
from attnstore.store import open_dataset
from attnstore.store.validation import validate_store


@pytest.fixture(scope="module")
def ds(image_rows_store):
    return open_dataset(image_rows_store)


def stored_row(ds, image: int, position: int) -> np.ndarray:
    """The store's own row of sequence position `position`  # [layer, head, key], read without MapSpec."""
    qpos = np.asarray(ds["query_position"].values[image])
    q = int(np.flatnonzero(qpos == position)[0])
    return np.asarray(ds["attention"][image, :, :, q, :].values, np.float32)


def test_text_image_mode_keeps_text_and_patch_rows_only():
    kinds = np.array([6, 1, 4, 4, 2, 2, 4, 3, 3, 4, 1, 6, 5, 5], np.int8)
    rows = query_positions(kinds, "text+image")
    expected = np.flatnonzero(kind_mask(kinds, (*TEXT_KINDS, *IMAGE_PATCH_KINDS)))
    np.testing.assert_array_equal(rows, expected)
    assert not np.isin(np.flatnonzero(kinds == TokenKind.IMAGE_SPECIAL), rows).any()  # markers: only "all"
    assert set(query_positions(kinds, "text")) < set(rows) < set(query_positions(kinds, "all"))
    assert "text+image" in QUERY_MODES


def test_a_text_image_store_validates_and_holds_every_patch_row(ds, image_rows_store):
    report = validate_store(image_rows_store, deep=True)
    assert report.ok and report.n_complete == 2, report.problems
    assert ds.attrs["queries"] == "text+image"
    for image in range(ds.sizes["image"]):
        img = ds.attn.image(image)
        kinds = np.asarray(img["token_kind"].values)
        qpos = set(np.asarray(img["query_position"].values).tolist())
        assert set(np.flatnonzero(kind_mask(kinds, IMAGE_PATCH_KINDS)).tolist()) <= qpos
        assert not set(np.flatnonzero(kinds == TokenKind.IMAGE_SPECIAL).tolist()) & qpos


def test_a_patch_map_is_that_patch_row_through_the_same_pipeline(ds):
    img = ds.attn.image(0)
    key = patch_at(img, (5, 9))
    assert (int(img["patch_row"].values[key]), int(img["patch_col"].values[key])) == (5, 9)
    result = compute_map(ds, MapSpec(image=0, patch=key, method="mean", layers=(1,), heads=(2,)))
    assert result.position == key and result.is_patch_query
    np.testing.assert_allclose(result.values.values, stored_row(ds, 0, key)[1, 2], rtol=1e-6)
    grid = result.grid().values  # a grid like a token's map
    assert grid.shape == (int(img["grid_rows"]), int(img["grid_cols"]))
    # normalisations and methods of the registry apply: image keys renormalised sum to 1
    image_norm = compute_map(ds, MapSpec(image=0, patch=key, method="mean", normalise="image"))
    total = np.nansum(image_norm.grid("tiles").values) + np.nansum(image_norm.grid("global").values)
    assert abs(float(total) - 1) < 1e-3


def test_the_text_bars_are_the_raw_mean_on_the_text_keys(ds):
    img = ds.attn.image(1)
    key = patch_at(img, (0, 0), "global")
    spec = MapSpec(image=1, patch=key, method="entropy_topk", normalise="no_sinks", layers=(0,))
    bars = text_spec(spec)
    assert (bars.method, bars.normalise, bars.layers, bars.patch) == ("mean", "raw", (0,), key)
    text = compute_map(ds, bars).text_values()
    kinds = np.asarray(img["token_kind"].values)
    np.testing.assert_array_equal(text["key"].values, np.flatnonzero(kind_mask(kinds, TEXT_KINDS)))
    expected = stored_row(ds, 1, key)[0].mean(0)[text["key"].values]
    np.testing.assert_allclose(text.values, expected, rtol=1e-5, atol=1e-7)
    assert text.values[0] > 0  # the first token (a sink) is before the patch: seen
    after = text["key"].values > key
    assert after.any() and not text.values[after].any()  # causal: text after the patch is unseen


def test_a_text_store_says_which_queries_mode_stores_patch_rows(synthetic_store):
    ds = open_dataset(synthetic_store)
    key = patch_at(ds.attn.image(0), (1, 1))
    with pytest.raises(InvalidArgument) as err:
        compute_map(ds, MapSpec(patch=key))
    message = str(err.value)
    assert "\n" not in message and "--queries text," in message and "--queries text+image" in message


def test_a_patch_that_is_not_a_patch_is_refused(ds):
    with pytest.raises(InvalidArgument, match="prompt_text token, not an image patch"):
        compute_map(ds, MapSpec(patch=1))
    with pytest.raises(InvalidArgument, match="does not exist"):
        compute_map(ds, MapSpec(patch=10**6))
    with pytest.raises(InvalidArgument, match="exactly one"):
        MapSpec(patch=5, position=5).checked(ds)
    with pytest.raises(InvalidArgument, match="not on the tiles grid"):
        patch_at(ds.attn.image(0), (99, 0))


def test_rest_bodies_and_controls_name_a_patch(ds):
    key = patch_at(ds.attn.image(0), (2, 3))
    assert MapSpec.from_json(ds, {"patch": key, "layer": 1}).patch == key
    spec = MapSpec.from_controls(ds, image=0, position=None, patch=key, layer=1, head=0, mode="head", over="heads",
                                 norm="raw", k=10)  # fmt: skip
    assert (spec.patch, spec.position, spec.layers, spec.heads) == (key, None, (1,), (0,))


def test_studies_read_the_same_text_rows_whatever_the_store_keeps(ds, synthetic_store):
    """`query_rows` of a text+image store skips the patch rows: "text" is the text rows, "prompt" the
    text rows before the answer, "last_prompt" the last of them (as on a --queries text store)."""
    from attnstore.analysis.studies.base import query_rows

    text_store = open_dataset(synthetic_store)
    for img in (ds.attn.image(0), text_store.attn.image(0)):
        positions = np.asarray(img["query_position"].values)
        kinds = np.asarray(img["token_kind"].values)[positions]
        text = np.flatnonzero(kind_mask(kinds, TEXT_KINDS))
        np.testing.assert_array_equal(query_rows(img, "text"), text)
        prompt = query_rows(img, "prompt")
        assert set(prompt) < set(text) and (kinds[prompt] != TokenKind.GENERATED).all()
        assert kinds[query_rows(img, "last_prompt")[0]] in TEXT_KINDS
    assert query_rows(text_store.attn.image(0), "text").size == text_store.attn.image(0).sizes["query"]
