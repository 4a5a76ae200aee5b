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
