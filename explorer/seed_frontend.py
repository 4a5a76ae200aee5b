"""The seed viewer's own frontend, served on a store: its `templates/index.html` at `/`, its
`static/` at `/static/`, and the REST API with `tokens` in the object form that frontend reads.

The folder is laid out as the seed's Flask app expects (its index.html may use Jinja, e.g.
``{{ url_for('static', filename='js/app.js') }}``), so a copy of that frontend runs unchanged
against any attnstore store.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import flask
import xarray as xr

from attnstore.errors import InvalidArgument
from explorer import api
from explorer.guard import guard
from explorer.state import StoreState


def check_folder(folder: str | Path) -> Path:
    """`folder` if it holds templates/index.html; else an InvalidArgument saying what a seed frontend is."""
    path = Path(folder)
    if not (path / "templates" / "index.html").is_file():
        raise InvalidArgument(
            "seed_frontend", f"{folder} has no templates/index.html (a seed viewer folder has templates/ and static/)"
        )
    return path


def create_seed_app(
    store: str | xr.Dataset | StoreState,
    folder: str | Path,
    storage_options: dict | None = None,
    allowed_hosts: Iterable[str] = (),
) -> flask.Flask:
    """A Flask app serving the seed frontend in `folder` on `store`.

    Parameters
    ----------
    store : store path, fsspec URL, open Dataset or StoreState (as for `explorer.create_app`).
    folder : the seed viewer's folder (templates/index.html, static/).
    storage_options : fsspec options for remote stores.
    allowed_hosts : Host header names accepted besides the loopback ones (`explorer.guard`).

    Returns
    -------
    flask.Flask ; ``app.attnstore_state`` is the store handle.

    Raises
    ------
    attnstore.errors.InvalidArgument : `folder` is not a seed frontend folder.
    attnstore.errors.StoreError : no readable attnstore store at `store`.
    """
    path = check_folder(folder).resolve()
    state = store if isinstance(store, StoreState) else StoreState(store, storage_options)
    server = flask.Flask(
        __name__,
        root_path=str(path),
        template_folder=str(path / "templates"),
        static_folder=None,  # Flask's static view follows symlinks out of the folder: `_static_file` does not
    )
    static = (path / "static").resolve()
    server.add_url_rule("/", "index", lambda: flask.render_template("index.html"))
    server.add_url_rule("/static/<path:filename>", "static", lambda filename: _static_file(static, filename))
    api.add_routes(server, state, token_objects=True)
    guard(server, allowed_hosts)
    server.attnstore_state = state
    return server


def _static_file(static: Path, filename: str) -> flask.Response:
    """A regular file inside `static` (a resolved path), symlinks resolved first: a link to a file
    outside the folder, or to a FIFO or device, is 404 like a missing file."""
    target = (static / filename).resolve()
    if not target.is_relative_to(static) or not target.is_file():
        flask.abort(404)
    return flask.send_file(target)
