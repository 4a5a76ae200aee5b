"""`attnstore serve`: the explorer on one store (path or fsspec URL).

One process by default (uvicorn); `--workers N` runs gunicorn with N pre-forked uvicorn worker
processes (Linux/macOS) for a store shared by a team. In both, an asyncio loop reads each request
whole (headers, and a body of at most `MAX_BODY_BYTES`: `explorer.guard.BoundedBody`) before one of
`THREADS` threads runs the WSGI app (a2wsgi), so slow or stalled clients cost a socket, never a
thread. `benchmarks/bench_load.py --slow 1000` measures both with 1,000 stalled connections; it also
chose uvicorn over waitress for the single process (same property, 2.4x fewer clicks/s measured).

Every request passes `explorer.guard` (Host/Origin allow-list, body bound) in both modes.
"""

import errno
import os
import resource
import signal
import socket
from collections.abc import Callable
from typing import Annotated

import typer

from attnstore.cli import app
from attnstore.errors import AttnstoreError, InvalidArgument, StoreError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
THREADS = 8  # app threads per process: overlap I/O (chunk reads); the CPU work shares one GIL
# uvicorn's settings in both modes. h11: the pure-Python parser, which bounds a request's headers
# (16 KiB). A stop (SIGTERM, Ctrl+C) waits 3 s at most for requests in progress (a stalled one
# would hold it forever).
UVICORN = {"http": "h11", "server_header": False, "timeout_graceful_shutdown": 3}


def serve_store(
    path: str,
    host: str = "127.0.0.1",
    port: int = 5001,
    storage_options: dict | None = None,
    seed_frontend: str | None = None,
    workers: int = 0,
    compare: str | None = None,
    allow_hosts: tuple[str, ...] = (),
) -> None:
    """Serve the explorer on `path` at http://host:port and block until interrupted.

    Parameters
    ----------
    seed_frontend : a seed viewer folder (templates/index.html, static/) to serve instead of the explorer.
    workers : 0 = one process (uvicorn, threads); N >= 1 = gunicorn with N uvicorn worker processes.
    compare : a second store shown beside `path` (the explorer's compare panel).
    allow_hosts : Host header names accepted besides the loopback ones (`explorer.guard`); a specific
        non-loopback `host` is accepted too, a wildcard one (0.0.0.0, ::) needs them.

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
    allow_hosts = allowed_hosts(host, allow_hosts)
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
        else build_app(path, storage_options, seed_frontend, compare, allow_hosts)
    )
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    what = "seed frontend" if seed_frontend else "explorer"
    how = f", {workers} worker processes" if workers else ""
    if compare:
        path = f"{path} (compared with {compare})"
    typer.secho(f"attnstore {what} on {path}: {url}  (Ctrl+C to stop{how})", fg="green")
    if host not in LOCAL_HOSTS:
        typer.secho(f"note: bound to {host}: anyone who can reach this address can read the store", fg="yellow")
    _raise_open_file_limit()  # each stalled client is an open socket
    if workers:
        # Each worker opens the store itself after the fork (remote stores' sessions do not survive one).
        from explorer.guard import asgi_app

        load = lambda: asgi_app(build_app(path, storage_options, seed_frontend, compare, allow_hosts), THREADS)
        run_gunicorn(load, host, port, workers)
        return
    run_uvicorn(wsgi, host, port)


def allowed_hosts(host: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """The Host names accepted besides the loopback ones: `names`, plus `host` when it is a specific
    non-loopback address (clients then use that address). A wildcard bind (0.0.0.0, ::) has no one
    name clients use: it needs `names` (one line otherwise)."""
    if host in LOCAL_HOSTS:
        return names
    if host in WILDCARD_HOSTS:
        if not names:
            raise InvalidArgument(
                "allow_host",
                f"is needed with --host {host or repr(host)}: name the host names or addresses clients will use "
                "(repeatable; '*' accepts any, e.g. behind a proxy that checks Host itself)",
            )
        return names
    return (*names, host)


def run_uvicorn(wsgi, host: str, port: int) -> None:
    """Serve a WSGI app in this process with uvicorn until interrupted (module docstring: why)."""
    import uvicorn

    from explorer.guard import asgi_app

    app = asgi_app(wsgi, THREADS)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, **UVICORN)
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:  # uvicorn stops cleanly, then raises the Ctrl+C it captured again
        pass
    typer.echo("stopped")


def _raise_open_file_limit() -> None:
    """Raise the soft limit on open files to the hard one (often 1024 -> 2^19): each connection is one,
    and a thousand slow clients would otherwise exhaust it before the server's own limits apply."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            pass  # keep the soft limit: the server still runs, with fewer connections


def build_app(
    path: str,
    storage_options: dict | None = None,
    seed_frontend: str | None = None,
    compare: str | None = None,
    allow_hosts: tuple[str, ...] = (),
):
    """The WSGI app (a Flask app) of the explorer (beside a second store `compare`), or of a seed
    frontend folder, warmed up; Host names `allow_hosts` accepted besides the loopback ones."""
    if seed_frontend:
        from explorer.seed_frontend import check_folder, create_seed_app

        check_folder(seed_frontend)  # before opening the store
        return create_seed_app(path, seed_frontend, storage_options, allowed_hosts=allow_hosts)
    from explorer import create_app
    from explorer.app import warm_up

    dash_app = create_app(path, storage_options=storage_options, compare=compare or None, allowed_hosts=allow_hosts)
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
        from uvicorn_worker import UvicornWorker  # noqa: F401
    except ImportError:  # not installed, or Windows (gunicorn needs fork)
        raise AttnstoreError(
            "--workers needs gunicorn and uvicorn-worker (Linux/macOS): pip install 'attnstore[server]'; "
            "without --workers the explorer serves with threads"
        ) from None
    return BaseApplication


def _uvicorn_worker():
    from uvicorn_worker import UvicornWorker

    class Worker(UvicornWorker):
        CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, **UVICORN}

        def init_signals(self) -> None:
            super().init_signals()
            # gunicorn's quick stop (its Ctrl+C): uvicorn's worker would only mark itself stopping and
            # be killed 5 s later; a read-only server has nothing to flush, so it exits at once.
            signal.signal(signal.SIGQUIT, lambda *_: os._exit(0))

        def _install_sigquit_handler(self) -> None:
            pass  # keep init_signals' handler

    return Worker


def run_gunicorn(load: Callable[[], object], host: str, port: int, workers: int) -> None:
    """Serve the ASGI app made by `load` (called once in each worker) with gunicorn's uvicorn workers,
    until interrupted. Not gunicorn's own thread workers: each stalled connection holds one of their
    threads (9 held 2 workers x 4 threads); uvicorn's asyncio loop holds thousands for a socket each."""
    base = _gunicorn_base()
    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "worker_class": _uvicorn_worker(),
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


# `--allow-host`, shared by `serve` and `demo`.
ALLOW_HOST_OPTION = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-host",
        metavar="NAME",
        help="A Host name clients may use besides 127.0.0.1/localhost/[::1] (repeatable; '*' = any). "
        "Other names are refused (DNS rebinding). A specific --host address is allowed by itself.",
    ),
]


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
    allow_host: ALLOW_HOST_OPTION = None,
) -> None:
    """Explore a store in the browser: click a token, see where the model looks."""
    serve_store(
        store,
        host=host,
        port=port,
        seed_frontend=seed_frontend,
        workers=workers,
        compare=compare,
        allow_hosts=tuple(allow_host or ()),
    )
