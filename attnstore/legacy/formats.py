"""The seed formats' file names, the size bounds checked from headers, and LegacyFormatError."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from attnstore.errors import AttnstoreError
from attnstore.schema import DIM_LIMITS, KEY

ARRAY_FILE = "attention_array.npy"
TOKENS_FILE = "decoded_tokens.npy"
NPZ_DIR = "attentions_5"  # what the seed viewer reads
NPZ_DIRS = (NPZ_DIR, "attentions")  # preferred, in order, when a folder holds several layer folders
NPZ_NAME = "attention_fp16_rounded_layer_{}.npz"
NPZ_PATTERN = re.compile(r"^attention_fp16_rounded_layer_(\d+)\.npz$")
NPZ_KEYS = ("attention", "attn", "attentions", "arr_0", "weights")  # preferred when an npz holds several
# Bounds checked from headers before anything is loaded: small files must not load huge arrays.
MAX_ARRAY_BYTES = 4 * 2**30  # one attention array (a layer file, or the seed000 square) as declared
MAX_INFLATION = 200  # declared bytes per compressed byte of an npz member (real attention: < 10; zeros: ~1000)
INFLATION_FROM = 64 * 2**20  # ... checked for members declaring more than this (small ones cost nothing)
MAX_TOKEN_CHARS = 64 * 2**20  # characters of all tokens of one folder


class LegacyFormatError(AttnstoreError):
    """A seed-format file is missing, pickled, or has the wrong shape."""


def check_token_count(path: Path, shape: tuple[int, ...]) -> None:
    """Before loading: at most as many tokens as a store has keys (`DIM_LIMITS`)."""
    if len(shape) == 1 and shape[0] > DIM_LIMITS[KEY]:
        raise LegacyFormatError(f"{path} declares {shape[0]:,} tokens, more than a store holds ({DIM_LIMITS[KEY]:,})")


def check_attention_header(path: Path, shape: tuple[int, ...], dtype: np.dtype, stored_bytes: int | None) -> None:
    """Before loading: floating-point weights, of a declared size within MAX_ARRAY_BYTES and, for a
    compressed member (`stored_bytes`), within MAX_INFLATION of what the file holds."""
    if dtype.kind != "f":
        raise LegacyFormatError(f"{path}: attention is {dtype}, expected floating-point weights (softmax outputs)")
    declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    inflated = stored_bytes is not None and declared > max(INFLATION_FROM, MAX_INFLATION * stored_bytes)
    if declared > MAX_ARRAY_BYTES or inflated:
        held = f" from {stored_bytes:,} stored bytes" if stored_bytes is not None else ""
        raise LegacyFormatError(f"{path}: declares a {shape} array ({declared:,} bytes{held}); refusing to load it")
