"""The view controls: layer and head sliders (with play), map method, what it reduces over,
normalisation, and the display style. The method and normalisation menus are read from the
library's registries on every page load."""

from __future__ import annotations

import dash
from dash import ClientsideFunction, Input, Output, State, ctx, dcc, html, no_update

from attnstore.render import CMAPS
from attnstore.render.scale import NEGLIGIBLE_SHARE
from explorer import ids, views
from explorer.callbacks import outputs
from explorer.layout import Page
from explorer.state import StoreState
from explorer.views import OVERS

COLUMN = "controls"
SCALE_TIP = (
    "own: each map up to its own maximum; shared: every layer and every head of the gallery on one scale. "
    f"Either way a map holding under {NEGLIGIBLE_SHARE:.0%} of the token's attention is drawn faded"
)


def _marks(n: int) -> dict[int, str]:
    step = 1 if n <= 12 else 5 if n <= 60 else 10
    marks = {i: str(i) for i in range(0, n, step)}
    marks[n - 1] = str(n - 1)
    return marks


def _slider(cid: str, n: int, value: int) -> dcc.Slider:
    return dcc.Slider(id=cid, min=0, max=n - 1, step=1, value=value, marks=_marks(n), updatemode="mouseup",
                      className="slider")  # fmt: skip


def layout(page: Page) -> list:
    state, params = page.state, page.params
    style = html.Div(
        [
            html.Div(
                [
                    html.Label("Opacity"),
                    dcc.Slider(
                        id=ids.OPACITY,
                        min=0,
                        max=1,
                        step=0.05,
                        value=0.6,
                        marks={0: "0", 0.5: "0.5", 1: "1"},
                        className="slider",
                    ),
                ],
                className="half",
            ),
            html.Div(
                [
                    html.Label("Colours"),
                    dcc.Dropdown(id=ids.CMAP, options=list(CMAPS), value="viridis", clearable=False, searchable=False),
                ],
                className="half",
            ),
        ],
        className="row2",
    )
    controls = html.Div(
        [
            html.Div(
                [
                    html.Label("Layer", htmlFor=ids.LAYER),
                    html.Button("▶ play", id=ids.PLAY, className="play-btn", title="step through the layers"),
                ],
                className="label-row",
            ),
            _slider(ids.LAYER, state.n_layers, params.layer),
            html.Label("Head", htmlFor=ids.HEAD),
            _slider(ids.HEAD, state.n_heads, params.head),
            html.Label("Map"),
            dcc.RadioItems(id=ids.MODE, options=views.modes(), value=params.mode, className="radio"),
            html.Label("Aggregate over"),
            dcc.RadioItems(id=ids.OVER, options=OVERS, value=params.over, className="radio"),
            html.Label("Normalisation"),
            dcc.RadioItems(id=ids.NORM, options=views.norms(), value=params.norm, className="radio"),
            html.Label("Colour scale", title=SCALE_TIP),
            dcc.RadioItems(id=ids.SCALE, options=views.SCALES, value=params.scale, className="radio"),
            style,
            dcc.Checklist(id=ids.GRID, options={"on": "tile grid lines"}, value=["on"], className="radio"),
            dcc.Checklist(
                id=ids.BOXES,
                options={"on": "object boxes (the asked one in red)"},
                value=["on"],
                className="radio",
                style=None if state.has_objects else {"display": "none"},  # a store without boxes has none to draw
            ),
            dcc.Interval(id=ids.PLAY_TIMER, interval=800, disabled=True),
        ],
        className="controls",
    )
    return [html.H3("View"), controls]


def register(app: dash.Dash, state: StoreState) -> None:
    greyed = outputs((ids.LAYER, "disabled"), (ids.HEAD, "disabled"), (ids.OVER, "options"), (ids.OVER, "value"))

    @app.callback(*greyed, Input(ids.MODE, "value"), Input(ids.OVER, "value"))
    def relevant_controls(mode, over):
        """Grey out what the current map ignores (e.g. the head slider for a mean over heads); a method
        picked from the menu starts at its own reach (rollout: all layers). A permalink sets the mode and
        `over` together: then its `over` stands."""
        new = views.over_for_mode(mode, over) if set(ctx.triggered_prop_ids) == {f"{ids.MODE}.value"} else over
        single = mode == "head"
        options = [{"label": label, "value": value, "disabled": single} for value, label in OVERS.items()]
        disabled = (not single and new in ("layers", "all"), not single and new in ("heads", "all"))
        return (*disabled, options, no_update if new == over else new)  # unchanged: no second redraw

    @app.callback(
        Output(ids.PLAY_TIMER, "disabled"),
        Output(ids.PLAY, "children"),
        Input(ids.PLAY, "n_clicks"),
        State(ids.PLAY_TIMER, "disabled"),
        prevent_initial_call=True,
    )
    def toggle_play(_, disabled):
        return (False, "❚❚ pause") if disabled else (True, "▶ play")

    app.clientside_callback(
        ClientsideFunction("attnstore", "playStep"),
        Output(ids.LAYER, "value", allow_duplicate=True),
        Input(ids.PLAY_TIMER, "n_intervals"),
        State(ids.LAYER, "value"),
        State(ids.LAYER, "max"),
        prevent_initial_call=True,
    )
