"""In-memory single-image Datasets (the shape `select_image` returns) with real Idefics3 geometry."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from attnstore.extraction.synthetic import idefics3_tokens, token_layout
from attnstore.records import query_positions


def make_image(
    rng: np.random.Generator,
    rows: int = 2,
    cols: int = 3,
    n_layers: int = 3,
    n_heads: int = 4,
    seq: int = 4,
    n_answer: int = 6,
    queries: str = "text",
) -> xr.Dataset:
    """One image: random softmax-like rows (not causal) over every key, real token layout."""
    tokens, n_prompt = idefics3_tokens(rows, cols, n_answer, seq=seq)
    layout = token_layout(tokens, n_prompt, seq)
    qpos = query_positions(layout.kind, queries)
    n_key = len(tokens)
    logits = rng.standard_normal((n_layers, n_heads, qpos.size, n_key)).astype(np.float32) * 2
    att = np.exp(logits)
    att /= att.sum(-1, keepdims=True)  # [layer, head, query, key]
    return xr.Dataset(
        {
            "attention": (("layer", "head", "query", "key"), att),
            "query_position": (("query",), qpos.astype(np.int32)),
            "token_text": (("key",), np.array(tokens, dtype=object)),
            "token_kind": (("key",), layout.kind),
            "patch_tile": (("key",), layout.patch_tile),
            "patch_row": (("key",), layout.patch_row),
            "patch_col": (("key",), layout.patch_col),
            "patch_box": (("key", "box"), layout.patch_box),
            "tile_rows": layout.tile_rows,
            "tile_cols": layout.tile_cols,
            "grid_rows": layout.grid_rows,
            "grid_cols": layout.grid_cols,
            "global_rows": layout.global_rows,
            "global_cols": layout.global_cols,
            "n_query": qpos.size,
            "n_key": n_key,
        },
        coords={"layer": np.arange(n_layers), "head": np.arange(n_heads)},
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def image_factory():
    return make_image
