"""The image picker: search by name or answer, pages of image cards; a click shows that image.

Cards are clicked in the browser (assets/explorer.js sets `ids.PICKER_CLICK`); thumbnails load
lazily from /api/thumbnail/<i>.png. The list follows the store while an extraction writes it
(images that are not complete yet are shown greyed and cannot be opened).
"""

from __future__ import annotations

from pathlib import PurePosixPath

import dash
from dash import Input, State, ctx, dcc, html, no_update

from attnstore.errors import AttnstoreError
from explorer import ids, views
from explorer.callbacks import inputs, outputs, settled_view
from explorer.layout import Page
from explorer.state import StoreState
from explorer.views import plural

COLUMN = "picker"
PAGE_SIZE = 12
POLL_MS = 5000


def layout(page: Page) -> list:
    return [
        dcc.Store(id=ids.PICKER_PAGE, data={"page": 0, "image": None}),
        dcc.Store(id=ids.PICKER_CLICK),
        dcc.Interval(id=ids.PICKER_POLL, interval=POLL_MS),  # images an extraction adds show up unasked
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
    ]


def register(app: dash.Dash, state: StoreState) -> None:
    picked = outputs((ids.IMAGE, "data"), (ids.TOKEN, "data"), (ids.REVERSE, "data"), (ids.MESSAGE, "children"),
                     duplicate=True)  # fmt: skip

    @app.callback(*picked, Input(ids.PICKER_CLICK, "data"), prevent_initial_call=True)
    def pick_image(click):
        """A picker card was clicked: show that image at its first answer token."""
        try:
            meta = state.image((click or {}).get("image"))
        except AttnstoreError as err:
            return no_update, no_update, no_update, str(err)
        return meta.index, meta.default_token(), None, ""

    listed = outputs((ids.PICKER_LIST, "children"), (ids.PICKER_INFO, "children"), (ids.PICKER_PAGE, "data"))
    asked = inputs((ids.PICKER_SEARCH, "value"), (ids.PICKER_PREV, "n_clicks"), (ids.PICKER_NEXT, "n_clicks"),
                   (ids.SETTLED, "data"), (ids.PICKER_POLL, "n_intervals"))  # fmt: skip

    # after the first heatmap: thumbnails must not slow the first draw
    @app.callback(*listed, *asked, State(ids.PICKER_PAGE, "data"), prevent_initial_call=True)
    def picker_list(query, _prev, _next, view_json, _poll, shown):
        """One page of image cards."""
        current = settled_view(view_json)
        image = None if current is None else current.image
        shown = shown or {}
        page = int(shown.get("page", 0))
        trigger = ctx.triggered_id
        catalog = state.catalog()
        seen = (image, int(catalog["complete"].sum()), len(catalog["complete"]))
        if trigger == ids.PICKER_PREV:
            page -= 1
        elif trigger == ids.PICKER_NEXT:
            page += 1
        elif trigger == ids.PICKER_SEARCH:
            page = 0
        elif list(seen) == shown.get("seen"):  # same image, same store: nothing to redraw
            return no_update, no_update, no_update
        elif image is not None and image != shown.get("image"):  # the current image changed: show its page
            found = views.page_of(state, query, int(image), PAGE_SIZE)
            page = page if found is None else found
        indices, n_matches, page = views.picker_page(state, query, page, PAGE_SIZE)
        cards = [card(app, i, catalog, i == image, views.verdict(state, i)) for i in indices]
        if not cards:
            cards = [html.Div(f"no image matches '{query}'", className="hint")]
        n_pages = max(1, -(-n_matches // PAGE_SIZE))
        info = f"{plural(n_matches, 'image')} · page {page + 1}/{n_pages}"
        return cards, info, {"page": page, "image": image, "seen": list(seen)}


def card(app: dash.Dash, index: int, catalog: dict, current: bool, verdict: views.Verdict) -> html.Div:
    complete = bool(catalog["complete"][index])
    name, answer = str(catalog["name"][index]), str(catalog["answer"][index])
    classes = "card" + (" current" if current else "") + ("" if complete else " incomplete")
    classes += f" {verdict.css}" if verdict.css else ""
    judged = [html.Div(verdict.text, className=f"card-verdict {verdict.css}")] if verdict.css and complete else []
    return html.Div(
        [
            # the query changes once the image is complete: a cached thumbnail of a half-written one is not reused
            html.Img(
                src=app.get_relative_path(f"/api/thumbnail/{index}.png?complete={int(complete)}"),
                className="thumb",
                alt="",
            ),
            html.Div(
                [
                    html.Div(f"{index} · {PurePosixPath(name).name}", className="card-name"),
                    html.Div(answer if complete else "(extraction unfinished)", className="card-answer"),
                    *judged,
                ],
                className="card-text",
            ),
        ],
        className=classes,
        title=f"{name}\n{answer}" + (f"\n{verdict.text}" if verdict.text else ""),
        **({"data-image": str(index)} if complete else {}),
    )
