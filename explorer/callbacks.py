"""Callbacks: thin glue between components and `explorer.views` / `explorer.figures`.

Fast path of a click (DESIGN.md §5): the image is drawn once per image as a
layout image; a token / layer / head change returns a `dash.Patch` with the
heatmap values only. Clicks on tokens, picker cards and gallery items are
handled by assets/explorer.js (event delegation + `dash_clientside.set_props`),
which also renders the token strip from `strip-data`.
"""

from __future__ import annotations

import base64
import json
from functools import partial
from pathlib import PurePosixPath

import dash
from dash import ClientsideFunction, Input, Output, State, ctx, dcc, html, no_update

from attnstore.errors import AttnstoreError
from explorer import drawing, figures, ids, views
from explorer.layout import PAGE_SIZE
from explorer.state import StoreState
from explorer.views import OVERS, ViewParams

REVERSE_HINT = "click a patch on the image (or a cell of an expanded tile chip)"
STYLE_IDS = {"cmap": ids.CMAP, "opacity": ids.OPACITY, "grid_lines": ids.GRID}


def register(app: dash.Dash, state: StoreState) -> None:
    """Attach every callback of the explorer to `app` for `state`'s store."""
    _navigation(app, state)
    _main_figure(app, state)
    _side_panels(app, state)
    _reverse(app, state)
    _picker(app, state)
    _exports(app, state)
    _clientside(app, state)


def _image_url(app: dash.Dash, image: int) -> str:
    return app.get_relative_path(f"/api/image/{image}.png")


def _params(image, token, layer, head, mode, over, norm) -> ViewParams:
    return ViewParams(
        image=int(image),
        token=None if token is None else int(token),
        layer=int(layer or 0),
        head=int(head or 0),
        mode=mode or "head",
        over=over or "heads",
        norm=norm or "raw",
    )


# -- permalink and navigation -------------------------------------------------------------


def _navigation(app: dash.Dash, state: StoreState) -> None:
    @app.callback(
        Output(ids.IMAGE, "data"),
        Output(ids.TOKEN, "data"),
        Output(ids.LAYER, "value"),
        Output(ids.HEAD, "value"),
        Output(ids.MODE, "value"),
        Output(ids.OVER, "value"),
        Output(ids.NORM, "value"),
        Output(ids.NOTICE, "children"),
        Input(ids.URL, "search"),
        State(ids.VIEW_STATE, "children"),
        prevent_initial_call=True,  # dcc.Location sets `search` when it mounts, and on back/forward
    )
    def restore(search, view_json):
        """The URL's view (the page usually shows it already: then nothing changes)."""
        if state.first_image() is None:
            return (no_update,) * 8
        params, problems = views.parse_query(search, state)
        if params == _view(view_json):
            return (no_update,) * 8
        notice = "Permalink problem: " + "; ".join(problems) if problems else ""
        return (params.image, params.token, params.layer, params.head, params.mode, params.over, params.norm, notice)

    @app.callback(
        Output(ids.IMAGE, "data", allow_duplicate=True),
        Output(ids.TOKEN, "data", allow_duplicate=True),
        Output(ids.REVERSE, "data", allow_duplicate=True),
        Output(ids.MESSAGE, "children", allow_duplicate=True),
        Input(ids.PICKER_CLICK, "data"),
        prevent_initial_call=True,
    )
    def pick_image(click):
        """A picker card was clicked: show that image at its first answer token."""
        try:
            meta = state.image((click or {}).get("image"))
        except AttnstoreError as err:
            return no_update, no_update, no_update, str(err)
        return meta.index, meta.default_token(), None, ""

    @app.callback(
        Output(ids.LAYER, "value", allow_duplicate=True),
        Output(ids.HEAD, "value", allow_duplicate=True),
        Output(ids.MODE, "value", allow_duplicate=True),
        Input(ids.MATRIX, "clickData"),
        prevent_initial_call=True,
    )
    def jump_to_cell(click):
        """A cell of the layer x head matrix: show that layer and head alone."""
        if not click or not click.get("points"):
            return no_update, no_update, no_update
        point = click["points"][0]
        return int(point["y"]), int(point["x"]), "head"

    @app.callback(
        Output(ids.LAYER, "disabled"),
        Output(ids.HEAD, "disabled"),
        Output(ids.OVER, "options"),
        Input(ids.MODE, "value"),
        Input(ids.OVER, "value"),
    )
    def relevant_controls(mode, over):
        """Grey out what the current map ignores (e.g. the head slider for a mean over heads)."""
        single = mode == "head"
        options = [{"label": label, "value": value, "disabled": single} for value, label in OVERS.items()]
        return (not single and over in ("layers", "all"), not single and over in ("heads", "all"), options)

    @app.callback(
        Output(ids.PLAY_TIMER, "disabled"),
        Output(ids.PLAY, "children"),
        Input(ids.PLAY, "n_clicks"),
        State(ids.PLAY_TIMER, "disabled"),
        prevent_initial_call=True,
    )
    def toggle_play(_, disabled):
        return (False, "❚❚ pause") if disabled else (True, "▶ play")


# -- the main figure ----------------------------------------------------------------------


def _main_figure(app: dash.Dash, state: StoreState) -> None:
    image_url = partial(_image_url, app)

    @app.callback(
        Output(ids.FIGURE, "figure"),
        Output(ids.DRAWN_IMAGE, "data"),
        Output(ids.VIEW_STATE, "children"),
        Output(ids.STATUS, "children"),
        Output(ids.MESSAGE, "children"),
        Input(ids.IMAGE, "data"),
        Input(ids.TOKEN, "data"),
        Input(ids.LAYER, "value"),
        Input(ids.HEAD, "value"),
        Input(ids.MODE, "value"),
        Input(ids.OVER, "value"),
        Input(ids.NORM, "value"),
        Input(ids.CMAP, "value"),
        Input(ids.OPACITY, "value"),
        Input(ids.GRID, "value"),
        State(ids.DRAWN_IMAGE, "data"),
        prevent_initial_call=True,  # the page arrives with its first view drawn (explorer.layout.page)
    )
    def draw(image, token, layer, head, mode, over, norm, cmap, opacity, grid, drawn):
        """Heatmap of the view: the whole figure when the image changes, else a Patch of the values."""
        if image is None:
            return no_update, no_update, no_update, "", no_update
        params = _params(image, token, layer, head, mode, over, norm)
        triggered = set(ctx.triggered_prop_ids.values())
        changed = [name for name, cid in STYLE_IDS.items() if cid in triggered]
        out = drawing.draw(state, params, drawing.style_of(cmap, opacity, grid), drawn, image_url, changed)
        return out.figure, params.image, out.view_json, out.status, out.message


# -- side panels ---------------------------------------------------------------------------


def _view(view_json: str | None) -> ViewParams | None:
    """The main callback's view. Side panels follow it once it has settled (assets/explorer.js sets
    `view-settled` shortly after the last change), so the heatmap is computed and drawn first and
    rapid changes (arrow keys, layer play) do not queue side-panel work."""
    if not view_json:
        return None
    view = json.loads(view_json)
    return ViewParams(**{k: view[k] for k in ("image", "token", "layer", "head", "mode", "over", "norm", "k")})


def _side_panels(app: dash.Dash, state: StoreState) -> None:
    @app.callback(
        Output(ids.SHARE, "figure"),
        Output(ids.MATRIX, "figure"),
        Input(ids.SETTLED, "data"),
        Input(ids.MATRIX_METRIC, "value"),
        prevent_initial_call=True,  # runs once the main callback has produced the view
    )
    def layer_charts(view_json, metric):
        params = _view(view_json)
        if params is None or params.token is None:
            hint = figures.empty_figure("select a token")
            return hint, hint
        try:
            stats = views.layer_head_stats(state, params)
        except AttnstoreError as err:
            hint = figures.empty_figure(str(err))
            return hint, hint
        metric = metric or "share"
        return (
            figures.share_figure(stats["share"], params.layer, params.head),
            figures.matrix_figure(stats[metric], metric, params.layer, params.head),
        )

    @app.callback(
        Output(ids.GALLERY, "children"),
        Input(ids.SETTLED, "data"),
        Input(ids.GALLERY_SORT, "value"),
        State(ids.CMAP, "value"),
        prevent_initial_call=True,
    )
    def gallery(view_json, sort, cmap):
        params = _view(view_json)
        if params is None or params.token is None:
            return html.Div("select a token to see every head of the layer", className="hint")
        try:
            grids = views.head_grids(state, params)  # [head, grid_row, grid_col]
            stats = views.layer_head_stats(state, params)
        except AttnstoreError as err:
            return html.Div(str(err), className="hint")
        share, ent = stats["share"][params.layer], stats["entropy"][params.layer]
        return [
            html.Div(
                [
                    html.Img(src=figures.thumbnail_uri(grids[h], cmap or "viridis"), className="gallery-img"),
                    html.Div(f"head {h}", className="gallery-title"),
                    html.Div(f"image {share[h]:.0%} · H {ent[h]:.2f}", className="gallery-meta"),
                ],
                className="gallery-item" + (" current" if h == params.head else ""),
                title=f"head {h}: {share[h]:.1%} of attention on the image, entropy {ent[h]:.3f} (click to show)",
                **{"data-head": str(h)},
            )
            for h in figures.gallery_order(share, ent, sort or "head")
        ]


# -- reverse view --------------------------------------------------------------------------


def _reverse(app: dash.Dash, state: StoreState) -> None:
    @app.callback(
        Output(ids.REVERSE, "data"),
        Input(ids.FIGURE, "clickData"),
        State(ids.IMAGE, "data"),
        prevent_initial_call=True,
    )
    def patch_clicked(click, image):
        if not click or not click.get("points") or image is None:
            return no_update
        point = click["points"][0]
        key = figures.key_at(views.geometry(state, image), float(point["x"]), float(point["y"]))
        return no_update if key is None else {"image": int(image), "key": key}

    @app.callback(
        Output(ids.REVERSE_CHART, "figure"),
        Output(ids.REVERSE_DATA, "data"),
        Output(ids.REVERSE_INFO, "children"),
        Output(ids.FIGURE, "figure", allow_duplicate=True),
        Input(ids.REVERSE, "data"),
        Input(ids.SETTLED, "data"),
        State(ids.REVERSE_DATA, "data"),
        prevent_initial_call=True,
    )
    def reverse_view(rev, view_json, shown):
        """Which text tokens attend most to the chosen patch, under the current layer/head selection."""
        params = _view(view_json)
        image = None if params is None else params.image
        if not rev or image is None or rev.get("image") != image:
            if ctx.triggered_id != ids.REVERSE or image is None:  # nothing selected: nothing to redo
                return no_update, no_update, no_update, no_update
            return (
                figures.empty_figure("no patch selected"),
                None,
                REVERSE_HINT,
                figures.mark_patch(views.geometry(state, image), None),
            )
        key = int(rev["key"])
        if shown and (shown.get("image"), shown.get("key"), shown.get("what")) == (image, key, params.describe()):
            return no_update, no_update, no_update, no_update  # e.g. another token clicked: same answer
        try:
            meta = state.image(image)
            values = views.reverse_view(state, params, key).values  # [query]
        except AttnstoreError as err:
            return figures.empty_figure(str(err)), None, str(err), no_update
        labels = [f"{meta.display[int(p)]!r} #{int(p)}" for p in meta.query_position]
        geom = views.geometry(state, image)
        info = f"patch token #{key} ({figures.describe_key(geom, key)}) · {params.describe()}"
        rows = [[int(p), float(v)] for p, v in zip(meta.query_position, values)]
        shown = {"image": image, "key": key, "what": params.describe(), "rows": rows}
        return (figures.reverse_figure(labels, values), shown, info, figures.mark_patch(geom, key))


# -- image picker ---------------------------------------------------------------------------


def _picker(app: dash.Dash, state: StoreState) -> None:
    @app.callback(
        Output(ids.PICKER_LIST, "children"),
        Output(ids.PICKER_INFO, "children"),
        Output(ids.PICKER_PAGE, "data"),
        Input(ids.PICKER_SEARCH, "value"),
        Input(ids.PICKER_PREV, "n_clicks"),
        Input(ids.PICKER_NEXT, "n_clicks"),
        Input(ids.SETTLED, "data"),
        State(ids.PICKER_PAGE, "data"),
        prevent_initial_call=True,  # after the first heatmap: thumbnails must not slow the first draw
    )
    def picker_list(query, _prev, _next, view_json, shown):
        """One page of image cards (thumbnails are fetched lazily from /api/thumbnail/<i>.png)."""
        current = _view(view_json)
        image = None if current is None else current.image
        shown = shown or {}
        page = int(shown.get("page", 0))
        trigger = ctx.triggered_id
        if trigger == ids.PICKER_PREV:
            page -= 1
        elif trigger == ids.PICKER_NEXT:
            page += 1
        elif trigger == ids.PICKER_SEARCH:
            page = 0
        elif image == shown.get("image"):  # the view settled on the same image: nothing to redraw
            return no_update, no_update, no_update
        elif image is not None:  # the current image changed (permalink, click): show its page
            found = views.page_of(state, query, int(image), PAGE_SIZE)
            page = page if found is None else found
        indices, n_matches, page = views.picker_page(state, query, page, PAGE_SIZE)
        catalog = state.catalog()
        cards = [_card(app, i, catalog, i == image) for i in indices]
        if not cards:
            cards = [html.Div(f"no image matches '{query}'", className="hint")]
        n_pages = max(1, -(-n_matches // PAGE_SIZE))
        return cards, f"{n_matches} images · page {page + 1}/{n_pages}", {"page": page, "image": image}


def _card(app: dash.Dash, index: int, catalog: dict, current: bool) -> html.Div:
    complete = bool(catalog["complete"][index])
    name, answer = str(catalog["name"][index]), str(catalog["answer"][index])
    classes = "card" + (" current" if current else "") + ("" if complete else " incomplete")
    return html.Div(
        [
            html.Img(src=app.get_relative_path(f"/api/thumbnail/{index}.png"), className="thumb", alt=""),
            html.Div(
                [
                    html.Div(f"{index} · {PurePosixPath(name).name}", className="card-name"),
                    html.Div(answer if complete else "(extraction unfinished)", className="card-answer"),
                ],
                className="card-text",
            ),
        ],
        className=classes,
        title=f"{name}\n{answer}",
        **{"data-image": str(index)},
    )


# -- exports ---------------------------------------------------------------------------------


def _exports(app: dash.Dash, state: StoreState) -> None:
    @app.callback(
        Output(ids.DOWNLOAD, "data"),
        Output(ids.MESSAGE, "children", allow_duplicate=True),
        Input(ids.EXPORT_HEATMAP_PNG, "n_clicks"),
        Input(ids.EXPORT_OVERLAY_PNG, "n_clicks"),
        Input(ids.EXPORT_CSV, "n_clicks"),
        Input(ids.EXPORT_SVG, "n_clicks"),
        State(ids.IMAGE, "data"),
        State(ids.TOKEN, "data"),
        State(ids.LAYER, "value"),
        State(ids.HEAD, "value"),
        State(ids.MODE, "value"),
        State(ids.OVER, "value"),
        State(ids.NORM, "value"),
        State(ids.CMAP, "value"),
        State(ids.OPACITY, "value"),
        State(ids.GRID, "value"),
        prevent_initial_call=True,
    )
    def export(_a, _b, _c, _d, image, token, layer, head, mode, over, norm, cmap, opacity, grid):
        if image is None or token is None:
            return no_update, "nothing to export: select a token first"
        params = _params(image, token, layer, head, mode, over, norm)
        try:
            data = views.heatmap(state, params)
        except AttnstoreError as err:
            return no_update, str(err)
        geom = views.geometry(state, params.image)
        meta = state.image(params.image)
        cmap, opacity = cmap or "viridis", float(0.6 if opacity is None else opacity)
        stem = f"{PurePosixPath(meta.name).stem}_tok{params.token}_{_mode_tag(params)}"
        trigger = ctx.triggered_id
        if trigger == ids.EXPORT_HEATMAP_PNG:
            return dcc.send_bytes(figures.heatmap_png(data.tiles, data.vmax, cmap), f"{stem}_heatmap.png"), ""
        if trigger == ids.EXPORT_OVERLAY_PNG:
            png = figures.overlay_png(state.pixels(params.image), geom, data.tiles, data.vmax, cmap, opacity)
            return dcc.send_bytes(png, f"{stem}_overlay.png"), ""
        if trigger == ids.EXPORT_CSV:
            return dcc.send_string(figures.grid_csv(geom, data.tiles, data.glob), f"{stem}_grid.csv"), ""
        href = "data:image/png;base64," + _b64(state.picture_png(params.image))
        title = f"{meta.name} · token {meta.display[params.token]!r} #{params.token} · {params.describe()}"
        svg = figures.overlay_svg(geom, href, data.tiles, data.glob, data.vmax, cmap, opacity, bool(grid), title)
        return dcc.send_string(svg, f"{stem}.svg"), ""


def _mode_tag(params: ViewParams) -> str:
    if params.mode == "head":
        return f"L{params.layer}H{params.head}_{params.norm}"
    return f"{params.mode}-{params.over}_L{params.layer}H{params.head}_{params.norm}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- clientside ------------------------------------------------------------------------------


def _clientside(app: dash.Dash, state: StoreState) -> None:
    @app.callback(Output(ids.STRIP_DATA, "data"), Input(ids.IMAGE, "data"), prevent_initial_call=True)
    def strip_data(image):
        """The token strip's items of the image (drawn by assets/explorer.js)."""
        return None if image is None else {"image": int(image), "items": state.image(int(image)).items}

    app.clientside_callback(
        ClientsideFunction("attnstore", "drawStrip"),
        Output(ids.JS_SINK, "data"),
        Input(ids.STRIP_DATA, "data"),
        Input(ids.TOKEN, "data"),
        Input(ids.REVERSE_DATA, "data"),
    )
    app.clientside_callback(
        ClientsideFunction("attnstore", "viewChanged"),
        Output(ids.URL_SINK, "data"),
        Input(ids.VIEW_STATE, "children"),
    )
    app.clientside_callback(
        ClientsideFunction("attnstore", "playStep"),
        Output(ids.LAYER, "value", allow_duplicate=True),
        Input(ids.PLAY_TIMER, "n_intervals"),
        State(ids.LAYER, "value"),
        State(ids.LAYER, "max"),
        prevent_initial_call=True,
    )
