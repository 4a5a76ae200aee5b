"""Qwen2.5-VL adapter (`Qwen2_5_VLForConditionalGeneration`): Qwen2-VL's token layout and geometry.

What changed from Qwen2-VL is inside the vision tower (window attention in most blocks, RMSNorm,
SwiGLU): the tower reorders patches into windows and restores their order before the merger, so
the language model still sees one row-major (h/m) x (w/m) grid per image, read from
`image_grid_thw`. The processor (`Qwen2_5_VLProcessor`, Qwen2-VL's image processor) and the chat
template are Qwen2-VL's; only the processor class differs.
"""

from __future__ import annotations

from attnstore.models.qwen2_vl import QWEN2_VL_CHAT_TEMPLATE, Qwen2VLAdapter

QWEN2_5_VL_CHAT_TEMPLATE = QWEN2_VL_CHAT_TEMPLATE  # Qwen/Qwen2.5-VL-*-Instruct use Qwen2-VL's


class Qwen2_5_VLAdapter(Qwen2VLAdapter):  # noqa: N801  (transformers' spelling)
    family = "qwen2_5_vl"
    processor_class_name = "Qwen2_5_VLProcessor"
