"""Who looks at a patch? Click a patch on the image (or a cell of an opened tile chip): the text
tokens that attend most to it, under the view's layers and heads, as a chart and as colour under
the tokens of the strip."""

from __future__ import annotations

import dash
from dash import Input, Output, State, ctx, dcc, no_update

from attnstore.errors import AttnstoreError
from attnstore.render.text import quoted
from explorer import figures, ids, views
from explorer.callbacks import outputs, settled_view
from explorer.layout import Page, side_panel
from explorer.state import StoreState

COLUMN = "side"
HINT = "click a patch on the image (or a cell of an expanded tile chip)"


def layout(page: Page) -> list:
    header, info, chart = side_panel(
        "Who looks at a patch?", info=ids.REVERSE_INFO, hint=HINT, graphs=[ids.REVERSE_CHART]
    )
    chart.figure = figures.empty_figure("no patch selected")
    return [dcc.Store(id=ids.REVERSE_DATA), header, info, chart]


def register(app: dash.Dash, state: StoreState) -> None:
    @app.callback(Output(ids.REVERSE, "data"), Input(ids.FIGURE, "clickData"), State(ids.IMAGE, "data"),
                  prevent_initial_call=True)  # fmt: skip
    def patch_clicked(click, image):
        if not click or not click.get("points") or image is None:
            return no_update
        point = click["points"][0]
        key = figures.key_at(views.geometry(state, image), float(point["x"]), float(point["y"]))
        return no_update if key is None else {"image": int(image), "key": key}

    shown = outputs((ids.REVERSE_CHART, "figure"), (ids.REVERSE_DATA, "data"), (ids.REVERSE_INFO, "children"))
    chosen = Input(ids.REVERSE, "data"), Input(ids.SETTLED, "data"), State(ids.REVERSE_DATA, "data")

    @app.callback(*shown, Output(ids.FIGURE, "figure", allow_duplicate=True), *chosen, prevent_initial_call=True)
    def reverse_view(rev, view_json, shown):
        """Which text tokens attend most to the chosen patch, under the current layer/head selection."""
        params = settled_view(view_json)
        image = None if params is None else params.image
        if not rev or image is None or rev.get("image") != image:
            if ctx.triggered_id != ids.REVERSE or image is None:  # nothing selected: nothing to redo
                return no_update, no_update, no_update, no_update
            return (
                figures.empty_figure("no patch selected"),
                None,
                HINT,
                figures.mark_patch(views.geometry(state, image), None),
            )
        key = int(rev["key"])
        if shown and (shown.get("image"), shown.get("key"), shown.get("what")) == (image, key, params.describe()):
            return no_update, no_update, no_update, no_update  # e.g. another token clicked: same answer
        try:
            meta = state.image(image)
            reverse = views.reverse_view(state, params, key)  # [query]: the text rows
        except AttnstoreError as err:
            return figures.empty_figure(str(err)), None, str(err), no_update
        values, positions = reverse.values, reverse["position"].values
        labels = [f"{quoted(meta.display[int(p)])} #{int(p)}" for p in positions]
        geom = views.geometry(state, image)
        info = f"patch token #{key} ({figures.describe_key(geom, key)}) · {params.describe()}"
        rows = [[int(p), float(v)] for p, v in zip(positions, values)]
        shown = {"image": image, "key": key, "what": params.describe(), "rows": rows}
        return (figures.reverse_figure(labels, values), shown, info, figures.mark_patch(geom, key))
