"""What the explorer shows, as data: view parameters (and their permalink form) and the
arrays behind each panel. Every number comes from `attnstore.analysis`; this module only
chooses which layers/heads to pass and reshapes results for the figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from urllib.parse import parse_qs, urlencode

import numpy as np
import xarray as xr

from attnstore import analysis
from attnstore.errors import AttnstoreError
from explorer.figures import FigureGeometry, figure_geometry
from explorer.state import StoreState

MODES = {"head": "one head", "mean": "mean", "max": "max", "entropy_topk": "entropy-weighted top-k"}
OVERS = {"heads": "heads of this layer", "layers": "this head, all layers", "all": "all layers and heads"}
NORMS = {"raw": "raw", "image": "image keys (renormalised)", "no_sinks": "image keys, sinks excluded"}
URL_KEYS = ("image", "token", "layer", "head", "mode", "over", "norm", "k")


@dataclass(frozen=True)
class ViewParams:
    """One view: which token of which image, and how its attention is reduced to one map."""

    image: int = 0
    token: int | None = None  # sequence position (key index) of the selected token; None = no overlay
    layer: int = 0
    head: int = 0
    mode: str = "head"  # "head" or an `analysis.reduce_heads` method
    over: str = "heads"  # what an aggregate mode reduces over (see OVERS)
    norm: str = "raw"  # `analysis.normalise` mode
    k: int = 10  # top-k of "entropy_topk"

    def to_query(self) -> str:
        """The permalink query string (without '?')."""
        items = asdict(self)
        items["token"] = "none" if self.token is None else self.token  # a cleared overlay stays cleared
        return urlencode({k: items[k] for k in URL_KEYS})

    def selection(self) -> tuple[list[int] | None, list[int] | None]:
        """(layers, heads) passed to `analysis.reduce_heads` for an aggregate mode."""
        return {
            "heads": ([self.layer], None),
            "layers": (None, [self.head]),
            "all": (None, None),
        }[self.over]

    def describe(self) -> str:
        if self.mode == "head":
            return f"layer {self.layer}, head {self.head}"
        where = {"heads": f"heads of layer {self.layer}", "layers": f"head {self.head} over all layers"}
        return f"{MODES[self.mode]} over {where.get(self.over, 'all layers and heads')}"


def parse_query(search: str | None, state: StoreState) -> tuple[ViewParams, list[str]]:
    """A permalink query string -> checked ViewParams and the problems found (bad values fall back to defaults)."""
    fields = {k: v[-1] for k, v in parse_qs((search or "").lstrip("?")).items()}
    problems: list[str] = []
    default = default_params(state)
    params = default
    ints = {"image": (0, state.n_images - 1), "layer": (0, state.n_layers - 1), "head": (0, state.n_heads - 1)}
    ints["k"] = (1, 10_000)
    for name, (lo, hi) in ints.items():
        if name not in fields:
            continue
        try:
            value = int(fields[name])
            if not lo <= value <= hi:
                raise ValueError
            params = replace(params, **{name: value})
        except ValueError:
            problems.append(f"{name}={fields[name]} in the link is not in {lo}-{hi}; showing {getattr(params, name)}")
    for name, allowed in (("mode", MODES), ("over", OVERS), ("norm", NORMS)):
        if name in fields:
            if fields[name] in allowed:
                params = replace(params, **{name: fields[name]})
            else:
                problems.append(f"{name}={fields[name]} in the link is not one of {', '.join(allowed)}")
    try:
        meta = state.image(params.image)
    except AttnstoreError as err:
        problems.append(str(err))
        return replace(
            default, **{k: getattr(params, k) for k in ("layer", "head", "mode", "over", "norm", "k")}
        ), problems
    token = meta.default_token()
    if fields.get("token") == "none":
        token = None
    elif "token" in fields:
        try:
            candidate = int(fields["token"])
            meta.query_of(candidate)
            token = candidate
        except ValueError:
            problems.append(f"token={fields['token']} in the link is not a token number")
        except AttnstoreError as err:
            problems.append(str(err))
    return replace(params, token=token), problems


def default_params(state: StoreState) -> ViewParams:
    """The first complete image, its first answer token, a middle layer, head 0."""
    image = state.first_image()
    if image is None:
        return ViewParams(layer=state.n_layers // 2)
    return ViewParams(image=image, token=state.image(image).default_token(), layer=state.n_layers // 2)


def check_params(params: ViewParams, state: StoreState) -> ViewParams:
    """Raise AttnstoreError (one line) for anything out of range; returns `params` unchanged."""
    state.check_image(params.image)
    if not 0 <= params.layer < state.n_layers:
        raise AttnstoreError(f"layer {params.layer} out of range (0-{state.n_layers - 1})")
    if not 0 <= params.head < state.n_heads:
        raise AttnstoreError(f"head {params.head} out of range (0-{state.n_heads - 1})")
    if params.mode not in MODES:
        raise AttnstoreError(f"mode must be one of {', '.join(MODES)}, not {params.mode!r}")
    if params.over not in OVERS:
        raise AttnstoreError(f"aggregate over must be one of {', '.join(OVERS)}, not {params.over!r}")
    if params.norm not in NORMS:
        raise AttnstoreError(f"normalisation must be one of {', '.join(NORMS)}, not {params.norm!r}")
    return params


# -- panel data ------------------------------------------------------------------------------


@dataclass
class HeatmapData:
    """The main map of one view  # values [key]; tiles [grid_row, grid_col]; glob [global_row, global_col]."""

    params: ViewParams
    query: int
    values: xr.DataArray
    tiles: np.ndarray
    glob: np.ndarray | None

    @property
    def vmax(self) -> float:
        parts = [np.nanmax(a) for a in (self.tiles, self.glob) if a is not None and np.isfinite(a).any()]
        return float(max(parts)) if parts else 0.0


def token_map(state: StoreState, params: ViewParams) -> xr.DataArray:
    """The selected token's values over every key  # [key], as chosen by `params`."""
    meta = state.image(params.image)
    weights = state.weights(params.image, meta.query_of(params.token), params.norm)  # [layer, head, key]
    if params.mode == "head":
        return weights.isel(layer=params.layer, head=params.head)
    layers, heads = params.selection()
    return analysis.reduce_heads(weights, meta.img, params.mode, layers=layers, heads=heads, k=params.k)


def heatmap(state: StoreState, params: ViewParams) -> HeatmapData:
    """Values of the view on the tile grid and on the global grid (NaN where no token)."""
    check_params(params, state)
    if params.token is None:
        raise AttnstoreError("no token selected: click a text token")
    meta = state.image(params.image)
    values = token_map(state, params)
    glob = analysis.patch_grid(values, meta.img, "global").values if has_global(meta.img) else None
    return HeatmapData(params, meta.query_of(params.token), values, analysis.patch_grid(values, meta.img).values, glob)


def has_global(img: xr.Dataset) -> bool:
    return int(img["global_rows"].values) > 0 and int(img["global_cols"].values) > 0


def has_tiles(img: xr.Dataset) -> bool:
    return int(img["grid_rows"].values) > 0 and int(img["grid_cols"].values) > 0


def layer_head_stats(state: StoreState, params: ViewParams) -> dict[str, np.ndarray]:
    """Image share and entropy of the selected token  # [layer, head] each."""
    stats = state.stats(params.image, state.image(params.image).query_of(params.token))
    return {name: np.asarray(value.values, np.float32) for name, value in stats.items()}


def head_grids(state: StoreState, params: ViewParams) -> np.ndarray:
    """Every head of the current layer on the tile grid  # [head, grid_row, grid_col]."""
    meta = state.image(params.image)
    weights = state.weights(params.image, meta.query_of(params.token), params.norm)
    return analysis.patch_grid(weights.isel(layer=params.layer), meta.img).values


def reverse_view(state: StoreState, params: ViewParams, key: int) -> xr.DataArray:
    """How much each stored text row attends to image key `key`  # [query], over the view's layers/heads."""
    meta = state.image(params.image)
    if not 0 <= key < meta.n_key:
        raise AttnstoreError(f"patch token #{key} does not exist in image {params.image}")
    if params.mode == "head":
        layers, heads = [params.layer], [params.head]
    else:
        layers, heads = params.selection()
    return state.reverse(params.image, (int(key),), layers=layers, heads=heads)


def geometry(state: StoreState, image: int) -> FigureGeometry:
    """The main figure's geometry of an image (cached per store)."""
    meta = state.image(image)
    return state.cached("geometry", meta.index, lambda: figure_geometry(meta.img, meta.width, meta.height), 64)


def picker_page(state: StoreState, query: str | None, page: int, per_page: int) -> tuple[list[int], int, int]:
    """Images matching `query` (case-insensitive substring of name or answer), one page of them.

    Returns (indices on the page, number of matches, the page actually shown).
    """
    catalog = state.catalog()
    text = (query or "").strip().lower()
    matches = np.flatnonzero(np.char.find(catalog["search"], text) >= 0) if text else np.arange(state.n_images)
    n_pages = max(1, -(-matches.size // per_page))
    page = min(max(page, 0), n_pages - 1)
    return [int(i) for i in matches[page * per_page : (page + 1) * per_page]], int(matches.size), page


def page_of(state: StoreState, query: str | None, image: int, per_page: int) -> int | None:
    """The picker page holding `image` among the matches of `query` (None if it does not match)."""
    catalog = state.catalog()
    text = (query or "").strip().lower()
    matches = np.flatnonzero(np.char.find(catalog["search"], text) >= 0) if text else np.arange(state.n_images)
    where = np.flatnonzero(matches == image)
    return int(where[0]) // per_page if where.size else None


def view_state(params: ViewParams, data: HeatmapData | None, style: dict, server_ms: float) -> dict:
    """The current view as JSON-ready data (the hidden state element, the permalink, tests, benchmarks)."""
    return {
        **asdict(params),
        "query": data.query if data else None,
        "permalink": params.to_query(),
        "vmax": data.vmax if data else None,
        "tiles": _json_grid(data.tiles) if data else None,
        "global": _json_grid(data.glob) if data and data.glob is not None else None,
        "server_ms": round(server_ms, 3),
        **style,
    }


def _json_grid(grid: np.ndarray) -> list[list[float | None]]:
    """# [rows, cols] float32 -> nested lists with None for NaN (exact float32 values as Python floats)."""
    return [[None if np.isnan(v) else float(v) for v in row] for row in grid.tolist()]
