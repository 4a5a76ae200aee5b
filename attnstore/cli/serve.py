"""`attnstore serve`: the explorer on one store (path or fsspec URL).

One process with threads by default (werkzeug: fine for one person); `--workers N` runs
gunicorn with N pre-forked worker processes (Linux/macOS), for a store shared by a team.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable
from typing import Annotated

import typer

from attnstore.cli import app
from attnstore.errors import AttnstoreError, InvalidArgument, StoreError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
THREADS_PER_WORKER = 4  # overlap I/O (chunk reads, sockets) inside a worker; the CPU work scales by processes


def serve_store(
    path: str,
    host: str = "127.0.0.1",
    port: int = 5001,
    storage_options: dict | None = None,
    seed_frontend: str | None = None,
    workers: int = 0,
    compare: str | None = None,
) -> None:
    """Serve the explorer on `path` at http://host:port and block until interrupted.

    Parameters
    ----------
    seed_frontend : a seed viewer folder (templates/index.html, static/) to serve instead of the explorer.
    workers : 0 = one process with threads (werkzeug); N >= 1 = gunicorn with N worker processes.
    compare : a second store shown beside `path` (the explorer's compare panel).

    Raises
    ------
    AttnstoreError : the store cannot be opened, or the port is taken / not allowed.
    """
    if not 0 < port < 65536:
        raise InvalidArgument("port", f"must be between 1 and 65535, got {port}")
    if not 0 <= workers <= 64:
        raise InvalidArgument("workers", f"must be between 0 and 64, got {workers}")
    if workers:
        _gunicorn_base()  # a missing gunicorn is reported before anything else
    from attnstore.store.reader import exists

    if not exists(path, storage_options):  # a wrong path is the user's first mistake to hear about
        raise StoreError(f"no attnstore store at '{path}'")
    check_port(host, port)  # before opening the store: a busy port is cheaper to report than a warmed-up app
    # Opening the store here makes a bad path one line; gunicorn's workers open their own after the fork.
    if compare and seed_frontend:
        raise InvalidArgument("compare", "is shown by the explorer, not by a seed frontend: give one of the two")
    wsgi = (
        _open_only(path, storage_options, seed_frontend, compare)
        if workers
        else build_app(path, storage_options, seed_frontend, compare)
    )
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    what = "seed frontend" if seed_frontend else "explorer"
    how = f", {workers} worker processes" if workers else ""
    if compare:
        path = f"{path} (compared with {compare})"
    typer.secho(f"attnstore {what} on {path}: {url}  (Ctrl+C to stop{how})", fg="green")
    if host not in LOCAL_HOSTS:
        typer.secho(f"note: bound to {host}: anyone who can reach this address can read the store", fg="yellow")
    if workers:
        # Each worker opens the store itself after the fork (remote stores' sessions do not survive one).
        run_gunicorn(lambda: build_app(path, storage_options, seed_frontend, compare), host, port, workers)
        return
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    try:
        wsgi.run(host=host, port=port, debug=False, threaded=True)
    except KeyboardInterrupt:
        typer.echo("stopped")


def build_app(
    path: str, storage_options: dict | None = None, seed_frontend: str | None = None, compare: str | None = None
):
    """The WSGI app (a Flask app) of the explorer (beside a second store `compare`), or of a seed
    frontend folder, warmed up."""
    if seed_frontend:
        from explorer.seed_frontend import check_folder, create_seed_app

        check_folder(seed_frontend)  # before opening the store
        return create_seed_app(path, seed_frontend, storage_options)
    from explorer import create_app
    from explorer.app import warm_up

    dash_app = create_app(path, storage_options=storage_options, compare=compare or None)
    warm_up(dash_app)
    return dash_app.server


def _open_only(path: str, storage_options: dict | None, seed_frontend: str | None, compare: str | None) -> None:
    """Check what `build_app` would open (folder, stores), without building the app. Through
    zarr-python: tensorstore's threads must not start before gunicorn forks (it aborts the workers)."""
    from attnstore.store import open_dataset

    if seed_frontend:
        from explorer.seed_frontend import check_folder

        check_folder(seed_frontend)
    for store in (path, compare) if compare else (path,):
        open_dataset(store, storage_options, read_backend="zarr")


def _gunicorn_base():
    try:
        from gunicorn.app.base import BaseApplication
    except ImportError:  # not installed, or Windows (gunicorn needs fork)
        raise AttnstoreError(
            "--workers needs gunicorn (Linux/macOS): pip install 'attnstore[server]'; "
            "without --workers the explorer serves with threads"
        ) from None
    return BaseApplication


def run_gunicorn(load: Callable[[], object], host: str, port: int, workers: int) -> None:
    """Serve the WSGI app made by `load` (called once in each worker) with gunicorn, until interrupted."""
    base = _gunicorn_base()
    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": THREADS_PER_WORKER,
        "timeout": 120,  # a worker opens the store and draws one view before it answers
        "graceful_timeout": 5,
        "loglevel": "warning",  # no banner, no line per request
        "accesslog": None,
        # A worker's exit would wait for the store's I/O threads; nothing is left to flush (read-only).
        "worker_exit": lambda _server, _worker: os._exit(0),
    }

    class Server(base):
        def load_config(self):
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return load()

    try:
        Server().run()
    except SystemExit as done:  # gunicorn's master exits through sys.exit, also after Ctrl+C
        if done.code not in (0, None):
            raise
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
    workers: Annotated[
        int,
        typer.Option(help="Worker processes (gunicorn, Linux/macOS) for shared use; 0 = one process with threads."),
    ] = 0,
    seed_frontend: Annotated[
        str | None,
        typer.Option(
            "--seed-frontend",
            metavar="DIR",
            help="Serve the seed viewer's frontend folder (templates/index.html, static/) instead of the explorer.",
        ),
    ] = None,
    compare: Annotated[
        str | None,
        typer.Option("--compare", metavar="STORE", help="A second store to show beside the first (same images)."),
    ] = None,
) -> None:
    """Explore a store in the browser: click a token, see where the model looks."""
    serve_store(store, host=host, port=port, seed_frontend=seed_frontend, workers=workers, compare=compare)
