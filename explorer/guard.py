"""What every request to the explorer passes before the app sees it (WSGI middleware, `guard`):

- **Host allow-list** (against DNS rebinding: a web page the user visits points its own name at
  127.0.0.1 and then talks to the local server as a same-origin page). The Host header must name
  this machine's loopback (127.0.0.1, localhost, [::1], any port) or a name the user allowed
  (`attnstore serve --allow-host NAME`); anything else is 403 before routing.
- **Origin check** on requests that may change state or carry JSON (every method but GET, HEAD,
  OPTIONS): a browser's `Origin` header must be the page's own origin or an allowed name on the same
  port; another site's page (a cross-site form or fetch) is 403. Clients without `Origin` (curl,
  scripts) are not browsers driven by a third party and pass.
- **Body bound** on every route (Dash's callbacks, the REST API, static files): a declared
  Content-Length over `MAX_BODY_BYTES` is 413 before a byte of the body is read; a chunked body
  (no Content-Length) is read up to the bound and is 413 as soon as it goes past it.

Refusals are one-line JSON errors (`{"success": false, "error": ...}`), never logged: a client's
mistake is the client's to read.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from urllib.parse import urlsplit

# The largest request the explorer's page sends is a Dash callback carrying the view's map values
# (~24 bytes a cell): 25.8 KB measured over the browser tests (tests/browser, 889 keys), ~20 KB for
# the seeds' 832 image keys. 1 MiB is 40x that (maps of up to ~40,000 cells) and still a bounded
# amount per connection (the REST API keeps its own 64 KiB: a handful of fields).
MAX_BODY_BYTES = 1024 * 1024
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
ANY_HOST = "*"  # `--allow-host '*'`: no Host check (behind a proxy that does its own)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def host_name(netloc: str) -> tuple[str, str]:
    """(lower-case name, port or "") of a Host header or an origin's netloc; IPv6 without brackets."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):  # [::1]:5001
        name, _, rest = netloc[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else ""
    name, _, port = netloc.partition(":") if netloc.count(":") == 1 else (netloc, "", "")
    return name, port


class Guard:
    """WSGI middleware: Host allow-list, Origin check, body bound (module docstring).

    Parameters
    ----------
    app : the WSGI app to protect.
    allowed_hosts : names (or addresses) accepted in the Host header besides the loopback ones;
        ``"*"`` accepts any Host.
    max_body : the largest request body accepted, in bytes.
    """

    def __init__(self, app, allowed_hosts: Iterable[str] = (), max_body: int = MAX_BODY_BYTES):
        self.app = app
        extra = {host_name(h)[0] for h in allowed_hosts}
        self.any_host = ANY_HOST in extra
        self.hosts = frozenset(LOOPBACK_HOSTS) | extra
        self.max_body = max_body

    def __call__(self, environ, start_response):
        refusal = self._host_refusal(environ) or self._origin_refusal(environ) or self._body_refusal(environ)
        if refusal:
            return _refuse(start_response, *refusal)
        return self.app(environ, start_response)

    def allows(self, name: str) -> bool:
        return self.any_host or name in self.hosts

    def _host_refusal(self, environ) -> tuple[int, str] | None:
        host = environ.get("HTTP_HOST")
        if host is None:  # HTTP/1.0 without Host: no browser sends that, nothing to rebind
            return None
        name, _ = host_name(host)
        if self.allows(name):
            return None
        return 403, f"Host {_clip(host)!r} is not allowed: serve with --allow-host {_clip(name)} to accept it"

    def _origin_refusal(self, environ) -> tuple[int, str] | None:
        origin = environ.get("HTTP_ORIGIN")
        if origin is None or environ.get("REQUEST_METHOD", "GET") in SAFE_METHODS:
            return None
        host = environ.get("HTTP_HOST", "")
        parts = urlsplit(origin)
        if parts.scheme in ("http", "https") and parts.netloc:
            if parts.netloc.lower() == host.lower():
                return None  # the page's own origin
            name, port = host_name(parts.netloc)
            default = "443" if parts.scheme == "https" else "80"
            host_port = host_name(host)[1] or default
            if self.allows(name) and (port or default) == host_port:
                return None
        return 403, f"cross-origin request from {_clip(origin)!r} refused"

    def _body_refusal(self, environ) -> tuple[int, str] | None:
        too_large = 413, f"request body too large (at most {self.max_body} bytes)"
        declared = environ.get("CONTENT_LENGTH") or ""
        if declared:
            if not declared.isdigit():
                return 400, "Content-Length is not a number"
            return too_large if int(declared) > self.max_body else None
        if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            return None
        # A chunked body: read it here, never more than the bound (+1 byte to see it go past), and
        # hand the app a body of known length.
        body = environ["wsgi.input"].read(self.max_body + 1)
        if len(body) > self.max_body:
            return too_large
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return None


def guard(flask_app, allowed_hosts: Iterable[str] = ()) -> None:
    """Put `Guard` in front of a Flask app (its `wsgi_app`, so `app.test_client()` passes it too)."""
    flask_app.wsgi_app = Guard(flask_app.wsgi_app, allowed_hosts)
    flask_app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES  # Flask's own reads stop there as well


def _clip(text: str, limit: int = 60) -> str:
    text = text.encode("ascii", "backslashreplace").decode()  # one line, whatever a client sent
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refuse(start_response, status: int, message: str):
    body = json.dumps({"success": False, "error": message}).encode()
    reason = {400: "Bad Request", 403: "Forbidden", 413: "Content Too Large"}[status]
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if status == 413:
        headers.append(("Connection", "close"))  # the unread body must not be taken for the next request
    start_response(f"{status} {reason}", headers)
    return [body]


class BoundedBody:
    """ASGI middleware: the body bound of `Guard` for an ASGI server, and the whole body read on the
    event loop before the WSGI adapter starts the app: a slow or stalled sender costs a socket, never
    one of the adapter's threads (a2wsgi's threads would otherwise wait on the network for it).
    """

    def __init__(self, app, max_body: int = MAX_BODY_BYTES):
        self.app, self.max_body = app, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # lifespan: the adapter answers it
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            return await _asgi_too_large(send, self.max_body)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                return await _asgi_too_large(send, self.max_body)
            more = message.get("more_body", False)
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return body

        return await self.app(scope, replay, send)


def asgi_app(flask_app, threads: int, max_body: int = MAX_BODY_BYTES):
    """The Flask app (with its `Guard`) as an ASGI app for uvicorn's workers: its bodies bounded and
    read whole (`BoundedBody`), then run in a pool of `threads` threads (a2wsgi)."""
    from a2wsgi import WSGIMiddleware

    return BoundedBody(WSGIMiddleware(flask_app, workers=threads), max_body)


async def _asgi_too_large(send, max_body: int) -> None:
    body = json.dumps({"success": False, "error": f"request body too large (at most {max_body} bytes)"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers + [(b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
