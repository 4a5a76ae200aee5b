"""Every /api path answers JSON: 404 for unknown paths, 405 (with Allow) for a wrong method,
a JSON 500 without a traceback for a server bug; the page's own routes are untouched."""

from __future__ import annotations

import pytest

GEN = "/api/generate_attention_map"


def _is_api_error(response, status: int) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["success"] is False and isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body


@pytest.mark.parametrize("path", ["/api/nope", "/api", "/api/", "/api/image/x.png", "/api/initialize/extra"])
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_unknown_api_paths_are_json_404(client, path, method):
    body = _is_api_error(client.open(path, method=method), 404)
    assert f"no API endpoint at '{path}'" in body["error"] and "/api/generate_attention_map" in body["error"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", GEN, "POST, OPTIONS"),
        ("PUT", GEN, "POST, OPTIONS"),
        ("POST", "/api/initialize", "GET, HEAD, OPTIONS"),
        ("DELETE", "/api/image/0.png", "GET, HEAD, OPTIONS"),
        ("PATCH", "/api/thumbnail/1.png", "GET, HEAD, OPTIONS"),
        ("BREW", "/api/initialize", "GET, HEAD, OPTIONS"),  # a method no route knows
    ],
)
def test_wrong_method_is_json_405_with_allow(client, method, path, allow):
    response = client.open(path, method=method)
    body = _is_api_error(response, 405)
    assert response.headers["Allow"] == allow
    assert body["error"].startswith(f"method {method} is not allowed on '{path}': use ")


def test_the_api_still_answers_its_own_methods(client):
    assert client.get("/api/initialize").status_code == 200
    assert client.head("/api/image/0.png").status_code == 200
    assert client.post(GEN, json={"word": "dog", "layer": 0, "head": 0}).status_code == 200
    assert "POST" in client.options(GEN).headers["Allow"]


def test_page_routes_keep_their_behaviour(client):
    assert client.get("/").mimetype == "text/html"
    assert client.get("/some/page").mimetype == "text/html"  # the Dash catch-all still serves the app
    assert client.post("/some/page").status_code == 405 and client.post("/some/page").mimetype == "text/html"
    assert client.get("/_dash-layout").mimetype == "application/json"


def test_api_under_a_route_prefix(synthetic_store):
    from explorer import create_app

    client = create_app(synthetic_store, url_base_pathname="/attn/").server.test_client()
    assert client.get("/attn/api/initialize").status_code == 200
    body = _is_api_error(client.get("/attn/api/nope"), 404)
    assert "/attn/api/initialize" in body["error"]
    assert _is_api_error(client.get("/attn" + GEN), 405) and client.get("/attn" + GEN).headers["Allow"]


def test_a_server_bug_is_a_json_500_without_traceback(client, state, monkeypatch):
    def broken(index):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(state, "picture_png", broken)
    body = _is_api_error(client.get("/api/image/0.png"), 500)
    assert "secret internal detail" not in body["error"] and "server log" in body["error"]


def test_body_limits(client):
    _is_api_error(client.post(GEN, data="[" * 20_000 + "]" * 20_000, content_type="application/json"), 400)
    big = {"word": "dog", "layer": 0, "head": 0, "pad": "x" * 100_000}
    assert "too large" in _is_api_error(client.post(GEN, json=big), 413)["error"]
    long_word = _is_api_error(client.post(GEN, json={"word": "d" * 5000, "layer": 0, "head": 0}), 400)
    assert "too long" in long_word["error"]


@pytest.mark.parametrize(
    ("layer", "shown"),
    [("٣", "'٣'"), ("1_0", "'1_0'"), ("1" * 5000, "'1111"), (10**30, "1000"), (1.0, "1.0"), (True, "True")],
)
def test_integer_fields_take_ascii_integers_only(client, layer, shown):
    body = _is_api_error(client.post(GEN, json={"word": "dog", "layer": layer, "head": 0}), 400)
    assert shown in body["error"] and len(body["error"]) < 120  # the client's value is clipped


def test_integer_fields_accept_digit_strings(client):
    body = client.post(GEN, json={"word": "dog", "layer": " 1 ", "head": "-0"}).get_json()
    assert body["success"] and (body["layer"], body["head"]) == (1, 0)


def test_non_finite_threshold_is_refused(client):
    response = client.post(
        GEN, data='{"word": "dog", "layer": 0, "head": 0, "threshold": NaN}', content_type="application/json"
    )
    assert "finite number" in _is_api_error(response, 400)["error"]


def test_a_doubled_slash_redirects_in_json(client):
    response = client.post("/api//generate_attention_map", json={"word": "dog", "layer": 0, "head": 0})
    body = _is_api_error(response, 308)
    assert response.headers["Location"] == GEN and GEN in body["error"]


def test_a_chunked_body_is_bounded(app):
    """A body without Content-Length (chunked) is cut at the limit too, over a real socket."""
    import http.client
    import json
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        chunks = [b'{"word": "dog", "pad": "'] + [b"x" * 10_000] * 10 + [b'"}']
        conn.request("POST", GEN, body=iter(chunks), headers={"Content-Type": "application/json"}, encode_chunked=True)
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        server.shutdown()
    assert response.status == 413, body
    assert body["success"] is False and "Traceback" not in body["error"]


def test_a_damaged_image_is_named_in_a_json_500(synthetic_store, tmp_path):
    import shutil

    from support.damage import flip_attention_row

    from explorer import create_app

    store = shutil.copytree(synthetic_store, tmp_path / "s.zarr")
    payload = {"word": "dog", "layer": 0, "head": 0, "image": 1}
    row = create_app(str(store)).server.test_client().post(GEN, json=payload).get_json()["query_row"]
    flip_attention_row(store, image=1, row=row)
    client = create_app(str(store)).server.test_client()
    body = _is_api_error(client.post(GEN, json=payload), 500)
    assert body["error"].startswith("image 1 (synthetic_00001.png) is damaged")
    assert client.post(GEN, json={**payload, "image": 0}).status_code == 200  # the other images still draw
