"""GET /api/view: the values the page draws a clicked token's map with, before Dash's callback arrives.

They must be the values that callback draws (the same `figures.map_values`), or the page would show
one map and then another.
"""

from __future__ import annotations

from urllib.parse import urlencode

import numpy as np
import pytest

from explorer import ids, views
from explorer.views import ViewParams

VIEW = "/api/view"


def dash_drawn_values(app, run_callback, params: ViewParams, drawn_image: int) -> tuple[dict[int, list], float]:
    """The z per trace and cmax that the main figure's Dash callback sends for `params` (a Patch)."""
    values = {
        f"{ids.IMAGE}.data": params.image,
        f"{ids.TOKEN}.data": params.token,
        f"{ids.LAYER}.value": params.layer,
        f"{ids.HEAD}.value": params.head,
        f"{ids.MODE}.value": params.mode,
        f"{ids.OVER}.value": params.over,
        f"{ids.NORM}.value": params.norm,
        f"{ids.DRAWN_IMAGE}.data": drawn_image,
    }
    out = run_callback(app, f"{ids.FIGURE}.figure", f"{ids.TOKEN}.data", values)
    operations = out[ids.FIGURE]["figure"]["operations"]
    z = {op["location"][1]: op["params"]["value"] for op in operations if op["location"][-1] == "z"}
    cmax = next(op["params"]["value"] for op in operations if op["location"] == ["layout", "coloraxis", "cmax"])
    return z, cmax


def view_query(params: ViewParams) -> str:
    """The page's request: its view's permalink, the clicked token as `token_index`."""
    query = {name: getattr(params, name) for name in views.URL_KEYS if name != "token"}
    return f"{VIEW}?{urlencode({**query, 'token_index': params.token})}"


def as_array(z) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in z], np.float64)


@pytest.mark.parametrize(
    "controls",
    [
        {"layer": 1, "head": 2},
        {"mode": "entropy_topk", "over": "all"},
        {"mode": "mean", "over": "layers", "head": 3, "norm": "image"},
    ],
)
def test_the_page_draws_the_values_dash_draws(app, client, state, run_callback, controls):
    for image in (0, 2):
        meta = state.image(image)
        params = ViewParams(image=image, token=int(meta.query_position[-1]), **controls)
        body = client.get(view_query(params)).get_json()
        assert body["success"] and (body["image"], body["token"]) == (image, params.token)
        z, cmax = dash_drawn_values(app, run_callback, params, drawn_image=image)
        assert body["traces"] == sorted(z) and body["cmax"] == cmax
        for trace, grid in zip(body["traces"], body["z"]):
            np.testing.assert_array_equal(as_array(grid), as_array(z[trace]))  # NaN where no token, both
        # and they are the view's map: the hidden view state (tests, permalink) holds the same grids
        data = views.heatmap(state, params)
        np.testing.assert_array_equal(as_array(body["z"][0]), np.asarray(data.tiles, np.float64))


def test_a_token_before_the_image_has_an_all_zero_map(client, state):
    meta = state.image(0)
    first_text = int(meta.query_position[0])
    assert meta.before_image(first_text)
    body = client.get(view_query(ViewParams(image=0, token=first_text))).get_json()
    values = np.concatenate([as_array(g).ravel() for g in body["z"]])
    assert np.all(values[np.isfinite(values)] == 0) and body["cmax"] == 1.0


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ("image=0&layer=0&head=0", 400, "Missing field 'word'"),
        ("image=0&token_index=1&layer=2&head=0", 400, "Layer 2 out of range (0-1)"),
        ("image=0&token_index=1&layer=0&head=0&k=0", 400, "k must be between 1"),
        ("image=9&token_index=1&layer=0&head=0", 400, "Image 9 out of range (0-2)"),
        ("image=0&token_index=10&layer=0&head=0", 400, "no stored attention row"),
        ("image=0&token_index=1&layer=0&head=0&mode=median", 400, "Field 'mode' must be one of head"),
        ("image=0&token_index=1&layer=0&head=0&over=pixels&mode=mean", 400, "Field 'over' must be one of"),
    ],
)
def test_bad_views_are_one_line_errors(client, query, status, error):
    response = client.get(f"{VIEW}?{query}")
    body = response.get_json()
    assert response.status_code == status and body["success"] is False
    assert error in body["error"] and "\n" not in body["error"]


def test_only_get(client):
    response = client.post(VIEW, json={})
    assert response.status_code == 405 and response.headers["Allow"].startswith("GET")


def test_a_word_and_its_occurrence_in_the_query_string(client, state):
    meta = state.image(0)
    rows = [r for r in range(len(meta.query_position)) if meta.token_text[int(meta.query_position[r])] == "Ġdog"]
    assert rows, "the synthetic store's prompt names a dog"
    last = len(rows) - 1
    body = client.get(f"{VIEW}?image=0&layer=0&head=0&word=dog&occurrence={last}").get_json()
    assert body["success"] and body["token"] == int(meta.query_position[rows[last]])
    response = client.get(f"{VIEW}?image=0&layer=0&head=0&word=dog&occurrence=x")
    assert response.status_code == 400 and "Field 'occurrence' must be an integer" in response.get_json()["error"]
