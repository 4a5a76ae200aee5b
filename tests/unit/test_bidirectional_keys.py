"""Validation's rule for the bidirectional parts of a text model's mask (store attr `attention_mask`)."""

import numpy as np

from attnstore.schema import TokenKind
from attnstore.store.validation import bidirectional_keys

T, G, S, P, A = TokenKind.IMAGE_TILE, TokenKind.IMAGE_GLOBAL, TokenKind.IMAGE_SPECIAL, TokenKind.PROMPT_TEXT, 5
# text, [global block of 2], marker, [tile block of 2], marker, prompt, answer
KINDS = np.array([P, G, G, S, T, T, S, P, A], np.int8)


def test_image_blocks_see_only_their_own_block():
    allowed = bidirectional_keys(KINDS, "image_blocks")
    expected = np.zeros((9, 9), bool)
    expected[1:3, 1:3] = expected[4:6, 4:6] = True
    assert np.array_equal(allowed, expected)


def test_prefix_sees_the_whole_prompt_not_the_answer():
    allowed = bidirectional_keys(KINDS, "prefix")
    assert allowed[:8, :8].all() and not allowed[8].any() and not allowed[:, 8].any()


def test_causal_and_unknown_allow_nothing_later():
    assert not bidirectional_keys(KINDS, "causal").any()
    assert not bidirectional_keys(KINDS, "something else").any()
