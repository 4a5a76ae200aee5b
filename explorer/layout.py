"""The explorer's page: header, image picker, token strip, main figure, controls and side charts.

The page is built per visit and already holds the first view, drawn: the
permalink in the page's URL (the Referer of Dash's layout request) or the
default view. So the first heatmap needs no callback round trip; the side
panels follow through callbacks. Without a Referer the default view is drawn
and the URL callback (`restore`) switches to the permalink's view.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import flask
from dash import dcc, html

from attnstore.render import CMAPS
from explorer import drawing, ids, views
from explorer.figures import empty_figure
from explorer.state import StoreState
from explorer.views import MODES, NORMS, OVERS, ViewParams

PAGE_SIZE = 12


def _marks(n: int) -> dict[int, str]:
    step = 1 if n <= 12 else 5 if n <= 60 else 10
    marks = {i: str(i) for i in range(0, n, step)}
    marks[n - 1] = str(n - 1)
    return marks


def header(state: StoreState) -> html.Header:
    badge = (
        html.Span(
            "random-weight demo: attention is meaningless, geometry is real",
            id=ids.HEADER_BADGE,
            className="badge-random",
            title="the store's attrs say random_weights = true",
        )
        if state.random_weights
        else html.Span(id=ids.HEADER_BADGE)
    )
    info = f"{state.n_images} images · {state.n_layers} layers × {state.n_heads} heads · model {state.model_id}"
    return html.Header(
        [
            html.Div([html.Span("attnstore", className="brand"), html.Span(" explorer", className="brand-sub")]),
            html.Div(
                [
                    html.Div(state.label, className="store-path", title=state.label),
                    html.Div(info, className="store-info"),
                ],
                className="store",
            ),
            badge,
            html.Div("click a token · ←/→ move · Esc clears · click a patch: who looks here?", className="hints"),
        ],
        className="header",
    )


def picker() -> html.Aside:
    return html.Aside(
        [
            html.H3("Images"),
            dcc.Input(
                id=ids.PICKER_SEARCH,
                type="search",
                placeholder="search name or answer…",
                debounce=0.3,
                className="picker-search",
            ),
            html.Div(id=ids.PICKER_LIST, className="picker-list"),
            html.Div(
                [
                    html.Button("‹", id=ids.PICKER_PREV, className="pager-btn", title="previous page"),
                    html.Span(id=ids.PICKER_INFO, className="picker-info"),
                    html.Button("›", id=ids.PICKER_NEXT, className="pager-btn", title="next page"),
                ],
                className="pager",
            ),
        ],
        className="picker",
    )


def center(drawn: drawing.Drawn | None) -> html.Section:
    legend = html.Div(
        [
            html.Span("prompt", className="legend tok-prompt"),
            html.Span("answer", className="legend tok-answer"),
            html.Span("special", className="legend tok-special"),
            html.Span("▦ image tile (click to expand)", className="legend chip-legend"),
        ],
        className="strip-legend",
    )
    exports = html.Div(
        [
            html.Span("Export:", className="export-label"),
            html.Button("heatmap PNG", id=ids.EXPORT_HEATMAP_PNG, className="export-btn"),
            html.Button("overlay PNG", id=ids.EXPORT_OVERLAY_PNG, className="export-btn"),
            html.Button("grid CSV", id=ids.EXPORT_CSV, className="export-btn"),
            html.Button("figure SVG", id=ids.EXPORT_SVG, className="export-btn"),
            dcc.Download(id=ids.DOWNLOAD),
        ],
        className="exports",
    )
    gallery_head = html.Div(
        [
            html.H3("Heads of this layer"),
            dcc.RadioItems(
                id=ids.GALLERY_SORT,
                options={"head": "by index", "share": "by image share", "entropy": "most focused"},
                value="head",
                inline=True,
                className="radio-inline",
            ),
        ],
        className="panel-head",
    )
    return html.Section(
        [
            legend,
            html.Div(id=ids.STRIP, className="strip", tabIndex="0"),
            html.Div(drawn.status if drawn else "", id=ids.STATUS, className="status"),
            dcc.Graph(
                id=ids.FIGURE,
                figure=drawn.figure if drawn else None,
                className="main-figure",
                config={
                    "displaylogo": False,
                    "scrollZoom": False,
                    "modeBarButtonsToRemove": ["zoom2d", "pan2d", "select2d", "lasso2d", "autoScale2d"],
                    "toImageButtonOptions": {"format": "svg", "filename": "attention"},
                },
            ),
            exports,
            gallery_head,
            html.Div(id=ids.GALLERY, className="gallery"),
        ],
        className="center",
    )


def controls(state: StoreState, params: ViewParams) -> html.Div:
    return html.Div(
        [
            html.Div(
                [
                    html.Label("Layer", htmlFor=ids.LAYER),
                    html.Button("▶ play", id=ids.PLAY, className="play-btn", title="step through the layers"),
                ],
                className="label-row",
            ),
            dcc.Slider(
                id=ids.LAYER,
                min=0,
                max=state.n_layers - 1,
                step=1,
                value=params.layer,
                marks=_marks(state.n_layers),
                updatemode="mouseup",
                className="slider",
            ),
            html.Label("Head", htmlFor=ids.HEAD),
            dcc.Slider(
                id=ids.HEAD,
                min=0,
                max=state.n_heads - 1,
                step=1,
                value=params.head,
                marks=_marks(state.n_heads),
                updatemode="mouseup",
                className="slider",
            ),
            html.Label("Map"),
            dcc.RadioItems(id=ids.MODE, options=MODES, value=params.mode, className="radio"),
            html.Label("Aggregate over"),
            dcc.RadioItems(id=ids.OVER, options=OVERS, value=params.over, className="radio"),
            html.Label("Normalisation"),
            dcc.RadioItems(id=ids.NORM, options=NORMS, value=params.norm, className="radio"),
            html.Div(
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
                            dcc.Dropdown(
                                id=ids.CMAP, options=list(CMAPS), value="viridis", clearable=False, searchable=False
                            ),
                        ],
                        className="half",
                    ),
                ],
                className="row2",
            ),
            dcc.Checklist(id=ids.GRID, options={"on": "tile grid lines"}, value=["on"], className="radio"),
            dcc.Interval(id=ids.PLAY_TIMER, interval=800, disabled=True),
        ],
        className="controls",
    )


def side(state: StoreState, params: ViewParams) -> html.Aside:
    return html.Aside(
        [
            html.H3("View"),
            controls(state, params),
            html.H3("Image share per layer", title="fraction of the token's attention on image patches"),
            dcc.Graph(id=ids.SHARE, config={"displayModeBar": False}, className="small-figure"),
            html.Div(
                [
                    html.H3("Layer × head"),
                    dcc.RadioItems(
                        id=ids.MATRIX_METRIC,
                        options={"share": "image share", "entropy": "entropy"},
                        value="share",
                        inline=True,
                        className="radio-inline",
                    ),
                ],
                className="panel-head",
            ),
            html.Div("click a cell to jump there", className="hint"),
            dcc.Graph(id=ids.MATRIX, config={"displayModeBar": False}, className="small-figure"),
            html.H3("Who looks at a patch?"),
            html.Div(
                "click a patch on the image (or a cell of an expanded tile chip)", id=ids.REVERSE_INFO, className="hint"
            ),
            dcc.Graph(
                id=ids.REVERSE_CHART,
                figure=empty_figure("no patch selected"),
                config={"displayModeBar": False},
                className="small-figure",
            ),
        ],
        className="side",
    )


def page_query() -> str:
    """Query string of the page being loaded (Dash fetches the layout from the page: its Referer)."""
    if not flask.has_request_context() or not flask.request.referrer:
        return ""
    return urlsplit(flask.request.referrer).query


def page(state: StoreState, image_url: Callable[[int], str]) -> html.Div:
    """The page for this visit, with the view of its URL drawn."""
    if state.first_image() is None:
        return build(state, views.default_params(state), None, ["this store has no complete image yet"])
    params, problems = views.parse_query(page_query(), state)
    drawn = drawing.draw(state, params, drawing.DEFAULT_STYLE, None, image_url)
    return build(state, params, drawn, problems)


def build(state: StoreState, params: ViewParams, drawn: drawing.Drawn | None, problems: list[str]) -> html.Div:
    """The whole page showing `params` (drawn by `drawing.draw`; None when there is nothing to show)."""
    has_view = drawn is not None
    items = {"image": params.image, "items": state.image(params.image).items} if has_view else None
    notice = "Permalink problem: " + "; ".join(problems) if problems and has_view else "; ".join(problems)
    return html.Div(
        [
            dcc.Location(id=ids.URL, refresh=False),
            dcc.Store(id=ids.IMAGE, data=params.image if has_view else None),
            dcc.Store(id=ids.TOKEN, data=params.token if has_view else None),
            dcc.Store(id=ids.REVERSE),
            dcc.Store(id=ids.DRAWN_IMAGE, data=params.image if has_view else None),
            dcc.Store(id=ids.STRIP_DATA, data=items),
            dcc.Store(id=ids.REVERSE_DATA),
            dcc.Store(id=ids.PICKER_PAGE, data={"page": 0, "image": None}),
            dcc.Store(id=ids.PICKER_CLICK),
            dcc.Store(id=ids.JS_SINK),
            dcc.Store(id=ids.URL_SINK),
            dcc.Store(id=ids.SETTLED),
            header(state),
            html.Div(notice, id=ids.NOTICE, className="notice"),
            html.Div(drawn.message if has_view else "", id=ids.MESSAGE, className="message", role="alert"),
            html.Div([picker(), center(drawn), side(state, params)], className="main"),
            html.Pre(drawn.view_json if has_view else None, id=ids.VIEW_STATE, className="hidden"),
            html.Div(id=ids.RENDER_SIGNAL, className="hidden", **{"data-count": "0"}),
        ],
        className="app",
    )
