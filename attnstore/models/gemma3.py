"""Gemma 3 adapter (`Gemma3ForConditionalGeneration`).

Token layout of one image (Gemma 3 chat template; the processor expands <start_of_image>):
    <bos><start_of_turn>user\\n "\\n\\n" <start_of_image> <image_soft_token> x N <end_of_image> "\\n\\n"
    PROMPT <end_of_turn>\\n<start_of_turn>model\\n
The processor squashes the picture to one fixed square (no crop, no pad); the SigLIP tower's
patch grid is average-pooled to an n x n token grid (N = mm_tokens_per_image = n * n),
row-major. With pan-and-scan enabled the processor also cuts the picture into 2..k crops
along its long side and adds one such block per crop after the full view
("Here is the original image <block> and here are some crops ... <block> <block>"): the full
view is then the global view and the crops are tiles. n and the number of crops are read from
the prompt's image blocks and `pixel_values`; where the crops lie needs the original size,
which `prepare` records.

Image tokens attend bidirectionally within their own block in the text model (the model's mask,
built from `token_type_ids`, is the one capture reads); text stays causal.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from attnstore.geometry import ImageLayout, View, finish_grids, global_view, place_view, text_layout
from attnstore.models.base import ModelAdapter
from attnstore.schema import TokenKind

IMAGE_TOKEN = "<image_soft_token>"
BOI_TOKEN, EOI_TOKEN = "<start_of_image>", "<end_of_image>"
CHAT_SPECIALS = ("<bos>", "<eos>", "<pad>", "<unk>", "<start_of_turn>", "<end_of_turn>")
# Attribute (not a key: generate must not receive it) that `prepare` sets on its output.
ORIGINAL_SIZE_ATTR = "original_size"
# Image-processor settings that turn pan-and-scan on: the processor's own call defaults (off)
# would override a checkpoint's preprocessor_config, so `prepare` passes the configured ones on.
PAN_AND_SCAN_KEYS = (
    "do_pan_and_scan",
    "pan_and_scan_min_crop_size",
    "pan_and_scan_max_num_crops",
    "pan_and_scan_min_ratio_to_activate",
)

# google/gemma-3-*-it chat template, for user turns of images and text.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<start_of_image>{% elif item['type'] == 'text' %}{{ item['text'] | trim }}"
    "{% endif %}{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


class Gemma3Adapter(ModelAdapter):
    family = "gemma3"
    attention_mask = "image_blocks"  # store attr: each view's tokens see each other (validation's rule)
    per_token_inputs = {"token_type_ids": 0}  # 1 marks the image tokens (bidirectional blocks); the answer is text

    def prepare(self, image: Image.Image, prompt: str) -> dict:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(text=text, images=[image], return_tensors="pt", **self.pan_and_scan_settings())
        setattr(inputs, ORIGINAL_SIZE_ATTR, image.size)  # where the crops lie depends on it
        return inputs

    def pan_and_scan_settings(self) -> dict:
        """The pan-and-scan settings processing uses: the image processor's where set (a checkpoint's
        preprocessor_config), else the processor's call defaults (off, at most 4 crops)."""
        defaults = getattr(self.processor, "images_kwargs", None) or {}
        ip = self.processor.image_processor
        settings = {k: defaults[k] for k in PAN_AND_SCAN_KEYS if k in defaults}
        settings.update({k: getattr(ip, k) for k in PAN_AND_SCAN_KEYS if getattr(ip, k, None) is not None})
        return settings

    def banned_token_ids(self) -> list[int]:
        return self.known_token_ids([IMAGE_TOKEN, BOI_TOKEN, EOI_TOKEN])

    def layout(self, input_ids: np.ndarray, inputs: dict) -> ImageLayout:
        tokens = self.token_strings(input_ids)
        n_views = int(inputs["pixel_values"].shape[0])
        return parse_gemma3_layout(tokens, n_views, getattr(inputs, ORIGINAL_SIZE_ATTR, None))

    def processor_settings(self) -> dict:
        return {
            **super().processor_settings(),
            **self.pan_and_scan_settings(),
            "image_seq_length": int(self.processor.image_seq_length),
        }

    def max_image_tokens(self) -> int:
        settings = self.pan_and_scan_settings()
        crops = int(settings["pan_and_scan_max_num_crops"]) if settings.get("do_pan_and_scan") else 0
        # The processor's own text for the most crops ("\n\n<start_of_image>...", the crops' sentence).
        block = self.processor.replace_image_token({"num_crops": [crops]}, 0)
        return len(self.tokenizer(block, add_special_tokens=False)["input_ids"])


def parse_gemma3_layout(tokens: list[str], n_views: int, original_size: tuple[int, int] | None) -> ImageLayout:
    """Kinds and geometry of every position, from the token strings and the number of pixel views.

    Parameters
    ----------
    tokens : token strings of the prompt.
    n_views : images in `pixel_values` (the full view, then the pan-and-scan crops).
    original_size : (width, height) of the picture; needed only when there are crops.
    """
    layout = text_layout(tokens, CHAT_SPECIALS, (BOI_TOKEN, EOI_TOKEN, IMAGE_TOKEN))
    blocks = _image_blocks(tokens)  # [(first, last + 1)] of each run of image tokens
    if len(blocks) != n_views:
        raise RuntimeError(f"processor produced {n_views} image views but the prompt holds {len(blocks)} blocks")
    sides = {math.isqrt(b - a) for a, b in blocks}
    side = sides.pop()
    if sides or side * side != blocks[0][1] - blocks[0][0]:
        raise ValueError("image blocks are not square token grids of one size: the prompt was truncated")
    views = _views(side, n_views - 1, original_size)
    for (first, stop), view in zip(blocks, views):
        place_view(layout, view, np.arange(first, stop))
    boi, eoi = tokens.index(BOI_TOKEN), len(tokens) - 1 - tokens[::-1].index(EOI_TOKEN)
    span = np.arange(boi, eoi + 1)  # the processor's words between blocks belong to the image block
    layout.kind[span[layout.kind[span] == int(TokenKind.PROMPT_TEXT)]] = int(TokenKind.IMAGE_SPECIAL)
    return finish_grids(layout)


def _image_blocks(tokens: list[str]) -> list[tuple[int, int]]:
    is_image = np.array([t == IMAGE_TOKEN for t in tokens] + [False])
    edges = np.flatnonzero(np.diff(np.concatenate([[False], is_image]).astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def _views(side: int, n_crops: int, original_size: tuple[int, int] | None) -> list[View]:
    """The full view, then the pan-and-scan crops (each squashed to the same square)."""
    if n_crops == 0:
        return [View(TokenKind.IMAGE_TILE, (0.0, 0.0, 1.0, 1.0), side, side, tile=0)]
    if original_size is None:
        raise RuntimeError("Gemma 3 pan-and-scan layout needs the inputs returned by Gemma3Adapter.prepare")
    return [global_view(side, side), *pan_and_scan_views(original_size, n_crops, side)]


def pan_and_scan_views(original_size: tuple[int, int], n_crops: int, side: int) -> list[View]:
    """Crop views as Gemma 3's pan-and-scan slices them: `n_crops` equal steps of ceil(length / n)
    pixels along the long side (a landscape or square picture is cut across its width), the last
    crop ending at the border."""
    width, height = original_size
    across = width >= height
    length = width if across else height
    step = math.ceil(length / n_crops)
    views = []
    for i in range(n_crops):
        lo, hi = i * step / length, min((i + 1) * step, length) / length
        region = (lo, 0.0, hi, 1.0) if across else (0.0, lo, 1.0, hi)
        offset = (0, i * side) if across else (i * side, 0)
        views.append(View(TokenKind.IMAGE_TILE, region, side, side, tile=i, grid_offset=offset))
    return views
