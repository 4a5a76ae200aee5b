"""LLaVA-1.5 adapter (`LlavaForConditionalGeneration`).

Token layout of one image (llava-hf chat template):
    <s> USER: <image> x N*N "\\n" PROMPT " " ASSISTANT:
The N x N patch tokens (row-major, CLS dropped) cover one square of processed
pixels. How that square sits on the original picture depends on the image
processor: CLIP resizes the shortest edge and centre-crops (the square is the
central part of the picture), LLaVA's `do_pad` pads to a centred square first
(the square extends past the picture, boxes get clipped). The region is derived
from the processor's settings and checked against the pixels it produced; N
comes from those pixels and the vision tower's patch size, never from constants.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from attnstore.geometry import ImageLayout, View, finish_grids, place_view, text_layout
from attnstore.models.base import ModelAdapter
from attnstore.schema import TokenKind

IMAGE_TOKEN = "<image>"
CHAT_SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")
# Attribute (not a key: generate and forward must not receive it) that `prepare` sets on its output.
ORIGINAL_SIZE_ATTR = "original_size"

# llava-hf/llava-1.5-*-hf chat template: "USER: <image>\nPROMPT ASSISTANT:"
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


class LlavaAdapter(ModelAdapter):
    family = "llava"

    @property
    def patch_size(self) -> int:
        return int(self.model.config.vision_config.patch_size)

    def prepare(self, image: Image.Image, prompt: str) -> dict:
        inputs = super().prepare(image, prompt)
        # The crop/pad region depends on the original aspect ratio, which the processor output does not keep.
        setattr(inputs, ORIGINAL_SIZE_ATTR, image.size)
        return inputs

    def banned_token_ids(self) -> list[int]:
        return [self.image_token_id]

    def layout(self, input_ids: np.ndarray, inputs: dict) -> ImageLayout:
        size = getattr(inputs, ORIGINAL_SIZE_ATTR, None)
        if size is None:
            raise RuntimeError("LLaVA layout needs the inputs returned by LlavaAdapter.prepare (original image size)")
        pixel_h, pixel_w = (int(n) for n in inputs["pixel_values"].shape[-2:])
        view = llava_view(self.processor.image_processor, size, (pixel_h, pixel_w), self.patch_size)
        layout = text_layout(self.token_strings(input_ids), CHAT_SPECIALS)
        positions = np.flatnonzero(np.asarray(input_ids) == self.image_token_id)
        place_view(layout, view, positions)  # raises if the token count does not match the pixel grid
        return finish_grids(layout)

    def processor_settings(self) -> dict:
        """Base provenance plus the crop / pad policy that places the grid on the picture."""
        ip = self.processor.image_processor
        crop = getattr(ip, "crop_size", None)
        return {
            **super().processor_settings(),
            "do_center_crop": bool(getattr(ip, "do_center_crop", False)),
            "crop_size": [int(crop.height), int(crop.width)] if crop is not None and crop.height else None,
            "do_pad": bool(getattr(ip, "do_pad", False)),
            "patch_size": self.patch_size,
        }

    def max_image_tokens(self) -> int:
        # The CLIP tower has position embeddings for image_size only: its grid is the largest block.
        vision = self.model.config.vision_config
        return (int(vision.image_size) // self.patch_size) ** 2


# -- geometry -----------------------------------------------------------------------------


def llava_view(image_processor, original_size: tuple[int, int], pixel_hw: tuple[int, int], patch: int) -> View:
    """The one tile of patch tokens, placed on the original image through pad / resize / crop.

    Parameters
    ----------
    image_processor : the processor's image processor (CLIP or LLaVA, PIL or torchvision backend).
    original_size : (width, height) of the original image.
    pixel_hw : (height, width) of the `pixel_values` the processor produced for it.
    patch : the vision tower's patch size (a token is one patch x patch square of pixels).

    Returns
    -------
    View
        kind IMAGE_TILE, tile 0, grid (pixel_h // patch) x (pixel_w // patch); the region may
        extend outside [0, 1] when the processor padded.
    """
    width, height = original_size
    # Each axis maps processed pixels p to original pixels as p * scale + shift.
    scale, shift, final_hw = _processed_to_original(image_processor, width, height)
    # The arithmetic must explain the pixels; otherwise refuse rather than guess (e.g. a bottom/right
    # pad after the crop adds patches that show no picture, which one regular View cannot describe).
    if tuple(pixel_hw) != final_hw:
        raise RuntimeError(f"processor produced {pixel_hw[0]}x{pixel_hw[1]} pixels, expected {final_hw}")
    rows, cols = pixel_hw[0] // patch, pixel_hw[1] // patch
    # The patch grid covers only whole patches, starting at the top-left processed pixel.
    x0, y0 = shift[1] / width, shift[0] / height
    x1 = (cols * patch * scale[1] + shift[1]) / width
    y1 = (rows * patch * scale[0] + shift[0]) / height
    region = (float(x0), float(y0), float(x1), float(y1))
    return View(kind=TokenKind.IMAGE_TILE, region=region, patch_rows=rows, patch_cols=cols, tile=0)


def _processed_to_original(ip, width: int, height: int):
    """Affine map processed pixel -> original pixel per axis, and the processed (height, width).

    Follows the backends' order: centred pad to square (LLaVA's `do_pad`), resize, centre crop.
    """
    scale, shift = np.ones(2), np.zeros(2)  # (y, x)
    hw = np.array([height, width], dtype=np.int64)
    if getattr(ip, "do_pad", False) and hasattr(ip, "pad_to_square"):
        side = int(hw.max())
        shift -= (side - hw) // 2  # the original sits centred in the padded square
        hw = np.array([side, side])
    if getattr(ip, "do_resize", False):
        new = np.array(_resized_hw(ip.size, int(hw[0]), int(hw[1])))
        scale *= hw / new
        hw = new
    if getattr(ip, "do_center_crop", False):
        crop = np.array([ip.crop_size.height, ip.crop_size.width])
        shift += ((hw - crop) // 2) * scale  # same offset formula whether it crops or zero-pads
        hw = crop
    return scale, shift, tuple(int(n) for n in hw)


def _resized_hw(size, height: int, width: int) -> tuple[int, int]:
    """Output (height, width) of the image processors' resize rule for a `SizeDict`."""
    from transformers.image_transforms import get_resize_output_image_size, get_size_with_aspect_ratio
    from transformers.image_utils import ChannelDimension, get_image_size_for_max_height_width

    if size.shortest_edge and size.longest_edge:
        return tuple(get_size_with_aspect_ratio((height, width), size.shortest_edge, size.longest_edge))
    if size.shortest_edge:
        shape_only = np.broadcast_to(np.uint8(0), (1, height, width))  # the rule reads the shape only
        return tuple(
            get_resize_output_image_size(
                shape_only, size.shortest_edge, default_to_square=False, input_data_format=ChannelDimension.FIRST
            )
        )
    if size.max_height and size.max_width:
        return tuple(get_image_size_for_max_height_width((height, width), size.max_height, size.max_width))
    return int(size.height), int(size.width)
