"""What a web page or a stranger's client cannot do to a local explorer (`explorer.guard` and the
routes): other Host names (DNS rebinding), cross-site POSTs, JSON as text/plain, bodies past the
bound on any route, static files outside their folder, a traceback per bad script path."""

from __future__ import annotations

import http.client
import io
import json
import logging
import shutil
from pathlib import Path

import pytest
from support.servers import served

GEN = "/api/generate_attention_map"
CLICK = {"word": "dog", "layer": 0, "head": 0}
CLIENT = Path(__file__).parent / "seed_client"


@pytest.mark.parametrize("host", ["localhost", "localhost:5001", "127.0.0.1:5001", "[::1]:5001", "LOCALHOST:80"])
def test_loopback_hosts_are_served(client, host):
    assert client.get("/api/initialize", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:5001", "127.0.0.1.evil.example", "localhost.evil:5001", "10.0.0.7"]
)
@pytest.mark.parametrize("path", ["/", "/api/initialize", "/_dash-layout", "/assets/explorer.js"])
def test_other_hosts_are_refused(client, host, path):
    """DNS rebinding: the attacker's name resolves to 127.0.0.1, so the Host header carries it."""
    response = client.get(path, headers={"Host": host})
    assert response.status_code == 403
    assert "is not allowed" in response.get_json()["error"] and "--allow-host" in response.get_json()["error"]


def test_allowed_hosts_widen_the_list(synthetic_store):
    from explorer import create_app

    client = create_app(synthetic_store, allowed_hosts=["box.lan", "[fd00::1]"]).server.test_client()
    assert client.get("/api/initialize", headers={"Host": "box.lan:5001"}).status_code == 200
    assert client.get("/api/initialize", headers={"Host": "[fd00::1]:5001"}).status_code == 200
    assert client.get("/api/initialize", headers={"Host": "localhost"}).status_code == 200
    assert client.get("/api/initialize", headers={"Host": "other.lan"}).status_code == 403
    anyone = create_app(synthetic_store, allowed_hosts=["*"]).server.test_client()
    assert anyone.get("/api/initialize", headers={"Host": "other.lan"}).status_code == 200


@pytest.mark.parametrize("origin", ["http://evil.example", "http://localhost:9999", "null", "file://"])
@pytest.mark.parametrize("path", [GEN, "/_dash-update-component"])
def test_cross_origin_posts_are_refused(client, origin, path):
    response = client.post(path, json=CLICK, headers={"Host": "localhost:5001", "Origin": origin})
    assert response.status_code == 403 and "cross-origin" in response.get_json()["error"]


@pytest.mark.parametrize("origin", ["http://localhost:5001", "http://127.0.0.1:5001"])
def test_same_origin_posts_pass(client, origin):
    response = client.post(GEN, json=CLICK, headers={"Host": "localhost:5001", "Origin": origin})
    assert response.status_code == 200


def test_a_cross_origin_get_is_not_refused(client):
    """Reads are what any page may embed (the Host check still applies)."""
    assert client.get("/api/initialize", headers={"Origin": "http://evil.example"}).status_code == 200


def test_json_as_text_plain_is_refused(client):
    """A cross-site page can POST text/plain without asking the server first; JSON must say it is JSON."""
    response = client.post(GEN, data=json.dumps(CLICK), content_type="text/plain")
    assert response.status_code == 415 and "application/json" in response.get_json()["error"]
    assert client.post(GEN, data=json.dumps(CLICK), content_type="application/json").status_code == 200


class _Unread(io.RawIOBase):
    """A request body that fails the test if anything reads it."""

    def readable(self):
        return True

    def readinto(self, _buffer):
        raise AssertionError("the body was read")


@pytest.mark.parametrize("path", ["/_dash-update-component", "/", "/api/initialize", GEN, "/nowhere"])
def test_a_huge_declared_body_is_413_before_reading(app, path):
    """The 1.5 GB POST to /_dash-update-component: refused by its Content-Length, no byte read."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    environ = EnvironBuilder(path=path, method="POST", content_type="application/json").get_environ()
    environ.update({"CONTENT_LENGTH": str(1_500_000_000), "wsgi.input": io.BufferedReader(_Unread())})
    body, status, _headers = run_wsgi_app(app.server, environ)
    assert status.startswith("413") and b"too large" in b"".join(body)


def test_a_dash_callback_of_real_size_still_fits(client):
    """Dash callbacks carry the view's map values (~25 KB measured): far under the bound."""
    from explorer.guard import MAX_BODY_BYTES

    payload = {"output": "x.children", "inputs": [{"id": "x", "property": "y", "value": "v" * 200_000}]}
    response = client.post("/_dash-update-component", json=payload)
    assert response.status_code != 413 and len(json.dumps(payload)) < MAX_BODY_BYTES


def test_a_chunked_body_to_dash_is_cut_at_the_bound(app):
    """No Content-Length: read up to the bound, then 413 (over a real socket)."""
    from explorer.guard import MAX_BODY_BYTES

    with served(app) as live:
        conn = http.client.HTTPConnection("127.0.0.1", int(live.url.rsplit(":", 1)[1].strip("/")), timeout=10)
        chunks = [b'{"output": "'] + [b"x" * 65536] * (MAX_BODY_BYTES // 65536 + 2) + [b'"}']
        headers = {"Content-Type": "application/json"}
        conn.request("POST", "/_dash-update-component", body=iter(chunks), headers=headers, encode_chunked=True)
        response = conn.getresponse()
        status, body = response.status, json.loads(response.read())
    assert status == 413 and "too large" in body["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/_dash-component-suites/nope/x.js",
        "/_dash-component-suites/dash/nope.js",
        "/_dash-component-suites/plotly/x.min.js",
    ],
)
def test_an_unknown_script_path_is_404_without_a_traceback(client, caplog, path):
    with caplog.at_level(logging.INFO):
        response = client.get(path)
    assert response.status_code == 404
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_a_known_script_path_is_still_served(client):
    page = client.get("/").get_data(as_text=True)
    script = next(p for p in page.split('"') if p.startswith("/_dash-component-suites/dash/deps/react@"))
    assert client.get(script).status_code == 200


@pytest.fixture
def seed_folder(tmp_path):
    """A copy of the seed frontend whose static/ holds links out of it (a file, a folder)."""
    folder = shutil.copytree(CLIENT, tmp_path / "frontend")
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the folder\n")
    (folder / "static" / "leak.txt").symlink_to(secret)
    (folder / "static" / "up").symlink_to(tmp_path)
    (folder / "static" / "passwd").symlink_to("/etc/passwd")
    (folder / "static" / "inside.js").symlink_to(folder / "static" / "js" / "client.js")
    return folder


@pytest.mark.parametrize("path", ["/static/leak.txt", "/static/up/secret.txt", "/static/passwd", "/static/../x"])
def test_static_links_out_of_the_folder_are_404(synthetic_store, seed_folder, path):
    from explorer.seed_frontend import create_seed_app

    response = create_seed_app(synthetic_store, seed_folder).test_client().get(path)
    assert response.status_code == 404
    assert b"outside the folder" not in response.data and b"root:" not in response.data


def test_static_files_inside_the_folder_are_served(synthetic_store, seed_folder):
    from explorer.seed_frontend import create_seed_app

    client = create_seed_app(synthetic_store, seed_folder).test_client()
    js = (seed_folder / "static" / "js" / "client.js").read_bytes()
    assert client.get("/static/js/client.js").data == js
    assert client.get("/static/inside.js").data == js  # a link that stays inside is fine
    assert "/static/js/client.js" in client.get("/").get_data(as_text=True)


def test_the_seed_frontend_checks_hosts_too(synthetic_store):
    from explorer.seed_frontend import create_seed_app

    client = create_seed_app(synthetic_store, CLIENT).test_client()
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 403
    assert client.post(GEN, data=json.dumps(CLICK), content_type="text/plain").status_code == 415


def _asgi_call(app, headers: list, chunks: list[bytes]) -> list[dict]:
    """Run an ASGI app on one HTTP request whose body arrives in `chunks`; the messages it sent."""
    import asyncio

    sent, pending = (
        [],
        [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)],
    )

    async def receive():
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    asyncio.run(app(scope, receive, send))
    return sent


def test_the_workers_read_bodies_whole_and_bounded():
    """`--workers`: the body is read on the event loop, bounded, before the app's thread starts."""
    from explorer.guard import BoundedBody

    seen = []

    async def inner(scope, receive, send):
        seen.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})

    app = BoundedBody(inner, max_body=10)
    assert _asgi_call(app, [(b"content-length", b"1500000000")], [b""])[0]["status"] == 413 and not seen
    assert _asgi_call(app, [], [b"12345", b"67890", b"1"])[0]["status"] == 413 and not seen  # chunked, cut
    assert _asgi_call(app, [], [b"12345", b"67890"])[0]["status"] == 200
    assert seen == [{"type": "http.request", "body": b"1234567890", "more_body": False}]
