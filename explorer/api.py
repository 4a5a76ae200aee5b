"""REST endpoints, compatible with the seed viewer's API and its shipped frontend, plus the
pictures the page loads.

    GET  /api/initialize[?image=i]          -> {"success", "tokens", "num_layers", "num_heads", "image_url",
                                                "prompt", ...}
    POST /api/generate_attention_map        {"word" | "word_index" | "token_index", "layer", "head"}
                                            (+ "image", "occurrence", "threshold", "mode", "over", "norm", "cmap")
                                            -> {"success", "image" (base64 PNG), "word_index", "layer", "head",
                                                "heatmap", "heatmap_width", "heatmap_height", "stats", ...}
    POST /api/export                        a MapSpec as JSON (`MapSpec.from_json`: image, token | position | row,
                                            layers, heads, method, k, normalise, keys, view) + "format"
                                            (png, overlay, csv, svg, json) + style (cmap, opacity, grid_lines,
                                            cell_px) -> the file (`attnstore.render.export_map`)
    GET  /api/view?image=&token_index=&layer=&head=[&mode=&over=&norm=&k=]
                                            -> {"image", "token", "query_row", "traces", "z", "cmax"}: the values
                                            of the map as the main figure draws them (the page's click path)
    GET  /api/patch_view?image=&patch=&layer=&head=[&mode=&over=&norm=&k=]
                                            -> {"image", "patch", "query_row", "traces", "z", "cmax", "text"}:
                                            where image patch token `patch` (a key position) looks: its map
                                            as /api/view draws a token's, and its raw attention on the text
                                            tokens ("text": positions, tokens, values). Needs a store extracted
                                            with --queries text+image or all (else 400 saying so)
    GET  /api/image/<i>.png                 the display copy of image i
    GET  /api/thumbnail/<i>.png             a small copy (built on first request)

Every /api path answers JSON: errors are `{"success": false, "error": "..."}` with a 4xx
status (404 for an unknown path, 405 with an Allow header for a wrong method; a library error's
status comes from its type, `STATUS`); the seed's
exact message "Word not found in tokens" is kept for unknown words (the close matches go to
"detail"). An unexpected failure is a JSON 500 without a traceback (the log has it).
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import dash
import flask
import numpy as np
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, RequestRedirect, Rule

from attnstore import errors, render
from attnstore.analysis import MapSpec, TokenNotFoundError, compute_map, find_token
from attnstore.analysis.maps import MAX_K
from attnstore.render.export import json_grid
from attnstore.render.scale import colourbar_title
from attnstore.store.integrity import checksum_guard
from explorer import figures, patch_query, views
from explorer.state import StoreState
from explorer.views import ViewParams

WORD_NOT_FOUND = "Word not found in tokens"
MAX_BODY_BYTES = 64 * 1024  # a request is a handful of fields; more is a mistake, not a query
MAX_WORD_CHARS = 200  # close-match suggestions cost O(len(word)) per token: bound them
_INTEGER = re.compile(r"-?[0-9]{1,18}")  # ASCII digits only: int() would also take '٣' or '1_000'
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The HTTP status of a library error, by its type (first match wins): the one place the API maps them.
STATUS = (
    (errors.InvalidArgument, 400),
    (errors.NotFound, 404),  # a token, an image, an image an extraction has not finished
    (errors.StoreError, 500),  # the store, not the request, is at fault (e.g. a damaged chunk)
    (errors.AttnstoreError, 400),
)


class ApiError(Exception):
    """An error answered as JSON with an HTTP status."""

    def __init__(self, message: str, status: int = 400, headers: dict | None = None, **extra: Any):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.extra = extra


def register(app: dash.Dash, state: StoreState) -> None:
    """Add the REST routes to the Dash app's Flask server (under the app's route prefix)."""
    add_routes(app.server, state, app.config.routes_pathname_prefix.rstrip("/"), app.get_relative_path)


def add_routes(
    server: flask.Flask,
    state: StoreState,
    prefix: str = "",
    relative_path: Callable[[str], str] | None = None,
    token_objects: bool = False,
) -> None:
    """Add the REST routes to any Flask app.

    Parameters
    ----------
    server : the Flask app.
    state : the store the routes read.
    prefix : URL prefix of the routes ("" or e.g. "/attn").
    relative_path : maps a route path to the URL a browser should load (default: prefix + path).
    token_objects : `/api/initialize` returns `tokens` as `{text, index, is_selectable}` objects
        (what the seed's shipped frontend reads) instead of raw token strings.
    """
    relative_path = relative_path or (lambda path: prefix + path)
    routes = {
        "/api/initialize": (("GET",), lambda: initialize(state, flask.request.args, relative_path, token_objects)),
        "/api/generate_attention_map": (("POST",), lambda: generate(state, _json_body())),
        "/api/export": (("POST",), lambda: export(state, _json_body())),
        "/api/view": (("GET",), lambda: view_map(state, flask.request.args.to_dict())),
        "/api/patch_view": (("GET",), lambda: patch_view_map(state, flask.request.args.to_dict())),
        "/api/image/<int:index>.png": (("GET",), lambda index: _png(state.picture_png(state.check_image(index)))),
        "/api/thumbnail/<int:index>.png": (("GET",), lambda index: _png(state.thumbnail_png(index))),
    }
    endpoints = set()
    for rule, (methods, view) in routes.items():
        endpoint = "attnstore_" + rule.split("/")[2].split("<")[0].strip("/")
        server.add_url_rule(prefix + rule, endpoint=endpoint, view_func=_json_errors(view), methods=list(methods))
        endpoints.add(endpoint)
    # Only the API's own rules decide between 404 and 405 (the page's catch-all would answer any GET).
    api_map = Map([Rule(prefix + rule, methods=list(methods)) for rule, (methods, _) in routes.items()])

    def api_only() -> flask.Response | None:
        """Runs after routing: an /api path that no API route took (or a routing error) answers JSON."""
        rule = flask.request.url_rule
        if _api_path(prefix) and (rule is None or rule.endpoint not in endpoints):
            return _error_response(_api_miss(api_map, prefix))
        return None

    server.before_request(api_only)
    server.register_error_handler(HTTPException, lambda err: _http_error(err, api_map, prefix))


def _api_path(prefix: str) -> bool:
    path = flask.request.path
    return path == prefix + "/api" or path.startswith(prefix + "/api/")


def _api_miss(api_map: Map, prefix: str) -> ApiError:
    """404 or 405 (with Allow) for a request no API route served."""
    request = flask.request
    try:
        api_map.bind("").match(request.path, method=request.method)
    except MethodNotAllowed as err:
        methods = sorted(set(err.valid_methods or ()) - {"HEAD", "OPTIONS"})
        allow = methods + (["HEAD"] if "GET" in methods else []) + ["OPTIONS"]  # as Flask answers them
        return ApiError(
            f"method {request.method} is not allowed on {_show(request.path, 80)}: use {' or '.join(methods)}",
            405,
            headers={"Allow": ", ".join(allow)},
        )
    except RequestRedirect as err:  # "/api//initialize": the same redirect Flask gives, with a JSON body
        target = urlsplit(err.new_url)
        location = target.path + (f"?{target.query}" if target.query else "")
        return ApiError(f"moved to {_show(location, 80)}", 308, headers={"Location": location})
    except NotFound:
        pass
    paths = ", ".join(str(rule).replace("<int:index>", "<i>") for rule in api_map.iter_rules())
    return ApiError(f"no API endpoint at {_show(request.path, 80)}; the API has {paths}", 404)


def _http_error(err: HTTPException, api_map: Map, prefix: str):
    """JSON for errors raised outside the API views (unknown method, body too large, crash) on /api paths."""
    if not _api_path(prefix):
        return err  # the page's own errors keep Flask's rendering
    if err.code in (404, 405):
        return _error_response(_api_miss(api_map, prefix))
    if err.code == 500:
        return _error_response(ApiError("internal error while answering this request (see the server log)", 500))
    return _error_response(ApiError(err.description or err.name, err.code or 500))


def _error_response(err: ApiError) -> flask.Response:
    extra = {k: _one_line(v) if isinstance(v, str) else v for k, v in err.extra.items()}
    response = flask.jsonify({"success": False, "error": _one_line(str(err)), **extra})
    response.status_code = err.status
    response.headers.update(err.headers)
    return response


def _json_errors(view):
    def wrapped(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except ApiError as err:
            return _error_response(err)
        except errors.AttnstoreError as err:
            return _error_response(ApiError(str(err), status_of(err)))

    wrapped.__name__ = view.__name__
    return wrapped


def status_of(err: errors.AttnstoreError) -> int:
    """The HTTP status of a library error (`STATUS`)."""
    return next(code for kind, code in STATUS if isinstance(err, kind))


def _png(data: bytes) -> flask.Response:
    response = flask.Response(data, mimetype="image/png")
    response.headers["Cache-Control"] = "public, max-age=3600"  # stores are read-only while served
    return response


def _one_line(text: str) -> str:
    """Control characters (a client's newline in a path or a word) escaped: an error stays one line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _show(value: Any, limit: int = 40) -> str:
    """repr of a client's value, clipped: an error line stays one short line whatever was sent."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_body() -> dict:
    request = flask.request
    if not request.is_json:  # text/plain or a form is what a cross-site page can send without asking
        shown = _show(request.mimetype or "none", 60)
        raise ApiError(f"send JSON with Content-Type: application/json (got {shown})", 415)
    too_large = ApiError(f"request body too large (at most {MAX_BODY_BYTES} bytes)", 413)
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise too_large
    request.max_content_length = MAX_BODY_BYTES  # a chunked body (no Content-Length) is read up to the limit
    data = request.get_data(cache=True)
    if len(data) >= MAX_BODY_BYTES:  # werkzeug stops at the limit without an error: the body went on
        raise too_large
    try:
        body = flask.json.loads(data)
    except (ValueError, RecursionError):  # not JSON (or not UTF-8), or nested deeper than Python's recursion limit
        body = None
    if not isinstance(body, dict):
        raise ApiError('Malformed JSON body: send an object like {"word": "dog", "layer": 0, "head": 0}', 400)
    return body


def _int_field(body: dict, name: str, limit: int, what: str, default: int | None = None) -> int:
    """An integer field in 0..limit-1 (JSON integer, or a string of ASCII digits, as query strings send)."""
    value = body.get(name, default)
    if value is None:
        raise ApiError(f"Missing field '{name}'", 400)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(f"Field '{name}' must be an integer, got {_show(value)}", 400)
    if not 0 <= value < limit:
        raise ApiError(f"{what} {_show(value)} out of range (0-{limit - 1})", 400)
    return value


def _choice_field(body: dict, name: str, allowed, default: str) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or value not in allowed:
        raise ApiError(f"Field '{name}' must be one of {', '.join(allowed)}, got {_show(value)}", 400)
    return value


def _number_field(body: dict, name: str) -> float | None:
    """An optional finite number (JSON number; `NaN`/`Infinity` literals are refused)."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ApiError(f"Field '{name}' must be a finite number, got {_show(value)}", 400)
    return float(value)


def initialize(
    state: StoreState, args, relative_path: Callable[[str], str], token_objects: bool = False
) -> flask.Response:
    """The seed's /api/initialize for one image (default: the first complete one)."""
    first = state.first_image()
    if first is None:
        raise ApiError("the store has no complete image yet", 404)
    image = _int_field(dict(args), "image", state.n_images, "Image", default=first)
    with checksum_guard(state.ds, image):
        meta = state.image(image)
    if token_objects:  # the seed frontend's form: display text, sequence position, clickable or not
        tokens = [
            {"text": text, "index": key, "is_selectable": bool(meta.key_query[key] >= 0)}
            for key, text in enumerate(meta.display)
        ]
    else:
        tokens = meta.token_text  # raw text of every sequence position (BPE markers kept, like the seed)
    return flask.jsonify(
        {
            "success": True,
            "tokens": tokens,
            "display_tokens": meta.display,
            "query_positions": [int(p) for p in meta.query_position],
            "num_layers": state.n_layers,
            "num_heads": state.n_heads,
            "image_url": relative_path(f"/api/image/{image}.png"),
            "image": image,
            "num_images": state.n_images,
            "image_name": meta.name,
            "prompt": meta.prompt,
            "answer": meta.answer,
            "random_weights": state.random_weights,
        }
    )


def generate(state: StoreState, body: dict) -> flask.Response:
    """The seed's /api/generate_attention_map: a transparent heatmap PNG (base64) the size of the image."""
    first = state.first_image()
    if first is None:
        raise ApiError("the store has no complete image yet", 404)
    cmap = _choice_field(body, "cmap", render.CMAPS, "viridis")
    threshold = _number_field(body, "threshold")
    params = _view_params(state, body, default_image=first)
    image, layer, head, key = params.image, params.layer, params.head, params.token
    with checksum_guard(state.ds, image):  # a damaged chunk names its image, never a wrong map
        meta = state.image(image)
        data = views.heatmap(state, params)  # MapSpec.from_controls -> compute_map
    # the seed frontend's picture: the map alone, image-size, its slider's threshold applied
    png = render.export_map(data.result, "layer", render.Style(cmap=cmap, threshold=threshold))
    png = base64.b64encode(png).decode()
    width, height = meta.width, meta.height
    return flask.jsonify(
        {
            "success": True,
            "image": png,
            "word_index": key,
            "layer": layer,
            "head": head,
            "token": meta.token_text[key],
            "query_row": data.query,
            "image_index": image,
            "max_value": data.vmax,
            "heatmap": png,  # the seed frontend's names for the same picture
            "heatmap_width": width,
            "heatmap_height": height,
            "stats": _value_range(data),
        }
    )


def _view_params(state: StoreState, fields: dict, default_image: int | None = None) -> ViewParams:
    """The view a request names (JSON body or query string), checked: image, layer, head, mode, over,
    norm, k and the token (`_token_key`)."""
    params = _view_controls(state, fields, default_image)
    with checksum_guard(state.ds, params.image):
        return replace(params, token=_token_key(state.image(params.image), fields))


def _view_controls(state: StoreState, fields: dict, default_image: int | None = None) -> ViewParams:
    """The view a request names without its token: image, layer, head, mode, over, norm, k (checked)."""
    image = _int_field(fields, "image", state.n_images, "Image", default=default_image)
    params = ViewParams(
        image=image,
        layer=_int_field(fields, "layer", state.n_layers, "Layer"),
        head=_int_field(fields, "head", state.n_heads, "Head"),
        mode=_choice_field(fields, "mode", views.modes(), "head"),  # the registries, read per request
        over=_choice_field(fields, "over", views.OVERS, "heads"),
        norm=_choice_field(fields, "norm", views.norms(), "raw"),
        k=_int_field(fields, "k", MAX_K + 1, "k", default=10),  # 0: MapSpec says why
        scale=_choice_field(fields, "scale", views.SCALES, "own"),
    )
    return params


def view_map(state: StoreState, fields: dict) -> flask.Response:
    """GET /api/view: the values of a view's map as the main figure draws them (`figures.map_values`).

    The page (assets/explorer.js) draws a clicked token's map with them at once, while Dash's
    callback brings the rest of the page (status, side panels) and the same values again."""
    params = _view_params(state, fields)
    with checksum_guard(state.ds, params.image):
        data = views.heatmap(state, params)
    z, cmax = figures.map_values(views.geometry(state, params.image), data.tiles, data.glob, data.cmax)
    return flask.jsonify(
        {
            "success": True,
            "image": params.image,
            "token": params.token,
            "query_row": data.query,
            "traces": list(z),
            "z": [json_grid(values) for values in z.values()],
            "cmax": cmax,
            "colourbar": colourbar_title(data.share, params.scale),
        }
    )


def patch_view_map(state: StoreState, fields: dict) -> flask.Response:
    """GET /api/patch_view: where an image patch looks (`explorer.patch_query.patch_view`), its map
    in /api/view's form plus its raw attention on the text tokens."""
    params = _view_controls(state, fields)
    with checksum_guard(state.ds, params.image):
        patch = _int_field(fields, "patch", state.image(params.image).n_key, "Patch token")
        view = patch_query.patch_view(state, params, patch)
    z, cmax = figures.map_values(views.geometry(state, params.image), view.tiles, view.glob, view.vmax)
    tokens = state.image(params.image).token_text
    return flask.jsonify(
        {
            "success": True,
            "image": params.image,
            "patch": patch,
            "query_row": view.result.row,
            "traces": list(z),
            "z": [json_grid(values) for values in z.values()],
            "cmax": cmax,
            "description": view.result.spec.describe(),
            "text": {
                "what": view.text_what,
                "positions": [int(p) for p in view.text_positions],
                "tokens": [tokens[int(p)] for p in view.text_positions],
                "values": [float(v) for v in view.text_values],
            },
        }
    )


def _value_range(data: views.ViewMap) -> dict[str, float]:
    """min and max of the map's values (before any threshold); 0 and 0 when it has none."""
    parts = [np.asarray(a, np.float64).ravel() for a in (data.tiles, data.glob) if a is not None]
    values = np.concatenate(parts) if parts else np.zeros(0)
    values = values[np.isfinite(values)]
    if not values.size:
        return {"min": 0.0, "max": 0.0}
    return {"min": float(values.min()), "max": float(values.max())}


def _token_key(meta, body: dict) -> int:
    """Sequence position of the requested token: `token_index` or `word_index` if given, else the `word` lookup."""
    for name in ("token_index", "word_index"):
        if body.get(name) is not None:
            key = _int_field(body, name, meta.n_key, "Token index")
            meta.query_of(key)  # explains a token without a stored row
            return key
    word = body.get("word")
    if not isinstance(word, str) or not word.strip():
        raise ApiError("Missing field 'word' (or 'word_index')", 400)
    if len(word) > MAX_WORD_CHARS:
        raise ApiError(f"Field 'word' is too long ({len(word)} characters; at most {MAX_WORD_CHARS})", 400)
    occurrence = body.get("occurrence", 0)
    if isinstance(occurrence, str) and _INTEGER.fullmatch(occurrence.strip()):  # a query string's
        occurrence = int(occurrence)
    if not isinstance(occurrence, int) or isinstance(occurrence, bool):
        raise ApiError(f"Field 'occurrence' must be an integer, got {_show(occurrence)}", 400)
    try:
        row = find_token(meta.img, word, occurrence)
    except TokenNotFoundError as err:
        raise ApiError(WORD_NOT_FOUND, 404, detail=str(err)) from None
    return int(meta.query_position[row])


STYLE_FIELDS = {"cmap": str, "opacity": (int, float), "grid_lines": bool, "cell_px": int}


def export(state: StoreState, body: dict) -> flask.Response:
    """POST /api/export: the map a MapSpec (as JSON) describes, as a file in `format`."""
    fmt = body.get("format", "png")
    if fmt not in render.FORMATS:
        raise errors.InvalidArgument("format", f"must be one of {', '.join(render.FORMATS)}, not {_show(fmt)}")
    image = state.check_image(body.get("image", 0))  # complete only (an extraction may still be writing)
    spec_fields = {k: v for k, v in body.items() if k != "format" and k not in STYLE_FIELDS}
    with checksum_guard(state.ds, image):
        result = compute_map(state.ds, MapSpec.from_json(state.ds, spec_fields))
        data = render.export_map(result, fmt, _style(body))
    name = render.file_name(result, fmt, PurePosixPath(state.image(image).name).stem)
    response = flask.Response(data, mimetype=render.FORMATS[fmt].mime)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _style(body: dict) -> render.Style:
    """The export style from the body's style fields (values checked by `Style.checked` in export_map)."""
    fields = {}
    for name, kind in STYLE_FIELDS.items():
        if name in body:
            value = body[name]
            if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
                raise errors.InvalidArgument(name, f"has the wrong type: {type(value).__name__}")
            fields[name] = value
    return render.Style(**fields)
