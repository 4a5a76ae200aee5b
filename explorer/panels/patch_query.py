"""Where does a patch look? Click a patch on the image: with "show where it looks" on, its own map
over the other patches (same layers, heads, method and normalisation as the view) and its top text
tokens. The reverse view ("who looks at a patch") answers the same click beside it. Needs a store
extracted with `--queries text+image` or `all`; otherwise the panel says so. The work is in
explorer/patch_query.py; the callback only routes."""

from __future__ import annotations

import dash
from dash import dcc

from attnstore.errors import AttnstoreError
from explorer import figures, ids
from explorer import patch_query as pq
from explorer.callbacks import image_url, inputs, outputs, settled_view
from explorer.layout import Page, side_panel
from explorer.state import StoreState

COLUMN = "side"
ON = "on"
HINT = "click a patch on the image to see where it looks"
NO_ROWS = "this store keeps no image-patch rows: extract with --queries text+image (or all) to see where a patch looks"


def layout(page: Page) -> list:
    hint = hint_for(page.state, page.params.image if page.has_view else None)
    switch = dcc.Checklist(
        id=ids.PATCH_QUERY_ON, options=[{"label": " show where the clicked patch looks", "value": ON}], value=[ON]
    )
    header, info, patch_map, bars = side_panel(
        "Where does a patch look?",
        info=ids.PATCH_QUERY_INFO,
        hint=hint,
        graphs=[ids.PATCH_QUERY_MAP, ids.PATCH_QUERY_TEXT],
    )
    patch_map.figure = bars.figure = figures.empty_figure("no patch selected")
    return [header, switch, info, patch_map, bars]


def hint_for(state: StoreState, image: int | None) -> str:
    """What to do before a patch is clicked: click one, or (no patch rows stored) which extraction has them."""
    return HINT if image is None or pq.has_patch_rows(state, image) else NO_ROWS


def panel_content(state: StoreState, params, rev: dict | None, on: bool, image_url) -> tuple:
    """(map figure, text bars figure, info line) for the clicked patch `rev` under the view `params`."""
    empty = figures.empty_figure
    if params is None or not rev or rev.get("image") != params.image:
        hint = hint_for(state, None if params is None else params.image)
        return empty("no patch selected"), empty("no patch selected"), hint
    if not on:
        return empty("off"), empty("off"), "off: tick the box to see where the clicked patch looks"
    try:
        view = pq.patch_view(state, params, int(rev["key"]))
    except AttnstoreError as err:
        return empty(str(err)), empty(""), str(err)
    info = pq.describe(state, view)
    if view.sees_no_text:
        info += " · it gives the text nothing (causal: it sees only the tokens before it)"
    bars = pq.text_bars_figure(view.text_labels, view.text_values, title=f"text tokens · {view.text_what}")
    return pq.patch_map_figure(state, view, image_url(params.image)), bars, info


def register(app: dash.Dash, state: StoreState) -> None:
    picture = image_url(app)
    shown = outputs((ids.PATCH_QUERY_MAP, "figure"), (ids.PATCH_QUERY_TEXT, "figure"),
                    (ids.PATCH_QUERY_INFO, "children"))  # fmt: skip
    chosen = inputs((ids.REVERSE, "data"), (ids.SETTLED, "data"), (ids.PATCH_QUERY_ON, "value"))

    @app.callback(*shown, *chosen, prevent_initial_call=True)
    def where_patch_looks(rev, view_json, on):
        return panel_content(state, settled_view(view_json), rev, ON in (on or []), picture)
