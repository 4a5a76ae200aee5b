"""Panels as units: each module has its column, layout and callbacks; the app is composed from the list;
component ids are defined once and the browser script does not spell them."""

from __future__ import annotations

import re
from pathlib import Path

import dash
from dash import html

from explorer import app as explorer_app
from explorer import create_app, ids
from explorer.layout import COLUMNS


def test_every_panel_is_a_unit():
    for panel in explorer_app.PANELS:
        assert panel.COLUMN in COLUMNS, panel.__name__
        assert callable(panel.layout) and callable(panel.register), panel.__name__


def test_ids_are_unique_and_the_script_reads_them_from_the_page():
    values = [v for k, v in vars(ids).items() if k.isupper() and isinstance(v, str) and k != "JS_IDS_ATTRIBUTE"]
    assert len(values) == len(set(values))
    script = (Path(explorer_app.__file__).parent / "assets" / "explorer.js").read_text()
    quoted = set(re.findall(r"""["']([a-z][a-z0-9-]*)["']""", script))
    assert not quoted & set(ids.for_js().values()), "explorer.js spells component ids: read them from the page"


def test_an_app_can_be_composed_from_a_subset_of_panels(synthetic_store):
    """A tiny panel of one's own next to the heatmap (docs/adding-a-panel.md)."""
    from explorer.panels import controls, header, heatmap, permalink, strip

    class Counter:  # a panel is any object with COLUMN, layout and register (usually a module)
        COLUMN = "side"

        @staticmethod
        def layout(page):
            return [html.Div(f"{page.state.n_heads} heads", id="head-count")]

        @staticmethod
        def register(app, state):
            @app.callback(dash.Output("head-count", "title"), dash.Input(ids.TOKEN, "data"))
            def title(token):
                return f"token #{token}"

    app = create_app(synthetic_store, panels=(header, permalink, strip, heatmap, controls, Counter))
    layout = app.server.test_client().get("/_dash-layout").get_data(as_text=True)
    assert '"head-count"' in layout and "4 heads" in layout and ids.PICKER_LIST not in layout
    assert "head-count.title" in app.callback_map
