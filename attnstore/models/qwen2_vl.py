"""Qwen2-VL adapter (`Qwen2VLForConditionalGeneration`).

Token layout of one image (Qwen2-VL chat template):
    <|im_start|>system ... <|im_end|> <|im_start|>user
    <|vision_start|> <|image_pad|> x (h/m)*(w/m) <|vision_end|> PROMPT <|im_end|> <|im_start|>assistant
Dynamic resolution: the processor resizes the whole picture (no crop, no pad;
`smart_resize`) to h x w patches, reported per image as `image_grid_thw`
(t, h, w); the vision tower merges m x m patches into one token, row-major. So
one tile covers the whole original image with an (h/m) x (w/m) grid, read from
`image_grid_thw` for every image.

The text model uses 3D rotary positions (M-RoPE) computed from
`mm_token_type_ids`, a per-token input: the capture pass over prompt + answer
needs it extended to the answer (`forward_inputs`).
"""

from __future__ import annotations

import functools

import numpy as np

from attnstore.geometry import ImageLayout, finish_grids, place_view, text_layout, tile_views
from attnstore.models.base import ModelAdapter, SavesAsParent

IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
VISION_START, VISION_END, VISION_PAD = "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>"
VISION_SPECIALS = (VISION_START, VISION_END, VISION_PAD, VIDEO_TOKEN)
CHAT_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Qwen/Qwen2-VL-*-Instruct chat template (default system prompt, images as vision_start/pad/end).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class Qwen2VLAdapter(ModelAdapter):
    """Qwen2-VL and, by subclassing, the later Qwen-VL families with the same token layout
    (`qwen2_5_vl`, `qwen3_vl`): only the processor class and the module holding the layers differ."""

    family = "qwen2_vl"
    processor_class_name = "Qwen2VLProcessor"  # the family's processor in transformers
    # mm_token_type_ids (1 = image) over the answer too, as text: M-RoPE positions are computed from it.
    per_token_inputs = {"mm_token_type_ids": 0}

    @classmethod
    def _load_processor(cls, source: str, local_files_only: bool):
        # Qwen's processors insist on a video processor, which needs torchvision (transformers#48558)
        # and a video config; we only process images.
        images_only = images_only_processor_class(cls.processor_class_name)
        return images_only.from_pretrained(source, local_files_only=local_files_only)

    @property
    def merge_size(self) -> int:
        return int(self.model.config.vision_config.spatial_merge_size)

    def banned_token_ids(self) -> list[int]:
        return self.known_token_ids([IMAGE_TOKEN, *VISION_SPECIALS])

    def layout(self, input_ids: np.ndarray, inputs: dict) -> ImageLayout:
        tokens = self.token_strings(input_ids)
        grids = np.asarray(inputs["image_grid_thw"]).reshape(-1, 3)  # [image, (t, h, w)] in patches
        return parse_qwen2_vl_layout(tokens, grids, self.merge_size)

    def processor_settings(self) -> dict:
        """Base provenance plus the pixel budget and patch sizes that set the grid."""
        ip = self.processor.image_processor
        keys = ("patch_size", "merge_size", "temporal_patch_size")
        return {
            **super().processor_settings(),
            **{k: int(getattr(ip, k)) for k in keys},
            "min_pixels": int(ip.size["shortest_edge"]),
            "max_pixels": int(ip.size["longest_edge"]),
        }

    def max_image_tokens(self) -> int:
        ip = self.processor.image_processor
        factor = int(ip.patch_size) * int(ip.merge_size)  # pixels per image token side
        return int(ip.size["longest_edge"]) // factor**2 + 2  # + <|vision_start|>, <|vision_end|>


@functools.cache
def images_only_processor_class(base_name: str = "Qwen2VLProcessor") -> type:
    """The transformers processor `base_name` without its video processor (which needs torchvision;
    images are all we use). It saves as, and loads from, a plain `base_name` folder.
    """
    import transformers

    base = getattr(transformers, base_name)

    class ImagesOnlyProcessor(SavesAsParent, base):
        # The sub-processors ProcessorMixin loads and checks come from this signature: no video_processor.
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    name = base_name.removesuffix("Processor") + "ImagesProcessor"  # e.g. Qwen2VLImagesProcessor
    ImagesOnlyProcessor.__name__ = ImagesOnlyProcessor.__qualname__ = name
    return ImagesOnlyProcessor


def parse_qwen2_vl_layout(tokens: list[str], grids: np.ndarray, merge_size: int) -> ImageLayout:
    """Kinds and geometry of every position, from the tokens and `image_grid_thw` of each image.

    Parameters
    ----------
    tokens : token strings of the prompt.
    grids : # [image, 3] (t, h, w) in vision patches, as the processor returned them.
    merge_size : patches merged per token side (the vision tower's spatial_merge_size).
    """
    layout = text_layout(tokens, CHAT_SPECIALS, (IMAGE_TOKEN, *VISION_SPECIALS))
    starts = [p + 1 for p in range(len(tokens) - 1) if tokens[p] == VISION_START and tokens[p + 1] == IMAGE_TOKEN]
    if len(starts) != len(grids):
        raise RuntimeError(f"processor produced {len(grids)} image grids but the prompt holds {len(starts)} images")
    if len(grids) != 1:  # the store keeps one image per sequence
        raise ValueError(f"exactly one image per prompt is supported, not {len(grids)}")
    t, h, w = grids[0].tolist()
    # smart_resize stretches the whole picture onto the patch grid: one tile over region (0, 0, 1, 1).
    (view,) = tile_views(1, 1, h // merge_size, w // merge_size)
    positions = np.arange(starts[0], starts[0] + t * view.n_patches)
    if t != 1 or positions[-1] >= len(tokens) or any(tokens[p] != IMAGE_TOKEN for p in positions):
        raise ValueError(f"image block does not hold {positions.size} image tokens: the prompt was truncated")
    place_view(layout, view, positions)
    return finish_grids(layout)
