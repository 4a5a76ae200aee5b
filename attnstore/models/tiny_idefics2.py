"""A tiny random-weight Idefics2 (perceiver resampler), built offline: the test model of sequence-only mode.

Idefics2's image tokens are the latents of a perceiver, not patches, so it has no geometry on
purpose (`attnstore.models.sequence_only`). Real classes (`Idefics2Config`,
`Idefics2ImageProcessorPil`, `Idefics2Processor`) and idefics2-8b's chat template; small sizes.
"""

from __future__ import annotations

from pathlib import Path

from attnstore.models.tiny_tokenizer import build_bpe_tokenizer, text_config_kwargs, vision_config_kwargs

IDEFICS2_TINY_DIMS = dict(
    hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vision_hidden=32, vision_layers=1, latents=16
)
FAKE_TOKEN, IMAGE_TOKEN, END_OF_UTTERANCE = "<fake_token_around_image>", "<image>", "<end_of_utterance>"
# HuggingFaceM4/idefics2-8b's chat template.
IDEFICS2_CHAT_TEMPLATE = (
    "{% for message in messages %}{{message['role'].capitalize()}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def build_random_idefics2(out_dir: str | Path, dims: dict | None = None, seed: int = 0) -> Path:
    """Save a random-weight Idefics2 + a real Idefics2Processor to `out_dir`."""
    from transformers import (
        Idefics2Config,
        Idefics2ForConditionalGeneration,
        Idefics2ImageProcessorPil,
        Idefics2Processor,
        MistralConfig,
    )

    from attnstore.models.tiny_save import save_random_model

    dims = {**IDEFICS2_TINY_DIMS, **(dims or {})}
    tokenizer = build_bpe_tokenizer(
        ["<unk>", "<s>", "</s>", FAKE_TOKEN, IMAGE_TOKEN, END_OF_UTTERANCE],
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>",
    )  # fmt: skip
    image_processor = Idefics2ImageProcessorPil(
        size={"shortest_edge": 112, "longest_edge": 224}, do_image_splitting=False,
        image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )  # fmt: skip
    processor = Idefics2Processor(
        image_processor, tokenizer, image_seq_len=dims["latents"], chat_template=IDEFICS2_CHAT_TEMPLATE
    )
    ids = tokenizer.convert_tokens_to_ids
    text_config = MistralConfig(**text_config_kwargs(dims, tokenizer, "<s>", "</s>", "<unk>"))
    vision_config = vision_config_kwargs(dims, patch_size=14, image_size=224)
    perceiver_config = dict(
        hidden_size=dims["hidden"], resampler_n_latents=dims["latents"], resampler_depth=1,
        resampler_n_heads=2, resampler_head_dim=16, num_key_value_heads=1,
    )  # fmt: skip
    config = Idefics2Config(
        text_config=text_config.to_dict(),
        vision_config=vision_config,
        perceiver_config=perceiver_config,
        image_token_id=ids(IMAGE_TOKEN),
    )
    return save_random_model(
        Idefics2ForConditionalGeneration, config, processor, out_dir, seed,
        eos=[ids(END_OF_UTTERANCE), ids("</s>")], pad=ids("<unk>"),
    )  # fmt: skip
