"""Plain records passed between extraction, the store writer and the legacy readers (no torch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnstore.errors import InvalidArgument
from attnstore.geometry import ImageLayout
from attnstore.schema import IMAGE_PATCH_KINDS, TEXT_KINDS, TokenKind, kind_mask

# Which attention rows an extraction stores: "text" (prompt text, specials, answer), "text+image"
# (those plus the image patch tokens' rows: where a patch looks), "all" (every row, image markers too).
QUERY_MODES = ("text", "text+image", "all")
QUERY_KINDS = {"text": TEXT_KINDS, "text+image": (*TEXT_KINDS, *IMAGE_PATCH_KINDS)}


@dataclass
class Extraction:
    """Everything the store keeps about one (image, prompt) run."""

    attention: np.ndarray  # [layer, head, query, key] float16
    query_position: np.ndarray  # [query] int32: sequence position of each row
    token_id: np.ndarray  # [key] int32
    token_text: list[str]  # [key]
    layout: ImageLayout  # kinds + geometry per key position
    prompt: str
    answer: str

    @property
    def n_query(self) -> int:
        return int(self.query_position.shape[0])

    @property
    def n_key(self) -> int:
        return int(self.token_id.shape[0])


def query_positions(kinds: np.ndarray, mode: str = "text") -> np.ndarray:
    """Sequence positions whose attention rows are stored under `mode` (`QUERY_MODES`)  # [query] int32."""
    if mode not in QUERY_MODES:
        raise InvalidArgument("queries", f"must be one of {', '.join(QUERY_MODES)}, not '{mode}'")
    if mode == "all":
        return np.arange(kinds.shape[0], dtype=np.int32)
    return np.flatnonzero(kind_mask(kinds, QUERY_KINDS[mode])).astype(np.int32)


def extend_layout(layout: ImageLayout, n_generated: int) -> ImageLayout:
    """Append `n_generated` answer positions (no geometry) to a prompt layout."""
    pad = lambda a, v: np.concatenate([a, np.full((n_generated, *a.shape[1:]), v, a.dtype)])  # noqa: E731
    layout.kind = pad(layout.kind, int(TokenKind.GENERATED))
    layout.patch_tile = pad(layout.patch_tile, -1)
    layout.patch_row = pad(layout.patch_row, -1)
    layout.patch_col = pad(layout.patch_col, -1)
    layout.patch_box = pad(layout.patch_box, np.nan)
    return layout
