"""What the explorer shows, as data: the view (the controls' values and their permalink form) and
the map it asks for. The map comes from the library's one pipeline, `MapSpec.from_controls` ->
`compute_map`; the menus read the library's registries, so a method registered at run time is
offered on the next page load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from urllib.parse import parse_qs, urlencode

import numpy as np
import xarray as xr

from attnstore.analysis import (
    METHODS,
    NORMALISATIONS,
    MapResult,
    MapSpec,
    compute_map,
    image_key_mask,
    patch_grid,
    reverse_attention,
    sink_keys,
    token_grounding,
)
from attnstore.analysis.correctness import RIGHT, WRONG
from attnstore.analysis.grounding import has_object, object_index
from attnstore.analysis.notebook import shared_top as token_shared_top
from attnstore.analysis.tokens import ANSWER_STEP
from attnstore.errors import AttnstoreError, InvalidArgument
from attnstore.render.export import json_grid
from attnstore.render.geometry import FigureGeometry, figure_geometry
from attnstore.render.scale import NEGLIGIBLE_SHARE, SCALES, colour_top, negligible
from attnstore.render.text import quoted
from attnstore.schema import OBJECT_BOX, OBJECT_LABEL, TARGET_OBJECT, TEXT_KINDS, TokenKind, kind_mask
from explorer.state import StoreState

OVERS = {"heads": "heads of this layer", "layers": "this head, all layers", "all": "all layers and heads"}
DEFAULT_OVER = {"rollout": "all"}  # a method's own default reach (rollout is defined through all layers)
URL_KEYS = ("image", "token", "layer", "head", "mode", "over", "norm", "k", "scale")
MAP_CACHE = 32  # computed maps kept per store (a few clicks back and forth)
GROUNDING_IMAGES = 32  # the default head is the best localising one over this many first images
FIRST_VIEW_TOKENS = 48  # the measured first view weighs at most this many answer tokens (one chunk read each)
STOP_WORDS = frozenset(
    "the and with this that there these those are for from its has have was were which into onto near over "
    "under what who how where when image picture photo shows".split()
)  # answer words that say nothing about where to look


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
    scale: str = "own"  # colour scale, a name of `SCALES` (display only: the map's values do not change)

    @classmethod
    def from_controls(cls, image, token, layer, head, mode, over, norm, k=None, scale=None) -> ViewParams:
        """From the controls' values (None = the default)."""
        return cls(image=int(image), token=None if token is None else int(token), layer=int(layer or 0),
                   head=int(head or 0), mode=mode or "head", over=over or "heads", norm=norm or "raw",
                   k=int(k or 10), scale=scale if scale in SCALES else "own")  # fmt: skip

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


def over_for_mode(mode: str | None, over: str | None) -> str:
    """What a method reduces over once the user picks it from the menu: its own default reach where it
    has one (rollout: through all layers, as it is defined), else the current choice."""
    return DEFAULT_OVER.get(mode or "head", over or "heads")


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
    for name, allowed in (("mode", modes()), ("over", OVERS), ("norm", norms()), ("scale", SCALES)):
        if name in fields:
            if fields[name] in allowed:
                params = replace(params, **{name: fields[name]})
            else:
                problems.append(f"{name}={fields[name]} in the link is not one of {', '.join(allowed)}")
    try:
        meta = state.image(params.image)
    except AttnstoreError as err:
        problems.append(str(err))
        kept = {k: getattr(params, k) for k in ("layer", "head", "mode", "over", "norm", "k", "scale")}
        return replace(default, **kept), problems
    # the default view's (measured) token on its image, else the image's first answer token
    token = default.token if params.image == default.image and default.token is not None else meta.default_token()
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
    """The first complete image, the row that chose its first answer word (`@answer-step`), and the
    head that best localises the asked objects from that row (a store with `target_object`, like the
    demo's); a store without asked objects opens on a view chosen by measurement
    (`measured_first_view`)."""
    if TARGET_OBJECT not in state.ds:
        return measured_first_view(state)
    layer, head = best_grounding_head(state) or (state.n_layers // 2, 0)
    image = state.first_image()
    if image is None:
        return ViewParams(layer=layer, head=head)
    meta = state.image(image)
    token = meta.answer_step_token()  # where the answer word was chosen: what the asked object's box is about
    return ViewParams(image=image, token=meta.default_token() if token is None else token, layer=layer, head=head)


def content_tokens(meta) -> list[int]:
    """Answer tokens that name something (alphabetic, 3+ letters, not a stop word) and have a stored row."""
    kinds = np.asarray(meta.img["token_kind"].values)
    words = {int(p): meta.display[int(p)].strip() for p in meta.query_position[:] if kinds[p] == TokenKind.GENERATED}
    return [p for p, w in words.items() if w.isalpha() and len(w) >= 3 and w.lower() not in STOP_WORDS]


def focus_scores(state: StoreState, image: int, row: int) -> np.ndarray:
    """How much each head's map of one token shows a place in the picture  # [layer, head]: the share
    of its attention on image patches that are not sinks, times 1 - the normalised entropy of that
    attention (the weight `entropy_topk` gives a head; a head that looks at a sink, or at nothing,
    scores 0)."""
    meta = state.image(image)
    weights = state.ds.attn.weights(image, row)  # [layer, head, key] raw
    clean = image_key_mask(meta.img).values & ~sink_keys(weights, meta.img).values  # [key]
    picture = np.asarray(weights.values)[..., clean]  # [layer, head, patch]
    share = picture.sum(-1)  # [layer, head]
    if picture.shape[-1] < 2:
        return np.zeros(share.shape, np.float32)
    p = picture / np.where(share > 0, share, 1.0)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), -1) / np.log(picture.shape[-1])  # 0..1
    return np.nan_to_num(share * (1.0 - ent)).astype(np.float32)


def measured_first_view(state: StoreState) -> ViewParams:
    """The first view of a store without asked objects, chosen by measurement on its first image: the
    content answer token (`content_tokens`; any answer token if none) whose most focused head
    (`focus_scores`) scores highest, at that layer and head. Measured once per opened store (one
    chunk read per candidate token)."""
    image = state.first_image()
    fallback = ViewParams(layer=state.n_layers // 2)
    if image is None:
        return fallback

    def make() -> ViewParams:
        meta = state.image(image)
        kinds = np.asarray(meta.img["token_kind"].values)
        answer = [int(p) for p in meta.query_position if kinds[p] == TokenKind.GENERATED]
        candidates = (content_tokens(meta) or answer)[:FIRST_VIEW_TOKENS]
        if not candidates:
            return replace(fallback, image=image, token=meta.default_token())
        scores = np.stack([focus_scores(state, image, meta.query_of(p)) for p in candidates])  # [token, layer, head]
        best = scores.reshape(len(candidates), -1).max(1)  # [token]
        # ties (e.g. nothing focused anywhere) go to the longer word, then the earlier one
        pick = max(range(len(candidates)), key=lambda i: (best[i], len(meta.display[candidates[i]].strip()), -i))
        layer, head = (int(v) for v in np.unravel_index(int(np.argmax(scores[pick])), scores.shape[1:]))
        if best[pick] <= 0:
            layer, head = fallback.layer, 0
        return ViewParams(image=image, token=candidates[pick], layer=layer, head=head)

    return state.cached("measured-first-view", make, key=image)


# -- the map of a view ----------------------------------------------------------------------------


@dataclass
class ViewMap:
    """The map of one view  # tiles [grid_row, grid_col], glob [global_row, global_col] (None if absent)."""

    params: ViewParams
    result: MapResult
    tiles: np.ndarray | None
    glob: np.ndarray | None
    vmax: float  # the map's own largest value
    note: str  # why the map looks as it does, when that is not obvious (e.g. all zero)
    share: float = float("nan")  # the token's image share over the view's layers and heads (0..1)
    cmax: float = 1.0  # the top of the colour range it is drawn with (`attnstore.render.scale.colour_top`)

    @property
    def query(self) -> int:
        return self.result.row


def heatmap(state: StoreState, params: ViewParams) -> ViewMap:
    """The view's map through the library pipeline (`compute_map`), on both grids of the image, with
    its image share and an honest colour range (`attnstore.render.scale`)."""
    spec = params.spec(state)
    # One computation per view: the page's GET /api/view and Dash's callback of the same click share it.
    result = state.cached("map", lambda: compute_map(state.ds, spec), spec, MAP_CACHE)
    geom = geometry(state, params.image)  # which grids the image has (cached)
    tiles = result.grid("tiles").values if geom.tiles is not None else None  # each grid built once per result
    glob = result.grid("global").values if geom.glob is not None else None
    vmax, share = result.vmax, view_share(state, params)
    top = shared_top(state, params) if params.scale == "shared" or negligible(share) else None
    cmax = colour_top(vmax, share, top, params.scale)
    return ViewMap(params, result, tiles, glob, vmax, _note(state, params, share), share, cmax)


def view_share(state: StoreState, params: ViewParams) -> float:
    """The token's image share over the view's layers and heads (their mean)."""
    share = layer_head_stats(state, params)["share"]  # [layer, head]
    layers, heads = params.selection()
    return float(share[layers or slice(None)][:, heads or slice(None)].mean())


def shared_top(state: StoreState, params: ViewParams) -> float:
    """The top of the token's shared colour scale: the largest value any layer's head gives an image
    patch, under the view's normalisation (a method's map of those heads never exceeds it, except
    rollout, whose own maximum `colour_top` keeps)."""
    meta = state.image(params.image)
    row = meta.query_of(params.token)

    make = lambda: token_shared_top(state.ds, params.image, row, params.norm)  # the notebook's `show` too
    return state.cached("shared-top", make, (params.image, row, params.norm), 64)


def _note(state: StoreState, params: ViewParams, share: float) -> str:
    meta = state.image(params.image)
    if meta.before_image(params.token):
        return (
            f"token #{params.token} {quoted(meta.display[params.token])} comes before the image: causal attention "
            "cannot see image patches, so its map is all zero"
        )
    if negligible(share):
        return (
            f"only {share:.1%} of the token's attention is on the image here (negligible: under "
            f"{NEGLIGIBLE_SHARE:.0%}): it barely looks at the image, so the map is drawn faded in proportion, "
            "not stretched to full colour"
        )
    chosen = meta.chose_the_answer(params.token)
    if chosen is not None:
        return (
            f"this row chose the answer word {quoted(chosen)} (a decoder picks each word from the row before "
            "it): the attention the word was chosen with"
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
            ranked = ds.attn.grounding_heads(ANSWER_STEP, TARGET_OBJECT, images=range(GROUNDING_IMAGES))
        except AttnstoreError:
            return None
        return int(ranked["layer"].values[0]), int(ranked["head"].values[0])

    return state.cached("best-grounding-head", make)


def reverse_view(state: StoreState, params: ViewParams, key: int):
    """How much each stored text row attends to image key `key`  # [query] (coord `position`), over the
    view's layers/heads. Image rows (stores with `--queries text+image` or `all`) are left out: the
    question is which words look at the patch."""
    meta = state.image(params.image)
    if not 0 <= key < meta.n_key:
        raise InvalidArgument("key", f"patch token #{key} does not exist in image {params.image}")
    layers, heads = params.selection()
    cache_key = (params.image, int(key), tuple(layers or ()), tuple(heads or ()))

    def text_rows() -> xr.DataArray:
        values = reverse_attention(meta.img, [int(key)], layers=layers, heads=heads).load()  # [query]
        positions = np.asarray(meta.query_position)
        text = kind_mask(np.asarray(meta.img["token_kind"].values)[positions], TEXT_KINDS)
        return values.isel(query=np.flatnonzero(text)).assign_coords(position=("query", positions[text]))

    return state.cached("reverse", text_rows, cache_key, 32)


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
        "cmax": data.cmax if data else None,
        "image_share": data.share if data and np.isfinite(data.share) else None,
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
