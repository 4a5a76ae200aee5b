"""Tiny random-weight LLaVA-NeXT and LLaVA-OneVision models built offline (tests, demo, benchmarks).

The processors are the families' real ones (`LlavaNextProcessor`, `LlavaOnevisionProcessor`) with
their real any-resolution policy: a base view of the whole picture, a crop grid chosen from grid
pinpoints, unpadding and one newline token per row, OneVision's `anyres_max_9` resampling. Only
the sizes are small: crops of 56 px (4 x 4 patches of 14 px) instead of 336 / 384 px, and
pinpoints scaled by the same factor, so a test image gives tens of image tokens, not thousands.
"""

from __future__ import annotations

from pathlib import Path

from attnstore.models import llava, llava_anyres
from attnstore.models.tiny import LLAVA_PROCESSOR_KWARGS, LLAVA_VISION_FEATURES, llama_tokenizer
from attnstore.models.tiny_qwen import QWEN_NAMED, qwen_generation_ids, qwen_text_config_kwargs
from attnstore.models.tiny_save import save_random_model
from attnstore.models.tiny_tokenizer import build_bpe_tokenizer, text_config_kwargs, vision_config_kwargs

ANYRES_TINY_DIMS = dict(
    hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vision_hidden=32, vision_layers=2, crop=56
)
PATCH = 14  # CLIP ViT-L/14 (LLaVA-NeXT) and SigLIP so400m/14 (OneVision)


def scaled_pinpoints(real: list[list[int]], real_crop: int, crop: int) -> list[list[int]]:
    """The real checkpoint's grid pinpoints (multiples of its crop side) for a smaller crop side."""
    return [[h // real_crop * crop, w // real_crop * crop] for h, w in real]


# llava-hf/llava-v1.6-*-hf and llava-onevision-qwen2-*-hf pinpoints (crop side 336 / 384 px).
LLAVA_NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
LLAVA_ONEVISION_PINPOINTS = [[h, w] for h in range(384, 2305, 384) for w in range(384, 2305, 384)]


def build_random_llava_next(out_dir: str | Path, dims: dict | None = None, seed: int = 0) -> Path:
    """Save a random-weight LLaVA-NeXT (CLIP + Llama, llava-v1.6-vicuna layout) + a real LlavaNextProcessor."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    dims = {**ANYRES_TINY_DIMS, **(dims or {})}
    side = dims["crop"]
    tokenizer = llama_tokenizer([*llava.CHAT_SPECIALS, llava.IMAGE_TOKEN])
    pinpoints = scaled_pinpoints(LLAVA_NEXT_PINPOINTS, 336, side)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}, image_grid_pinpoints=pinpoints
    )
    processor = LlavaNextProcessor(image_processor, tokenizer, patch_size=PATCH, **LLAVA_PROCESSOR_KWARGS)
    ids = tokenizer.convert_tokens_to_ids
    vision_config = CLIPVisionConfig(
        **vision_config_kwargs(dims, patch_size=PATCH, image_size=side, projection_dim=dims["vision_hidden"])
    )
    config = LlavaNextConfig(
        text_config=LlamaConfig(**text_config_kwargs(dims, tokenizer, "<s>", "</s>", "<pad>")),
        vision_config=vision_config,
        image_token_index=ids(llava.IMAGE_TOKEN),
        image_grid_pinpoints=pinpoints,
        **LLAVA_VISION_FEATURES,
    )
    return save_random_model(
        LlavaNextForConditionalGeneration, config, processor, out_dir, seed, eos=ids("</s>"), pad=ids("<pad>")
    )


def build_random_llava_onevision(out_dir: str | Path, dims: dict | None = None, seed: int = 0) -> Path:
    """Save a random-weight LLaVA-OneVision (SigLIP + Qwen2) + a real LlavaOnevisionProcessor (images only)."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        Qwen2Config,
        SiglipVisionConfig,
    )

    dims = {**ANYRES_TINY_DIMS, **(dims or {})}
    side = dims["crop"]
    a = llava_anyres
    tokenizer = build_bpe_tokenizer([*a.QWEN2_CHAT_SPECIALS, a.IMAGE_TOKEN, a.VIDEO_TOKEN], **QWEN_NAMED)
    pinpoints = scaled_pinpoints(LLAVA_ONEVISION_PINPOINTS, 384, side)
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": side, "width": side}, image_grid_pinpoints=pinpoints, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor = a.onevision_images_processor_class()(
        image_processor,
        tokenizer,
        num_image_tokens=(side // PATCH) ** 2,
        vision_feature_select_strategy="full",  # SigLIP has no CLS token
        vision_aspect_ratio="anyres_max_9",
        chat_template=a.ONEVISION_CHAT_TEMPLATE,
    )
    ids = tokenizer.convert_tokens_to_ids
    vision_config = SiglipVisionConfig(**vision_config_kwargs(dims, patch_size=PATCH, image_size=side))
    config = LlavaOnevisionConfig(
        text_config=Qwen2Config(**qwen_text_config_kwargs(dims, tokenizer)),
        vision_config=vision_config,
        image_token_index=ids(a.IMAGE_TOKEN),
        video_token_index=ids(a.VIDEO_TOKEN),
        image_grid_pinpoints=pinpoints,
        vision_aspect_ratio="anyres_max_9",
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    return save_random_model(
        LlavaOnevisionForConditionalGeneration, config, processor, out_dir, seed, **qwen_generation_ids(tokenizer)
    )
