"""Fixtures of the explorer's unit tests: one StoreState / app per session on the shared synthetic store."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def http_store(synthetic_store):
    """The synthetic store served over HTTP with Range support: (URL, list of requests seen)."""
    from support.servers import RangeHandler, serve_folder, stop

    root = Path(synthetic_store)
    server = serve_folder(root.parent)
    yield f"http://127.0.0.1:{server.server_address[1]}/{root.name}", RangeHandler.requests
    stop(server)
