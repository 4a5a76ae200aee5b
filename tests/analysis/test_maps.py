"""The map pipeline: MapSpec constructors agree, errors name the field, MapResult's grids and vmax."""

from __future__ import annotations

import numpy as np
import pytest

from attnstore.analysis import MapSpec, compute_map
from attnstore.errors import InvalidArgument, NotFound
from attnstore.schema import TokenKind
from attnstore.store import open_dataset


@pytest.fixture(scope="module")
def ds(synthetic_store):
    return open_dataset(synthetic_store)


def test_constructors_build_the_same_spec(ds):
    from_cli = MapSpec.from_cli(ds, image="synthetic_00001.png", layers="1", heads="0-3", token="dog", method="mean")
    from_json = MapSpec.from_json(ds, {"image": 1, "token": "dog", "layer": 1, "heads": [0, 1, 2, 3], "method": "mean"})
    assert from_cli == from_json == MapSpec(image=1, token="dog", layers=(1,), heads=(0, 1, 2, 3), method="mean")
    position = compute_map(ds, from_cli).position
    one_head = MapSpec.from_controls(ds, image=1, position=position, layer=1, head=2, mode="head", over="heads",
                                     norm="raw", k=10)  # fmt: skip
    weights = ds.attn.token("dog", image=1).values  # [layer, head, key]
    np.testing.assert_array_equal(compute_map(ds, one_head).values.values, weights[1, 2])


@pytest.mark.parametrize(
    "body,param",
    [
        ({"token": "dog", "layers": [0, 9]}, "layers"),
        ({"token": "dog", "method": "median?"}, "method"),
        ({"token": "dog", "k": 0}, "k"),
        ({"token": "dog", "image": "x"}, "image"),
        ({"token": 3}, "token"),
        ({}, "token"),
        ({"position": 5}, "position"),  # an image token: no stored row
    ],
)
def test_bad_fields_name_the_field(ds, body, param):
    with pytest.raises(InvalidArgument) as err:
        compute_map(ds, MapSpec.from_json(ds, body))
    assert err.value.param == param


def test_unknown_token_is_not_found(ds):
    with pytest.raises(NotFound, match="close matches"):
        compute_map(ds, MapSpec(image=0, token="dgo"))


def test_grids_are_built_once_and_vmax_is_the_largest_drawn_value(ds):
    result = compute_map(ds, MapSpec(image=0, token="jacket", method="max"))
    tiles, glob = result.grid("tiles"), result.grid("global")
    assert result.grid("tiles") is tiles and tiles.attrs["token"] == result.token
    assert result.vmax == pytest.approx(max(np.nanmax(tiles.values), np.nanmax(glob.values)))


def test_answer_alias_names_the_answer_tokens_in_order(ds):
    img = ds.attn.image(2)
    kinds = img["token_kind"].values[img["query_position"].values]
    answer_rows = np.flatnonzero(kinds == int(TokenKind.GENERATED))
    first = compute_map(ds, MapSpec(image=2, token="@answer"))
    third = compute_map(ds, MapSpec(image=2, token="@answer", occurrence=2))
    assert (first.row, third.row) == (answer_rows[0], answer_rows[2])


def test_answer_step_names_the_rows_that_chose_the_answer_tokens(ds):
    """A decoder picks the token at position p from the row at p - 1: "@answer-step" occurrence k is
    the stored row one position before the k-th answer token (the prompt's last row for the first)."""
    img = ds.attn.image(2)
    positions = img["query_position"].values
    answer_positions = positions[img["token_kind"].values[positions] == int(TokenKind.GENERATED)]
    for k in (0, 2):
        chose = compute_map(ds, MapSpec(image=2, token="@answer-step", occurrence=k))
        assert positions[chose.row] == answer_positions[k] - 1
    assert img["token_kind"].values[answer_positions[0] - 1] != int(TokenKind.GENERATED)  # the prompt's last token
