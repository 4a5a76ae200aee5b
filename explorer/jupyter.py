"""`attnstore.explore(store)`: the whole explorer beside your code.

In a Jupyter kernel the explorer is shown inline in the cell (Dash's Jupyter support: an iframe on
a local server); in plain Python it opens a browser tab. Either way it listens on a free port of
127.0.0.1 only, in a background thread, until `.stop()`.
"""

from __future__ import annotations

import socket
import threading
import webbrowser
from dataclasses import dataclass, field

import xarray as xr

HOST = "127.0.0.1"  # loopback only: a notebook's explorer is never reachable from the network


@dataclass
class Explorer:
    """A running explorer: its `url`, and `stop()` to shut its server down (frees the port)."""

    url: str
    app: object = field(repr=False)
    _server: object = field(repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def stop(self) -> None:
        import dash

        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        servers = dash.jupyter_dash._servers
        for key in [k for k, s in servers.items() if s is self._server]:
            del servers[key]

    def __enter__(self) -> Explorer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def in_notebook() -> bool:
    """Whether we run in a Jupyter kernel (not plain Python, not a terminal IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def explore(
    store: str | xr.Dataset,
    port: int | None = None,
    open_browser: bool = True,
    height: int = 900,
    **options,
) -> Explorer:
    """Show the explorer of `store` (a path/URL or an opened Dataset): inline in a notebook cell, or
    in a new browser tab from plain Python (`open_browser=False`: just serve it). `options` go to
    `explorer.create_app` (e.g. compare=...). Returns the running `Explorer`; call `.stop()`."""
    from explorer.app import create_app

    app = create_app(store, **options)
    port = port or free_port()
    url = f"http://{HOST}:{port}/"
    if in_notebook():
        import dash

        app.run(jupyter_mode="inline", host=HOST, port=port, jupyter_height=height)
        return Explorer(url, app, dash.jupyter_dash._servers[(HOST, port)])
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args) -> None:  # no line per request in the user's console
            pass

    server = make_server(HOST, port, app.server, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, name=f"attnstore-explore-{port}", daemon=True)
    thread.start()
    if open_browser:
        webbrowser.open(url)
    return Explorer(url, app, server, thread)
