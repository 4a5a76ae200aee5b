"""Qwen3-VL adapter (`Qwen3VLForConditionalGeneration`): Qwen2-VL's token layout and geometry.

The language model sees the same block per image as Qwen2-VL's (<|vision_start|>, (h/m) x (w/m)
<|image_pad|> tokens row-major, <|vision_end|>; `image_grid_thw` per image), with 16 px patches
instead of 14. DeepStack adds vision features to the hidden states of the first layers at the
image positions, and M-RoPE interleaves its (t, h, w) frequencies: neither moves a token, so the
geometry is Qwen2-VL's. The chat template has no default system turn.
"""

from __future__ import annotations

from attnstore.models.qwen2_vl import Qwen2VLAdapter

# Qwen/Qwen3-VL-*-Instruct chat template, images and text only (no tools, no reasoning blocks).
QWEN3_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class Qwen3VLAdapter(Qwen2VLAdapter):
    family = "qwen3_vl"
    processor_class_name = "Qwen3VLProcessor"
