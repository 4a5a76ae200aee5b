"""A small byte-level BPE tokenizer built offline with `tokenizers`.

Used by the tiny random-weight models (tests, demo, benchmarks): real special
tokens and chat templates, real byte-level BPE behaviour (Ġ / Ċ markers), a
vocabulary of a few hundred pieces trained in milliseconds on the text below.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

_CORPUS = """\
Can you describe this image? What is in the picture? Is there a dog in the image?
A man in a red jacket is walking a dog along the beach at sunset.
A cat sleeps on a wooden table next to a cup of coffee and a laptop.
Two children play football in a green park with tall trees behind them.
A red bus drives down a busy city street with people on the sidewalk.
The woman holds an umbrella in the rain near a yellow taxi.
A bowl of fruit with apples, bananas and oranges on the kitchen counter.
Yes. No. There is a person, a car, a bicycle, a horse, a bird and a boat.
The sky is blue, the grass is green, the sun is bright and the water is calm.
Answer the question using a single word or phrase. Describe the scene in detail.
"""


def build_bpe_tokenizer(
    special_tokens: list[str], vocab_size: int = 700, extra_corpus: str = "", **named_specials
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on the built-in corpus and wrap it for transformers.

    Parameters
    ----------
    special_tokens : every special token, in the order they get ids (after the bytes).
    extra_corpus : more text to train on (e.g. a task's words, so each becomes one piece).
    named_specials : bos_token=..., eos_token=..., pad_token=..., unk_token=... .
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((_CORPUS + extra_corpus).splitlines() * 4, trainer=trainer)
    named = set(named_specials.values())
    extra = [t for t in special_tokens if t not in named]
    return PreTrainedTokenizerFast(tokenizer_object=tok, additional_special_tokens=extra, **named_specials)


def text_config_kwargs(dims: dict, tokenizer, bos: str, eos: str, pad: str, max_positions: int = 4096) -> dict:
    """Keyword arguments of a random-weight builder's text config: sizes from `dims`, specials by name."""
    ids = tokenizer.convert_tokens_to_ids
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=dims["hidden"],
        intermediate_size=dims["intermediate"],
        num_hidden_layers=dims["layers"],
        num_attention_heads=dims["heads"],
        num_key_value_heads=dims["kv_heads"],
        max_position_embeddings=max_positions,
        bos_token_id=ids(bos),
        eos_token_id=ids(eos),
        pad_token_id=ids(pad),
    )


def vision_config_kwargs(dims: dict, **family) -> dict:
    """Keyword arguments of a random-weight builder's vision tower: width `dims["vision_hidden"]`, an MLP
    twice as wide, `vision_layers` (1) blocks of `vision_heads` (2) heads; `family` adds the family's own."""
    return dict(
        hidden_size=dims["vision_hidden"],
        intermediate_size=2 * dims["vision_hidden"],
        num_hidden_layers=dims.get("vision_layers", 1),
        num_attention_heads=dims.get("vision_heads", 2),
        **family,
    )


# Llama's and Mistral's special tokens, by name (the builders of those text models share them).
LLAMA_NAMED = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
