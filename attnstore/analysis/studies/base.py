"""What every dataset-level analysis shares: the `ANALYSES` registry (and each one's plot), which
query rows an analysis reads, and how per-image columns are put together. The scan over a store's
images is `attnstore.analysis.scan`, shared with `aggregate_token`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from attnstore.analysis.kernels import fp16_to_fp32
from attnstore.analysis.registry import Registry
from attnstore.analysis.select import read_rows_fp16
from attnstore.errors import InvalidArgument
from attnstore.schema import TEXT_KINDS, TokenKind, kind_mask

QUERY_SETS = ("generated", "prompt", "text", "last_prompt")
ANALYSES = Registry("analysis")  # name -> fn(ds, **options) -> xr.Dataset (a tidy table), its plot and options


@dataclass(frozen=True)
class Option:
    """An option of an analysis as front ends offer it: the keyword, its type on the command line, a
    help line, and how the typed text becomes the keyword's value (default: as typed)."""

    name: str
    type: type
    help: str
    parse: Callable[[Any], Any] | None = None


QUERIES = Option("queries", str, f"rows that ask: {' | '.join(QUERY_SETS)}")


def register(
    name: str, summary: str, plot: Callable, label: str | None = None, options: tuple[Option, ...] = ()
) -> Callable[[Callable], Callable]:
    """Register a dataset-level analysis with its plot and the options its front ends offer (`ANALYSES`)."""
    return ANALYSES.register(name, summary, label, plot=plot, options=options)


def query_rows(img: xr.Dataset, queries: str) -> np.ndarray:
    """Stored query rows of one image  # [n] int: "generated" (answer tokens), "prompt" (every stored
    text row before the answer: prompt text and template specials), "text" (every stored text row) or
    "last_prompt" (the last prompt row: the token whose next-token prediction starts the answer).
    Rows of image tokens (stores extracted with `--queries text+image` or `all`) are never taken, so
    a study means the same on any store."""
    if queries not in QUERY_SETS:
        raise InvalidArgument("queries", f"must be one of {', '.join(QUERY_SETS)}, not {queries!r}")
    positions = np.asarray(img["query_position"].values)
    kinds = np.asarray(img["token_kind"].values)[positions]
    generated = kinds == int(TokenKind.GENERATED)
    text = kind_mask(kinds, TEXT_KINDS)
    if queries == "generated":
        return np.flatnonzero(generated)
    if queries == "prompt":
        return np.flatnonzero(text & ~generated)
    if queries == "last_prompt":
        return np.flatnonzero(text & ~generated)[-1:]
    return np.flatnonzero(text)


def read_rows_fp32(img: xr.Dataset, rows: np.ndarray) -> np.ndarray:
    """Rows as float32  # [row, layer, head, key]; an empty selection gives 0 rows."""
    if len(rows) == 0:
        att = img["attention"]
        return np.zeros((0, att.sizes["layer"], att.sizes["head"], att.sizes["key"]), np.float32)
    return fp16_to_fp32(read_rows_fp16(img, [int(r) for r in rows]))


def stack(parts: list[dict], key: str, empty: np.ndarray) -> np.ndarray:
    """Concatenate one column of the per-image parts (`empty` when there are none)."""
    return np.concatenate([p[key] for p in parts]) if parts else empty


def names_of(ds: xr.Dataset, images: np.ndarray) -> np.ndarray:
    """Image names of image indices  # [n] str (object)."""
    names = ds.attn.cached("names", lambda: [str(n) for n in ds["image_name"].values])
    return np.array([names[int(i)] for i in images], dtype=object)
