"""SmolVLM2 adapter (`SmolVLMForConditionalGeneration`, model_type `smolvlm`).

The image block is Idefics3's (R x C tiles of `image_seq_len` tokens, then a global thumbnail,
read from the <row_r_col_c> markers: `idefics3_layout`), so the adapter is Idefics3's with
SmolVLM's processor loaded for images only. Every SmolVLM2 checkpoint ships a
`video_preprocessor_config.json`, and `SmolVLMProcessor` builds its video processor (which
needs torchvision) and refuses to start without num2words (which only words video frame
counts); neither takes part in processing an image.
"""

from __future__ import annotations

import functools

from attnstore.models.base import SavesAsParent
from attnstore.models.idefics3 import Idefics3Adapter


@functools.cache
def images_only_processor_class() -> type:
    """`SmolVLMProcessor` without its video processor; saves as, and loads from, a SmolVLMProcessor folder."""
    from transformers import SmolVLMProcessor
    from transformers.processing_utils import ProcessorMixin

    class SmolVLMImagesProcessor(SavesAsParent, SmolVLMProcessor):
        # ProcessorMixin loads the sub-processors named in this signature: no video_processor.
        def __init__(self, image_processor=None, tokenizer=None, image_seq_len=169, chat_template=None, **kwargs):
            # SmolVLMProcessor.__init__ sets these, then stops if num2words (video prompts only) is missing.
            self.fake_image_token = getattr(tokenizer, "fake_image_token", "<fake_token_around_image>")
            self.image_token = getattr(tokenizer, "image_token", "<image>")
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.end_of_utterance_token = getattr(tokenizer, "end_of_utterance_token", "<end_of_utterance>")
            self.global_image_token = getattr(tokenizer, "global_image_token", "<global-img>")
            self.image_seq_len = image_seq_len
            self.video_token = getattr(tokenizer, "video_token", "<video>")
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)

        def apply_chat_template(self, conversation, chat_template=None, **kwargs):
            # SmolVLMProcessor's own adds the video processor's frame settings; images need none.
            return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)

    return SmolVLMImagesProcessor


class SmolVLMAdapter(Idefics3Adapter):
    family = "smolvlm"
    processor_class = staticmethod(images_only_processor_class)  # its video processor needs torchvision
