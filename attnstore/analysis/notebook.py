"""Attention in a notebook: the explorer's figures from `ds.attn` (`show`, `show_heads`,
`show_layers`, `plot_overlay`).

One drawing path: the map is `compute_map` of the explorer's `MapSpec.from_controls`, placed on the
image's grids by `patch_grid`, coloured to `attnstore.render.scale.colour_top`, and drawn by the
figure factories the explorer itself uses (`attnstore.render.figures`). Plotly is imported here,
on the first figure, never by `import attnstore`.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass

import numpy as np
import xarray as xr

from attnstore.analysis.grid import patch_grid
from attnstore.analysis.keys import image_key_mask
from attnstore.analysis.maps import MapResult, MapSpec, compute_map
from attnstore.analysis.tokens import find_token
from attnstore.render.geometry import FigureGeometry, figure_geometry
from attnstore.render.raster import png_bytes
from attnstore.render.scale import colour_top, colourbar_title, negligible, share_label
from attnstore.render.text import display_text, is_special, tokenizer_style
from attnstore.schema import TokenKind

STRIP_LINE = 110  # characters of token text per line of the figure's token strip
PATCH_KINDS = (int(TokenKind.IMAGE_TILE), int(TokenKind.IMAGE_GLOBAL))


@dataclass
class MapView:
    """A map as the explorer draws it  # tiles [grid_row, grid_col], glob [global_row, global_col]."""

    result: MapResult
    geom: FigureGeometry
    tiles: np.ndarray | None
    glob: np.ndarray | None
    share: float  # the token's image share over the map's layers and heads (0..1)
    cmax: float  # the top of the colour range (`colour_top`)

    @property
    def vmax(self) -> float:
        parts = [float(np.nanmax(g)) for g in (self.tiles, self.glob) if g is not None and np.isfinite(g).any()]
        return max(parts) if parts else 0.0


def view_spec(ds: xr.Dataset, token: str | int, image: int, layer: int | None, head: int | None,
              method: str | None, normalise: str, k: int, occurrence: int) -> MapSpec:  # fmt: skip
    """The explorer's spec of a view (`MapSpec.from_controls`): one head when `layer` and `head` are
    given and no `method`; else `method` (default entropy_topk) over the heads of `layer`, the
    layers of `head`, or everything when neither is given."""
    img = ds.attn.image(image)
    row = int(token) if isinstance(token, (int, np.integer)) else find_token(img, token, occurrence)
    position = int(img["query_position"].values[row])
    if method in (None, "head") and layer is not None and head is not None:
        mode, over = "head", "heads"
    else:
        mode = method if method not in (None, "head") else "entropy_topk"
        over = "heads" if layer is not None else ("layers" if head is not None else "all")
    return MapSpec.from_controls(ds, image=image, position=position, layer=layer or 0, head=head or 0,
                                 mode=mode, over=over, norm=normalise, k=k)  # fmt: skip


def map_view(ds: xr.Dataset, spec: MapSpec, scale: str = "own") -> MapView:
    """`compute_map` of `spec` on both grids of its image, with the explorer's honest colour range."""
    result = compute_map(ds, spec)
    img = result.img
    geom = ds.attn.cached("figure-geometry", lambda: figure_geometry(img, img.sizes["pixel_x"], img.sizes["pixel_y"]),
                          key=spec.image)  # fmt: skip
    tiles = patch_grid(result.values, img, "tiles").values if geom.tiles is not None else None
    glob = patch_grid(result.values, img, "global").values if geom.glob is not None else None
    share = token_share(ds, spec, result.row)
    view = MapView(result, geom, tiles, glob, share, 1.0)
    top = shared_top(ds, spec.image, result.row, spec.normalise) if scale == "shared" or negligible(share) else None
    view.cmax = colour_top(view.vmax, share, top, scale)
    return view


def token_share(ds: xr.Dataset, spec: MapSpec, row: int) -> float:
    """The token's image share over the spec's layers and heads (their mean, as the explorer's status)."""
    share = ds.attn.image_share(row, spec.image).values  # [layer, head]
    layers = list(spec.layers) if spec.layers is not None else slice(None)
    heads = list(spec.heads) if spec.heads is not None else slice(None)
    return float(share[layers][:, heads].mean())


def shared_top(ds: xr.Dataset, image: int, row: int, norm: str) -> float:
    """The largest value any layer's head gives an image patch (the token's shared colour scale)."""
    weights = ds.attn.weights(image, row, norm).values  # [layer, head, key]
    values = weights[..., image_key_mask(ds.attn.image(image)).values]  # [layer, head, patch]
    return float(np.nanmax(values)) if values.size and np.isfinite(values).any() else 0.0


def picture_uri(img: xr.Dataset) -> str:
    """The image's display copy as a PNG data URI (the notebook has no server to fetch it from)."""
    pixels = np.asarray(img["pixels"].values)  # [y, x, rgb] uint8
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode()


def token_strip(img: xr.Dataset, position: int) -> str:
    """The image's text tokens as one plotly-HTML line block, the selected one marked; each run of
    patch tokens shown as one [image] chip, marker tokens (<row_1_col_2>, <|im_start|>) left out."""
    texts = [str(t) for t in img["token_text"].values]
    kinds = np.asarray(img["token_kind"].values)
    style = tokenizer_style(texts)
    parts, width, in_image = [], 0, False
    for pos, (text, kind) in enumerate(zip(texts, kinds)):
        if int(kind) in PATCH_KINDS:
            if not in_image:
                parts.append("<span style='color:#54a24b'>[image]</span>")
                width += 7
            in_image = True
            continue
        if is_special(text) and pos != position:
            continue
        in_image = False
        shown = display_text(text, style).replace("\n", "⏎")
        width += len(shown)
        shown = html.escape(shown)
        if pos == position:
            shown = f"<b><span style='color:#e4572e'>[{shown.strip() or '␣'}]</span></b>"
        if width > STRIP_LINE:
            parts.append("<br>")
            width = len(shown)
        parts.append(shown)
    return "".join(parts)


def show(ds: xr.Dataset, token: str | int, image: int | str = 0, layer: int | None = None, head: int | None = None,
         method: str | None = None, normalise: str = "raw", k: int = 10, occurrence: int = 0, scale: str = "own",
         cmap: str = "viridis", opacity: float = 0.6, grid_lines: bool = True, boxes: bool = True):  # fmt: skip
    """The explorer's main figure of one view (a plotly Figure): the map over the image (tiles and
    the global view), hover with tile, sub-patch, key and value, object boxes, the token strip."""
    import plotly.graph_objects as go

    from attnstore.render.figures import overlay_figure

    index = ds.attn.image_index(image)
    spec = view_spec(ds, token, index, layer, head, method, normalise, k, occurrence)
    view = map_view(ds, spec, scale)
    img = view.result.img
    fig = overlay_figure(view.geom, picture_uri(img), view.tiles, view.glob, view.cmax, cmap=cmap, opacity=opacity,
                         grid_lines=grid_lines, boxes=boxes, colourbar=colourbar_title(view.share, scale))  # fmt: skip
    strip = token_strip(img, view.result.position)
    lines = strip.count("<br>") + 2
    title = f"{img['image_name'].values} · {spec.describe()} · {share_label(view.share)}"
    layout = fig["layout"]
    layout["margin"]["t"] = 26 + 16 * lines
    layout["height"] += layout["margin"]["t"]
    layout["annotations"].append({"text": f"<b>{html.escape(title)}</b><br>{strip}", "xref": "paper", "yref": "paper",
                                  "x": 0, "y": 1, "yanchor": "bottom", "xanchor": "left", "align": "left",
                                  "showarrow": False, "font": {"size": 12}, "yshift": 4})  # fmt: skip
    return go.Figure(fig)


def show_heads(ds: xr.Dataset, token: str | int, image: int | str = 0, layer: int = 0, normalise: str = "raw",
               occurrence: int = 0, scale: str = "own", cmap: str = "viridis", columns: int = 4):  # fmt: skip
    """The explorer's gallery of one layer's heads for a token (a plotly Figure): each head's tile
    grid on its own honest colour top (`head_tops`), its image share in the title."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from attnstore.render.colors import plotly_colorscale
    from attnstore.render.figures import head_tops

    index = ds.attn.image_index(image)
    img = ds.attn.image(index)
    row = int(token) if isinstance(token, (int, np.integer)) else find_token(img, token, occurrence)
    weights = ds.attn.weights(index, row, normalise)  # [layer, head, key]
    grids = patch_grid(weights.isel(layer=layer), img).values  # [head, grid_row, grid_col]
    share = ds.attn.image_share(row, index).values[layer]  # [head]
    top = shared_top(ds, index, row, normalise)
    tops = head_tops(grids, share, top, scale)
    n = grids.shape[0]
    rows = math.ceil(n / columns)
    titles = [f"head {h} · {share_label(float(share[h]))}" for h in range(n)]
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=titles, horizontal_spacing=0.02,
                        vertical_spacing=0.08)  # fmt: skip
    for h in range(n):
        fig.add_trace(go.Heatmap(z=grids[h], zmin=0, zmax=tops[h], colorscale=plotly_colorscale(cmap), showscale=False,
                                 hovertemplate=f"head {h}<br>cell %{{y}},%{{x}}<br>value %{{z:.4g}}<extra></extra>"),
                      row=h // columns + 1, col=h % columns + 1)  # fmt: skip
    fig.update_annotations(font_size=12)  # the head titles: smaller than the figure's title
    fig.update_yaxes(autorange="reversed", visible=False, scaleanchor="x")
    fig.update_xaxes(visible=False)
    fig.update_layout(height=200 * rows + 60, margin={"l": 4, "r": 4, "t": 60, "b": 4}, plot_bgcolor="white",
                      title={"text": f"layer {layer}: every head (row {row})", "font": {"size": 13}})  # fmt: skip
    return fig


class Figures(list):
    """Several plotly figures shown one under the other in a notebook cell."""

    def _ipython_display_(self) -> None:
        from IPython.display import display

        for fig in self:
            display(fig)


def show_layers(ds: xr.Dataset, token: str | int, image: int | str = 0, layer: int = 0, head: int = 0,
                metric: str = "share", occurrence: int = 0) -> Figures:  # fmt: skip
    """The explorer's layer panel for a token: image share per layer (bars: mean over heads; line:
    `head`) and the layer x head chart of `metric` ("share" or "entropy")."""
    from attnstore.render.figures import matrix_figure, share_figure

    index = ds.attn.image_index(image)
    share = np.asarray(ds.attn.image_share(token, index, occurrence).values, np.float32)  # [layer, head]
    values = share if metric == "share" else np.asarray(ds.attn.entropy(token, index, occurrence).values, np.float32)
    return Figures([share_figure(share, layer, head), matrix_figure(values, metric, layer, head)])


def plot_overlay(ds: xr.Dataset, token: str | int, image: int | str = 0, layer: int | None = None,
                 head: int | None = None, method: str | None = None, normalise: str = "raw", k: int = 10,
                 occurrence: int = 0, scale: str = "own", cmap: str = "viridis", opacity: float = 0.6,
                 ax=None):  # fmt: skip
    """A static matplotlib figure of the same map as `show` (papers): the image, the tile grid's
    cells placed by the store's geometry, the same values and colour range. Returns the Axes."""
    import matplotlib.pyplot as plt

    index = ds.attn.image_index(image)
    view = map_view(ds, view_spec(ds, token, index, layer, head, method, normalise, k, occurrence), scale)
    ax = ax if ax is not None else plt.figure(figsize=(6, 6 * view.geom.extent[1] / view.geom.extent[0])).gca()
    pixels = np.asarray(view.result.img["pixels"].values)
    w, h = view.geom.extent
    ax.imshow(pixels, extent=(0, view.geom.width, view.geom.height, 0))
    mesh = None
    for panel, values in ((view.geom.tiles, view.tiles), (view.geom.glob, view.glob)):
        if panel is None or values is None:
            continue
        if panel is view.geom.glob and view.geom.tiles is not None:
            g = panel
            ax.imshow(pixels, extent=(g.x0, g.x0 + g.width, g.y0 + g.height, g.y0))
        mesh = ax.pcolormesh(panel.x_edges, panel.y_edges, np.ma.masked_invalid(values), cmap=cmap, vmin=0.0,
                             vmax=view.cmax, alpha=opacity)  # fmt: skip
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    if mesh is not None:
        ax.figure.colorbar(mesh, ax=ax, fraction=0.04, label=colourbar_title(view.share, scale))
    ax.set_title(f"{view.result.token.strip()!r} · {view.result.spec.describe()}", fontsize=10)
    return ax
