"""Small stores with the edge cases the analyses must handle: images of different sizes (so every
image but the largest is padded), an image without answer tokens, one without image tokens, POPE
labels; and a one-head store."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from attnstore.extraction.synthetic import ANSWER_WORDS, PROMPT_WORDS, idefics3_tokens, token_layout, tokens_extraction
from attnstore.records import query_positions
from attnstore.store import AttnStore, StoreShape

# (tile rows, tile cols, answer tokens, has image tokens, pope_correct)
IMAGES = [
    (2, 3, 5, True, 1),
    (3, 2, 0, True, 1),  # no answer tokens
    (0, 0, 4, False, 0),  # no image tokens
    (2, 2, 6, True, 0),
    (1, 2, 3, True, 1),
    (2, 3, 7, True, 0),
    (1, 1, 5, True, 1),
]
SEQ = 4  # image tokens per tile: small grids, fast tests


def tokens_of(rows: int, cols: int, n_answer: int, has_image: bool) -> tuple[list[str], int]:
    if has_image:
        return idefics3_tokens(rows, cols, n_answer, seq=SEQ)
    prompt = ["<|im_start|>", "User", ":"] + PROMPT_WORDS + ["<end_of_utterance>", "Ċ", "Assistant", ":"]
    return prompt + [ANSWER_WORDS[i % len(ANSWER_WORDS)] for i in range(n_answer)], len(prompt)


def attention(rng, n_layers: int, n_heads: int, n_query: int, n_key: int) -> np.ndarray:
    """Softmax rows with a heavy first key and a few peaked keys  # [layer, head, query, key] float16."""
    logits = rng.standard_normal((n_layers, n_heads, n_query, n_key)) * 1.5
    logits[..., 0] += 3.0
    peaks = rng.integers(0, n_key, size=(n_layers, n_heads, 1, 2))
    np.put_along_axis(logits, np.broadcast_to(peaks, (n_layers, n_heads, n_query, 2)), 4.0, axis=-1)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    return (w / w.sum(-1, keepdims=True)).astype(np.float16)


def write_store(
    path: str, images=IMAGES, n_layers: int = 3, n_heads: int = 4, seed: int = 0, prefix: str = "img"
) -> str:
    rng = np.random.default_rng(seed)
    layouts = []
    for rows, cols, n_answer, has_image, _ in images:
        tokens, n_prompt = tokens_of(rows, cols, n_answer, has_image)
        layout = token_layout(tokens, n_prompt, SEQ)
        layouts.append((tokens, n_prompt, layout, query_positions(layout.kind)))
    shape = StoreShape(
        n_layers,
        n_heads,
        query_capacity=max(q.size for *_, q in layouts),
        key_capacity=max(len(t) for t, *_ in layouts),
    )
    store = AttnStore.create(
        path,
        shape,
        {"model_id": "test", "model_family": "idefics3", "random_weights": True, "keep_bits": 10, "queries": "text"},
    )
    store.ensure_extras({"pope_correct": ("int32", "1 if correct"), "pope_label": ("str", "yes / no")})
    names = [f"{prefix}_{i}.png" for i in range(len(images))]
    for index, (tokens, n_prompt, layout, qpos) in zip(store.allocate(names, names), layouts):
        weights = attention(rng, n_layers, n_heads, qpos.size, len(tokens))
        result = tokens_extraction(tokens, n_prompt, layout, qpos, weights, prompt="Is there a dog?")
        correct = images[index][4]
        extra = {"pope_correct": correct, "pope_label": "yes" if index % 2 else "no"}
        store.write_image(index, result, Image.new("RGB", (64, 48), (index * 30, 90, 160)), extra=extra)
    return path


@pytest.fixture(scope="session")
def edge_store(tmp_path_factory) -> str:
    return write_store(str(tmp_path_factory.mktemp("studies") / "edge.zarr"))


@pytest.fixture(scope="session")
def one_head_store(tmp_path_factory) -> str:
    return write_store(str(tmp_path_factory.mktemp("studies") / "one_head.zarr"), n_layers=2, n_heads=1, seed=3)


@pytest.fixture(scope="session")
def other_store(tmp_path_factory) -> str:
    """Another run over the first four images of `edge_store` (same names and tokens), plus one image only it has."""
    images = IMAGES[:4] + [(1, 1, 2, True, 1)]
    path = str(tmp_path_factory.mktemp("studies") / "other.zarr")
    write_store(path, images, seed=7)
    return path
