"""REST endpoints, compatible with the seed viewer's API, plus the pictures the page loads.

    GET  /api/initialize[?image=i]          -> {"success", "tokens", "num_layers", "num_heads", "image_url", ...}
    POST /api/generate_attention_map        {"word", "layer", "head"} (+ "image", "token_index", "occurrence",
                                            "mode", "over", "norm", "cmap")
                                            -> {"success", "image" (base64 PNG), "word_index", "layer", "head", ...}
    GET  /api/image/<i>.png                 the display copy of image i
    GET  /api/thumbnail/<i>.png             a small copy (built on first request)

Errors are JSON `{"success": false, "error": "..."}` with a 4xx status; the seed's
exact message "Word not found in tokens" is kept for unknown words (the close
matches go to "detail").
"""

from __future__ import annotations

import base64
from typing import Any

import dash
import flask

from attnstore import render
from attnstore.analysis import TokenNotFoundError, find_token
from attnstore.errors import AttnstoreError
from explorer import views
from explorer.state import StoreState
from explorer.views import ViewParams

WORD_NOT_FOUND = "Word not found in tokens"


class ApiError(Exception):
    """An error answered as JSON with an HTTP status."""

    def __init__(self, message: str, status: int = 400, **extra: Any):
        super().__init__(message)
        self.status = status
        self.extra = extra


def register(app: dash.Dash, state: StoreState) -> None:
    """Add the REST routes to the Dash app's Flask server (under the app's route prefix)."""
    server: flask.Flask = app.server
    prefix = app.config.routes_pathname_prefix.rstrip("/")

    def route(rule: str, endpoint: str, view, methods=("GET",)) -> None:
        server.add_url_rule(
            f"{prefix}{rule}", endpoint=f"attnstore_{endpoint}", view_func=_json_errors(view), methods=list(methods)
        )

    route("/api/initialize", "initialize", lambda: initialize(app, state, flask.request.args))
    route("/api/generate_attention_map", "generate", lambda: generate(state, _json_body()), methods=("POST",))
    route("/api/image/<int:index>.png", "image", lambda index: _png(state.picture_png(state.check_image(index))))
    route("/api/thumbnail/<int:index>.png", "thumbnail", lambda index: _png(state.thumbnail_png(index)))


def _json_errors(view):
    def wrapped(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except ApiError as err:
            return flask.jsonify({"success": False, "error": str(err), **err.extra}), err.status
        except AttnstoreError as err:
            return flask.jsonify({"success": False, "error": str(err)}), 404 if "does not exist" in str(err) else 400

    wrapped.__name__ = view.__name__
    return wrapped


def _png(data: bytes) -> flask.Response:
    response = flask.Response(data, mimetype="image/png")
    response.headers["Cache-Control"] = "public, max-age=3600"  # stores are read-only while served
    return response


def _json_body() -> dict:
    body = flask.request.get_json(silent=True, force=True)
    if not isinstance(body, dict):
        raise ApiError('Malformed JSON body: send an object like {"word": "dog", "layer": 0, "head": 0}', 400)
    return body


def _int_field(body: dict, name: str, limit: int, what: str, default: int | None = None) -> int:
    value = body.get(name, default)
    if value is None:
        raise ApiError(f"Missing field '{name}'", 400)
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).lstrip("-").isdigit():
        raise ApiError(f"Field '{name}' must be an integer, got {value!r}", 400)
    value = int(value)
    if not 0 <= value < limit:
        raise ApiError(f"{what} {value} out of range (0-{limit - 1})", 400)
    return value


def initialize(app: dash.Dash, state: StoreState, args) -> flask.Response:
    """The seed's /api/initialize for one image (default: the first complete one)."""
    first = state.first_image()
    if first is None:
        raise ApiError("the store has no complete image yet", 404)
    image = _int_field(dict(args), "image", state.n_images, "Image", default=first)
    meta = state.image(image)
    return flask.jsonify(
        {
            "success": True,
            "tokens": meta.token_text,  # raw text of every sequence position (BPE markers kept, like the seed)
            "display_tokens": meta.display,
            "query_positions": [int(p) for p in meta.query_position],
            "num_layers": state.n_layers,
            "num_heads": state.n_heads,
            "image_url": app.get_relative_path(f"/api/image/{image}.png"),
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
    image = _int_field(body, "image", state.n_images, "Image", default=first)
    layer = _int_field(body, "layer", state.n_layers, "Layer")
    head = _int_field(body, "head", state.n_heads, "Head")
    meta = state.image(image)
    key = _token_key(meta, body)
    params = ViewParams(
        image=image,
        token=key,
        layer=layer,
        head=head,
        mode=str(body.get("mode", "head")),
        over=str(body.get("over", "heads")),
        norm=str(body.get("norm", "raw")),
    )
    data = views.heatmap(state, params)
    geom = views.geometry(state, image)
    cmap = str(body.get("cmap", "viridis"))
    if cmap not in render.CMAPS:
        raise ApiError(f"cmap must be one of {', '.join(render.CMAPS)}", 400)
    picture = render.heatmap_image(
        data.tiles,
        cmap=cmap,
        vmin=0.0,
        vmax=data.vmax or None,
        boxes=geom.tiles.boxes if geom.tiles else None,
        size=(meta.width, meta.height),
    )
    return flask.jsonify(
        {
            "success": True,
            "image": base64.b64encode(render.png_bytes(picture)).decode(),
            "word_index": key,
            "layer": layer,
            "head": head,
            "token": meta.token_text[key],
            "query_row": data.query,
            "image_index": image,
            "max_value": data.vmax,
        }
    )


def _token_key(meta, body: dict) -> int:
    """Sequence position of the requested token: `token_index` if given, else the `word` lookup."""
    if body.get("token_index") is not None:
        key = _int_field(body, "token_index", meta.n_key, "Token index")
        meta.query_of(key)  # explains a token without a stored row
        return key
    word = body.get("word")
    if not isinstance(word, str) or not word.strip():
        raise ApiError("Missing field 'word' (or 'token_index')", 400)
    occurrence = body.get("occurrence", 0)
    if not isinstance(occurrence, int) or isinstance(occurrence, bool):
        raise ApiError(f"Field 'occurrence' must be an integer, got {occurrence!r}", 400)
    try:
        row = find_token(meta.img, word, occurrence)
    except TokenNotFoundError as err:
        raise ApiError(WORD_NOT_FOUND, 404, detail=str(err)) from None
    return int(meta.query_position[row])
