"""View parameters, permalinks, and the numbers behind each panel (checked against the store itself)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from attnstore import analysis
from attnstore.analysis import METHODS, NORMALISATIONS, MapSpec, compute_map
from attnstore.errors import AttnstoreError
from attnstore.render.text import quoted
from attnstore.schema import TEXT_KINDS, TokenKind
from explorer import views
from explorer.views import ViewParams


def _answer_token(state, image: int, nth: int = 0) -> int:
    meta = state.image(image)
    kinds = np.asarray(meta.img["token_kind"].values)
    return [int(p) for p in meta.query_position if kinds[p] == TokenKind.GENERATED][nth]


def test_permalink_round_trip(state):
    params = ViewParams(
        image=1, token=_answer_token(state, 1, 3), layer=1, head=2, mode="max", over="all", norm="image", k=5
    )
    parsed, problems = views.parse_query("?" + params.to_query(), state)
    assert problems == []
    assert parsed == params
    cleared = replace(params, token=None)
    assert views.parse_query(cleared.to_query(), state) == (cleared, [])


def test_permalink_problems_are_explained_and_fall_back(state):
    params, problems = views.parse_query("?image=99&layer=7&head=x&mode=bogus&token=3", state)
    text = " | ".join(problems)
    assert "image=99 in the link is not in 0-2" in text and "layer=7" in text and "head=x" in text
    assert "mode=bogus in the link is not one of head, mean" in text
    default = views.default_params(state)
    assert (params.image, params.layer, params.head, params.mode) == (
        default.image,
        default.layer,
        default.head,
        "head",
    )
    # a token without a stored row (an image token) is refused with the reason, the default shown instead
    params, problems = views.parse_query("?image=0&token=10", state)
    assert params.token == default.token
    assert "no stored attention row" in problems[0]


def test_default_view_is_a_content_answer_token(state):
    params = views.default_params(state)
    assert params.image == 0 and params.token in views.content_tokens(state.image(0))
    assert views.parse_query("", state) == (params, [])  # a page without a permalink opens on it


def test_single_head_map_equals_the_stored_row(state, synthetic_store):
    token = _answer_token(state, 2, 1)
    params = ViewParams(image=2, token=token, layer=1, head=3)
    data = views.heatmap(state, params)
    ds = state.ds
    meta = state.image(2)
    q = int(np.flatnonzero(meta.query_position == token)[0])
    assert data.query == q
    row = np.asarray(ds["attention"][2, 1, 3, q].values, np.float32)  # [key] straight from the store
    rows, cols = np.asarray(meta.img["patch_row"].values), np.asarray(meta.img["patch_col"].values)
    kinds = np.asarray(meta.img["token_kind"].values)
    for key in np.flatnonzero(kinds == TokenKind.IMAGE_TILE)[::37]:
        assert data.tiles[rows[key], cols[key]] == row[key]
    for key in np.flatnonzero(kinds == TokenKind.IMAGE_GLOBAL)[::7]:
        assert data.glob[rows[key], cols[key]] == row[key]
    assert data.vmax == pytest.approx(max(np.nanmax(data.tiles), np.nanmax(data.glob)))


@pytest.mark.parametrize("mode", ["mean", "max", "entropy_topk"])
@pytest.mark.parametrize("over", ["heads", "layers", "all"])
def test_aggregates_are_the_library_reductions(state, mode, over):
    token = _answer_token(state, 0, 2)
    params = ViewParams(image=0, token=token, layer=1, head=2, mode=mode, over=over, norm="no_sinks", k=4)
    meta = state.image(0)
    q = meta.query_of(token)
    weights = analysis.normalise(analysis.token_weights(meta.img, q), meta.img, "no_sinks")
    layers, heads = {"heads": ([1], None), "layers": (None, [2]), "all": (None, None)}[over]
    expected = analysis.patch_grid(
        analysis.reduce_heads(weights, meta.img, mode, layers=layers, heads=heads, k=4), meta.img
    ).values
    np.testing.assert_allclose(views.heatmap(state, params).tiles, expected, rtol=1e-6, equal_nan=True)


def test_bad_views_raise_one_line_errors(state):
    token = _answer_token(state, 0)
    for bad, words in [
        (ViewParams(image=0, token=token, layer=5), "layers .5. is outside 0-1"),
        (ViewParams(image=0, token=token, head=-1), "heads .-1. is outside 0-3"),
        (ViewParams(image=0, token=token, norm="zscore"), "normalise must be one of raw, image, no_sinks"),
        (ViewParams(image=0, token=token, mode="bogus"), "method must be one of mean, max"),
        (ViewParams(image=0, token=token, mode="max", over="rows"), "over must be one of heads"),
        (ViewParams(image=0, token=4), "no stored attention row"),
        (ViewParams(image=3, token=token), "image 3 does not exist: the store has 3 images"),
        (ViewParams(image=0, token=None), "no token selected"),
    ]:
        with pytest.raises(AttnstoreError, match=words):
            views.heatmap(state, bad)


def test_the_map_is_the_library_pipeline(state):
    """views.heatmap is compute_map of MapSpec.from_controls: same values, same description."""
    token = _answer_token(state, 1, 2)
    params = ViewParams(image=1, token=token, layer=0, head=3, mode="entropy_topk", over="all", norm="image", k=3)
    data = views.heatmap(state, params)
    spec = MapSpec.from_controls(state.ds, image=1, position=token, layer=0, head=3, mode="entropy_topk", over="all",
                                 norm="image", k=3)  # fmt: skip
    expected = compute_map(state.ds, spec)
    assert data.result.spec == spec
    np.testing.assert_array_equal(data.tiles, expected.grid("tiles").values)
    np.testing.assert_array_equal(data.glob, expected.grid("global").values)
    assert data.vmax == expected.vmax


def test_a_token_before_the_image_says_why_its_map_is_blank(state):
    meta = state.image(0)
    before = [int(p) for p in meta.query_position if p < meta.first_image_key]
    assert before, "the synthetic prompt has text tokens before the image"
    data = views.heatmap(state, ViewParams(image=0, token=before[0], layer=1, head=0))
    assert np.nanmax(data.tiles) == 0.0 and data.vmax == 0.0  # causal: nothing on the image
    assert "comes before the image: causal attention cannot see image patches" in data.note
    last = _answer_token(state, 0, nth=-1)  # the answer's last token chose nothing that was kept
    assert views.heatmap(state, ViewParams(image=0, token=last, layer=1)).note == ""


def test_the_row_that_chose_the_answer_says_so(state):
    """A decoder picks each word from the row before it: the prompt's last row, which chose the
    first answer word, says so in its note; answer tokens' own rows read as any token's."""
    meta = state.image(0)
    first = _answer_token(state, 0)
    note = views.heatmap(state, ViewParams(image=0, token=first - 1, layer=1)).note
    assert note.startswith(f"this row chose the answer word {quoted(meta.display[first])}"), note
    assert "chose" not in views.heatmap(state, ViewParams(image=0, token=first, layer=1)).note


def test_menus_read_the_registries():
    assert list(views.modes()) == ["head", *METHODS]
    assert "rollout" in views.modes()  # the explorer used to keep its own, shorter copy
    assert views.norms() == {name: entry.label for name, entry in NORMALISATIONS.items()}
    assert views.plural(1, "image") == "1 image" and views.plural(3, "head") == "3 heads"


def test_layer_head_stats_and_gallery(state):
    token = _answer_token(state, 0, 4)
    params = ViewParams(image=0, token=token, layer=1)
    stats = views.layer_head_stats(state, params)
    meta = state.image(0)
    raw = analysis.token_weights(meta.img, meta.query_of(token))
    np.testing.assert_allclose(stats["share"], analysis.image_share(raw, meta.img).values, rtol=1e-6)
    assert stats["entropy"].shape == (state.n_layers, state.n_heads)
    grids = views.head_grids(state, params)
    assert grids.shape == (state.n_heads, 24, 32)
    np.testing.assert_array_equal(grids[2], views.heatmap(state, replace(params, head=2)).tiles)


def test_reverse_view_uses_the_selected_layers_and_heads(state):
    meta = state.image(0)
    key = int(np.flatnonzero(np.asarray(meta.img["token_kind"].values) == TokenKind.IMAGE_TILE)[100])
    got = views.reverse_view(state, ViewParams(image=0, layer=1, head=3), key)
    expected = analysis.reverse_attention(meta.img, [key], layers=[1], heads=[3])
    np.testing.assert_allclose(got.values, expected.values)
    assert got.sizes["query"] == meta.n_query
    agg = views.reverse_view(state, ViewParams(image=0, mode="mean", over="all"), key)
    np.testing.assert_allclose(agg.values, analysis.reverse_attention(meta.img, [key]).values, rtol=1e-6)


def test_reverse_view_lists_text_rows_only(image_rows_store):
    """A store with image rows (`--queries text+image`): "who looks at a patch" answers with words."""
    from explorer.state import StoreState

    state = StoreState(image_rows_store)
    meta = state.image(0)
    kinds = np.asarray(meta.img["token_kind"].values)
    key = int(np.flatnonzero(kinds == TokenKind.IMAGE_TILE)[3])
    got = views.reverse_view(state, ViewParams(image=0), key)
    stored_kinds = kinds[np.asarray(meta.query_position)]
    assert (stored_kinds == TokenKind.IMAGE_TILE).any()  # the store does hold image rows
    assert got.sizes["query"] == int(np.isin(stored_kinds, [int(k) for k in TEXT_KINDS]).sum())
    assert not np.isin(kinds[got["position"].values], [TokenKind.IMAGE_TILE, TokenKind.IMAGE_GLOBAL]).any()


def test_picker_pages_and_search(state):
    indices, n, page = views.picker_page(state, "", page=0, per_page=2)
    assert (indices, n, page) == ([0, 1], 3, 0)
    assert views.picker_page(state, None, page=9, per_page=2)[0] == [2]  # clamped to the last page
    assert views.picker_page(state, "00002", page=0, per_page=2)[:2] == ([2], 1)
    assert views.picker_page(state, "JACKET", page=0, per_page=5)[1] == 3  # answers are searched, any case
    assert views.picker_page(state, "zebra", page=0, per_page=5)[:2] == ([], 0)
    assert views.page_of(state, "", 2, per_page=2) == 1
    assert views.page_of(state, "00001", 2, per_page=2) is None


def test_view_state_json_is_exact(state):
    token = _answer_token(state, 0)
    params = ViewParams(image=0, token=token, layer=1, head=1)
    data = views.heatmap(state, params)
    payload = views.view_state(params, data, {"cmap": "jet"}, 1.234)
    assert payload["token"] == token and payload["query"] == data.query and payload["cmap"] == "jet"
    assert payload["permalink"] == params.to_query()
    tiles = np.array([[np.nan if v is None else v for v in row] for row in payload["tiles"]], np.float32)
    np.testing.assert_array_equal(tiles, data.tiles)
