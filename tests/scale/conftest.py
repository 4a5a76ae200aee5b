"""Fixtures of the scale-out tests: small wide images (few tiles: fast), a local S3 (moto) and a
local HTTP server that answers Range requests (python -m http.server does not, DESIGN.md §4)."""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from attnstore.synthetic import _gradient_image

# Wide images split into 1 x 4 or 2 x 4 tiles instead of 4 x 4: the tiny model runs ~3x faster.
IMAGE_SIZES = [(400, 100), (300, 120), (500, 130), (420, 110), (380, 100), (460, 120)]
BUCKET = "attnstore-test"


def make_images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        _gradient_image(*IMAGE_SIZES[i % len(IMAGE_SIZES)], seed=i).save(folder / f"img{i:02d}.png")
    return folder


@pytest.fixture
def images(tmp_path):
    """Four small images in tmp_path/images."""
    return make_images(tmp_path / "images", 4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 with one bucket; AWS_* variables point s3fs (and subprocesses) at it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_ENDPOINT_URL=endpoint)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import s3fs

    s3fs.S3FileSystem(endpoint_url=endpoint).mkdir(BUCKET)
    yield endpoint
    server.stop()
    for key, value in saved.items():
        os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with single-range support (`bytes=a-b`, `bytes=a-`, `bytes=-n`)."""

    ranges = True

    def log_message(self, *args):  # keep test output clean
        pass

    def send_head(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return None
        data = Path(path).read_bytes()
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "")) if self.ranges else None
        if match is None:
            self.send_response(200)
            body = data
        else:
            first, last = match.groups()
            if first == "":
                start, stop = max(0, len(data) - int(last)), len(data)
            else:
                start, stop = int(first), min(len(data), int(last) + 1 if last else len(data))
            if start >= len(data):
                self.send_error(416)
                return None
            body = data[start:stop]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes" if self.ranges else "none")
        self.end_headers()
        return io.BytesIO(body)


class NoRangeHandler(RangeHandler):
    ranges = False  # like `python -m http.server`


@pytest.fixture
def http_server():
    """Factory: serve a folder on 127.0.0.1 (with or without Range support); returns the base URL."""
    servers = []

    def serve(root: Path, ranges: bool = True) -> str:
        handler = functools.partial(RangeHandler if ranges else NoRangeHandler, directory=str(root))
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()
