"""`attnstore serve`: the explorer on one store (path or fsspec URL)."""

from __future__ import annotations

import errno
import logging
import socket
from typing import Annotated

import typer

from attnstore.cli import app
from attnstore.errors import AttnstoreError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve_store(path: str, host: str = "127.0.0.1", port: int = 5001, storage_options: dict | None = None) -> None:
    """Serve the explorer on `path` at http://host:port and block until interrupted.

    Raises
    ------
    AttnstoreError : the store cannot be opened, or the port is taken / not allowed.
    """
    from explorer import create_app
    from explorer.app import warm_up

    if not 0 < port < 65536:
        raise AttnstoreError(f"--port must be between 1 and 65535, got {port}")
    check_port(host, port)  # before opening the store: a busy port is the cheaper mistake to report
    dash_app = create_app(path, storage_options=storage_options)
    warm_up(dash_app)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    typer.secho(f"attnstore explorer on {path}: {url}  (Ctrl+C to stop)", fg="green")
    if host not in LOCAL_HOSTS:
        typer.secho(f"note: bound to {host}: anyone who can reach this address can read the store", fg="yellow")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    try:
        dash_app.run(host=host, port=port, debug=False, threaded=True)
    except KeyboardInterrupt:
        typer.echo("stopped")


def check_port(host: str, port: int) -> None:
    """Fail with one line if (host, port) cannot be bound (werkzeug would print a paragraph and exit)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug does
            sock.bind((host, port))
    except OSError as err:
        if err.errno in (errno.EADDRINUSE, errno.EACCES):
            raise AttnstoreError(f"cannot listen on {host}:{port} ({err.strerror}): pass another --port") from err
        raise AttnstoreError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err


@app.command()
def serve(
    store: Annotated[str, typer.Argument(help="Store path or fsspec URL (s3://..., https://...).")],
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1 = this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the explorer.")] = 5001,
) -> None:
    """Explore a store in the browser: click a token, see where the model looks."""
    serve_store(store, host=host, port=port)
