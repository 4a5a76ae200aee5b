"""Idefics3 / SmolVLM adapter; the token layout is parsed (without torch) in `idefics3_layout`."""

from __future__ import annotations

import math

import numpy as np

from attnstore.geometry import ImageLayout
from attnstore.models.base import ModelAdapter
from attnstore.models.idefics3_layout import (  # noqa: F401  (re-exported for adapters' users)
    FAKE_TOKEN,
    GLOBAL_TOKEN,
    IMAGE_TOKEN,
    ROW_COL_TOKENS,
    parse_idefics3_layout,
)


class Idefics3Adapter(ModelAdapter):
    family = "idefics3"

    def banned_token_ids(self) -> list[int]:
        return self.known_token_ids([IMAGE_TOKEN, FAKE_TOKEN, GLOBAL_TOKEN, *ROW_COL_TOKENS])

    def layout(self, input_ids: np.ndarray, inputs: dict) -> ImageLayout:
        layout = parse_idefics3_layout(self.token_strings(input_ids), image_seq_len=self.processor.image_seq_len)
        n_views = int(inputs["pixel_values"].shape[1])
        expected = len(layout.views)
        if n_views != expected:  # the token markers and the pixels must describe the same split
            raise RuntimeError(f"processor produced {n_views} image views but the prompt marks {expected}")
        return layout

    def max_image_tokens(self) -> int:
        ip = self.processor.image_processor
        longest = int(ip.size.get("longest_edge", 2048))
        tile = int(ip.max_image_size.get("longest_edge", 512))
        n = math.ceil(longest / tile)
        seq = int(self.processor.image_seq_len)
        return n * (n * (seq + 2) + 1) + (seq + 3) + 4
