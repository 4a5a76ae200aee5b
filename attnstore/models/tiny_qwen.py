"""Tiny random-weight Qwen-VL models (Qwen2-VL, Qwen2.5-VL, Qwen3-VL), built offline.

One builder for the three families: the same special tokens, the same image processor
(`Qwen2VLImageProcessorPil`: smart_resize, 2 x 2 merge, temporal patch 2) with each family's
patch size and a small pixel budget, the family's real processor class (without its video
processor) and chat template, and a config whose vision tower keeps the family's own parts
(Qwen2.5-VL's window attention, Qwen3-VL's DeepStack) at toy sizes.
"""

from __future__ import annotations

from pathlib import Path

from attnstore.models import qwen2_vl, qwen3_vl
from attnstore.models.tiny_tokenizer import build_bpe_tokenizer, text_config_kwargs

QWEN_TINY_DIMS = dict(
    hidden=64,
    intermediate=128,
    layers=2,
    heads=4,
    kv_heads=2,
    vision_embed=32,
    vision_layers=2,
    max_tokens=64,  # image tokens at most (the real models allow 1280 and more)
    min_tokens=4,  # image tokens at least (Qwen2-VL's and Qwen2.5-VL's real min_pixels: 56 x 56)
)
QWEN_SPECIALS = (
    *qwen2_vl.CHAT_SPECIALS,
    qwen2_vl.VISION_START,
    qwen2_vl.VISION_END,
    qwen2_vl.VISION_PAD,
    qwen2_vl.IMAGE_TOKEN,
    qwen2_vl.VIDEO_TOKEN,
)
# The Qwen2 text model's specials, shared with the Qwen2-based builders (InternVL, LLaVA-OneVision).
QWEN_NAMED = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>")  # Qwen2's specials


def qwen_generation_ids(tokenizer) -> dict:
    """`save_random_model`'s eos / pad for a Qwen2 text model: a turn ends at <|im_end|> or <|endoftext|>."""
    ids = tokenizer.convert_tokens_to_ids
    return dict(eos=[ids("<|im_end|>"), ids("<|endoftext|>")], pad=ids("<|endoftext|>"))


def qwen_text_config_kwargs(dims: dict, tokenizer) -> dict:
    """`text_config_kwargs` with the Qwen2 specials (<|endoftext|> as bos and pad, <|im_end|> as eos)."""
    return text_config_kwargs(dims, tokenizer, "<|endoftext|>", "<|im_end|>", "<|endoftext|>")


# What differs between the families at the LM's interface: patch size, rotary sections, template.
PATCH_SIZE = {"qwen2_vl": 14, "qwen2_5_vl": 14, "qwen3_vl": 16}
CHAT_TEMPLATE = {
    "qwen2_vl": qwen2_vl.QWEN2_VL_CHAT_TEMPLATE,
    "qwen2_5_vl": qwen2_vl.QWEN2_VL_CHAT_TEMPLATE,
    "qwen3_vl": qwen3_vl.QWEN3_VL_CHAT_TEMPLATE,
}


def build_random_qwen2_5_vl(out_dir: str | Path, dims: dict | None = None, seed: int = 0) -> Path:
    """Save a random-weight Qwen2.5-VL + a real Qwen2_5_VLProcessor (Qwen2-VL geometry) to `out_dir`."""
    return build_random_qwen("qwen2_5_vl", out_dir, dims, seed)


def build_random_qwen3_vl(out_dir: str | Path, dims: dict | None = None, seed: int = 0) -> Path:
    """Save a random-weight Qwen3-VL + a real Qwen3VLProcessor (16 px patches) to `out_dir`."""
    return build_random_qwen("qwen3_vl", out_dir, dims, seed)


def build_random_qwen(family: str, out_dir: str | Path, dims: dict | None = None, seed: int = 0) -> Path:
    """Save a random-weight model of a Qwen-VL `family` and its real processor to `out_dir`."""
    import transformers
    from transformers import Qwen2VLImageProcessorPil

    from attnstore.models import adapter_class
    from attnstore.models.tiny_save import save_random_model

    dims = {**QWEN_TINY_DIMS, **(dims or {})}
    tokenizer = build_bpe_tokenizer(list(QWEN_SPECIALS), **QWEN_NAMED)
    patch = PATCH_SIZE[family]
    token_pixels = (2 * patch) ** 2  # pixels per image token (2 x 2 merge)
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": token_pixels * dims["min_tokens"], "longest_edge": token_pixels * dims["max_tokens"]},
        patch_size=patch,
        temporal_patch_size=2,
        merge_size=2,
        **({"image_mean": [0.5] * 3, "image_std": [0.5] * 3} if family == "qwen3_vl" else {}),
    )
    processor_class = qwen2_vl.images_only_processor_class(adapter_class(family).processor_class_name)
    processor = processor_class(image_processor, tokenizer, chat_template=CHAT_TEMPLATE[family])
    ids = tokenizer.convert_tokens_to_ids
    config_class, model_class = CLASSES[family]
    config = getattr(transformers, config_class)(
        text_config=text_config(family, dims, tokenizer),
        vision_config=vision_config(family, dims, patch),
        image_token_id=ids(qwen2_vl.IMAGE_TOKEN),
        video_token_id=ids(qwen2_vl.VIDEO_TOKEN),
        vision_start_token_id=ids(qwen2_vl.VISION_START),
        vision_end_token_id=ids(qwen2_vl.VISION_END),
    )
    return save_random_model(
        getattr(transformers, model_class), config, processor, out_dir, seed, **qwen_generation_ids(tokenizer)
    )


CLASSES = {
    "qwen2_vl": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration"),
    "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration"),
    "qwen3_vl": ("Qwen3VLConfig", "Qwen3VLForConditionalGeneration"),
}


def text_config(family: str, dims: dict, tokenizer) -> dict:
    """The text model: sizes from `dims`; M-RoPE sections scaled from the real ones to the head size."""
    head_dim = dims["hidden"] // dims["heads"]
    half = head_dim // 2  # rotary frequencies, split over (t, h, w)
    if family == "qwen3_vl":  # [24, 20, 20] of 64, interleaved
        spatial = 5 * half // 16
        extra = {"head_dim": head_dim, "rope_theta": 5000000.0}
    else:  # [16, 24, 24] of 64
        spatial = 3 * half // 8
        extra = {"rope_theta": 1000000.0}
    mrope = [half - 2 * spatial, spatial, spatial]
    theta = extra.pop("rope_theta")
    return dict(
        **qwen_text_config_kwargs(dims, tokenizer),
        **extra,
        rope_parameters={"rope_type": "default", "rope_theta": theta, "mrope_section": mrope},
    )


def vision_config(family: str, dims: dict, patch: int) -> dict:
    """A toy vision tower of the family's own kind; its merger projects straight to the text width."""
    common = dict(
        depth=dims["vision_layers"], num_heads=2, patch_size=patch, spatial_merge_size=2, temporal_patch_size=2
    )
    if family == "qwen2_vl":
        return dict(**common, embed_dim=dims["vision_embed"], hidden_size=dims["hidden"])
    width = dict(hidden_size=dims["vision_embed"], intermediate_size=2 * dims["vision_embed"])
    if family == "qwen2_5_vl":
        # Windows of 4 x 4 tokens (window_size px) in every block but the last: window attention runs.
        return dict(
            **common, **width, out_hidden_size=dims["hidden"], window_size=4 * 2 * patch,
            fullatt_block_indexes=[dims["vision_layers"] - 1],
        )  # fmt: skip
    # qwen3_vl: learned positions on an 8 x 8 grid, DeepStack features from the first block.
    return dict(
        **common, **width, out_hidden_size=dims["hidden"], num_position_embeddings=64, deepstack_visual_indexes=[0]
    )
