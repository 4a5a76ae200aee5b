"""Token text as a reader sees it: BPE markers as spaces and newlines, byte-level tokens decoded.

One way everywhere (the explorer's strip and status line, titles of exported maps): a byte-level
token holding part of a multi-byte character cannot be decoded alone and is shown as escaped bytes
(e.g. \\xcc), never as a replacement character or a doubly escaped repr.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import xarray as xr

SP_BYTE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE: printable stand-in character -> byte (the inverse of `bytes_to_unicode`)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def tokenizer_style(texts: list[str]) -> str:
    """ "bytelevel" (GPT-2 style Ġ/Ċ markers), "sentencepiece" (▁ marker) or "plain"."""
    joined = "".join(texts)
    if "Ġ" in joined or "Ċ" in joined:
        return "bytelevel"
    if "▁" in joined:
        return "sentencepiece"
    return "plain"


def is_special(text: str) -> bool:
    """Chat-template / image marker tokens such as <|im_start|>, <image>, <row_1_col_2>."""
    return len(text) > 2 and text.startswith("<") and text.endswith(">")


def display_text(text: str, style: str = "bytelevel") -> str:
    """What a token looks like to a reader: BPE markers become spaces/newlines, bytes become characters.

    A byte-level token holding part of a multi-byte character cannot be decoded alone;
    it is shown as escaped bytes (e.g. ``\\xcc``) instead of a wrong character.
    """
    if style == "sentencepiece" and SP_BYTE.fullmatch(text):  # SentencePiece byte fallback, e.g. <0x0A>
        byte = int(text[3:5], 16)
        return chr(byte) if byte < 0x80 else text
    if is_special(text):
        return text
    if style == "sentencepiece":
        return text.replace("▁", " ")
    if style == "bytelevel":
        decoder = byte_decoder()
        if text and all(ch in decoder for ch in text):
            return bytes(decoder[ch] for ch in text).decode("utf-8", errors="backslashreplace")
    return text.replace("Ġ", " ").replace("Ċ", "\n").replace("▁", " ")


def quoted(text: str) -> str:
    """Display text in quotes, newlines marked (titles and status lines; never repr)."""
    return "“" + text.replace("\n", "↵") + "”"


def token_display(img: xr.Dataset, position: int) -> str:
    """The display text of the token at sequence `position` of one image (`select_image`)."""
    texts = [str(t) for t in np.asarray(img["token_text"].values)]
    return display_text(texts[position], tokenizer_style(texts))
