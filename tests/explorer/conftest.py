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


def call_callback(app, output: str, changed: str, values: dict) -> dict:
    """Run the app's callback whose outputs include `output` ("id.prop") as the browser would (a POST to
    /_dash-update-component), with input/state `values` by "id.prop" and `changed` the triggering input;
    returns the response's {id: {prop: value}}."""
    key = next(k for k in app.callback_map if output in k.strip(".").split("..."))
    spec = app.callback_map[key]

    def deps(items):
        return [{**d, "value": values.get(f"{d['id']}.{d['property']}")} for d in items]

    outputs = [dict(zip(("id", "property"), o.split(".", 1))) for o in key.strip(".").split("...")]
    payload = {
        "output": key,
        "outputs": outputs if key.startswith("..") else outputs[0],
        "inputs": deps(spec["inputs"]),
        "state": deps(spec["state"]),
        "changedPropIds": [changed],
    }
    response = app.server.test_client().post("/_dash-update-component", json=payload)
    assert response.status_code in (200, 204), response.get_data(as_text=True)[:500]
    return response.get_json()["response"] if response.status_code == 200 else {}


@pytest.fixture(scope="session")
def run_callback():
    """`call_callback`: run one of an app's callbacks through Dash's HTTP endpoint."""
    return call_callback
