"""attnstore.analysis against plain numpy loop references written from the seed's description."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

import attnstore.analysis as A
from attnstore.analysis.keys import NETWORK_ROWS, upper_median
from attnstore.errors import AttnstoreError
from attnstore.schema import TokenKind
from attnstore.store import open_dataset

# -- loop references (deliberately naive: one layer, one head, one key at a time) ---------------


def image_indices(img) -> list[int]:
    kinds = img["token_kind"].values
    return [i for i, k in enumerate(kinds) if k in (TokenKind.IMAGE_TILE, TokenKind.IMAGE_GLOBAL)]


def ref_entropy(a: list[float]) -> float:
    """Normalised entropy of non-negative weights a (0 for all-zero or N <= 1)."""
    s = sum(a)
    if s <= 0 or len(a) <= 1:
        return 0.0
    h = -sum((x / s) * math.log(x / s) for x in a if x > 0)
    return h / math.log(len(a))


def ref_entropy_topk(w: np.ndarray, idx: list[int], k: int) -> np.ndarray:
    """The seed's entropy-weighted top-k, from its README: per layer/head keep the top-k image
    weights, renormalise, weight = attn_sum x (1 - entropy / log N), weighted sum, normalised."""
    n_layers, n_heads, n_key = w.shape
    out = np.zeros(n_key)
    for layer in range(n_layers):
        for head in range(n_heads):
            a = [float(w[layer, head, i]) for i in idx]
            attn_sum = sum(a)
            if attn_sum <= 0:
                continue
            weight = attn_sum * (1 - ref_entropy(a))
            kk = min(k, len(a))
            threshold = sorted(a)[len(a) - kk]  # k-th largest; ties at it are kept
            top = [x if x >= threshold else 0.0 for x in a]
            top_sum = sum(top)
            for i, x in zip(idx, top):
                out[i] += weight * x / top_sum
    total = out.sum()
    return out / total if total > 0 else out


def ref_grid(values: np.ndarray, img, kind: TokenKind, shape: tuple[int, int]) -> np.ndarray:
    grid = np.full(shape, np.nan)
    for key, k in enumerate(img["token_kind"].values):
        if k == kind:
            grid[img["patch_row"].values[key], img["patch_col"].values[key]] = values[key]
    return grid


# -- selection -----------------------------------------------------------------------------------


def test_select_image_slices_valid_extents(synthetic_store):
    ds = open_dataset(synthetic_store)
    for i in range(ds.sizes["image"]):
        img = A.select_image(ds, i)
        assert "image" not in img.dims
        assert img.sizes["query"] == int(ds.n_query[i]) and img.sizes["key"] == int(ds.n_key[i])
        assert img.pixels.shape == (int(ds.image_height[i]), int(ds.image_width[i]), 3)
        q = img.sizes["query"] - 1
        raw = ds.attention[i, :, :, q, : img.sizes["key"]].values
        np.testing.assert_array_equal(A.token_weights(img, q).values, raw.astype(np.float32))
    with pytest.raises(AttnstoreError, match="out of range"):
        A.select_image(ds, 99)


def test_select_image_keeps_attention_lazy(synthetic_store):
    ds = open_dataset(synthetic_store)
    img = A.select_image(ds, 0)
    assert not img["attention"].variable._in_memory
    assert img["token_kind"].variable._in_memory


def test_token_weights_shape_and_range(image_factory, rng):
    img = image_factory(rng)
    w = A.token_weights(img, 2)
    assert w.dims == ("layer", "head", "key") and w.dtype == np.float32
    assert int(w["query"]) == 2
    np.testing.assert_allclose(w.values, img.attention.values[:, :, 2])
    with pytest.raises(AttnstoreError, match="out of range"):
        A.token_weights(img, img.sizes["query"])


# -- finding tokens --------------------------------------------------------------------------------


def test_find_token_bpe_case_and_occurrence(synthetic_store):
    img = A.select_image(open_dataset(synthetic_store), 0)
    texts = list(A.query_tokens(img))
    a_rows = [i for i, t in enumerate(texts) if t == "Ġa"]
    assert len(a_rows) == 2
    assert A.find_token(img, "a") == a_rows[0]
    assert A.find_token(img, "Ġa", occurrence=1) == a_rows[1]
    assert A.find_token(img, "a", occurrence=-1) == a_rows[-1]
    assert A.find_token(img, "A") == texts.index("A")  # an exact (case-sensitive) match wins
    assert A.find_token(img, "DOG") == texts.index("Ġdog")  # case-insensitive fallback
    with pytest.raises(A.TokenNotFoundError, match="occurrence 7"):
        A.find_token(img, "a", occurrence=7)
    with pytest.raises(A.TokenNotFoundError, match="close matches: 'jacket'"):
        A.find_token(img, "jackets")


def test_find_token_sentencepiece_marker(image_factory, rng):
    img = image_factory(rng)
    texts = img["token_text"].values.copy()
    pos = int(img["query_position"].values[-1])
    texts[pos] = "▁jacket"
    img = img.assign(token_text=("key", texts))
    assert A.find_token(img, "jacket") == img.sizes["query"] - 1
    assert isinstance(A.TokenNotFoundError("x"), AttnstoreError)


# -- normalisation and summaries ---------------------------------------------------------------


def test_normalise_image_mode_and_zero_rows(image_factory, rng):
    img = image_factory(rng)
    w = A.token_weights(img, 0).copy()
    idx = image_indices(img)
    w[1, 2] = 0.0  # an all-zero row
    out = A.normalise(w, img, "image").values
    other = np.setdiff1d(np.arange(w.sizes["key"]), idx)
    assert not np.isnan(out).any()
    assert (out[..., other] == 0).all()
    np.testing.assert_allclose(out[..., idx].sum(-1)[np.arange(3) != 1], 1.0, rtol=1e-5)
    assert (out[1, 2] == 0).all()
    for layer, head in [(0, 0), (2, 3)]:
        a = w.values[layer, head, idx]
        np.testing.assert_allclose(out[layer, head, idx], a / a.sum(), rtol=1e-5)
    assert A.normalise(w, img, "raw") is w
    with pytest.raises(AttnstoreError, match="normalise must be one of"):
        A.normalise(w, img, "weird")


def test_no_sinks_removes_bos_first_image_and_outsized_keys(image_factory, rng):
    img = image_factory(rng, n_layers=4, n_heads=5)
    w = A.token_weights(img, 0).copy()
    idx = image_indices(img)
    sink, focus = idx[7], idx[11]
    w[..., sink] = 5.0  # large in every head: a sink
    w[0, 0, focus] = 50.0  # large in one head only: a legitimate focus, not a sink
    flagged = A.sink_keys(w, img).values
    assert flagged[0] and flagged[idx[0]] and flagged[sink] and not flagged[focus]
    out = A.normalise(w, img, "no_sinks").values
    assert (out[..., [0, idx[0], sink]] == 0).all()
    keep = [i for i in idx if i not in (idx[0], sink)]
    np.testing.assert_allclose(out[..., keep].sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 9, NETWORK_ROWS, NETWORK_ROWS + 1, 40])  # the network, then np.partition
def test_upper_median_is_the_sorted_middle_row(n, rng):
    rows = rng.random((3, n, 50), dtype=np.float32)  # [layer, row, key]
    rows[0, :, :10] = 0.25  # ties
    rows[1, :, 10:20] = rng.integers(0, 3, (n, 10)) / 4  # few distinct values
    want = np.sort(rows, axis=1)[:, n // 2]  # a plain sort of each key's column
    got = upper_median(rows)
    np.testing.assert_array_equal(got, want)
    assert got.shape == (3, 50) and not np.shares_memory(got, rows)


def test_image_share_and_entropy_match_loops(image_factory, rng):
    img = image_factory(rng)
    w = A.token_weights(img, 1).copy()
    w[0, 1] = 0.0
    idx = image_indices(img)
    share, ent = A.image_share(w, img).values, A.entropy(w, img).values
    assert share.shape == ent.shape == (3, 4)
    for layer in range(3):
        for head in range(4):
            row = w.values[layer, head]
            expected = row[idx].sum() / row.sum() if row.sum() > 0 else 0.0
            assert share[layer, head] == pytest.approx(expected, rel=1e-5)
            assert ent[layer, head] == pytest.approx(ref_entropy([float(x) for x in row[idx]]), abs=1e-5)
    assert share[0, 1] == 0 and ent[0, 1] == 0


def test_entropy_extremes(image_factory, rng):
    img = image_factory(rng, n_layers=1, n_heads=2)
    idx = image_indices(img)
    w = xr.zeros_like(A.token_weights(img, 0))
    w[0, 0, idx] = 1.0  # uniform over image keys -> 1
    w[0, 1, idx[3]] = 1.0  # one key -> 0
    np.testing.assert_allclose(A.entropy(w, img).values, [[1.0, 0.0]], atol=1e-6)


# -- reductions ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 10, 10_000])  # 10_000 > N: every key kept
def test_entropy_topk_matches_seed_loop(image_factory, rng, k):
    img = image_factory(rng)
    w = A.token_weights(img, 3)
    got = A.reduce_heads(w, img, "entropy_topk", k=k).values
    np.testing.assert_allclose(got, ref_entropy_topk(w.values, image_indices(img), k), rtol=2e-4, atol=1e-7)
    assert got.sum() == pytest.approx(1.0, rel=1e-5)


def test_entropy_topk_zero_heads_and_one_layer(image_factory, rng):
    img = image_factory(rng, n_layers=1, n_heads=3)
    w = A.token_weights(img, 0).copy()
    idx = image_indices(img)
    w[0, 1, idx] = 0.0  # a head with no image attention: weight 0, never NaN
    got = A.reduce_heads(w, img, "entropy_topk", k=4).values
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, ref_entropy_topk(w.values, idx, 4), rtol=2e-4, atol=1e-7)
    w[..., idx] = 0.0  # no head attends to the image at all -> an all-zero map
    assert (A.reduce_heads(w, img, "entropy_topk").values == 0).all()


def test_entropy_topk_fp16_ties_are_deterministic(synthetic_store):
    img = A.select_image(open_dataset(synthetic_store), 2)
    w = A.token_weights(img, A.find_token(img, "beach"))  # fp16 values: many ties
    got = A.reduce_heads(w, img, "entropy_topk", k=10).values
    np.testing.assert_allclose(got, ref_entropy_topk(w.values, image_indices(img), 10), rtol=2e-4, atol=1e-7)


def test_entropy_topk_tiles_only(image_factory, rng):
    img = image_factory(rng)
    w = A.token_weights(img, 0)
    tiles = [i for i, k in enumerate(img["token_kind"].values) if k == TokenKind.IMAGE_TILE]
    got = A.reduce_heads(w, img, "entropy_topk", k=5, keys="tiles").values
    np.testing.assert_allclose(got, ref_entropy_topk(w.values, tiles, 5), rtol=2e-4, atol=1e-7)


def test_reduce_heads_mean_max_and_selection(image_factory, rng):
    img = image_factory(rng, n_layers=4, n_heads=3)
    w = A.token_weights(img, 0)
    v = w.values
    np.testing.assert_allclose(A.reduce_heads(w, img, "mean").values, v.mean((0, 1)), rtol=1e-6)
    np.testing.assert_allclose(A.reduce_heads(w, img, "max", layers=slice(1, 3)).values, v[1:3].max((0, 1)))
    np.testing.assert_allclose(A.reduce_heads(w, img, "mean", layers=2, heads=[0, 2]).values, v[2, [0, 2]].mean(0))
    with pytest.raises(AttnstoreError, match="out of range"):
        A.reduce_heads(w, img, "mean", layers=[9])
    with pytest.raises(AttnstoreError, match="empty"):
        A.reduce_heads(w, img, "mean", heads=slice(5, 9))
    with pytest.raises(AttnstoreError, match="method must be one of"):
        A.reduce_heads(w, img, "median")


def test_entropy_topk_is_lazy_with_dask(image_factory, rng):
    img = image_factory(rng)
    w = A.token_weights(img, 0)
    lazy = A.reduce_heads(w.chunk(), img, "entropy_topk", k=3)
    assert lazy.chunks is not None
    np.testing.assert_allclose(lazy.compute().values, A.reduce_heads(w, img, "entropy_topk", k=3).values, rtol=1e-5)


def ref_rollout(img, query: int, residual: float = 0.5) -> np.ndarray:
    """Full matrices: stored rows = head-mean attention, other rows identity; R = A_L ... A_1."""
    att = img["attention"].values.mean(1)  # [layer, query, key]
    n_key = img.sizes["key"]
    product = np.eye(n_key)
    for layer in range(att.shape[0]):
        a = np.eye(n_key)
        for row, pos in enumerate(img["query_position"].values):
            a[pos] = att[layer, row]
        product = (residual * np.eye(n_key) + (1 - residual) * a) @ product
    return product[img["query_position"].values[query]]


@pytest.mark.parametrize("queries", ["text", "all"])
def test_rollout_matches_matrix_product(image_factory, rng, queries):
    img = image_factory(rng, n_layers=3, n_heads=2, rows=1, cols=1, queries=queries)
    q = img.sizes["query"] - 2
    got = A.reduce_heads(A.token_weights(img, q), img, "rollout")
    np.testing.assert_allclose(got.values, ref_rollout(img, q), rtol=1e-4, atol=1e-7)
    assert got.attrs["exact"] == (queries == "all")


def test_reverse_attention_matches_loop(image_factory, rng):
    img = image_factory(rng)
    keys = image_indices(img)[2:5]
    got = A.reverse_attention(img, keys, layers=[0, 2]).values
    att = img["attention"].values
    expected = [np.mean([att[layer, h, q, keys].sum() for layer in (0, 2) for h in range(4)]) for q in range(len(got))]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(A.reverse_attention(img, slice(3, 4), method="max").values, att[..., 3].max((0, 1)))


# -- grids -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows,cols", [(2, 3), (1, 1), (3, 2)])
def test_patch_grid_tiles_and_global_match_loop(image_factory, rng, rows, cols):
    img = image_factory(rng, rows=rows, cols=cols)
    values = rng.random(img.sizes["key"]).astype(np.float32)
    m = xr.DataArray(values, dims=("key",))
    tiles = A.patch_grid(m, img, "tiles")
    assert tiles.dims == ("grid_row", "grid_col") and tiles.shape == (rows * 2, cols * 2)
    np.testing.assert_array_equal(tiles.values, ref_grid(values, img, TokenKind.IMAGE_TILE, tiles.shape))
    glob = A.patch_grid(m, img, "global")
    assert glob.dims == ("global_row", "global_col") and glob.shape == (2, 2)
    np.testing.assert_array_equal(glob.values, ref_grid(values, img, TokenKind.IMAGE_GLOBAL, (2, 2)))
    per_tile = A.patch_grid(m, img, "tile")
    assert per_tile.shape == (rows * cols, 2, 2)
    for t in range(rows * cols):
        r, c = divmod(t, cols)
        np.testing.assert_array_equal(per_tile.values[t], tiles.values[2 * r : 2 * r + 2, 2 * c : 2 * c + 2])


def test_patch_grid_without_tiles_is_empty(image_factory, rng):
    img = image_factory(rng, rows=0, cols=0)
    m = xr.DataArray(np.ones(img.sizes["key"], np.float32), dims=("key",))
    assert A.patch_grid(m, img, "tiles").shape == (0, 0)
    assert A.patch_grid(m, img, "global").shape == (2, 2)


def test_patch_grid_keeps_leading_dims(image_factory, rng):
    img = image_factory(rng)
    w = A.token_weights(img, 0)
    grid = A.patch_grid(w, img, "tiles")
    assert grid.dims == ("layer", "head", "grid_row", "grid_col")
    np.testing.assert_array_equal(grid.values[2, 1], ref_grid(w.values[2, 1], img, TokenKind.IMAGE_TILE, (4, 6)))


def test_synthetic_store_grids_follow_geometry(synthetic_store):
    ds = open_dataset(synthetic_store)
    for i, shape in enumerate([(24, 32), (32, 24), (16, 16)]):
        img = A.select_image(ds, i)
        grid = A.patch_grid(A.reduce_heads(A.token_weights(img, 0), img, "mean"), img)
        assert grid.shape == shape and not np.isnan(grid.values).any()


# -- the accessor ------------------------------------------------------------------------------------


def test_accessor_heatmap_equals_pipeline(synthetic_store):
    ds = open_dataset(synthetic_store)
    grid = ds.attn.heatmap(token="dog", image=1, layers=slice(0, 2), method="entropy_topk", k=5)
    img = A.select_image(ds, 1)
    q = A.find_token(img, "dog")
    manual = A.patch_grid(A.reduce_heads(A.token_weights(img, q), img, "entropy_topk", k=5), img)
    np.testing.assert_array_equal(grid.values, manual.values)
    assert grid.attrs["query"] == q and grid.dims == ("grid_row", "grid_col")
    by_name = ds.attn.heatmap(token="dog", image="synthetic_00001.png", method="entropy_topk", k=5)
    np.testing.assert_array_equal(by_name.values, grid.values)
    assert ds.attn.token("dog", image=1).dims == ("layer", "head", "key")
    assert ds.attn.image_share("dog", image=1).shape == (2, 4)
    with pytest.raises(AttnstoreError, match="no image named"):
        ds.attn.heatmap(token="dog", image="nope.png")


# -- fast numeric kernels --------------------------------------------------------------------------


def test_fp16_to_fp32_is_exact_for_every_value():
    every = np.arange(65536, dtype=np.uint16).view(np.float16)
    finite = every[np.isfinite(every)]
    np.testing.assert_array_equal(A.fp16_to_fp32(finite), finite.astype(np.float32))
    special = np.array([np.inf, -np.inf, np.nan, 1.0], np.float16)
    np.testing.assert_array_equal(A.fp16_to_fp32(special), special.astype(np.float32))  # NaN == NaN here


def test_kth_largest_matches_sort(rng):
    for trial in range(300):
        n, k = int(rng.integers(1, 900)), int(rng.integers(1, 40))
        a = rng.random((2, 3, n)).astype(np.float32)
        if trial % 3 == 0:
            a = np.round(a * 10) / 10  # many ties
        if trial % 5 == 0:
            a[0, 1] = 0.0
        expected = np.sort(a, axis=-1)[..., n - min(k, n)]
        np.testing.assert_array_equal(A.kth_largest(a, k), expected)
