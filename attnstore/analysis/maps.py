"""One map pipeline: a frozen `MapSpec` (what to draw) -> `compute_map` -> a `MapResult` (values per
key, grids by the image's geometry). The CLI, the accessor, the explorer and the REST API build a
spec from their own inputs (`from_cli`, `from_controls`, `from_json`) and share everything after.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import xarray as xr

from attnstore.analysis.grid import VIEWS, patch_grid
from attnstore.analysis.keys import IMAGE_KEY_SETS, NORMALISATIONS
from attnstore.analysis.reduce import METHODS, reduce_heads
from attnstore.analysis.select import parse_range
from attnstore.analysis.select import short_repr as _short
from attnstore.analysis.tokens import find_token
from attnstore.errors import InvalidArgument
from attnstore.schema import IMAGE_PATCH_KINDS, TEXT_KINDS, TokenKind, kind_mask

MAX_K = 100_000


@dataclass(frozen=True)
class MapSpec:
    """Everything that defines one map. Exactly one of `token`, `row`, `position`, `patch` names the
    query: a text token, or (`patch`) an image patch token, whose map shows where that patch looks."""

    image: int = 0
    token: str | None = None  # token text, BPE-aware ("jacket" matches "Ġjacket") ...
    occurrence: int = 0  # ... and which of its occurrences (0 = first, -1 = last)
    row: int | None = None  # or a stored query row
    position: int | None = None  # or a sequence position (key index) that has a stored row
    patch: int | None = None  # or an image patch token's position (key index): the patch as the query
    layers: tuple[int, ...] | None = None  # None = all
    heads: tuple[int, ...] | None = None
    method: str = "entropy_topk"  # a name of `METHODS`
    k: int = 10  # top-k of entropy_topk
    normalise: str = "raw"  # a name of `NORMALISATIONS`
    keys: str = "all"  # image keys ranked by entropy_topk: all | tiles | global
    view: str = "tiles"  # grid of `MapResult.grid()`: tiles | global | tile

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def from_cli(cls, ds: xr.Dataset, *, image: str, layers: str | None, heads: str | None, **options) -> MapSpec:
        """From command-line strings: image index or name, layer/head ranges like '0-29' or '0,3,5-7'."""
        return cls(
            image=ds.attn.image_index(image),
            layers=_tuple(parse_range(layers, ds.sizes["layer"], "layers")),
            heads=_tuple(parse_range(heads, ds.sizes["head"], "heads")),
            **options,
        ).checked(ds)

    @classmethod
    def from_controls(
        cls, ds: xr.Dataset, *, image, position, layer, head, mode, over, norm, k, patch: int | None = None
    ) -> MapSpec:
        """From the explorer's controls (and its permalink, which holds their values): `mode` "head"
        shows one layer's head; any method reduces over the heads of the layer, the layers of the
        head, or everything (`over`). `patch` (a key position) asks where that patch looks instead."""
        layer, head = int(layer), int(head)
        if mode == "head":
            method, layers, heads = "mean", (layer,), (head,)  # the mean of one head is that head
        else:
            method = mode
            layers, heads = {"heads": ((layer,), None), "layers": (None, (head,)), "all": (None, None)}[over]
        query = {"position": position} if patch is None else {"patch": int(patch)}
        return cls(image=int(image), layers=layers, heads=heads, method=method, k=int(k), normalise=norm,
                   **query).checked(ds)  # fmt: skip

    @classmethod
    def from_json(cls, ds: xr.Dataset, body: dict[str, Any], defaults: dict[str, Any] | None = None) -> MapSpec:
        """From a REST body. Fields: image, token | position | row | patch, occurrence, layers / heads (lists,
        or range strings like '0-3'), layer / head (one each), method, k, normalise, keys, view."""
        body = {**(defaults or {}), **body}
        fields: dict[str, Any] = {"image": _int(body, "image", 0)}
        for name in ("token",):
            if body.get(name) is not None:
                fields[name] = _str(body, name)
        for name in ("row", "position", "patch"):
            if body.get(name) is not None:
                fields[name] = _int(body, name)
        fields["occurrence"] = _int(body, "occurrence", 0)
        for dim, single in (("layers", "layer"), ("heads", "head")):
            n = ds.sizes[dim[:-1]]
            if body.get(dim) is not None:
                fields[dim] = _index_list(body[dim], dim, n)
            elif body.get(single) is not None:
                fields[dim] = (_int(body, single),)
        for name in ("method", "normalise", "keys", "view"):
            if body.get(name) is not None:
                fields[name] = _str(body, name)
        if body.get("k") is not None:
            fields["k"] = _int(body, "k")
        return cls(**fields).checked(ds)

    # -- checks and lookups -------------------------------------------------------------------
    def checked(self, ds: xr.Dataset) -> MapSpec:
        """Self if every field is valid for `ds`, else InvalidArgument naming the field."""
        n_images = ds.sizes["image"]
        if not 0 <= self.image < n_images:
            raise InvalidArgument("image", f"{self.image} is out of range: the store has {n_images} images")
        named = [n for n in ("token", "row", "position", "patch") if getattr(self, n) is not None]
        if len(named) != 1:
            raise InvalidArgument(
                "token", "give exactly one of a token text, a query row, a sequence position or an image patch"
            )
        for dim, sel in (("layer", self.layers), ("head", self.heads)):
            n = ds.sizes[dim]
            if sel is not None and (not sel or any(not 0 <= i < n for i in sel)):
                raise InvalidArgument(f"{dim}s", f"{list(sel)[:8]} is outside 0-{n - 1} (the store has {n} {dim}s)")
        METHODS.check(self.method)
        NORMALISATIONS.check(self.normalise)
        if self.view not in VIEWS:
            raise InvalidArgument("view", f"must be one of {', '.join(VIEWS)}, not {self.view!r}")
        if self.keys not in IMAGE_KEY_SETS:
            raise InvalidArgument("keys", f"must be one of {', '.join(IMAGE_KEY_SETS)}, not {self.keys!r}")
        if not 1 <= self.k <= MAX_K:
            raise InvalidArgument("k", f"must be between 1 and {MAX_K}, got {self.k}")
        return self

    def query_row(self, img: xr.Dataset) -> int:
        """The stored query row this spec names in `img` (one image)."""
        if self.row is not None:
            n = img.sizes["query"]
            if not 0 <= self.row < n:
                raise InvalidArgument("row", f"{self.row} is out of range: this image has {n} stored rows")
            return self.row
        if self.position is not None:
            return row_of_position(img, self.position)
        if self.patch is not None:
            return row_of_patch(img, self.patch)
        return find_token(img, self.token, self.occurrence)

    def describe(self) -> str:
        """One line for titles and status bars, e.g. 'mean over heads 0-3 of layer 5 · image keys'."""
        what = METHODS[self.method].label
        if self.method == "entropy_topk":
            what += f" (k={self.k})"
        if self.layers is not None and self.heads is not None and len(self.layers) == len(self.heads) == 1:
            where = f"layer {self.layers[0]}, head {self.heads[0]}"
            what = "" if self.method in ("mean", "max") else what + " of "
        else:
            where = f"over layers {_span(self.layers)}, heads {_span(self.heads)}"
            what += " "
        return f"{what}{where} · {NORMALISATIONS[self.normalise].label}"


def row_of_position(img: xr.Dataset, position: int) -> int:
    """Query row of the token at sequence position `position`; explains why when there is none."""
    n_key = img.sizes["key"]
    if not 0 <= position < n_key:
        raise InvalidArgument("position", f"{position} does not exist: the image has {n_key} tokens")
    rows = np.flatnonzero(np.asarray(img["query_position"].values) == position)
    if rows.size == 0:
        text = str(img["token_text"].values[position])
        kind = TokenKind(int(img["token_kind"].values[position])).name.lower()
        raise InvalidArgument(
            "position",
            f"{position} ({text!r}, {kind}) has no stored attention row: the store keeps the rows of "
            "text tokens (extract with queries='all' to keep every row); pick a prompt or answer token",
        )
    return int(rows[0])


def row_of_patch(img: xr.Dataset, patch: int) -> int:
    """Query row of image patch token `patch` (a key position): where that patch looks. Says which
    `--queries` mode stores such rows when the store has none."""
    n_key = img.sizes["key"]
    if not 0 <= patch < n_key:
        raise InvalidArgument("patch", f"{patch} does not exist: the image has {n_key} tokens")
    kind = TokenKind(int(img["token_kind"].values[patch]))
    if kind not in IMAGE_PATCH_KINDS:
        raise InvalidArgument("patch", f"{patch} ({str(img['token_text'].values[patch])!r}) is a {kind.name.lower()} "
                              "token, not an image patch: pick a cell of the image grid")  # fmt: skip
    rows = np.flatnonzero(np.asarray(img["query_position"].values) == patch)
    if rows.size == 0:
        mode = img.attrs.get("queries", "text")
        raise InvalidArgument(
            "patch",
            f"{patch} has no stored attention row: this store was extracted with --queries {mode}, which keeps "
            "text rows only; extract with --queries text+image (or all) to see where a patch looks",
        )
    return int(rows[0])


def patch_at(img: xr.Dataset, cell: tuple[int, int], view: str = "tiles") -> int:
    """Key position of the patch at (row, col) of the image's `view` grid ("tiles" or "global")."""
    if view not in ("tiles", "global"):
        raise InvalidArgument("view", f"a patch is picked on the tiles or the global grid, not {view!r}")
    wanted = TokenKind.IMAGE_GLOBAL if view == "global" else TokenKind.IMAGE_TILE
    kinds = np.asarray(img["token_kind"].values)
    rows, cols = np.asarray(img["patch_row"].values), np.asarray(img["patch_col"].values)
    where = np.flatnonzero((kinds == int(wanted)) & (rows == cell[0]) & (cols == cell[1]))
    if where.size == 0:
        shape = (int(img[f"{'global' if view == 'global' else 'grid'}_{d}"].values) for d in ("rows", "cols"))
        raise InvalidArgument("patch", f"cell {cell} is not on the {view} grid ({'x'.join(map(str, shape))} cells)")
    return int(where[0])


@dataclass(frozen=True)
class MapResult:
    """One computed map: values over every key of the image, and its grids."""

    spec: MapSpec
    img: xr.Dataset = field(repr=False)  # the image (`select_image`)
    row: int  # stored query row
    values: xr.DataArray = field(repr=False)  # [key] float32
    _grids: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # view -> grid, built once

    @property
    def position(self) -> int:
        return int(self.img["query_position"].values[self.row])

    @property
    def token(self) -> str:
        return str(self.img["token_text"].values[self.position])

    @property
    def is_patch_query(self) -> bool:
        """True when the query is an image patch (the map says where that patch looks)."""
        return self.spec.patch is not None

    def text_values(self) -> xr.DataArray:
        """The map's values on the text keys (prompt, specials, answer)  # [key], the `key` coord
        holding their positions. What a patch query gives to the text (with a method or normalisation
        that keeps text keys: "raw" with mean or max; image-only ones give zeros here)."""
        text = kind_mask(np.asarray(self.img["token_kind"].values), TEXT_KINDS)
        values = self.values.assign_coords(key=np.arange(self.values.sizes["key"]))
        return values.isel(key=np.flatnonzero(text))

    def grid(self, view: str | None = None) -> xr.DataArray:
        """The map on an image grid (`patch_grid`): NaN where no patch token, labelled attrs.

        Built once per view (treat it as read-only)."""
        view = view or self.spec.view
        if view not in self._grids:
            grid = patch_grid(self.values, self.img, view)
            s = self.spec
            grid.attrs.update(method=s.method, k=s.k, normalise=s.normalise, query=self.row, position=self.position,
                              token=self.token, image=s.image, description=s.describe())  # fmt: skip
            self._grids[view] = grid
        return self._grids[view]

    def has_view(self, view: str) -> bool:
        dims = {"tiles": ("grid_rows", "grid_cols"), "global": ("global_rows", "global_cols")}[view]
        return all(int(self.img[d].values) > 0 for d in dims)

    @property
    def sees_no_image(self) -> bool:
        """True for a token before every image patch whose map is all zero (causal attention cannot see them)."""
        kinds = np.asarray(self.img["token_kind"].values)
        patches = np.flatnonzero((kinds == TokenKind.IMAGE_TILE) | (kinds == TokenKind.IMAGE_GLOBAL))
        return patches.size > 0 and self.position < int(patches[0]) and self.vmax == 0.0

    @property
    def vmax(self) -> float:
        """The largest value on any drawn grid (tiles and global), i.e. over the image-patch keys; 0 if none."""
        kinds = np.asarray(self.img["token_kind"].values)
        drawn = np.asarray(self.values.values)[(kinds == TokenKind.IMAGE_TILE) | (kinds == TokenKind.IMAGE_GLOBAL)]
        drawn = drawn[np.isfinite(drawn)]
        return float(drawn.max()) if drawn.size else 0.0


def compute_map(ds: xr.Dataset, spec: MapSpec) -> MapResult:
    """The map `spec` describes. Reads one stored chunk (the token's row), cached on `ds.attn`."""
    spec = spec.checked(ds)
    img = ds.attn.image(spec.image)
    row = spec.query_row(img)
    weights = ds.attn.weights(spec.image, row, spec.normalise)  # [layer, head, key]
    values = reduce_heads(weights, img, spec.method, layers=spec.layers, heads=spec.heads, k=spec.k, keys=spec.keys)
    return MapResult(spec, img, row, values)


def text_spec(spec: MapSpec) -> MapSpec:
    """`spec` with a map that keeps the text keys (for a patch query's bars over the text): raw rows,
    its mean or max over the same layers and heads (the other methods and normalisations weigh image
    keys only)."""
    return replace(spec, normalise="raw", method=spec.method if spec.method in ("mean", "max") else "mean")


def _tuple(indices) -> tuple[int, ...] | None:
    return None if indices is None else tuple(int(i) for i in indices)


def _span(sel: tuple[int, ...] | None) -> str:
    if sel is None:
        return "all"
    if len(sel) > 2 and list(sel) == list(range(sel[0], sel[-1] + 1)):
        return f"{sel[0]}-{sel[-1]}"
    return ",".join(str(i) for i in sel)


def _int(body: dict, name: str, default: int | None = None) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidArgument(name, f"must be an integer, got {_short(value)}")
    try:
        return int(value)
    except ValueError:
        raise InvalidArgument(name, f"must be an integer, got {_short(value)}") from None


def _str(body: dict, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise InvalidArgument(name, f"must be a string, got {_short(value)}")
    return value


def _index_list(value, dim: str, n: int) -> tuple[int, ...]:
    if isinstance(value, str):
        return _tuple(parse_range(value, n, dim)) or tuple(range(n))
    if not isinstance(value, list) or not value or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise InvalidArgument(dim, f"must be a non-empty list of integers or a range like '0-3', got {_short(value)}")
    return tuple(value)
