"""Tiny random-weight models built offline, one per family (tests, the geometry demo, benchmarks).

Each builder saves a random-weight model and a *real* processor of its family to a folder that
`attnstore.models.load_adapter` and plain transformers load: the token layout and image geometry
are the family's real ones; only the weights (and the dims) are not. Every config carries
RANDOM_WEIGHTS_KEY, so stores made from them say so.
"""

from __future__ import annotations

from pathlib import Path

import torch

from attnstore.models import llava
from attnstore.models.idefics3_layout import (
    CHAT_SPECIALS as IDEFICS3_SPECIALS,
)
from attnstore.models.idefics3_layout import (
    END_OF_UTTERANCE,
    FAKE_TOKEN,
    GLOBAL_TOKEN,
    ROW_COL_TOKENS,
    SMOLVLM_CHAT_TEMPLATE,
)
from attnstore.models.idefics3_layout import IMAGE_TOKEN as IDEFICS3_IMAGE_TOKEN
from attnstore.models.tiny_save import save_random_model
from attnstore.models.tiny_tokenizer import LLAMA_NAMED, build_bpe_tokenizer, text_config_kwargs, vision_config_kwargs

# -- Idefics3 / SmolVLM ----------------------------------------------------------------------


IDEFICS3_TINY_DIMS = dict(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vision_hidden=32, vision_layers=1)
# SmolVLM-256M's text dims; the vision tower stays small (it does not change the store).
IDEFICS3_REAL_DIMS = dict(
    hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, vision_hidden=64, vision_layers=1
)


# SmolVLM's image geometry: 512 px tiles, images upscaled to longest edge 2048, patch 16, 8 x 8 tokens a view.
SMOLVLM_GEOMETRY = dict(longest_edge=2048, tile=512, patch=16, scale_factor=4)


def build_random_idefics3(out_dir: str | Path, dims: dict | None = None, seed: int = 0) -> Path:
    """Save a random-weight Idefics3 + a real Idefics3Processor (SmolVLM geometry) to `out_dir`.

    The token layout and tile geometry are the real ones (512 px tiles, 8 x 8
    patches each, images upscaled to longest edge 2048); only the weights are random.
    """
    from transformers import Idefics3ForConditionalGeneration

    config, processor = idefics3_config(dims)
    ids = processor.tokenizer.convert_tokens_to_ids
    return save_random_model(
        Idefics3ForConditionalGeneration,
        config,
        processor,
        out_dir,
        seed,
        eos=ids(END_OF_UTTERANCE),
        pad=ids("<|endoftext|>"),
    )


def make_tiny_idefics3(dims: dict | None = None, geometry: dict | None = None, seed: int = 0, corpus: str = ""):
    """A freshly initialised Idefics3 and its processor, in memory (e.g. to train it).

    Returns
    -------
    (Idefics3ForConditionalGeneration in eval mode, Idefics3Processor); see `idefics3_config`.
    """
    from transformers import Idefics3ForConditionalGeneration

    config, processor = idefics3_config(dims, geometry, corpus)
    ids = processor.tokenizer.convert_tokens_to_ids
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids(END_OF_UTTERANCE)
    model.generation_config.pad_token_id = ids("<|endoftext|>")
    return model, processor


def idefics3_config(dims: dict | None = None, geometry: dict | None = None, corpus: str = ""):
    """An Idefics3 config and its real processor (SmolVLM specials and chat template).

    Parameters
    ----------
    dims : model sizes, over IDEFICS3_TINY_DIMS (vision_heads defaults to 2).
    geometry : longest_edge, tile, patch, scale_factor, over SMOLVLM_GEOMETRY.
    corpus : extra tokenizer training text (words that should be single pieces).

    Returns
    -------
    (Idefics3Config, Idefics3Processor)
    """
    from transformers import (
        Idefics3Config,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
        LlamaConfig,
    )
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig

    dims = {**IDEFICS3_TINY_DIMS, **(dims or {})}
    geo = {**SMOLVLM_GEOMETRY, **(geometry or {})}
    specials = [*IDEFICS3_SPECIALS, FAKE_TOKEN, IDEFICS3_IMAGE_TOKEN, GLOBAL_TOKEN, *ROW_COL_TOKENS]
    tokenizer = build_bpe_tokenizer(
        specials,
        extra_corpus=corpus,
        bos_token="<|im_start|>",
        eos_token=END_OF_UTTERANCE,
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": geo["longest_edge"]},
        max_image_size={"longest_edge": geo["tile"]},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        resample=1,  # LANCZOS, as SmolVLM
    )
    image_seq_len = (geo["tile"] // geo["patch"]) ** 2 // geo["scale_factor"] ** 2
    processor = Idefics3Processor(
        image_processor, tokenizer, image_seq_len=image_seq_len, chat_template=SMOLVLM_CHAT_TEMPLATE
    )
    ids = tokenizer.convert_tokens_to_ids
    text_config = LlamaConfig(
        **text_config_kwargs(dims, tokenizer, "<|im_start|>", END_OF_UTTERANCE, "<|endoftext|>", max_positions=8192)
    )
    vision_config = Idefics3VisionConfig(**vision_config_kwargs(dims, patch_size=geo["patch"], image_size=geo["tile"]))
    config = Idefics3Config(
        text_config=text_config,
        vision_config=vision_config,
        scale_factor=geo["scale_factor"],
        image_token_id=ids(IDEFICS3_IMAGE_TOKEN),
    )
    return config, processor


# -- LLaVA-1.5 -------------------------------------------------------------------------------


# LLaVA-1.5's CLIP features, shared by LLaVA-NeXT: the CLS token dropped ("default"), the second-last layer.
LLAVA_VISION_FEATURES = dict(vision_feature_select_strategy="default", vision_feature_layer=-2)
LLAVA_PROCESSOR_KWARGS = dict(
    vision_feature_select_strategy="default",
    num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
    chat_template=llava.LLAVA_CHAT_TEMPLATE,
)


def llama_tokenizer(special_tokens: list[str]):
    """A tiny BPE with Llama's special-token names that, like Llama's, starts every text with <s>."""
    tokenizer = build_bpe_tokenizer(special_tokens, **LLAMA_NAMED)
    tokenizer.add_bos_token = True
    tokenizer.update_post_processor()
    return tokenizer


LLAVA_TINY_DIMS = dict(
    hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vision_hidden=32, vision_layers=2, image_size=112
)


def build_random_llava(out_dir: str | Path, dims: dict | None = None, seed: int = 0) -> Path:
    """Save a random-weight LLaVA-1.5 + a real LlavaProcessor (CLIP resize + centre crop) to `out_dir`.

    The processing policy is LLaVA-1.5's (shortest edge to `image_size`, central
    `image_size` square, patch 14, CLS dropped) at a small `image_size` (112 ->
    8 x 8 tokens instead of 336 -> 24 x 24), so tests stay fast; weights are random.
    """
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    dims = {**LLAVA_TINY_DIMS, **(dims or {})}
    tokenizer = llama_tokenizer([*llava.CHAT_SPECIALS, llava.IMAGE_TOKEN])
    side = dims["image_size"]
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    processor = LlavaProcessor(image_processor, tokenizer, patch_size=14, **LLAVA_PROCESSOR_KWARGS)
    ids = tokenizer.convert_tokens_to_ids
    text_config = LlamaConfig(**text_config_kwargs(dims, tokenizer, "<s>", "</s>", "<pad>"))
    vision_config = CLIPVisionConfig(
        **vision_config_kwargs(dims, patch_size=14, image_size=side, projection_dim=dims["vision_hidden"])
    )
    config = LlavaConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_index=ids(llava.IMAGE_TOKEN),
        image_seq_length=(side // 14) ** 2,
        **LLAVA_VISION_FEATURES,
    )
    return save_random_model(
        LlavaForConditionalGeneration, config, processor, out_dir, seed, eos=ids("</s>"), pad=ids("<pad>")
    )


# -- Qwen2-VL --------------------------------------------------------------------------------


QWEN2_VL_TINY_DIMS = dict(vision_layers=1, max_tokens=64)  # at most 64 image tokens (the real model allows 1280)


def build_random_qwen2_vl(out_dir: str | Path, dims: dict | None = None, seed: int = 0) -> Path:
    """Save a random-weight Qwen2-VL + a real Qwen2VLProcessor to `out_dir`.

    The processing policy is Qwen2-VL's (smart_resize to multiples of 28 px,
    patch 14, 2 x 2 merge, temporal patch 2) with a smaller `max_pixels` so tests
    stay fast; the token layout is the real one, the weights are random
    (`attnstore.models.tiny_qwen`, shared with Qwen2.5-VL and Qwen3-VL).
    """
    from attnstore.models.tiny_qwen import build_random_qwen

    return build_random_qwen("qwen2_vl", out_dir, {**QWEN2_VL_TINY_DIMS, **(dims or {})}, seed)
