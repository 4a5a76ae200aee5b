"""The header: store, its size and model, the random-weights badge, keyboard hints."""

from __future__ import annotations

import dash
from dash import html

from explorer import ids
from explorer.layout import Page
from explorer.state import StoreState
from explorer.views import plural

COLUMN = "top"


def layout(page: Page) -> list:
    state = page.state
    badge = (
        html.Span(
            "random-weight demo: attention is meaningless, "
            + ("no patch geometry" if state.no_patch_map else "geometry is real"),
            id=ids.HEADER_BADGE,
            className="badge-random",
            title="the store's attrs say random_weights = true",
        )
        if state.random_weights
        else html.Span(id=ids.HEADER_BADGE)
    )
    info = (
        f"{plural(state.n_images, 'image')} · {plural(state.n_layers, 'layer')} × {plural(state.n_heads, 'head')}"
        f" · model {state.model_id}"
    )
    header = html.Header(
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
    return [header]


def register(app: dash.Dash, state: StoreState) -> None:
    """No callbacks: the header is fixed for a visit."""
