"""Sequence-only mode: any image-text-to-text model without a geometry adapter.

Capture needs nothing of a family but attention going through transformers' attention
interface with `layer_idx` set, which every decoder `AutoModelForImageTextToText` loads does.
What a family adapter adds is geometry: which position is which pixel region. Without it the
store still holds every row, the tokens, and their kinds (image tokens are those carrying the
processor's image token id), with `patch_box` NaN and the store's attrs saying `geometry: none`
and why, so nothing downstream draws a patch map it cannot know. Perceiver-style families
(`idefics2`), whose image tokens are learned latents rather than patches, belong here on purpose.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from attnstore.errors import ModelLoadError
from attnstore.geometry import ImageLayout, empty_layout
from attnstore.models.base import ModelAdapter
from attnstore.schema import TokenKind

# Families whose image tokens are not image regions at all (the note says so instead of "no adapter yet").
NOT_PATCHES = {
    "idefics2": "its image tokens are the latents of a perceiver resampler, not image patches",
    "idefics": "its image enters through cross-attention layers, not as tokens of the sequence",
    "blip-2": "its image tokens are the query tokens of a Q-Former, not image patches",
    "instructblip": "its image tokens are the query tokens of a Q-Former, not image patches",
}
PROBE_SIZE = (1024, 1024)  # the image whose token count sizes the store's key axis (it grows if needed)


def geometry_note(model_type: str) -> str:
    """Why a store of this model type has no patch map."""
    reason = NOT_PATCHES.get(model_type, "attnstore has no geometry adapter for it (docs/adding-a-model.md)")
    return f"model type '{model_type}' is extracted in sequence-only mode: {reason}"


class SequenceOnlyAdapter(ModelAdapter):
    family = "sequence_only"

    @property
    def model_type(self) -> str:
        return str(self.model.config.model_type)

    @property
    def image_token_id(self) -> int:
        for source in (self.processor, self.model.config):
            for name in ("image_token_id", "image_token_index"):
                value = getattr(source, name, None)
                if isinstance(value, int):
                    return value
        raise ModelLoadError(f"model type '{self.model_type}': neither processor nor config names an image token")

    def prepare(self, image: Image.Image, prompt: str) -> dict:
        if not getattr(self.processor, "chat_template", None):
            raise ModelLoadError(f"model type '{self.model_type}': its processor has no chat template for the prompt")
        return super().prepare(image, prompt)

    @property
    def special_token_ids(self) -> list[int]:
        """The tokenizer's specials, including added ones it does not list (Idefics2's image markers)."""
        added = [i for i, token in self.tokenizer.added_tokens_decoder.items() if token.special]
        return sorted({*self.tokenizer.all_special_ids, *added})

    def banned_token_ids(self) -> list[int]:
        return [self.image_token_id]

    def layout(self, input_ids: np.ndarray, inputs: dict) -> ImageLayout:
        """Kinds only: image tokens by the image token id, tokenizer specials, prompt text; no boxes."""
        ids = np.asarray(input_ids)
        kinds = np.full(ids.shape, int(TokenKind.PROMPT_TEXT), np.int8)
        kinds[np.isin(ids, self.special_token_ids)] = int(TokenKind.SPECIAL)
        kinds[ids == self.image_token_id] = int(TokenKind.IMAGE_TILE)
        return empty_layout(kinds)

    def geometry_attrs(self) -> dict:
        return {"geometry": "none", "geometry_note": geometry_note(self.model_type), "model_type": self.model_type}

    def max_image_tokens(self) -> int:
        """Image tokens of a large probe image (no geometry to bound it by; the store grows past it)."""
        inputs = self.prepare(Image.new("RGB", PROBE_SIZE), "probe")
        return int((inputs["input_ids"] == self.image_token_id).sum())
