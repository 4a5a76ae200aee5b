"""Idefics3 / SmolVLM token layout -> kinds and geometry of every position (no torch).

Token layout of one image split into R x C tiles:
    <fake_token_around_image><row_r_col_c> + S x <image>   for each tile, rows ended by "\\n"
    "\\n" <fake_token_around_image><global-img> + S x <image> <fake_token_around_image>
with S = image_seq_len (a square grid of patches per view). R and C are read from
the <row_r_col_c> markers the processor wrote for *this* image.
"""

from __future__ import annotations

import math
import re

import numpy as np

from attnstore.geometry import ImageLayout, empty_layout, finish_grids, global_view, place_view, tile_views
from attnstore.schema import TokenKind

IMAGE_TOKEN = "<image>"
FAKE_TOKEN = "<fake_token_around_image>"
GLOBAL_TOKEN = "<global-img>"
END_OF_UTTERANCE = "<end_of_utterance>"
MAX_TILE_MARKERS = 6  # the processor defines <row_1_col_1> .. <row_6_col_6>
ROW_COL_TOKENS = [f"<row_{r}_col_{c}>" for r in range(1, MAX_TILE_MARKERS + 1) for c in range(1, MAX_TILE_MARKERS + 1)]
_ROW_COL = re.compile(r"^<row_(\d+)_col_(\d+)>$")
CHAT_SPECIALS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", END_OF_UTTERANCE)

# SmolVLM's chat template: "<|im_start|>User:<image>PROMPT<end_of_utterance>\nAssistant:"
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def parse_idefics3_layout(tokens: list[str], image_seq_len: int) -> ImageLayout:
    """Kinds and geometry of every position, from the token strings the processor produced."""
    side = math.isqrt(image_seq_len)
    if side * side != image_seq_len:
        raise ValueError(f"image_seq_len {image_seq_len} is not a square grid")
    kinds = np.array([_text_kind(t) for t in tokens], dtype=np.int8)
    layout = empty_layout(kinds)
    starts = _view_starts(tokens)  # [(position of first patch, tile (r, c) or None for global)]
    tiles = [rc for _, rc in starts if rc is not None]
    rows = max((r for r, _ in tiles), default=0) + (1 if tiles else 0)
    cols = max((c for _, c in tiles), default=0) + (1 if tiles else 0)
    by_tile = {v.tile: v for v in tile_views(rows, cols, side, side)}
    for first, rc in starts:
        view = global_view(side, side) if rc is None else by_tile[rc[0] * cols + rc[1]]
        positions = np.arange(first, first + image_seq_len)
        if positions[-1] >= len(tokens) or any(tokens[p] != IMAGE_TOKEN for p in positions):
            raise ValueError("image block shorter than image_seq_len: the prompt was truncated")
        place_view(layout, view, positions)
    _mark_image_specials(layout, tokens)
    return finish_grids(layout)


def _text_kind(token: str) -> int:
    if token in CHAT_SPECIALS:
        return int(TokenKind.SPECIAL)
    if token in (IMAGE_TOKEN, FAKE_TOKEN, GLOBAL_TOKEN) or _ROW_COL.match(token):
        return int(TokenKind.IMAGE_SPECIAL)
    return int(TokenKind.PROMPT_TEXT)


def _view_starts(tokens: list[str]) -> list[tuple[int, tuple[int, int] | None]]:
    starts = []
    for pos, tok in enumerate(tokens):
        match = _ROW_COL.match(tok)
        if match:
            starts.append((pos + 1, (int(match[1]) - 1, int(match[2]) - 1)))
        elif tok == GLOBAL_TOKEN:
            starts.append((pos + 1, None))
    return starts


def _mark_image_specials(layout: ImageLayout, tokens: list[str]) -> None:
    """Newlines between tile rows belong to the image block, not to the prompt text."""
    fake = [i for i, t in enumerate(tokens) if t == FAKE_TOKEN]
    if not fake:
        return
    span = np.arange(fake[0], fake[-1] + 1)
    text_in_block = span[layout.kind[span] == int(TokenKind.PROMPT_TEXT)]
    layout.kind[text_in_block] = int(TokenKind.IMAGE_SPECIAL)
