"""Exports and registries across front ends: the explorer's download button, POST /api/export and
`attnstore.render.export_map` give the same bytes; a method registered at run time is offered by the
explorer and accepted by the REST API."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from attnstore.analysis import METHODS, MapSpec, compute_map, select_layers_heads
from attnstore.render import FORMATS, Style, export_map
from explorer import create_app, ids
from explorer.panels import exports

BUTTON_OF = {fmt: cid for cid, (_, fmt) in exports.BUTTONS.items()}


def controls(state, image=0, layer=1, head=2, mode="max", over="heads", norm="image", **extra) -> dict:
    token = state.image(image).default_token()
    return {
        f"{ids.IMAGE}.data": image, f"{ids.TOKEN}.data": token, f"{ids.LAYER}.value": layer,
        f"{ids.HEAD}.value": head, f"{ids.MODE}.value": mode, f"{ids.OVER}.value": over, f"{ids.NORM}.value": norm,
        f"{ids.CMAP}.value": "magma", f"{ids.OPACITY}.value": 0.4, f"{ids.GRID}.value": [], **extra,
    }  # fmt: skip


def download(run_callback, app, values: dict, fmt: str) -> tuple[bytes, str]:
    """Click the explorer's download button of `fmt`; (file bytes, file name)."""
    cid = BUTTON_OF[fmt]
    out = run_callback(app, f"{ids.DOWNLOAD}.data", f"{cid}.n_clicks", {**values, f"{cid}.n_clicks": 1})
    sent = out[ids.DOWNLOAD]["data"]
    data = base64.b64decode(sent["content"]) if sent["base64"] else sent["content"].encode()
    return data, sent["filename"]


@pytest.mark.parametrize("fmt", sorted(BUTTON_OF))
def test_the_same_map_exports_byte_identical_from_explorer_api_and_library(run_callback, app, state, client, fmt):
    values = controls(state)
    token = values[f"{ids.TOKEN}.data"]
    spec = MapSpec(image=0, position=token, layers=(1,), heads=None, method="max", normalise="image")
    style = Style(cmap="magma", opacity=0.4, grid_lines=False)
    expected = export_map(compute_map(state.ds, spec), fmt, style)
    from_explorer, name = download(run_callback, app, values, fmt)
    body = {"image": 0, "position": token, "layers": [1], "method": "max", "normalise": "image", "format": fmt,
            "cmap": "magma", "opacity": 0.4, "grid_lines": False}  # fmt: skip
    response = client.post("/api/export", json=body)
    assert response.status_code == 200 and response.mimetype == FORMATS[fmt][1]
    assert from_explorer == expected and response.data == expected
    assert name.endswith(FORMATS[fmt][0]) and name in response.headers["Content-Disposition"]


def test_the_svg_title_names_the_normalisation(run_callback, app, state):
    svg, _ = download(run_callback, app, controls(state, norm="no_sinks"), "svg")
    assert "image keys, no sinks" in svg.decode()


def test_api_export_errors_are_json_with_a_status_by_type(client):
    for body, status, words in [
        ({"token": "dog", "format": "bmp"}, 400, "format must be one of png, overlay, csv, svg, json"),
        ({"token": "zebra"}, 404, "token 'zebra' not found"),
        ({"token": "dog", "image": 9}, 404, "image 9 does not exist"),
        ({"token": "dog", "layers": [7]}, 400, "layers [7] is outside 0-1"),
        ({"token": "dog", "opacity": 2.0}, 400, "opacity must be between 0 and 1"),
        ({"token": "dog", "cell_px": "big"}, 400, "cell_px"),
        ({"position": 10}, 400, "has no stored attention row"),
    ]:
        response = client.post("/api/export", json=body)
        assert response.status_code == status, body
        assert response.get_json()["success"] is False and words in response.get_json()["error"]


def _median(weights, img, *, layers, heads, k, keys):
    return select_layers_heads(weights, layers, heads).median(("layer", "head"))


@pytest.fixture
def median():
    METHODS.register("median", "median over the selected layers and heads")(_median)
    yield "median"
    METHODS.unregister("median")


def test_a_method_registered_at_run_time_is_offered_and_accepted(run_callback, synthetic_store, median):
    app = create_app(synthetic_store)  # any app: the menus are read on each page load
    client = app.server.test_client()
    options = _find(client.get("/_dash-layout").get_json(), ids.MODE)["options"]
    assert options["median"] == "median" and list(options) == ["head", *METHODS]
    state = app.attnstore_state
    generated = client.post(
        "/api/generate_attention_map", json={"word": "dog", "layer": 1, "head": 0, "mode": "median", "over": "all"}
    )
    assert generated.status_code == 200, generated.get_json()
    expected = compute_map(state.ds, MapSpec(image=0, token="dog", method="median"))
    assert generated.get_json()["max_value"] == pytest.approx(expected.vmax)
    exported = client.post("/api/export", json={"token": "dog", "method": "median", "format": "json"})
    assert exported.status_code == 200
    record = json.loads(exported.data)
    assert record["spec"]["method"] == "median"
    tiles = np.array([[np.nan if v is None else v for v in row] for row in record["tiles"]], np.float32)
    np.testing.assert_array_equal(tiles, expected.grid("tiles").values)
    # and the explorer draws it
    values = controls(state, mode="median", over="all")
    svg, name = download(run_callback, app, values, "svg")
    spec = MapSpec(image=0, position=values[f"{ids.TOKEN}.data"], method="median", normalise="image")
    style = Style(cmap="magma", opacity=0.4, grid_lines=False)
    assert "median" in name and svg == export_map(compute_map(state.ds, spec), "svg", style)


def _find(node, cid):
    """The props of the component with id `cid` in a Dash layout JSON."""
    if isinstance(node, dict):
        props = node.get("props", {})
        if props.get("id") == cid:
            return props
        children = props.values() if "props" in node else node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _find(child, cid)
        if found is not None:
            return found
    return None
