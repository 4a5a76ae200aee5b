"""InternVL adapter (`InternVLForConditionalGeneration`, the transformers-native InternVL 2.5 / 3 "-hf").

Token layout of one image (InternVL chat template):
    <|im_start|>user\\n <img> <IMG_CONTEXT> x (S * V) </img> \\n PROMPT <|im_end|>\\n<|im_start|>assistant\\n
Dynamic tiles: the processor (GotOcr2 image processor, `crop_to_patches`) picks the C x R grid of
square tiles whose aspect ratio is closest to the picture's (between min_patches and
max_patches tiles), squashes the picture onto it and cuts the tiles row-major; when there is
more than one tile it appends a thumbnail of the whole picture. Each view (`pixel_values`
entry) becomes S = n * n tokens: the vision tower's P x P patches pixel-shuffled 2 x 2 into
an n x n grid (n = P * downsample_ratio), row-major. V comes from `pixel_values`, S from the
prompt, the tile grid from the processor's own canvas rule (checked against V).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image

from attnstore.geometry import ImageLayout, View, finish_grids, global_view, place_view, text_layout, tile_views
from attnstore.models.base import ModelAdapter, SavesAsParent
from attnstore.schema import TokenKind

IMAGE_TOKEN = "<IMG_CONTEXT>"
START_IMAGE, END_IMAGE, VIDEO_TOKEN = "<img>", "</img>", "<video>"
CHAT_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Attribute (not a key: generate must not receive it) that `prepare` sets on its output.
ORIGINAL_SIZE_ATTR = "original_size"

# OpenGVLab/InternVL3-*-hf chat template, for user turns of images and text.
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@functools.cache
def images_only_processor_class() -> type:
    """`InternVLProcessor` without its video processor (which needs torchvision); saves and loads as one."""
    from transformers import InternVLProcessor

    class InternVLImagesProcessor(SavesAsParent, InternVLProcessor):
        # The sub-processors ProcessorMixin loads come from this signature: no video_processor.
        def __init__(self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None, **kw):
            super().__init__(image_processor, tokenizer, None, image_seq_length, chat_template=chat_template, **kw)

    return InternVLImagesProcessor


class InternVLAdapter(ModelAdapter):
    family = "internvl"
    processor_class = staticmethod(images_only_processor_class)  # its video processor needs torchvision

    def prepare(self, image: Image.Image, prompt: str) -> dict:
        inputs = super().prepare(image, prompt)
        setattr(inputs, ORIGINAL_SIZE_ATTR, image.size)  # the tile grid depends on the aspect ratio
        return inputs

    def banned_token_ids(self) -> list[int]:
        return self.known_token_ids([IMAGE_TOKEN, START_IMAGE, END_IMAGE, VIDEO_TOKEN])

    def layout(self, input_ids: np.ndarray, inputs: dict) -> ImageLayout:
        size = getattr(inputs, ORIGINAL_SIZE_ATTR, None)
        if size is None:
            raise RuntimeError("InternVL layout needs the inputs returned by InternVLAdapter.prepare (original size)")
        n_views = int(inputs["pixel_values"].shape[0])
        views = internvl_views(self.processor.image_processor, size, n_views, self.processor.image_seq_length)
        tokens = self.token_strings(input_ids)
        layout = text_layout(tokens, CHAT_SPECIALS, (IMAGE_TOKEN, START_IMAGE, END_IMAGE, VIDEO_TOKEN))
        positions = np.flatnonzero(np.asarray(input_ids) == self.image_token_id)
        per_view = int(self.processor.image_seq_length)
        if positions.size != n_views * per_view:
            raise ValueError(f"prompt holds {positions.size} image tokens, not {n_views} views x {per_view}")
        for i, view in enumerate(views):
            place_view(layout, view, positions[i * per_view : (i + 1) * per_view])
        return finish_grids(layout)

    def processor_settings(self) -> dict:
        ip = self.processor.image_processor
        return {
            **super().processor_settings(),
            "crop_to_patches": bool(getattr(ip, "crop_to_patches", False)),
            "min_patches": int(ip.min_patches),
            "max_patches": int(ip.max_patches),
            "image_seq_length": int(self.processor.image_seq_length),
        }

    def max_image_tokens(self) -> int:
        views = int(self.processor.image_processor.max_patches) + 1  # + the thumbnail
        return views * int(self.processor.image_seq_length) + 3  # + <img>, </img>, "\n"


def internvl_views(image_processor, original_size: tuple[int, int], n_views: int, tokens_per_view: int) -> list[View]:
    """Views in `pixel_values` order: the C x R tiles row-major, then the thumbnail (if more than one tile).

    The grid is the processor's own choice (`get_optimal_tiled_canvas` with its tile size and
    min / max tiles) for the original (width, height); it must explain the `n_views` it produced.
    """
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

    side = math.isqrt(tokens_per_view)
    if side * side != tokens_per_view:
        raise ValueError(f"image_seq_length {tokens_per_view} is not a square grid")
    if n_views == 1:  # one tile (or no tiling): the whole picture squashed to one square
        return [View(TokenKind.IMAGE_TILE, (0.0, 0.0, 1.0, 1.0), side, side, tile=0)]
    ip = image_processor
    width, height = original_size
    tile = (int(ip.size.height), int(ip.size.width))
    cols, rows = get_optimal_tiled_canvas((height, width), tile, int(ip.min_patches), int(ip.max_patches))
    if cols * rows + 1 != n_views:
        raise RuntimeError(f"processor produced {n_views} views, not {cols} x {rows} tiles + a thumbnail")
    return [*tile_views(rows, cols, side, side), global_view(side, side)]
