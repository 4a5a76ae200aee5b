"""Idefics3 / SmolVLM adapter and its offline random-weight builder.

Token layout of one image split into R x C tiles (DESIGN.md §3):
    <fake_token_around_image><row_r_col_c> + S x <image>   for each tile, rows ended by "\\n"
    "\\n" <fake_token_around_image><global-img> + S x <image> <fake_token_around_image>
with S = image_seq_len (a square grid of patches per view). R and C are read from
the <row_r_col_c> markers the processor wrote for *this* image.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from attnstore.geometry import ImageLayout, empty_layout, finish_grids, global_view, place_view, tile_views
from attnstore.models.base import RANDOM_WEIGHTS_KEY, ModelAdapter
from attnstore.models.tiny_tokenizer import build_bpe_tokenizer, text_config_kwargs
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


class Idefics3Adapter(ModelAdapter):
    family = "idefics3"
    model_types = ("idefics3", "smolvlm")

    def attention_modules(self) -> list[torch.nn.Module]:
        return [layer.self_attn for layer in self.model.model.text_model.layers]

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


# -- offline random-weight builder ---------------------------------------------------------

TINY_DIMS = dict(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vision_hidden=32, vision_layers=1)
# SmolVLM-256M's text dims (DESIGN.md §3); the vision tower stays small (it does not change the store).
REAL_DIMS = dict(hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, vision_hidden=64, vision_layers=1)


def build_random_idefics3(out_dir: str | Path, dims: dict | None = None, seed: int = 0) -> Path:
    """Save a random-weight Idefics3 + a real Idefics3Processor (SmolVLM geometry) to `out_dir`.

    The token layout and tile geometry are the real ones (512 px tiles, 8 x 8
    patches each, images upscaled to longest edge 2048); only the weights are random.
    """
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
        LlamaConfig,
    )
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig

    dims = {**TINY_DIMS, **(dims or {})}
    specials = [*CHAT_SPECIALS, FAKE_TOKEN, IMAGE_TOKEN, GLOBAL_TOKEN, *ROW_COL_TOKENS]
    tokenizer = build_bpe_tokenizer(
        specials,
        bos_token="<|im_start|>",
        eos_token=END_OF_UTTERANCE,
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 2048},
        max_image_size={"longest_edge": 512},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        resample=1,  # LANCZOS, as SmolVLM
    )
    processor = Idefics3Processor(image_processor, tokenizer, image_seq_len=64, chat_template=SMOLVLM_CHAT_TEMPLATE)
    ids = tokenizer.convert_tokens_to_ids
    text_config = LlamaConfig(
        **text_config_kwargs(dims, tokenizer, "<|im_start|>", END_OF_UTTERANCE, "<|endoftext|>", max_positions=8192)
    )
    vision_config = Idefics3VisionConfig(
        hidden_size=dims["vision_hidden"],
        intermediate_size=2 * dims["vision_hidden"],
        num_hidden_layers=dims["vision_layers"],
        num_attention_heads=2,
        patch_size=16,
        image_size=512,
    )
    config = Idefics3Config(
        text_config=text_config, vision_config=vision_config, scale_factor=4, image_token_id=ids(IMAGE_TOKEN)
    )
    setattr(config, RANDOM_WEIGHTS_KEY, True)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids(END_OF_UTTERANCE)
    model.generation_config.pad_token_id = ids("<|endoftext|>")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
