"""Tiny random-weight models of the newer families (Gemma 3, PaliGemma, InternVL, Mistral 3), built offline.

As in `attnstore.models.tiny`: the family's real config, model and processor classes, a tiny
byte-level BPE tokenizer holding the family's special tokens and chat template, small image
sizes so tests run fast; only the weights and the dims are not the real ones.
"""

from __future__ import annotations

from pathlib import Path

from attnstore.models import gemma3, internvl, mistral3, paligemma
from attnstore.models.tiny_qwen import QWEN_NAMED, qwen_generation_ids, qwen_text_config_kwargs
from attnstore.models.tiny_save import save_random_model
from attnstore.models.tiny_tokenizer import LLAMA_NAMED, build_bpe_tokenizer, text_config_kwargs, vision_config_kwargs

TEXT_DIMS = dict(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2)


# -- Gemma 3 ----------------------------------------------------------------------------------


GEMMA3_TINY = dict(
    **TEXT_DIMS,
    vision_hidden=32,
    image_size=64,  # 8 x 8 SigLIP patches of 8 px (the real model: 896 px, 64 x 64 patches of 14 px)
    patch=8,
    tokens_per_image=16,  # pooled to 4 x 4 tokens (the real model: 256 = 16 x 16)
    sliding_window=32,  # shorter than the prompt, so the sliding layer's mask matters
)


def build_random_gemma3(out_dir: str | Path, dims: dict | None = None, seed: int = 0, pan_and_scan: bool = False):
    """Save a random-weight Gemma 3 + a real Gemma3Processor to `out_dir`.

    Gemma 3's processing (squash to one square, SigLIP patches average-pooled to an n x n grid,
    bidirectional image blocks, one sliding and one global layer) at 64 px and 4 x 4 tokens.
    `pan_and_scan` turns the processor's crops on (at a 32 px minimum crop, so small test
    images get them).
    """
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor

    dims = {**GEMMA3_TINY, **(dims or {})}
    tokenizer = build_bpe_tokenizer(
        [*gemma3.CHAT_SPECIALS, gemma3.BOI_TOKEN, gemma3.EOI_TOKEN, gemma3.IMAGE_TOKEN],
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        boi_token=gemma3.BOI_TOKEN,
        eoi_token=gemma3.EOI_TOKEN,
        image_token=gemma3.IMAGE_TOKEN,
    )
    side = dims["image_size"]
    scan = (
        dict(do_pan_and_scan=True, pan_and_scan_min_crop_size=32, pan_and_scan_max_num_crops=4) if pan_and_scan else {}
    )
    image_processor = Gemma3ImageProcessorPil(
        size={"height": side, "width": side},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        **(scan if pan_and_scan else {}),
    )
    processor = Gemma3Processor(
        image_processor,
        tokenizer,
        image_seq_length=dims["tokens_per_image"],
        chat_template=gemma3.GEMMA3_CHAT_TEMPLATE,
    )
    ids = tokenizer.convert_tokens_to_ids
    head_dim = dims["hidden"] // dims["heads"]
    text_config = dict(
        **text_config_kwargs(dims, tokenizer, "<bos>", "<end_of_turn>", "<pad>"),
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim,
        sliding_window=dims["sliding_window"],
        layer_types=["sliding_attention", "full_attention"][: dims["layers"]]
        + ["full_attention"] * max(0, dims["layers"] - 2),
    )
    vision_config = vision_config_kwargs(
        dims, model_type="siglip_vision_model", image_size=side, patch_size=dims["patch"], vision_use_head=False
    )
    config = Gemma3Config(
        text_config=text_config,
        vision_config=vision_config,
        mm_tokens_per_image=dims["tokens_per_image"],
        boi_token_index=ids(gemma3.BOI_TOKEN),
        eoi_token_index=ids(gemma3.EOI_TOKEN),
        image_token_index=ids(gemma3.IMAGE_TOKEN),
    )
    return save_random_model(
        Gemma3ForConditionalGeneration,
        config,
        processor,
        out_dir,
        seed,
        eos=[ids("<end_of_turn>"), ids("<eos>")],
        pad=ids("<pad>"),
    )


# -- PaliGemma --------------------------------------------------------------------------------


PALIGEMMA_TINY = dict(**TEXT_DIMS, vision_hidden=32, image_size=64, patch=8)  # 8 x 8 tokens (real: 224 px, 16 x 16)


def build_random_paligemma(out_dir: str | Path, dims: dict | None = None, seed: int = 0) -> Path:
    """Save a random-weight PaliGemma (Gemma text model) + a real PaliGemmaProcessor to `out_dir`.

    PaliGemma's processing (SigLIP squash to one square, one token per patch, "<image>"s then
    <bos> PROMPT "\n" as a bidirectional prefix) at 64 px and patch 8.
    """
    from transformers import (
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessorPil,
    )

    dims = {**PALIGEMMA_TINY, **(dims or {})}
    tokenizer = build_bpe_tokenizer(
        [*paligemma.CHAT_SPECIALS, paligemma.IMAGE_TOKEN],
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        image_token=paligemma.IMAGE_TOKEN,
    )
    side = dims["image_size"]
    image_processor = SiglipImageProcessorPil(
        size={"height": side, "width": side}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    image_processor.image_seq_length = (side // dims["patch"]) ** 2  # PaliGemma's preprocessor_config has it
    processor = PaliGemmaProcessor(image_processor, tokenizer)  # adds the <loc>/<seg> tokens
    ids = tokenizer.convert_tokens_to_ids
    head_dim = dims["hidden"] // dims["heads"]
    text_config = dict(
        **text_config_kwargs(dims, tokenizer, "<bos>", "<eos>", "<pad>"), model_type="gemma", head_dim=head_dim
    )
    text_config["vocab_size"] = len(tokenizer)
    vision_config = vision_config_kwargs(
        dims, model_type="siglip_vision_model", image_size=side, patch_size=dims["patch"], projection_dim=dims["hidden"]
    )
    config = PaliGemmaConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_index=ids(paligemma.IMAGE_TOKEN),
        projection_dim=dims["hidden"],
        hidden_size=dims["hidden"],
        vocab_size=len(tokenizer),
    )
    return save_random_model(
        PaliGemmaForConditionalGeneration, config, processor, out_dir, seed, eos=ids("<eos>"), pad=ids("<pad>")
    )


# -- InternVL ---------------------------------------------------------------------------------


# 64 px tiles of 8 x 8 patches, pixel-shuffled to 4 x 4 tokens (real: 448 px, 32 x 32 -> 16 x 16), up to 6 tiles.
INTERNVL_TINY = dict(**TEXT_DIMS, vision_hidden=32, tile=64, patch=8, max_tiles=6)


def build_random_internvl(out_dir: str | Path, dims: dict | None = None, seed: int = 0) -> Path:
    """Save a random-weight InternVL (Qwen2 text model) + a real InternVLProcessor (images only) to `out_dir`.

    InternVL's processing (GotOcr2 dynamic tiles + thumbnail, pixel shuffle 0.5) at 64 px tiles.
    """
    from transformers import GotOcr2ImageProcessorPil, InternVLConfig, InternVLForConditionalGeneration

    dims = {**INTERNVL_TINY, **(dims or {})}
    tokenizer = build_bpe_tokenizer(
        [*internvl.CHAT_SPECIALS, internvl.START_IMAGE, internvl.END_IMAGE, internvl.IMAGE_TOKEN, internvl.VIDEO_TOKEN],
        **QWEN_NAMED,
        start_image_token=internvl.START_IMAGE,
        end_image_token=internvl.END_IMAGE,
        context_image_token=internvl.IMAGE_TOKEN,
        video_token=internvl.VIDEO_TOKEN,
    )
    tile = dims["tile"]
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": tile, "width": tile},
        crop_to_patches=True,
        min_patches=1,
        max_patches=dims["max_tiles"],
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    tokens_per_view = (tile // dims["patch"] // 2) ** 2  # pixel shuffle halves each side
    processor = internvl.images_only_processor_class()(
        image_processor, tokenizer, image_seq_length=tokens_per_view, chat_template=internvl.INTERNVL_CHAT_TEMPLATE
    )
    ids = tokenizer.convert_tokens_to_ids
    text_config = dict(**qwen_text_config_kwargs(dims, tokenizer), model_type="qwen2")
    vision_config = vision_config_kwargs(dims, image_size=[tile, tile], patch_size=[dims["patch"], dims["patch"]])
    config = InternVLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids(internvl.IMAGE_TOKEN),
        image_seq_length=tokens_per_view,
        downsample_ratio=0.5,
    )
    return save_random_model(
        InternVLForConditionalGeneration, config, processor, out_dir, seed, **qwen_generation_ids(tokenizer)
    )


# -- Mistral 3 --------------------------------------------------------------------------------


# Longest edge 128 px, patch 8, 2 x 2 merge: tokens of 16 px, at most 8 x 8 (real: 1540 px, patch 14 -> 55 x 55).
MISTRAL3_TINY = dict(**TEXT_DIMS, vision_hidden=32, longest_edge=128, patch=8, merge=2)


def build_random_mistral3(out_dir: str | Path, dims: dict | None = None, seed: int = 0) -> Path:
    """Save a random-weight Mistral 3 (Pixtral vision tower, Mistral text model) + a real PixtralProcessor.

    Mistral Small 3.1's processing (fit within longest_edge, stretch to whole merged patches,
    [IMG_BREAK] per token row, [IMG_END]) at 128 px.
    """
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, PixtralImageProcessorPil

    dims = {**MISTRAL3_TINY, **(dims or {})}
    tokenizer = build_bpe_tokenizer(
        [*mistral3.CHAT_SPECIALS, mistral3.IMAGE_TOKEN, mistral3.BREAK_TOKEN, mistral3.END_TOKEN], **LLAMA_NAMED
    )
    image_processor = PixtralImageProcessorPil(
        size={"longest_edge": dims["longest_edge"]},
        patch_size={"height": dims["patch"], "width": dims["patch"]},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    processor = mistral3.pixtral_processor_class()(
        image_processor,
        tokenizer,
        patch_size=dims["patch"],
        spatial_merge_size=dims["merge"],
        chat_template=mistral3.MISTRAL3_CHAT_TEMPLATE,
    )
    ids = tokenizer.convert_tokens_to_ids
    text_config = dict(**text_config_kwargs(dims, tokenizer, "<s>", "</s>", "<pad>"), model_type="mistral")
    vision_config = vision_config_kwargs(
        dims, model_type="pixtral", image_size=dims["longest_edge"], patch_size=dims["patch"]
    )
    config = Mistral3Config(
        text_config=text_config,
        vision_config=vision_config,
        image_token_index=ids(mistral3.IMAGE_TOKEN),
        spatial_merge_size=dims["merge"],
        vision_feature_layer=-1,
    )
    return save_random_model(
        Mistral3ForConditionalGeneration, config, processor, out_dir, seed, eos=ids("</s>"), pad=ids("<pad>")
    )
