"""Fixtures of the explorer's unit tests: one StoreState / app per session on the shared synthetic store."""

from __future__ import annotations

import functools
import io
import os
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def state(synthetic_store):
    from explorer.state import StoreState

    return StoreState(synthetic_store)


@pytest.fixture(scope="session")
def app(state):
    from explorer import create_app

    return create_app(state)


@pytest.fixture()
def client(app):
    return app.server.test_client()


class _RangeHandler(SimpleHTTPRequestHandler):
    """Static files with single byte-range support (zarr shards are read by range over HTTP)."""

    requests: list[tuple[str, str]] = []  # (path, Range header) of every GET, for the tests

    def log_message(self, *args):
        pass

    def send_head(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return None
        data = Path(path).read_bytes()
        wanted = self.headers.get("Range", "")
        self.requests.append((self.path, wanted))
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted)
        if match is None:
            self.send_response(200)
            body = data
        else:
            first, last = match.groups()
            start = len(data) - int(last) if first == "" else int(first)
            stop = len(data) if first == "" or not last else min(len(data), int(last) + 1)
            body = data[max(start, 0) : stop]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {max(start, 0)}-{stop - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return io.BytesIO(body)


@pytest.fixture(scope="session")
def http_store(synthetic_store):
    """The synthetic store served over HTTP with Range support: (URL, list of requests seen)."""
    root = Path(synthetic_store)
    handler = functools.partial(_RangeHandler, directory=str(root.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{root.name}", _RangeHandler.requests
    server.shutdown()
    server.server_close()
