"""Token strip content: BPE display text and the grouping of image tokens into one chip per tile."""

from __future__ import annotations

import numpy as np
import pytest

from attnstore.schema import TokenKind
from explorer.tokens import display_text, strip_items, tokenizer_style


@pytest.mark.parametrize(
    ("raw", "style", "shown"),
    [
        ("Ġdog", "bytelevel", " dog"),
        ("Ċ", "bytelevel", "\n"),
        ("ĊĊ", "bytelevel", "\n\n"),
        ("ÃŃ", "bytelevel", "í"),  # two byte-level characters = one UTF-8 character
        ("Ì", "bytelevel", "\\xcc"),  # half a character: shown as the byte, not as a wrong letter
        ("▁dog", "sentencepiece", " dog"),
        ("<0x0A>", "sentencepiece", "\n"),
        ("<|im_start|>", "bytelevel", "<|im_start|>"),
        ("<row_1_col_2>", "sentencepiece", "<row_1_col_2>"),
        ("plain", "plain", "plain"),
    ],
)
def test_display_text(raw, style, shown):
    assert display_text(raw, style) == shown


def test_tokenizer_style():
    assert tokenizer_style(["User", "Ġdog"]) == "bytelevel"
    assert tokenizer_style(["▁The", "▁dog"]) == "sentencepiece"
    assert tokenizer_style(["a", "b"]) == "plain"


def _items(state, image: int) -> tuple[list[dict], object]:
    meta = state.image(image)
    return meta.items, meta


def test_one_chip_per_tile_plus_global(state):
    for image in range(3):
        items, meta = _items(state, image)
        rows, cols = int(meta.img["tile_rows"]), int(meta.img["tile_cols"])
        chips = [i for i in items if i["t"] == "chip"]
        assert [c["kind"] for c in chips] == ["tile"] * (rows * cols) + ["global"]
        assert [c["label"] for c in chips[:2]] == ["tile 1,1", "tile 1,2"]
        assert chips[-1]["label"] == "global image"
        # tile rows are separated by line breaks, so the chips look like the tile grid
        assert sum(1 for i in items if i["t"] == "br") >= rows


def test_every_position_appears_once(state):
    items, meta = _items(state, 0)
    keys = []
    for item in items:
        if item["t"] == "tok":
            keys.append(item["k"])
        elif item["t"] == "chip":
            keys += item["keys"]
    kinds = np.asarray(meta.img["token_kind"].values)
    newline_markers = [
        k for k in range(meta.n_key) if kinds[k] == TokenKind.IMAGE_SPECIAL and meta.display[k].strip() == ""
    ]
    assert sorted(keys + newline_markers) == list(range(meta.n_key))


def test_chip_cells_follow_the_tile_grid(state):
    items, meta = _items(state, 1)  # 4 x 3 tiles
    chip = next(i for i in items if i["t"] == "chip" and i["label"] == "tile 2,3")
    cells = np.array(chip["cells"])  # [patch, (key, row, col)]
    assert cells.shape == (64, 3)
    assert cells[:, 1].max() == 7 and cells[:, 2].max() == 7
    tiles = np.asarray(meta.img["patch_tile"].values)[cells[:, 0]]
    assert set(tiles.tolist()) == {1 * 3 + 2}


def test_text_tokens_are_clickable_by_index_and_parts_differ(state):
    items, meta = _items(state, 0)
    toks = [i for i in items if i["t"] == "tok"]
    answer = [t for t in toks if t["p"] == "answer"]
    prompt = [t for t in toks if t["p"] == "prompt"]
    assert answer and prompt
    assert all(t["q"] >= 0 for t in answer)
    # a repeated word (" a" twice in the synthetic answer) keeps distinct token indices and query rows
    repeats = [t for t in answer if t["s"] == " a"]
    assert len(repeats) >= 2
    assert len({t["k"] for t in repeats}) == len(repeats) and len({t["q"] for t in repeats}) == len(repeats)
    for t in toks:
        if t["q"] >= 0:
            assert int(meta.query_position[t["q"]]) == t["k"]


def test_strip_items_without_image():
    kinds = np.array([TokenKind.SPECIAL, TokenKind.PROMPT_TEXT, TokenKind.GENERATED], np.int8)
    items = strip_items(
        ["<s>", "Ġhi", "Ġthere"], kinds, np.full(3, -1), np.full(3, -1), np.full(3, -1), np.array([1, 2]), 0
    )
    assert [i["t"] for i in items] == ["tok"] * 3
    assert [i["q"] for i in items] == [-1, 0, 1]
    assert [i["p"] for i in items] == ["special", "prompt", "answer"]
