"""Where does a patch look? An image patch as the query: its map over the other patches and its
attention over the text tokens, as data and as figures (no Dash here; the panel
explorer/panels/patch_query.py and the REST route /api/patch_view call these).

The map goes through the library's one pipeline: `ViewParams.spec` with the patch as the query
(`MapSpec.patch`) -> `compute_map`; the text bars are `compute_map` of `text_spec` (raw rows, the
mean or max over the same layers and heads), restricted to the text keys. A store keeps a patch's
row only when extracted with `--queries text+image` or `all`; otherwise the library's error says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from attnstore.analysis import MapResult, MapSpec, compute_map, patch_grid, text_spec
from attnstore.errors import InvalidArgument
from attnstore.render.text import quoted
from attnstore.schema import IMAGE_PATCH_KINDS, kind_mask
from explorer import figures, views
from explorer.state import StoreState
from explorer.views import OVERS, ViewParams

TOP_TEXT = 15  # text tokens shown in the bar chart
TEXT_BAR_COLOUR = "#4c78a8"


@dataclass
class PatchView:
    """Where patch token `key` looks under a view's layers, heads, method and normalisation."""

    key: int  # the patch's sequence position (key index)
    result: MapResult  # the patch's map (compute_map)
    tiles: np.ndarray | None  # [grid_row, grid_col] (None: the image has no tile grid)
    glob: np.ndarray | None  # [global_row, global_col]
    vmax: float
    text_positions: np.ndarray  # [text] sequence positions of the text keys
    text_labels: list[str]  # [text] e.g. "'User' #1"
    text_values: np.ndarray  # [text] raw attention of the patch on each (text_spec's map)
    text_what: str  # what the bars show (text_spec's description)

    @property
    def sees_no_text(self) -> bool:
        """True when the patch gives the text nothing (causal attention: text after the patch is unseen)."""
        return not np.nan_to_num(self.text_values).any()


def patch_spec(state: StoreState, params: ViewParams, key: int) -> MapSpec:
    """The view's spec (layers, heads, method, normalisation) with patch `key` as its query."""
    state.check_image(params.image)
    if params.over not in OVERS:
        raise InvalidArgument("over", f"must be one of {', '.join(OVERS)}, not {params.over!r}")
    controls = {"layer": params.layer, "head": params.head, "mode": params.mode, "over": params.over}
    return MapSpec.from_controls(state.ds, image=params.image, position=None, patch=int(key), norm=params.norm,
                                 k=params.k, **controls)  # fmt: skip


def patch_view(state: StoreState, params: ViewParams, key: int) -> PatchView:
    """Where patch `key` looks: its map on both grids and its raw attention on the text tokens."""
    spec = patch_spec(state, params, key)
    result = compute_map(state.ds, spec)
    geom = views.geometry(state, params.image)
    tiles = patch_grid(result.values, result.img, "tiles").values if geom.tiles is not None else None
    glob = patch_grid(result.values, result.img, "global").values if geom.glob is not None else None
    text = compute_map(state.ds, text_spec(spec)).text_values()  # [text key]
    positions = np.asarray(text["key"].values, np.int64)
    meta = state.image(params.image)
    labels = [f"{quoted(meta.display[int(p)])} #{int(p)}" for p in positions]
    vmax = max((float(np.nanmax(g)) for g in (tiles, glob) if g is not None and np.isfinite(g).any()), default=0.0)
    return PatchView(int(key), result, tiles, glob, vmax, positions, labels, np.asarray(text.values, np.float32),
                     text_spec(spec).describe())  # fmt: skip


def has_patch_rows(state: StoreState, image: int) -> bool:
    """True when the image stores rows of its patch tokens (`--queries text+image` or `all`)."""
    meta = state.image(image)
    kinds = np.asarray(meta.img["token_kind"].values)
    patches = np.flatnonzero(kind_mask(kinds, IMAGE_PATCH_KINDS))
    return bool(patches.size) and bool((meta.key_query[patches] >= 0).any())


# -- figures (pure: data in, plotly figure out) -------------------------------------------------


def text_bars_figure(labels: list[str], values: np.ndarray, top: int = TOP_TEXT, title: str = "") -> go.Figure:
    """The text tokens a patch attends to most (top `top` with a weight above 0, largest first) as
    horizontal bars; text it gives nothing (e.g. after it, under causal attention) is left out.

    labels : # [text] token labels; values : # [text] attention on each
    """
    values = np.nan_to_num(np.asarray(values, np.float64), nan=0.0)
    order = np.argsort(-values, kind="stable")[:top]
    order = order[values[order] > 0]
    fig = go.Figure(
        go.Bar(
            x=np.asarray(values)[order],
            y=[labels[i] for i in order],
            orientation="h",
            marker_color=TEXT_BAR_COLOUR,
            hovertemplate="%{y}<br>%{x:.4g}<extra></extra>",
        )
    )
    fig.update_layout(
        height=max(160, 18 * len(order) + (60 if title else 40)),
        margin={"l": 40, "r": 8, "t": 28 if title else 8, "b": 32},
        title={"text": title, "font": {"size": 11}, "x": 0, "xanchor": "left"},
        showlegend=False,
        plot_bgcolor="white",
        paper_bgcolor="white",
        font={"size": 11},
        yaxis={"autorange": "reversed", "automargin": True},
        xaxis={"title": {"text": "attention of the patch"}, "gridcolor": "#eee"},
    )
    return fig


def patch_map_figure(state: StoreState, view: PatchView, image_src: str, cmap: str = "viridis") -> dict:
    """The patch's map over the image (the main figure's drawing, smaller), the patch outlined."""
    geom = views.geometry(state, view.result.spec.image)
    w, h = geom.extent
    height = int(np.clip(330 * h / w + 10, 160, 360))  # about the side column's width times the aspect
    fig = figures.overlay_figure(geom, image_src, view.tiles, view.glob, view.vmax or None, cmap=cmap,
                                 boxes=False, height_px=height)  # fmt: skip
    x, y = figures.key_centres(geom, [view.key])
    fig["data"][figures.TRACE_MARK].update(x=x, y=y)
    fig["layout"]["annotations"] = []  # the global view's caption: no room for it at this size
    return fig


def describe(state: StoreState, view: PatchView) -> str:
    """The panel's one line: which patch, what the map shows, its maximum."""
    geom = views.geometry(state, view.result.spec.image)
    return (
        f"patch token #{view.key} ({figures.describe_key(geom, view.key)}) as the query · "
        f"{view.result.spec.describe()} · max {view.vmax:.3g}"
    )
