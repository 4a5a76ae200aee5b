"""PaliGemma adapter (`PaliGemmaForConditionalGeneration`).

Token layout of one image (PaliGemma has no chat template; the processor writes it):
    <image> x N <bos> PROMPT "\\n"   then the answer
The SigLIP processor squashes the picture to one fixed square (no crop, no pad), whose
P x P patches are the N = P * P image tokens, row-major (no pooling). P comes from the
`pixel_values` shape and the vision tower's patch size, checked against the token count.

The text model sees the whole prompt (image and text, `token_type_ids` 0) as one bidirectional
prefix; only the answer is causal. Capture reads the model's own mask, so a prompt row holds
attention to later prompt tokens too.
"""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image

from attnstore.geometry import ImageLayout, View, finish_grids, place_view, text_layout
from attnstore.models.base import ModelAdapter
from attnstore.schema import TokenKind

IMAGE_TOKEN = "<image>"
CHAT_SPECIALS = ("<bos>", "<eos>", "<pad>", "<unk>")


class PaliGemmaAdapter(ModelAdapter):
    family = "paligemma"
    attention_mask = "prefix"  # store attr: the prompt's tokens see each other (validation's rule)
    per_token_inputs = {"token_type_ids": 1}  # the answer is the causal suffix (1), as generate marks it

    @property
    def patch_size(self) -> int:
        return int(self.model.config.vision_config.patch_size)

    def prepare(self, image: Image.Image, prompt: str) -> dict:
        # The processor adds <bos> after the image tokens and the "\n" that ends the prefix.
        with warnings.catch_warnings():  # its `labels` (numpy over tensors) warns on numpy 2
            warnings.simplefilter("ignore", DeprecationWarning)
            inputs = self.processor(text=IMAGE_TOKEN + prompt, images=[image], return_tensors="pt")
        inputs.pop("labels", None)  # training targets (all -100 without a suffix); not a generate input
        return inputs

    def banned_token_ids(self) -> list[int]:
        return [self.image_token_id]

    def layout(self, input_ids: np.ndarray, inputs: dict) -> ImageLayout:
        pixel_h, pixel_w = (int(n) for n in inputs["pixel_values"].shape[-2:])
        view = View(
            TokenKind.IMAGE_TILE, (0.0, 0.0, 1.0, 1.0), pixel_h // self.patch_size, pixel_w // self.patch_size, tile=0
        )
        layout = text_layout(self.token_strings(input_ids), CHAT_SPECIALS)
        positions = np.flatnonzero(np.asarray(input_ids) == self.image_token_id)
        place_view(layout, view, positions)  # raises if the token count does not match the patch grid
        return finish_grids(layout)

    def processor_settings(self) -> dict:
        return {
            **super().processor_settings(),
            "image_seq_length": int(self.processor.image_seq_length),
            "patch_size": self.patch_size,
        }

    def max_image_tokens(self) -> int:
        return int(self.processor.image_seq_length) + 2  # + <bos> and the prefix's "\n"
