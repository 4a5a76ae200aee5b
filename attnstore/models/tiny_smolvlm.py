"""A tiny random-weight SmolVLM2 folder, built offline, laid out like a real SmolVLM2 checkpoint.

The config and processor are SmolVLM's own classes (`SmolVLMConfig`, `SmolVLMImageProcessorPil`,
`SmolVLMProcessor`'s saved form) with SmolVLM2-256M's image geometry (512 px tiles, patch 16,
pixel shuffle 4: 8 x 8 tokens a view), and the `video_preprocessor_config.json` every SmolVLM2
checkpoint carries, so loading it exercises the video processor a plain AutoProcessor would build.
"""

from __future__ import annotations

import json
from pathlib import Path

from attnstore.models.idefics3_layout import END_OF_UTTERANCE, SMOLVLM_CHAT_TEMPLATE

# SmolVLM2-256M-Video-Instruct's video_preprocessor_config.json (its sampling settings and sizes).
SMOLVLM2_VIDEO_CONFIG = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_pad": True,
    "do_rescale": True,
    "do_resize": True,
    "fps": 1,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "max_image_size": {"longest_edge": 512},
    "num_frames": 64,
    "processor_class": "SmolVLMProcessor",
    "resample": 1,
    "rescale_factor": 1 / 255,
    "size": {"longest_edge": 512},
    "video_processor_type": "SmolVLMVideoProcessor",
}


# Images upscaled to longest edge 1024 (the real 2048 gives up to 17 views): at most 2 x 2 tiles + the
# thumbnail, so tests stay fast; tiles, patches and the token layout are SmolVLM2's.
SMOLVLM_TINY_GEOMETRY = dict(longest_edge=1024)


def build_random_smolvlm(out_dir: str | Path, dims: dict | None = None, seed: int = 0) -> Path:
    """Save a random-weight SmolVLM2 + its real processor and video config to `out_dir`."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessorPil

    from attnstore.models.smolvlm import images_only_processor_class
    from attnstore.models.tiny import idefics3_config, save_random_model

    # Idefics3's tiny config holds SmolVLM's specials, template and geometry; rebuilt as SmolVLM classes.
    idefics3, idefics3_processor = idefics3_config(dims, SMOLVLM_TINY_GEOMETRY)
    ip = idefics3_processor.image_processor
    image_processor = SmolVLMImageProcessorPil(
        size=dict(ip.size), max_image_size=dict(ip.max_image_size), image_mean=ip.image_mean,
        image_std=ip.image_std, resample=ip.resample,
    )  # fmt: skip
    tokenizer = idefics3_processor.tokenizer
    processor = images_only_processor_class()(
        image_processor, tokenizer, image_seq_len=idefics3_processor.image_seq_len, chat_template=SMOLVLM_CHAT_TEMPLATE
    )
    config = SmolVLMConfig(
        text_config=idefics3.text_config.to_dict(),
        vision_config={**idefics3.vision_config.to_dict(), "model_type": "smolvlm_vision"},
        scale_factor=idefics3.scale_factor,
        image_token_id=idefics3.image_token_id,
    )
    ids = tokenizer.convert_tokens_to_ids
    out = save_random_model(
        SmolVLMForConditionalGeneration, config, processor, out_dir, seed,
        eos=ids(END_OF_UTTERANCE), pad=ids("<|endoftext|>"),
    )  # fmt: skip
    (out / "video_preprocessor_config.json").write_text(json.dumps(SMOLVLM2_VIDEO_CONFIG, indent=2))
    return out
