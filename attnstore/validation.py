"""`attnstore validate`: schema, shapes, completeness, geometry and attention sanity.

The seed's `test_data.py` checked that the npy files load and have matching
shapes; this checks everything a reader relies on, image by image, and
returns a list of human-readable problems (empty = valid).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from attnstore.schema import ATTENTION_DIMS, REQUIRED_ATTRS, TokenKind
from attnstore.store import open_dataset


@dataclass
class ValidationReport:
    n_images: int = 0
    n_complete: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def row_sum_tolerance(keep_bits: int) -> float:
    """fp16 rounding of each weight (plus mantissa rounding) bounds the row-sum error."""
    return 5e-3 + 2.0 ** -(int(keep_bits) + 1)


def validate_store(
    path: str, storage_options: dict | None = None, on_image: Callable[[], None] | None = None
) -> ValidationReport:
    ds = open_dataset(path, storage_options=storage_options)
    report = ValidationReport(n_images=int(ds.sizes["image"]))
    report.problems += [f"missing store attribute '{a}'" for a in REQUIRED_ATTRS if a not in ds.attrs]
    if ds["attention"].dims != ATTENTION_DIMS or ds["attention"].dtype != np.float16:
        report.problems.append(
            f"attention has dims {ds['attention'].dims} {ds['attention'].dtype}, expected {ATTENTION_DIMS} float16"
        )
        return report
    complete = ds["complete"].values.astype(bool)
    report.n_complete = int(complete.sum())
    names = ds["image_name"].values
    for i in np.flatnonzero(~complete):
        report.problems.append(f"image {i} ({names[i]}): incomplete (interrupted write); rerun extract to finish it")
    tol = row_sum_tolerance(ds.attrs.get("keep_bits", 10))
    for i in np.flatnonzero(complete):
        report.problems += [f"image {i} ({names[i]}): {p}" for p in check_image(ds.isel(image=i), tol)]
        if on_image:
            on_image()
    return report


def check_image(img: xr.Dataset, tol: float) -> list[str]:
    """Problems of one complete image (a Dataset without the image dim)."""
    nq, nk = int(img["n_query"]), int(img["n_key"])
    Q, K = img.sizes["query"], img.sizes["key"]
    if not (0 < nq <= Q and 0 < nk <= K):
        return [f"n_query={nq}, n_key={nk} outside the store's {Q} x {K}"]
    problems = []
    qpos = img["query_position"].values[:nq]
    if (qpos < 0).any() or (qpos >= nk).any() or (np.diff(qpos) <= 0).any():
        problems.append("query_position is not an increasing list of positions below n_key")
        return problems
    problems += _check_geometry(img, nk)
    att = img["attention"].values[:, :, :nq, :].astype(np.float32)  # [layer, head, query, key]
    sums = att.sum(-1)
    worst = float(np.abs(sums - 1).max())
    if worst > tol:
        problems.append(f"attention rows do not sum to 1 (worst off by {worst:.3g}, tolerance {tol:.3g})")
    future = np.arange(K)[None, :] > qpos[:, None]  # [query, key]: positions after the query
    if np.abs(att[:, :, future]).max(initial=0) > 0:
        problems.append("attention on positions after the query token (not causal)")
    if np.isnan(att).any():
        problems.append("attention contains NaN")
    return problems


def _check_geometry(img: xr.Dataset, nk: int) -> list[str]:
    kinds = img["token_kind"].values[:nk]
    problems = []
    valid = {int(k) for k in TokenKind} - {int(TokenKind.PAD)}
    if not np.isin(kinds, list(valid)).all():
        problems.append("token_kind has values outside the TokenKind flags")
    grid = int(img["grid_rows"]) * int(img["grid_cols"])
    glob = int(img["global_rows"]) * int(img["global_cols"])
    n_tile, n_global = int((kinds == TokenKind.IMAGE_TILE).sum()), int((kinds == TokenKind.IMAGE_GLOBAL).sum())
    if n_tile != grid or n_global != glob:
        problems.append(f"{n_tile} tile / {n_global} global tokens but grids of {grid} / {glob} cells")
    patches = np.isin(kinds, [TokenKind.IMAGE_TILE, TokenKind.IMAGE_GLOBAL])
    boxes = img["patch_box"].values[:nk][patches]
    if boxes.size and (
        np.isnan(boxes).any()
        or (boxes < 0).any()
        or (boxes > 1).any()
        or (boxes[:, 2] <= boxes[:, 0]).any()
        or (boxes[:, 3] <= boxes[:, 1]).any()
    ):
        problems.append("patch boxes missing, outside [0, 1] or empty")
    return problems
