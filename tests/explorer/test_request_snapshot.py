"""A request reads one snapshot of the store: a reopen (an extraction finished an image) in the
middle of a click does not mix two Datasets in one answer."""

from __future__ import annotations

from explorer import create_app


def test_a_request_keeps_its_dataset_across_a_reopen(synthetic_store, monkeypatch):
    app = create_app(synthetic_store)
    state = app.attnstore_state
    with app.server.test_request_context("/api/view"):
        assert app.server.preprocess_request() is None  # the before-request hooks ran (and let it through)
        first = state.ds
        meta = state.image(0)
        monkeypatch.setattr(state, "_status", lambda: ("the store changed",))
        assert state.refresh()  # reopened for the requests that start from now on
        assert state.ds is first and state.image(0) is meta  # this request still reads its snapshot
    assert state.ds is not first  # the request ended: the next one reads the reopened store


def test_a_click_computes_its_map_once(synthetic_store, monkeypatch):
    """The page's GET /api/view and Dash's callback of the same click share one computed map, and
    the view's colour top is the map's own `MapResult.vmax`."""
    from explorer import views

    app = create_app(synthetic_store)
    state = app.attnstore_state
    calls = []
    real = views.compute_map
    monkeypatch.setattr(views, "compute_map", lambda ds, spec: calls.append(spec) or real(ds, spec))
    key = int(state.image(0).query_position[-2])
    answer = app.server.test_client().get(f"/api/view?image=0&token_index={key}&layer=1&head=0")
    assert answer.status_code == 200
    data = views.heatmap(state, views.ViewParams(image=0, token=key, layer=1, head=0))  # the callback's map
    assert len(calls) == 1
    assert data.vmax == data.result.vmax and data.tiles is data.result.grid("tiles").values
