"""Tokens of one image: find a query row by its text (BPE-aware), list the stored rows' tokens."""

from __future__ import annotations

import difflib

import numpy as np
import xarray as xr

from attnstore.analysis.select import ImageVariables, values_of
from attnstore.errors import NotFound
from attnstore.schema import TokenKind

BPE_MARKERS = "ĠĊ▁"  # GPT-2 byte-level space/newline, SentencePiece space
ANSWER = "@answer"  # names the answer's tokens (any image, whatever its words): occurrence 0 = the first
# Names the rows that generated the answer's tokens: a decoder picks the token at position p from
# the row at p - 1 (the first answer word from the prompt's last row), so that row's attention is
# the one the word was chosen with; the answer token's own row chooses what comes after it.
ANSWER_STEP = "@answer-step"


class TokenNotFoundError(NotFound):
    """The requested token text does not occur among the stored query rows."""

    def __init__(self, message: str):
        super().__init__(message, param="token")


def query_tokens(img: xr.Dataset) -> np.ndarray:
    """Raw token text of each stored query row  # [query] str."""
    var = img.variables  # plain Variables: no DataArray per lookup
    return _texts_at(var["query_position"].values, var["token_text"].values)


def _texts_at(positions: np.ndarray, texts: np.ndarray) -> np.ndarray:
    """texts  # [key] at positions  # [query] -> [query] str."""
    picked = np.asarray(texts)[np.asarray(positions)]
    return np.array([str(t) for t in picked], dtype=str)  # StringDType -> fixed width (numpy 2 needs the loop)


def strip_bpe(token: str) -> str:
    """Token text without BPE space/newline markers or surrounding whitespace."""
    return token.strip(BPE_MARKERS).strip()


def token_occurrences(img: ImageVariables, text: str) -> list[int]:
    """Query rows whose token matches `text`: BPE-aware exact match, else case-insensitive.

    `text` "@answer" matches every generated (answer) token, in order; "@answer-step" the rows that
    generated them. `img`: one image (`select_image`), or its variables as arrays by name
    (`scan.BatchArrays.image`)."""
    value = values_of(img)
    positions = value("query_position")
    if text in (ANSWER, ANSWER_STEP):
        answer = np.flatnonzero(value("token_kind")[positions] == int(TokenKind.GENERATED))
        return answer.tolist() if text == ANSWER else generating_rows(positions, answer)
    tokens = _texts_at(positions, value("token_text"))
    wanted = strip_bpe(text)
    stripped = np.array([strip_bpe(t) for t in tokens], dtype=str)
    rows = np.flatnonzero((stripped == wanted) | (tokens == text))
    if rows.size == 0:
        rows = np.flatnonzero(np.char.lower(stripped) == wanted.lower())
    return [int(r) for r in rows]


def generating_rows(positions: np.ndarray, answer_rows: np.ndarray) -> list[int]:
    """The stored rows at the positions just before the answer rows' positions (the rows that
    generated those tokens); a token whose previous position has no stored row is skipped."""
    row_at = {int(p): r for r, p in enumerate(np.asarray(positions))}
    return [row_at[p - 1] for p in np.asarray(positions)[answer_rows].tolist() if p - 1 in row_at]


def find_token(img: xr.Dataset, text: str, occurrence: int = 0) -> int:
    """Query row index of a token given by its text.

    Parameters
    ----------
    img : one image (`select_image`).
    text : e.g. "jacket"; matches "Ġjacket" / "▁jacket"; case-insensitive if no exact match;
        "@answer" matches the answer's tokens (occurrence 0 = its first token), "@answer-step"
        the rows that generated them (occurrence 0 = the prompt's last row, which chose the
        first answer token).
    occurrence : which match (0 = first, -1 = last).

    Raises
    ------
    TokenNotFoundError : with the closest token texts when there is no match.
    """
    rows = token_occurrences(img, text)
    if not rows:
        raise TokenNotFoundError(_not_found_message(img, text))
    if not -len(rows) <= occurrence < len(rows):
        raise TokenNotFoundError(
            f"token '{text}' occurs {len(rows)} time(s) (rows {rows[:10]}); occurrence {occurrence} does not exist"
        )
    return rows[occurrence]


def _not_found_message(img: xr.Dataset, text: str) -> str:
    words = sorted({strip_bpe(t) for t in query_tokens(img)} - {""})
    lowered = {w.lower(): w for w in words}
    close = [lowered[w] for w in difflib.get_close_matches(strip_bpe(text).lower(), list(lowered), n=5, cutoff=0.5)]
    hint = f"; close matches: {', '.join(repr(c) for c in close)}" if close else ""
    return f"token '{text}' not found among the {len(words)} distinct text tokens of this image{hint}"
