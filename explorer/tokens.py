"""The token strip's content: display text of BPE tokens and the grouping of image tokens into chips.

Pure functions over the store's per-key arrays of one image. The browser side
(assets/explorer.js) only draws the items; selection is always by token index
(sequence position), never by text, so repeated words stay distinct.
"""

from __future__ import annotations

import numpy as np

from attnstore.render.text import display_text, tokenizer_style
from attnstore.schema import TokenKind

IMAGE_KINDS = (int(TokenKind.IMAGE_TILE), int(TokenKind.IMAGE_GLOBAL), int(TokenKind.IMAGE_SPECIAL))
PATCH_KINDS = (int(TokenKind.IMAGE_TILE), int(TokenKind.IMAGE_GLOBAL))
TOKENS_PER_CHIP_ROW = 16  # image tokens without geometry, laid out in sequence order when their chip opens


def chip_label(tile: int, kind: int, tile_cols: int) -> str:
    """Label of the chip of one tile (1-based row/col, like the model's <row_r_col_c> markers) or of the global view."""
    if kind == int(TokenKind.IMAGE_GLOBAL):
        return "global image"
    if tile < 0:  # image tokens without geometry (sequence-only mode)
        return "image tokens"
    row, col = divmod(tile, max(tile_cols, 1))
    return f"tile {row + 1},{col + 1}"


def strip_items(
    token_text: list[str],
    token_kind: np.ndarray,
    patch_tile: np.ndarray,
    patch_row: np.ndarray,
    patch_col: np.ndarray,
    query_position: np.ndarray,
    tile_cols: int,
) -> list[dict]:
    """Items of the token strip, in sequence order.

    Parameters
    ----------
    token_text, token_kind, patch_tile, patch_row, patch_col : per key, valid extent only.  # [key]
    query_position : sequence position of each stored query row.  # [query]
    tile_cols : tiles per row (for chip labels).

    Returns
    -------
    list of dicts, JSON-ready:
      ``{"t": "tok", "k": key, "s": display text, "q": query row or -1, "p": "prompt"|"answer"|"special"}``
      ``{"t": "br"}`` a line break inside the image block (tile rows)
      ``{"t": "chip", "label": str, "kind": "tile"|"global", "tile": int, "keys": [...], "cells": [[key, r, c], ...]}``
      one chip per tile (its marker tokens + its patch tokens; cells are patch positions in the tile).
    """
    kinds = np.asarray(token_kind)
    style = tokenizer_style([str(t) for t, k in zip(token_text, kinds) if int(k) not in IMAGE_KINDS])
    query_of = np.full(kinds.shape[0], -1, np.int64)
    query_of[np.asarray(query_position)] = np.arange(len(query_position))
    items: list[dict] = []
    pending: list[int] = []  # image marker tokens waiting for the next chip
    key = 0
    while key < kinds.shape[0]:
        kind = int(kinds[key])
        if kind in PATCH_KINDS:
            key = _add_chip(items, pending, key, kinds, patch_tile, patch_row, patch_col, tile_cols)
            pending = []
            continue
        text = str(token_text[key])
        if kind == int(TokenKind.IMAGE_SPECIAL):
            if display_text(text, style).strip("\n") == "":  # newline between tile rows: keep the grid look
                items.append({"t": "br"})
            else:
                pending.append(key)
            key += 1
            continue
        if pending:  # markers after the last chip (closing <fake_token_around_image>)
            _attach_trailing(items, pending)
            pending = []
        items.append(_token_item(key, text, kind, int(query_of[key]), style))
        key += 1
    if pending:
        _attach_trailing(items, pending)
    return items


def _token_item(key: int, text: str, kind: int, query: int, style: str) -> dict:
    part = {int(TokenKind.GENERATED): "answer", int(TokenKind.PROMPT_TEXT): "prompt"}.get(kind, "special")
    return {"t": "tok", "k": key, "s": display_text(text, style), "q": query, "p": part}


def _add_chip(items, pending, start, kinds, patch_tile, patch_row, patch_col, tile_cols) -> int:
    """Append the chip of the patch run starting at `start`; returns the first key after the run."""
    kind, tile = int(kinds[start]), int(patch_tile[start])
    end = start
    while end < kinds.shape[0] and int(kinds[end]) == kind and int(patch_tile[end]) == tile:
        end += 1
    rows, cols = np.asarray(patch_row[start:end]), np.asarray(patch_col[start:end])
    if (rows < 0).any():  # no geometry (sequence-only mode): the tokens in sequence order, a picker only
        rows, cols = np.divmod(np.arange(end - start), TOKENS_PER_CHIP_ROW)
    rows, cols = rows - rows.min(), cols - cols.min()  # position inside the tile
    items.append(
        {
            "t": "chip",
            "label": chip_label(tile, kind, tile_cols),
            "kind": "global" if kind == int(TokenKind.IMAGE_GLOBAL) else "tile",
            "tile": tile,
            "keys": [*pending, *range(start, end)],
            "cells": [[k, int(r), int(c)] for k, r, c in zip(range(start, end), rows, cols)],
        }
    )
    return end


def _attach_trailing(items: list[dict], pending: list[int]) -> None:
    chips = [item for item in items if item["t"] == "chip"]
    if chips:
        chips[-1]["keys"] += pending
