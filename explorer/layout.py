"""The explorer's page: a frame (the shared stores, notices, four columns) filled by the panels.

The page is built per visit and already holds the first view, drawn: the permalink in the page's
URL (the Referer of Dash's layout request) or the default view. So the first heatmap needs no
callback round trip; the side panels follow through callbacks. Without a Referer the default view
is drawn and the permalink panel's callback switches to the URL's view.

Each panel (explorer/panels/) says which column it goes in (`COLUMN`) and gives its components
for this visit (`layout(page)`); the frame keeps the panels' order within a column.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from urllib.parse import urlsplit

import flask
from dash import dcc, html

from explorer import ids, views
from explorer.state import StoreState
from explorer.views import ViewParams

COLUMNS = ("top", "picker", "center", "controls", "side", "hidden")  # where a panel goes (its COLUMN)
SMALL_GRAPH = {"displayModeBar": False}  # the side panels' charts: no plotly toolbar


def panel_head(title: str, tip: str | None = None, controls=None):
    """A panel's header: its title (with a tooltip) and, when given, its own controls beside it."""
    heading = html.H3(title, title=tip) if tip else html.H3(title)
    return heading if controls is None else html.Div([heading, controls], className="panel-head")


def side_panel(
    title: str,
    tip: str | None = None,
    info: str | None = None,
    hint: str | None = "select a token",
    graphs: Sequence[str] = (),
    controls=None,
) -> list:
    """The skeleton every side panel shares: header (`panel_head`), a hint line (the element `info`
    when the panel rewrites it; none when `hint` is None), then its small charts (ids `graphs`)."""
    if info:
        lines = [html.Div(hint, id=info, className="hint")]
    else:
        lines = [] if hint is None else [html.Div(hint, className="hint")]
    charts = [dcc.Graph(id=graph, config=SMALL_GRAPH, className="small-figure") for graph in graphs]
    return [panel_head(title, tip, controls), *lines, *charts]


@dataclass
class Page:
    """One visit: the store, the view to show and, once drawn, what the heatmap panel drew."""

    state: StoreState
    params: ViewParams
    image_url: Callable[[int], str]
    problems: list[str] = field(default_factory=list)
    drawn: object | None = None  # explorer.panels.heatmap.Drawn, None when there is nothing to show

    @property
    def has_view(self) -> bool:
        return self.drawn is not None


def page_query() -> str:
    """Query string of the page being loaded (Dash fetches the layout from the page: its Referer)."""
    if not flask.has_request_context() or not flask.request.referrer:
        return ""
    return urlsplit(flask.request.referrer).query


def page(state: StoreState, image_url: Callable[[int], str], panels: Sequence[ModuleType], draw) -> html.Div:
    """The page for this visit, with the view of its URL drawn by `draw(page)`."""
    if state.first_image() is None:
        visit = Page(state, views.default_params(state), image_url, ["this store has no complete image yet"])
    else:
        params, problems = views.parse_query(page_query(), state)
        visit = Page(state, params, image_url, problems)
        visit.drawn = draw(visit)
    return frame(visit, panels)


def frame(visit: Page, panels: Sequence[ModuleType]) -> html.Div:
    """The whole page: shared stores and notices, then each panel's components in its column."""
    columns: dict[str, list] = {name: [] for name in COLUMNS}
    for panel in panels:
        columns[panel.COLUMN].extend(panel.layout(visit))
    params, has_view = visit.params, visit.has_view
    if visit.problems and has_view:
        notice = "Permalink problem: " + "; ".join(visit.problems)
    else:
        notice = "; ".join(visit.problems)
    message = visit.drawn.message if has_view else ""
    return html.Div(
        [
            dcc.Store(id=ids.IMAGE, data=params.image if has_view else None),
            dcc.Store(id=ids.TOKEN, data=params.token if has_view else None),
            dcc.Store(id=ids.REVERSE),
            dcc.Store(id=ids.SETTLED),
            html.Div(id=ids.JS_IDS, className="hidden", **{ids.JS_IDS_ATTRIBUTE: json.dumps(ids.for_js())}),
            *columns["top"],
            html.Div(notice, id=ids.NOTICE, className="notice"),
            html.Div(message, id=ids.MESSAGE, className="message", role="alert"),
            html.Div(
                [
                    html.Aside(columns["picker"], className="picker"),
                    html.Section(columns["center"], className="center"),
                    html.Aside(columns["controls"], className="view-controls"),
                    html.Aside(columns["side"], className="side"),
                ],
                className="main",
            ),
            *columns["hidden"],
            html.Pre(visit.drawn.view_json if has_view else None, id=ids.VIEW_STATE, className="hidden"),
            html.Div(id=ids.RENDER_SIGNAL, className="hidden", **{"data-count": "0"}),
        ],
        className="app",
    )
