"""Whether each stored answer is right: the answer compared with the store's `expected_answer`
(the demo's scenes, any extraction that records one) or a POPE run's `pope_correct`.

One definition for every front end: `attnstore info` (accuracy), the explorer (right / wrong next to
the answer and in the image list), and `ds.attn.answer_correct()`, a per-image variable analyses
can join (`visual_ratio(label="answer_correct")`).
"""

from __future__ import annotations

import re

import numpy as np
import xarray as xr

EXPECTED_ANSWER = "expected_answer"  # optional (image,) str extra: the correct answer
POPE_CORRECT = "pope_correct"
ANSWER_CORRECT = "answer_correct"
RIGHT, WRONG, UNKNOWN = 1, 0, -1
_SPECIAL = re.compile(r"<[^<>\s]*>")  # chat specials a decoded answer may keep (<end_of_utterance>)
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")


def normalise_answer(text: str) -> str:
    """Lower case, chat specials dropped, words joined by one space, punctuation at the ends dropped."""
    return _EDGES.sub("", " ".join(_SPECIAL.sub(" ", str(text)).lower().split()))


def is_right(answer: str, expected: str) -> int:
    """RIGHT when the answer (normalised) is the expected one or starts with it as whole words
    ("Red." and "red, I think" answer "red"), WRONG otherwise, UNKNOWN without an expected answer."""
    want, got = normalise_answer(expected), normalise_answer(answer)
    if not want:
        return UNKNOWN
    return RIGHT if got == want or re.match(re.escape(want) + r"\b", got) else WRONG


def has_correctness(ds: xr.Dataset) -> bool:
    """Whether the store says what the right answers are."""
    return EXPECTED_ANSWER in ds or POPE_CORRECT in ds


def answer_correct(ds: xr.Dataset) -> xr.DataArray:
    """Per image: 1 right, 0 wrong, -1 unknown (no expected answer, or the image is not complete)
    # [image] int8. A store without expected answers gives -1 everywhere."""
    attrs = {"long_name": "the answer is right", "flag_values": [UNKNOWN, WRONG, RIGHT],
             "flag_meanings": "unknown wrong right"}  # fmt: skip
    return xr.DataArray(correctness_values(ds), dims=("image",), name=ANSWER_CORRECT, attrs=attrs)


def correctness_values(ds: xr.Dataset) -> np.ndarray:
    """`answer_correct` as plain numpy  # [image] int8: building a DataArray makes xarray import dask
    (its duck-array check), which a command that only prints a summary (`attnstore info`) avoids."""
    n = ds.sizes["image"]
    complete = np.asarray(ds["complete"].values).astype(bool)
    if POPE_CORRECT in ds:
        values = np.asarray(ds[POPE_CORRECT].values).astype(np.int8)
    elif EXPECTED_ANSWER in ds:
        pairs = zip(ds["answer"].values, ds[EXPECTED_ANSWER].values)
        values = np.array([is_right(str(a), str(e)) for a, e in pairs], np.int8)
    else:
        values = np.full(n, UNKNOWN, np.int8)
    return np.where(complete, values, UNKNOWN).astype(np.int8)


def accuracy(correct: np.ndarray) -> tuple[int, int]:
    """(right, judged) over the images whose correctness is known."""
    correct = np.asarray(correct)
    return int((correct == RIGHT).sum()), int((correct != UNKNOWN).sum())
