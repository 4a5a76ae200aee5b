"""What the explorer shows, as data: the view (the controls' values and their permalink form) and
the map it asks for. The map comes from the library's one pipeline, `MapSpec.from_controls` ->
`compute_map`; the menus read the library's registries, so a method registered at run time is
offered on the next page load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from urllib.parse import parse_qs, urlencode

import numpy as np

from attnstore.analysis import (
    METHODS,
    NORMALISATIONS,
    MapResult,
    MapSpec,
    compute_map,
    patch_grid,
    reverse_attention,
    token_grounding,
)
from attnstore.analysis.correctness import RIGHT, WRONG
from attnstore.analysis.grounding import has_object, object_index
from attnstore.errors import AttnstoreError, InvalidArgument
from attnstore.render.export import json_grid
from attnstore.render.geometry import FigureGeometry, figure_geometry
from attnstore.render.text import quoted
from attnstore.schema import OBJECT_BOX, OBJECT_LABEL, TARGET_OBJECT
from explorer.state import StoreState

OVERS = {"heads": "heads of this layer", "layers": "this head, all layers", "all": "all layers and heads"}
URL_KEYS = ("image", "token", "layer", "head", "mode", "over", "norm", "k")
GROUNDING_IMAGES = 32  # the default head is the best localising one over this many first images


def modes() -> dict[str, str]:
    """The map menu: one head, or any registered method (read at call time: run-time registrations count)."""
    return {"head": "one head", **{name: entry.label for name, entry in METHODS.items()}}


def norms() -> dict[str, str]:
    """The normalisation menu, from the registry."""
    return {name: entry.label for name, entry in NORMALISATIONS.items()}


@dataclass(frozen=True)
class ViewParams:
    """One view: which token of which image, and how its attention is reduced to one map."""

    image: int = 0
    token: int | None = None  # sequence position (key index) of the selected token; None = no overlay
    layer: int = 0
    head: int = 0
    mode: str = "head"  # "head" or a name of `METHODS`
    over: str = "heads"  # what a method reduces over (see OVERS)
    norm: str = "raw"  # a name of `NORMALISATIONS`
    k: int = 10  # top-k of "entropy_topk"

    @classmethod
    def from_controls(cls, image, token, layer, head, mode, over, norm, k=None) -> ViewParams:
        """From the controls' values (None = the default)."""
        return cls(image=int(image), token=None if token is None else int(token), layer=int(layer or 0),
                   head=int(head or 0), mode=mode or "head", over=over or "heads", norm=norm or "raw",
                   k=int(k or 10))  # fmt: skip

    def to_query(self) -> str:
        """The permalink query string (without '?')."""
        items = asdict(self)
        items["token"] = "none" if self.token is None else self.token  # a cleared overlay stays cleared
        return urlencode({k: items[k] for k in URL_KEYS})

    def spec(self, state: StoreState) -> MapSpec:
        """The library's spec of this view's map (checked against the store)."""
        if self.token is None:
            raise InvalidArgument("position", "no token selected: click a text token")
        if self.over not in OVERS:
            raise InvalidArgument("over", f"must be one of {', '.join(OVERS)}, not {self.over!r}")
        state.check_image(self.image)
        controls = {"layer": self.layer, "head": self.head, "mode": self.mode, "over": self.over, "norm": self.norm}
        return MapSpec.from_controls(state.ds, image=self.image, position=self.token, k=self.k, **controls)

    def selection(self) -> tuple[list[int] | None, list[int] | None]:
        """(layers, heads) the view's map covers (for the reverse view)."""
        if self.mode == "head":
            return [self.layer], [self.head]
        return {"heads": ([self.layer], None), "layers": (None, [self.head]), "all": (None, None)}[self.over]

    def describe(self) -> str:
        if self.mode == "head":
            return f"layer {self.layer}, head {self.head}"
        where = {"heads": f"heads of layer {self.layer}", "layers": f"head {self.head} over all layers"}
        return f"{modes().get(self.mode, self.mode)} over {where.get(self.over, 'all layers and heads')}"


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
    for name, allowed in (("mode", modes()), ("over", OVERS), ("norm", norms())):
        if name in fields:
            if fields[name] in allowed:
                params = replace(params, **{name: fields[name]})
            else:
                problems.append(f"{name}={fields[name]} in the link is not one of {', '.join(allowed)}")
    try:
        meta = state.image(params.image)
    except AttnstoreError as err:
        problems.append(str(err))
        kept = {k: getattr(params, k) for k in ("layer", "head", "mode", "over", "norm", "k")}
        return replace(default, **kept), problems
    token = meta.default_token()
    if fields.get("token") == "none":
        token = None
    elif "token" in fields:
        try:
            candidate = int(fields["token"])
            meta.query_of(candidate)  # explains a token without a stored row
            token = candidate
        except AttnstoreError as err:  # before ValueError: InvalidArgument is one
            problems.append(f"token {err}")
        except ValueError:
            problems.append(f"token={fields['token']} in the link is not a token number")
    return replace(params, token=token), problems


def default_params(state: StoreState) -> ViewParams:
    """The first complete image, its first answer token, and the head that best localises the asked
    objects (a store with `target_object`, like the demo's) or else a middle layer's head 0."""
    layer, head = best_grounding_head(state) or (state.n_layers // 2, 0)
    image = state.first_image()
    if image is None:
        return ViewParams(layer=layer, head=head)
    return ViewParams(image=image, token=state.image(image).default_token(), layer=layer, head=head)


# -- the map of a view ----------------------------------------------------------------------------


@dataclass
class ViewMap:
    """The map of one view  # tiles [grid_row, grid_col], glob [global_row, global_col] (None if absent)."""

    params: ViewParams
    result: MapResult
    tiles: np.ndarray | None
    glob: np.ndarray | None
    vmax: float
    note: str  # why the map looks as it does, when that is not obvious (e.g. all zero)

    @property
    def query(self) -> int:
        return self.result.row


def heatmap(state: StoreState, params: ViewParams) -> ViewMap:
    """The view's map through the library pipeline (`compute_map`), on both grids of the image."""
    result = compute_map(state.ds, params.spec(state))
    geom = geometry(state, params.image)  # which grids the image has (cached)
    # patch_grid, not result.grid(): no labels needed here, and each grid is made once (MapResult.vmax
    # and has_view would rebuild them: ~15 ms a click)
    tiles = patch_grid(result.values, result.img, "tiles").values if geom.tiles is not None else None
    glob = patch_grid(result.values, result.img, "global").values if geom.glob is not None else None
    return ViewMap(params, result, tiles, glob, _vmax(tiles, glob), _note(state, params))


def _vmax(*grids: np.ndarray | None) -> float:
    """The largest value on any drawn grid; 0 for an all-NaN map (as `MapResult.vmax`)."""
    parts = [float(np.nanmax(g)) for g in grids if g is not None and np.isfinite(g).any()]
    return max(parts) if parts else 0.0


def _note(state: StoreState, params: ViewParams) -> str:
    meta = state.image(params.image)
    if meta.before_image(params.token):
        return (
            f"token #{params.token} {quoted(meta.display[params.token])} comes before the image: causal attention "
            "cannot see image patches, so its map is all zero"
        )
    return ""


def geometry(state: StoreState, image: int) -> FigureGeometry:
    """The main figure's geometry of an image (`attnstore.render.geometry`; cached per opened store)."""
    meta = state.image(image)
    return state.cached("geometry", lambda: figure_geometry(meta.img, meta.width, meta.height), meta.index, 64)


def layer_head_stats(state: StoreState, params: ViewParams) -> dict[str, np.ndarray]:
    """Image share and entropy of the selected token  # [layer, head] each."""
    stats = state.stats(params.image, state.image(params.image).query_of(params.token))
    return {name: np.asarray(value.values, np.float32) for name, value in stats.items()}


def head_grids(state: StoreState, params: ViewParams) -> np.ndarray:
    """Every head of the current layer on the tile grid  # [head, grid_row, grid_col]."""
    meta = state.image(params.image)
    weights = state.ds.attn.weights(params.image, meta.query_of(params.token), params.norm)  # [layer, head, key]
    return patch_grid(weights.isel(layer=params.layer), meta.img).values


@dataclass
class HeadGrounding:
    """How well each head of the view's layer localises an object for the selected token."""

    lift: np.ndarray  # [head] in-box share of the image attention / the box's share of the image
    label: str  # the object


def grounding_object(meta, token: int) -> int:
    """The object a token's map is checked against: the image's asked object (`target_object`),
    else the object labelled with the token's word; -1 if none."""
    objects = meta.img.get(OBJECT_LABEL)
    if objects is None:
        return -1
    if TARGET_OBJECT in meta.img:
        return object_index(meta.img, TARGET_OBJECT)
    word = meta.display[token].strip().lower()
    labels = [str(v).strip().lower() for v in objects.values]
    return labels.index(word) if word and word in labels else -1


def head_grounding(state: StoreState, params: ViewParams) -> HeadGrounding | None:
    """In-box lift of the selected token for every head of the layer; None if there is no object to check."""
    meta = state.image(params.image)
    obj = grounding_object(meta, params.token)
    if not has_object(meta.img, obj):
        return None
    query = meta.query_of(params.token)
    scores = state.cached("grounding", lambda: token_grounding(meta.img, query, obj), (params.image, query, obj), 64)
    lift = np.asarray(scores["inbox_lift"].isel(layer=params.layer).values, np.float32)
    return HeadGrounding(lift, str(meta.img[OBJECT_LABEL].values[obj]))


def best_grounding_head(state: StoreState) -> tuple[int, int] | None:
    """(layer, head) that best localises the asked objects over the store's first images; None
    if the store has no asked objects (`target_object`) to check."""
    ds = state.ds
    if OBJECT_BOX not in ds or TARGET_OBJECT not in ds:
        return None

    def make() -> tuple[int, int] | None:
        try:
            ranked = ds.attn.grounding_heads(target=TARGET_OBJECT, images=range(GROUNDING_IMAGES))
        except AttnstoreError:
            return None
        return int(ranked["layer"].values[0]), int(ranked["head"].values[0])

    return state.cached("best-grounding-head", make)


def reverse_view(state: StoreState, params: ViewParams, key: int):
    """How much each stored text row attends to image key `key`  # [query], over the view's layers/heads."""
    meta = state.image(params.image)
    if not 0 <= key < meta.n_key:
        raise InvalidArgument("key", f"patch token #{key} does not exist in image {params.image}")
    layers, heads = params.selection()
    cache_key = (params.image, int(key), tuple(layers or ()), tuple(heads or ()))
    return state.cached(
        "reverse", lambda: reverse_attention(meta.img, [int(key)], layers=layers, heads=heads).load(), cache_key, 32
    )


def picker_matches(state: StoreState, query: str | None) -> np.ndarray:
    catalog = state.catalog()
    text = (query or "").strip().lower()
    return np.flatnonzero(np.char.find(catalog["search"], text) >= 0) if text else np.arange(state.n_images)


def picker_page(state: StoreState, query: str | None, page: int, per_page: int) -> tuple[list[int], int, int]:
    """Images matching `query` (case-insensitive substring of name or answer), one page of them.

    Returns (indices on the page, number of matches, the page actually shown).
    """
    matches = picker_matches(state, query)
    n_pages = max(1, -(-matches.size // per_page))
    page = min(max(page, 0), n_pages - 1)
    return [int(i) for i in matches[page * per_page : (page + 1) * per_page]], int(matches.size), page


def page_of(state: StoreState, query: str | None, image: int, per_page: int) -> int | None:
    """The picker page holding `image` among the matches of `query` (None if it does not match)."""
    where = np.flatnonzero(picker_matches(state, query) == image)
    return int(where[0]) // per_page if where.size else None


def view_state(params: ViewParams, data: ViewMap | None, style: dict, server_ms: float) -> dict:
    """The current view as JSON-ready data (the hidden state element, the permalink, tests, benchmarks)."""
    return {
        **asdict(params),
        "query": data.query if data else None,
        "permalink": params.to_query(),
        "vmax": data.vmax if data else None,
        "tiles": json_grid(data.tiles) if data and data.tiles is not None else None,
        "global": json_grid(data.glob) if data and data.glob is not None else None,
        "server_ms": round(server_ms, 3),
        **style,
    }


@dataclass
class Verdict:
    """Whether an image's answer is right, as the picker card and the answer line show it."""

    css: str  # "right" / "wrong" / "" (unknown)
    text: str  # e.g. "✓ right" or "✗ wrong · expected purple"; "" for an unknown one


def verdict(state: StoreState, index: int) -> Verdict:
    """The answer of image `index` judged against the store's expected answer (`answer_correct`)."""
    catalog = state.catalog()
    correct, expected = int(catalog["correct"][index]), str(catalog["expected"][index])
    if correct == RIGHT:
        return Verdict("right", "✓ right" + (f" · expected {expected}" if expected else ""))
    if correct == WRONG:
        return Verdict("wrong", "✗ wrong" + (f" · expected {expected}" if expected else ""))
    return Verdict("", "")


def plural(n: int, word: str) -> str:
    """'1 image', '3 images'."""
    return f"{n} {word}{'' if n == 1 else 's'}"
