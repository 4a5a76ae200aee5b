"""What the panels' callbacks share, written once: the view's controls, the settled view the side
panels follow, the way a side panel's callback is declared, and the URL of an image's picture.

Dash declares a callback one `Output(id, prop)` / `Input` / `State` at a time; the same lists (the
seven controls a `ViewParams` is made of, a side panel's "after the view settled" trigger) would
otherwise stand in every panel. A panel names its own components with `outputs`, `inputs` and
`states` and keeps its callback to the routing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

import dash
from dash import Input, Output, State

from attnstore.errors import AttnstoreError
from explorer import ids, views
from explorer.views import ViewParams

T = TypeVar("T")
Target = tuple[str, str]  # (component id, property)

# The controls a view is made of, in `ViewParams.from_controls`' order.
VIEW_CONTROLS: tuple[Target, ...] = (
    (ids.IMAGE, "data"), (ids.TOKEN, "data"), (ids.LAYER, "value"), (ids.HEAD, "value"),
    (ids.MODE, "value"), (ids.OVER, "value"), (ids.NORM, "value"),
)  # fmt: skip


def outputs(*targets: Target, duplicate: bool = False) -> list[Output]:
    """An Output of each (id, property); `duplicate`: other callbacks write them too (allow_duplicate)."""
    return [Output(cid, prop, allow_duplicate=duplicate) for cid, prop in targets]


def inputs(*targets: Target) -> list[Input]:
    return [Input(cid, prop) for cid, prop in targets]


def states(*targets: Target) -> list[State]:
    return [State(cid, prop) for cid, prop in targets]


def settled_view(view_json: str | None) -> ViewParams | None:
    """The view the main figure shows (from its view-state JSON). Side panels follow it once it has
    settled, so the heatmap is computed and drawn first and rapid changes (arrow keys, layer play)
    do not queue side-panel work."""
    if not view_json:
        return None
    view = json.loads(view_json)
    return ViewParams(**{k: view[k] for k in views.URL_KEYS if k in view})


def follow_token(view_json: str | None, show: Callable[[ViewParams], T], blank: Callable[[str], T]) -> T:
    """What a side panel shows for the settled view: `show(params)`, or `blank(reason)` when no token
    is selected or the store refuses the view (the reason is the library's message)."""
    params = settled_view(view_json)
    if params is None or params.token is None:
        return blank("select a token")
    try:
        return show(params)
    except AttnstoreError as err:
        return blank(str(err))


def follows_view(
    app: dash.Dash, targets: list[Output], blank: Callable[[str], T], own: list[Input | State] = ()
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: `show(params, *values)` becomes a side panel's callback onto `targets`. It runs once
    the view has settled (never on the page load: the first heatmap goes first), with the settled
    view's params and the values of the panel's `own` inputs and states; `follow_token` answers
    `blank(reason)` when there is no token or the store refuses the view."""

    def register(show: Callable[..., T]) -> Callable[..., T]:
        @app.callback(*targets, Input(ids.SETTLED, "data"), *own, prevent_initial_call=True)
        def follow(view_json, *values):
            return follow_token(view_json, lambda params: show(params, *values), blank)

        return show

    return register


def image_url(app: dash.Dash) -> Callable[[int], str]:
    """The URL of image `i`'s picture (the /api/image route, under the app's path prefix)."""
    return lambda image: app.get_relative_path(f"/api/image/{image}.png")
