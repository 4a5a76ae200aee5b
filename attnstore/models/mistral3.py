"""Mistral 3 adapter (`Mistral3ForConditionalGeneration`: Mistral Small 3.1 / 3.2, Pixtral-style vision).

Token layout of one image (Mistral chat template; the processor expands [IMG]):
    <s>[INST] ([IMG] x C [IMG_BREAK]) x (R - 1)  [IMG] x C [IMG_END]  PROMPT [/INST]
Variable resolution: the Pixtral image processor scales the picture down to fit longest_edge
(never up), then stretches it to whole multiples of patch * merge pixels (no crop, no pad);
the vision tower's patches are merged m x m into one token, row-major, with an [IMG_BREAK]
closing each token row and [IMG_END] the last. R and C come from `image_sizes`, checked
against the [IMG] tokens; the break and end tokens are image specials.
"""

from __future__ import annotations

import functools
import importlib.util
import sys

import numpy as np

from attnstore.errors import ModelLoadError
from attnstore.geometry import ImageLayout, View, finish_grids, place_view, text_layout
from attnstore.models.base import ModelAdapter
from attnstore.schema import TokenKind

IMAGE_TOKEN, BREAK_TOKEN, END_TOKEN = "[IMG]", "[IMG_BREAK]", "[IMG_END]"
CHAT_SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]")

# mistralai/Mistral-Small-3.1-24B-Instruct-2503's chat template for user turns of images and text
# (without its default system prompt).
MISTRAL3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST]{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for block in message['content'] %}{% if block['type'] == 'text' %}{{ block['text'] }}"
    "{% elif block['type'] == 'image' %}[IMG]{% endif %}{% endfor %}{% endif %}[/INST]"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)


@functools.cache
def pixtral_processor_class() -> type:
    """transformers' `PixtralProcessor`, also where torchvision is not installed.

    Its module imports the torchvision image processor's module for one helper
    (`get_resize_output_image_size`, used only to count tokens ahead); the PIL image processor's
    module defines the same helper, so without torchvision that module stands in for it.
    Images are processed by `PixtralImageProcessorPil` either way.
    """
    name = "transformers.models.pixtral.image_processing_pixtral"
    if importlib.util.find_spec("torchvision") is None and name not in sys.modules:
        from transformers.models.pixtral import image_processing_pil_pixtral

        sys.modules[name] = image_processing_pil_pixtral
    try:
        from transformers.models.pixtral.processing_pixtral import PixtralProcessor
    except ImportError as err:
        raise ModelLoadError(f"cannot import transformers' PixtralProcessor: {err}", param="model") from err
    return PixtralProcessor


class Mistral3Adapter(ModelAdapter):
    family = "mistral3"
    processor_class = staticmethod(pixtral_processor_class)  # loads without torchvision too

    @property
    def token_pixels(self) -> int:
        """Side of the square of processed pixels one image token covers (patch x merge)."""
        return int(self.processor.patch_size) * int(self.processor.spatial_merge_size)

    def banned_token_ids(self) -> list[int]:
        return self.known_token_ids([IMAGE_TOKEN, BREAK_TOKEN, END_TOKEN])

    def layout(self, input_ids: np.ndarray, inputs: dict) -> ImageLayout:
        sizes = np.asarray(inputs["image_sizes"]).reshape(-1, 2)  # [image, (height, width)] processed pixels
        if len(sizes) != 1:  # the store keeps one image per sequence
            raise ValueError(f"exactly one image per prompt is supported, not {len(sizes)}")
        rows, cols = (int(n) // self.token_pixels for n in sizes[0])
        tokens = self.token_strings(input_ids)
        layout = text_layout(tokens, CHAT_SPECIALS, (IMAGE_TOKEN, BREAK_TOKEN, END_TOKEN))
        positions = np.flatnonzero(np.asarray(input_ids) == self.image_token_id)
        # Row r's C tokens sit after r earlier rows of C tokens + one [IMG_BREAK] each.
        if positions.size != rows * cols or (positions.size and not _rows_end_in_breaks(tokens, positions, cols)):
            raise ValueError(f"prompt does not hold a {rows} x {cols} image block: the prompt was truncated")
        # The picture is stretched onto the whole grid: one tile over region (0, 0, 1, 1).
        place_view(layout, View(TokenKind.IMAGE_TILE, (0.0, 0.0, 1.0, 1.0), rows, cols, tile=0), positions)
        return finish_grids(layout)

    def processor_settings(self) -> dict:
        return {
            **super().processor_settings(),
            "patch_size": int(self.processor.patch_size),
            "spatial_merge_size": int(self.processor.spatial_merge_size),
        }

    def max_image_tokens(self) -> int:
        side = int(self.processor.image_processor.size["longest_edge"]) // self.token_pixels
        return side * (side + 1)  # + one [IMG_BREAK] / [IMG_END] per row


def _rows_end_in_breaks(tokens: list[str], positions: np.ndarray, cols: int) -> bool:
    ends = positions.reshape(-1, cols)[:, -1] + 1  # the token after each row
    closers = [tokens[p] if p < len(tokens) else "" for p in ends]
    return closers[:-1] == [BREAK_TOKEN] * (len(closers) - 1) and closers[-1] == END_TOKEN
