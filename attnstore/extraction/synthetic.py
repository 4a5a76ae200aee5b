"""Synthetic stores at any size, without a model: for tests and benchmarks.

The token layout and geometry are real Idefics3 ones (built by the same parser
the adapter uses); the attention is random but shaped like a real model's
(causal softmax rows, a sink on the first token, heads that focus on a few
image patches). Stores are labelled `model_id="synthetic"`, random_weights=True.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image

from attnstore.geometry import ImageLayout
from attnstore.models.idefics3_layout import FAKE_TOKEN, GLOBAL_TOKEN, IMAGE_TOKEN, parse_idefics3_layout
from attnstore.records import Extraction, extend_layout, query_positions
from attnstore.store import AttnStore, StoreShape

PROMPT = "Can you describe this image?"
PROMPT_WORDS = ["ĠCan", "Ġyou", "Ġdescribe", "Ġthis", "Ġimage", "?"]
ANSWER_WORDS = (
    "A Ġman Ġin Ġa Ġred Ġjacket Ġwalks Ġa Ġdog Ġon Ġthe Ġbeach Ġnear Ġthe Ġwater . ĠThe Ġdog Ġis Ġbrown".split()
)


def idefics3_tokens(rows: int, cols: int, n_answer: int, seq: int = 64) -> tuple[list[str], int]:
    """Token strings of a SmolVLM prompt with an R x C split image, plus an answer; returns
    (tokens, number of prompt tokens)."""
    block = []
    for r in range(rows):
        for c in range(cols):
            block += [FAKE_TOKEN, f"<row_{r + 1}_col_{c + 1}>"] + [IMAGE_TOKEN] * seq
        block.append("Ċ")
    block += ["ĊĊ" if rows else "", FAKE_TOKEN, GLOBAL_TOKEN] + [IMAGE_TOKEN] * seq + [FAKE_TOKEN]
    block = [t for t in block if t]
    prompt = ["<|im_start|>", "User", ":"] + block + PROMPT_WORDS + ["<end_of_utterance>", "Ċ", "Assistant", ":"]
    answer = [ANSWER_WORDS[i % len(ANSWER_WORDS)] for i in range(n_answer)]
    return prompt + answer, len(prompt)


def token_layout(tokens: list[str], n_prompt: int, seq: int = 64) -> ImageLayout:
    """The real Idefics3 layout of `tokens` (as `idefics3_tokens` makes them): the first `n_prompt`
    parsed as the prompt, the rest answer positions."""
    return extend_layout(parse_idefics3_layout(tokens[:n_prompt], image_seq_len=seq), len(tokens) - n_prompt)


def tokens_extraction(
    tokens: list[str], n_prompt: int, layout: ImageLayout, rows: np.ndarray, attention: np.ndarray, prompt: str = PROMPT
) -> Extraction:
    """What the writer takes for `tokens` (the first `n_prompt` the prompt) with `attention`
    # [layer, head, query, key] on the query `rows`: token ids are the positions, the answer is the
    answer tokens as a tokenizer decodes them ("Ġ" a space)."""
    return Extraction(
        attention=attention,
        query_position=rows,
        token_id=np.arange(len(tokens), dtype=np.int32),
        token_text=tokens,
        layout=layout,
        prompt=prompt,
        answer="".join(tokens[n_prompt:]).replace("Ġ", " ").strip(),
    )


def synthetic_attention(
    n_layers: int, n_heads: int, rows: np.ndarray, n_key: int, image_keys: np.ndarray, rng
) -> np.ndarray:
    """Causal softmax rows with a sink and per-head focus on a few image keys.

    Returns # [layer, head, query, key] float16
    """
    logits = rng.standard_normal((n_layers, n_heads, rows.shape[0], n_key), dtype=np.float32)
    logits[..., 0] += 4.0  # attention sink on the first token
    focus = rng.choice(image_keys, size=(n_layers, n_heads, 3))  # each head looks at 3 patches
    for k in range(3):
        np.put_along_axis(logits, focus[..., k, None, None].repeat(rows.shape[0], axis=2), 5.0, axis=3)
    logits[:, :, np.arange(n_key)[None, :] > rows[:, None]] = -np.inf  # causal
    logits -= logits.max(-1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(-1, keepdims=True)
    return weights.astype(np.float16)


def synthetic_extraction(
    grid: tuple[int, int],
    n_answer: int,
    rng: np.random.Generator,
    n_layers: int = 2,
    n_heads: int = 4,
    queries: str = "text",
    seq: int = 64,
    prompt: str = PROMPT,
) -> Extraction:
    """One image's Extraction: a real SmolVLM token layout for an R x C split (`grid`), an answer of
    `n_answer` tokens, and synthetic attention on the `queries` rows, drawn a layer at a time (keeps
    the fp32 logits small at real size)."""
    tokens, n_prompt = idefics3_tokens(*grid, n_answer, seq=seq)
    layout = token_layout(tokens, n_prompt, seq)
    rows = query_positions(layout.kind, queries)
    image_keys = np.flatnonzero(layout.patch_tile >= 0)
    attention = np.concatenate(  # [layer, head, query, key]
        [synthetic_attention(1, n_heads, rows, len(tokens), image_keys, rng) for _ in range(n_layers)]
    )
    return tokens_extraction(tokens, n_prompt, layout, rows, attention, prompt)


def make_synthetic_store(
    path: str,
    n_images: int = 3,
    n_layers: int = 2,
    n_heads: int = 4,
    grids: list[tuple[int, int]] | None = None,
    n_answer: int = 12,
    image_size: tuple[int, int] = (640, 480),
    keep_bits: int = 10,
    seed: int = 0,
    queries: str = "text",
    rows: str = "synthetic",
    measure_codec: bool = False,
) -> str:
    """Write a complete synthetic store; `grids` cycles through tile grids (default 3x4, 4x3, 2x2).

    queries : which rows it holds (`attnstore.records.QUERY_MODES`).
    rows : "synthetic" (`synthetic_attention`) or "seed-style" (`seed_style_attention`: a trained model's
        statistics, rounded to 3 decimals as seed 004 stores them).
    measure_codec : choose the attention codec by measuring the first image (what extraction does); by
        default the store keeps the default codec (the same bytes whatever the machine's speed).
    """
    rng = np.random.default_rng(seed)
    attention_fn = {"synthetic": synthetic_attention, "seed-style": seed_style_attention}[rows]
    grids = grids or [(3, 4), (4, 3), (2, 2)]
    longest = max(idefics3_tokens(r, c, n_answer)[0].__len__() for r, c in grids)
    n_text = len(PROMPT_WORDS) + 7 + n_answer
    query_capacity = n_text + 2 if queries == "text" else longest
    shape = StoreShape(n_layers, n_heads, query_capacity=query_capacity, key_capacity=longest)
    attrs = {
        "model_id": "synthetic",
        "model_family": "idefics3",
        "random_weights": True,
        "keep_bits": keep_bits,
        "queries": queries,
    }
    def image(index: int) -> Extraction:
        n_rows, n_cols = grids[index % len(grids)]
        tokens, n_prompt = idefics3_tokens(n_rows, n_cols, n_answer)
        layout = token_layout(tokens, n_prompt)
        qrows = query_positions(layout.kind, queries)
        image_keys = np.flatnonzero(layout.patch_tile >= 0)
        attention = attention_fn(n_layers, n_heads, qrows, len(tokens), image_keys, rng)
        token_id = np.array([abs(hash(t)) % 49000 for t in tokens], np.int32)
        return replace(tokens_extraction(tokens, n_prompt, layout, qrows, attention), token_id=token_id)

    first = image(0) if n_images else None
    store = AttnStore.create(path, shape, attrs, first=first if measure_codec else None)
    names = [f"synthetic_{i:05d}.png" for i in range(n_images)]
    for index in store.allocate(names, names):
        result = first if index == 0 else image(index)
        store.write_image(index, result, _gradient_image(*image_size, seed=index))
    return path


def _gradient_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A picture whose colour encodes position (red = x, green = y): geometry errors show at once."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    blue = np.full_like(x, (seed * 53) % 256)
    return Image.fromarray(np.stack([x, y, blue], -1).astype(np.uint8))


def seed_style_attention(
    n_layers: int, n_heads: int, rows: np.ndarray, n_key: int, image_keys: np.ndarray, rng, decimals: int | None = 3
) -> np.ndarray:
    """Rows shaped like a trained SmolVLM's, stored the way seed 004 stores them (rounded to `decimals`).

    Measured on the seed viewer's published SmolVLM-256M attention: a sink on position 0 taking ~0.34 of a
    row (varying by head), ~0.04 of a row on the image keys spread over ~17 of them with a heavy tail,
    the rest on recent text tokens; after rounding to 3 decimals ~94 % of the values are exact zeros.
    Returns # [layer, head, query, key] float16 (causal: keys after a row's position are 0).
    """
    shape = (n_layers, n_heads, rows.shape[0])
    weights = np.zeros((*shape, n_key), np.float32)
    sink = np.clip(rng.beta(2, 2, (n_layers, n_heads, 1)) * 0.7 + rng.normal(0, 0.1, shape), 0.01, 0.95)
    weights[..., 0] = sink
    image_mass = np.clip(rng.exponential(0.043, shape), 0, 0.6)
    picks = rng.choice(image_keys, size=(*shape, 17))  # [layer, head, query, 17]
    share = rng.pareto(1.2, (*shape, 17)) + 0.05
    np.put_along_axis(weights, picks, (share / share.sum(-1, keepdims=True) * image_mass[..., None]), axis=-1)
    text = np.ones(n_key, bool)
    text[image_keys] = False
    text[0] = False
    causal = np.arange(n_key)[None, :] <= rows[:, None]  # [query, key]
    distance = np.maximum(rows[:, None] - np.arange(n_key)[None, :], 0)  # [query, key]
    reach = rng.uniform(3, 40, (*shape, 1))  # how far back each head reads
    recent = rng.exponential(1.0, weights.shape) * np.exp(-distance / reach) * (causal & text)
    rest = np.clip(1 - weights.sum(-1, keepdims=True), 0, None)
    weights += rest * recent / np.maximum(recent.sum(-1, keepdims=True), 1e-12)
    weights *= causal
    return (np.round(weights, decimals) if decimals is not None else weights).astype(np.float16)


def seed_style_extraction(
    grid: tuple[int, int] = (3, 4),
    n_answer: int = 32,
    rng: np.random.Generator | None = None,
    n_layers: int = 30,
    n_heads: int = 9,
    decimals: int | None = 3,
) -> Extraction:
    """`synthetic_extraction` with `seed_style_attention` rows (default: SmolVLM-256M's 30 x 9, a 3 x 4 image)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    like = synthetic_extraction(grid, n_answer, rng, n_layers=1, n_heads=1)
    image_keys = np.flatnonzero(like.layout.patch_tile >= 0)
    attention = np.concatenate(  # one layer at a time: the fp32 rows stay small
        [
            seed_style_attention(1, n_heads, like.query_position, like.n_key, image_keys, rng, decimals)
            for _ in range(n_layers)
        ]
    )
    return Extraction(**{**like.__dict__, "attention": attention})
