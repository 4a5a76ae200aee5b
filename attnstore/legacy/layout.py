"""A seed folder's token layout and image geometry, rebuilt from its token text (tile markers, else a grid)."""

from __future__ import annotations

import re

import numpy as np

from attnstore.errors import AttnstoreError, InvalidArgument
from attnstore.geometry import ImageLayout, finish_grids, global_view, place_view, tile_views
from attnstore.models.idefics3_layout import GLOBAL_TOKEN, IMAGE_TOKEN, parse_idefics3_layout

DEFAULT_GRID = (3, 4)  # the seeds' fixed grid, used only when the tokens carry no tile markers
DEFAULT_TILE_TOKENS = 64  # 8 x 8 patch tokens per 512 px tile (SmolVLM)
_ROW_COL = re.compile(r"^<row_\d+_col_\d+>$")


def parse_grid(spec: str | None) -> tuple[int, int] | None:
    """'3x4' -> (3, 4)."""
    if spec is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", spec)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise InvalidArgument("grid", f"'{spec}' should look like ROWSxCOLS, e.g. 3x4")
    return int(match[1]), int(match[2])


def clean(token: str) -> str:
    return token.replace("Ġ", " ").replace("Ċ", "\n").replace("▁", " ")


def prompt_length(tokens: list[str]) -> int | None:
    """Number of prompt tokens: everything up to the last 'Assistant:' of the chat template."""
    ends = np.cumsum([len(clean(t)) for t in tokens])
    at = "".join(clean(t) for t in tokens).rfind("Assistant:")
    if at < 0:
        return None
    return int(np.searchsorted(ends, at + len("Assistant:"))) + 1


def legacy_layout(
    tokens: list[str], grid: tuple[int, int] | None = None, tile_tokens: int = DEFAULT_TILE_TOKENS
) -> ImageLayout:
    """Kinds and geometry from the `<row_r_col_c>` / `<global-img>` markers, else from `grid`.

    Without markers, the `<image>` tokens are taken in order: grid rows x cols tiles of
    `tile_tokens` each (row-major), then one global view of `tile_tokens` if tokens remain.
    """
    has_markers = any(_ROW_COL.match(t) or t == GLOBAL_TOKEN for t in tokens)
    if has_markers:
        return parse_idefics3_layout(tokens, image_seq_len=_image_run(tokens))
    layout = parse_idefics3_layout(tokens, image_seq_len=tile_tokens)  # kinds only: no markers, no views
    rows, cols = grid or DEFAULT_GRID
    positions = np.flatnonzero(np.array(tokens) == IMAGE_TOKEN)
    n_tiles = rows * cols * tile_tokens
    if positions.size not in (n_tiles, n_tiles + tile_tokens):
        raise AttnstoreError(
            f"the tokens hold {positions.size} {IMAGE_TOKEN} tokens and no tile markers; a {rows}x{cols} grid of "
            f"{tile_tokens}-token tiles needs {n_tiles} (+{tile_tokens} global): pass the right --grid ROWSxCOLS"
        )
    side = int(np.sqrt(tile_tokens))
    views = tile_views(rows, cols, side, side)
    if positions.size > n_tiles:
        views.append(global_view(side, side))
    for i, view in enumerate(views):
        place_view(layout, view, positions[i * tile_tokens : (i + 1) * tile_tokens])
    return finish_grids(layout)


def _image_run(tokens: list[str]) -> int:
    """Length of the `<image>` run after the first view marker (the image_seq_len)."""
    start = next(i for i, t in enumerate(tokens) if _ROW_COL.match(t) or t == GLOBAL_TOKEN) + 1
    end = start
    while end < len(tokens) and tokens[end] == IMAGE_TOKEN:
        end += 1
    return end - start
