"""Extraction: captured rows equal transformers' own output_attentions, within fp16 rounding."""

import numpy as np
import pytest
import torch

from attnstore.errors import InvalidArgument
from attnstore.extract import extract, query_positions
from attnstore.schema import TEXT_KINDS, TokenKind, kind_mask
from attnstore.synthetic import _gradient_image


@pytest.fixture(scope="module")
def run(tiny_adapter):
    image = _gradient_image(640, 480)
    return image, extract(tiny_adapter, image, "Can you describe this image?", max_new_tokens=6)


def reference_attention(adapter, image, prompt, token_ids):
    inputs = adapter.prepare(image, prompt)
    sequence = torch.as_tensor(token_ids, dtype=torch.long)[None]
    with torch.inference_mode():
        out = adapter.model(
            input_ids=sequence,
            attention_mask=torch.ones_like(sequence),
            pixel_values=inputs["pixel_values"],
            pixel_attention_mask=inputs["pixel_attention_mask"],
            output_attentions=True,
            use_cache=False,
        )
    return np.stack([a[0].float().numpy() for a in out.attentions])  # [layer, head, seq, seq]


def test_captured_rows_equal_output_attentions(tiny_adapter, run):
    image, result = run
    reference = reference_attention(tiny_adapter, image, result.prompt, result.token_id)
    assert result.attention.dtype == np.float16
    assert result.attention.shape == (tiny_adapter.n_layers, tiny_adapter.n_heads, result.n_query, result.n_key)
    np.testing.assert_allclose(
        result.attention.astype(np.float32), reference[:, :, result.query_position], rtol=2e-3, atol=2e-4
    )


def test_rows_sum_to_one_and_are_causal(run):
    _, result = run
    rows = result.attention.astype(np.float32)
    np.testing.assert_allclose(rows.sum(-1), 1.0, atol=5e-3)
    after = np.arange(result.n_key)[None, :] > result.query_position[:, None]
    assert rows[:, :, after].max() == 0


def test_queries_are_text_and_answer_rows(run):
    _, result = run
    kinds = result.layout.kind
    assert (kinds[result.query_position] != TokenKind.IMAGE_TILE).all()
    assert np.array_equal(result.query_position, np.flatnonzero(kind_mask(kinds, TEXT_KINDS)))
    n_generated = int((kinds == TokenKind.GENERATED).sum())
    assert 1 <= n_generated <= 6
    assert (kinds[-n_generated:] == TokenKind.GENERATED).all()


def test_generation_never_emits_image_tokens(tiny_adapter, run):
    _, result = run
    generated = result.token_id[result.layout.kind == TokenKind.GENERATED]
    assert not set(generated.tolist()) & set(tiny_adapter.banned_token_ids())


def test_queries_all_keeps_every_row(tiny_adapter):
    result = extract(tiny_adapter, _gradient_image(300, 200), "Describe.", max_new_tokens=2, queries="all")
    assert result.n_query == result.n_key
    np.testing.assert_allclose(result.attention.astype(np.float32).sum(-1), 1.0, atol=5e-3)


def test_query_mode_and_prompt_errors(tiny_adapter):
    with pytest.raises(InvalidArgument, match="queries"):
        query_positions(np.zeros(3, np.int8), "images")
    with pytest.raises(InvalidArgument, match="prompt is empty"):
        extract(tiny_adapter, _gradient_image(64, 64), "   ")
