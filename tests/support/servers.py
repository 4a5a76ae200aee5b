"""Local servers for tests (loopback only): an HTTP server with Range support, the explorer app, helpers."""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import socket
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

BUCKET = "attnstore-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with single-range support (`bytes=a-b`, `bytes=a-`, `bytes=-n`); `python -m
    http.server` has none, and sharded stores need it."""

    ranges = True
    requests: list[tuple[str, str]] = []  # (path, Range header) of every GET, for the tests

    def log_message(self, *args):  # keep test output clean
        pass

    def send_head(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return None
        data = Path(path).read_bytes()
        RangeHandler.requests.append((self.path, self.headers.get("Range", "")))
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


def serve_folder(root: Path, ranges: bool = True) -> ThreadingHTTPServer:
    """Serve a folder on 127.0.0.1 in a thread (with or without Range support); stop with `.shutdown()`."""
    handler = functools.partial(RangeHandler if ranges else NoRangeHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


@contextmanager
def served(app):
    """A Dash app of the explorer on a free port of 127.0.0.1 (werkzeug in a thread), for one block."""
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request in failure reports
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_port}/", app=app, state=app.attnstore_state)
    finally:
        server.shutdown()
        thread.join(timeout=10)
