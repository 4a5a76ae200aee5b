"""Visual attention ratio (Jiang et al., CVPR 2025, arXiv 2411.16724): per answer token, layer and
head, the attention on image keys; joined to labels, the heads ranked by how well it separates them."""

from __future__ import annotations

import numpy as np
import xarray as xr

from attnstore.analysis.correctness import ANSWER_CORRECT, EXPECTED_ANSWER, RIGHT, WRONG, answer_correct
from attnstore.analysis.kernels import fp16_to_fp32
from attnstore.analysis.keys import image_key_mask
from attnstore.analysis.scan import TEXT_VARS, scan
from attnstore.analysis.select import read_rows_fp16
from attnstore.analysis.studies import plots
from attnstore.analysis.studies.base import QUERIES, Option, names_of, query_rows, register, stack
from attnstore.analysis.studies.stats import auroc, cluster_bootstrap_weights
from attnstore.analysis.tokens import strip_bpe
from attnstore.errors import InvalidArgument
from attnstore.schema import EXTRA_ATTR

AUTO_LABELS = ("pope_correct", EXPECTED_ANSWER)  # per-image labels used when the store has them and none is named


def ratio_rows(img: xr.Dataset, rows: np.ndarray) -> np.ndarray:
    """Sum of each row's weights over the image-patch keys  # -> [row, layer, head] float32."""
    mask = image_key_mask(img).values.astype(np.float32)
    if len(rows) == 0:
        return np.zeros((0, img.sizes["layer"], img.sizes["head"]), np.float32)
    return fp16_to_fp32(read_rows_fp16(img, [int(r) for r in rows])) @ mask  # a matrix-vector product: no gather


def _row_labels(ds: xr.Dataset, label: str | None, words, image: np.ndarray, token: np.ndarray):
    """(label per row: 1 / 0 / -1 = unknown, what 1 means) or (None, None)."""
    if label == "auto":
        label = next((name for name in AUTO_LABELS if name in ds), "words" if words else None)
        if label == EXPECTED_ANSWER:  # right / wrong, when the answers are some of each
            both = {RIGHT, WRONG} <= set(answer_correct(ds).values.tolist())
            label = ANSWER_CORRECT if both else ("words" if words else None)
    if label is None:
        return None, None
    if label == "words":
        if not words:
            raise InvalidArgument("words", "is empty: give the object words the rows are labelled by")
        wanted = {strip_bpe(w).lower() for w in words}
        return np.array([strip_bpe(str(t)).lower() in wanted for t in token], np.int8), "token in words"
    if label == ANSWER_CORRECT and label not in ds:  # right / wrong, from the expected answers
        ds = ds.assign({ANSWER_CORRECT: answer_correct(ds)})
    if label not in ds or ds[label].dims != ("image",):
        extras = sorted(ds.attrs.get(EXTRA_ATTR, {}))
        raise InvalidArgument("label", f"{label!r} is not a per-image variable of the store (its extras: {extras})")
    values = np.asarray(ds[label].values)
    known = [v for v in np.unique(values) if not (isinstance(v, str) and v == "") and not (v == -1)]
    if len(known) != 2:
        raise InvalidArgument("label", f"{label!r} must take exactly two values, it takes {known[:6]}")
    per_image = np.where(values == known[1], 1, np.where(values == known[0], 0, -1)).astype(np.int8)
    return per_image[image], f"{label} == {known[1]}"


@register(
    "visual_ratio",
    "per answer token, layer and head, the attention on the image; heads ranked by AUROC against a label",
    plot=plots.visual_ratio,
    label="visual attention ratio",
    options=(
        QUERIES,
        Option("label", str, "a per-image variable (pope_correct ...) or 'words'"),
        Option("words", str, "object words, comma-separated (label 'words')", lambda text: text.split(",")),
        Option("unit", str, "one observation per image | token"),
        Option("bootstrap", int, "bootstrap replicates of the AUROC interval"),
        Option("seed", int, "bootstrap seed"),
    ),
)
def visual_ratio(
    ds: xr.Dataset,
    queries: str = "generated",
    label: str | None = "auto",
    words=None,
    unit: str = "auto",
    bootstrap: int = 200,
    seed: int = 0,
    images=None,
    num_workers: int = 2,
    batch_size: int = 32,
) -> xr.Dataset:
    """Visual attention ratio of every answer token, and a ranking of heads by a label.

    Parameters
    ----------
    queries : which stored rows ("generated" = answer tokens, as the paper).
    label : "auto" (pope_correct when the store is a POPE run, answer_correct when it has expected
        answers and some are right and some wrong, else "words" if `words` is given, else no
        ranking), "answer_correct" (right / wrong: `attnstore.analysis.correctness`), the name of a
        per-image variable with two values (the larger one is the positive class: 1 = correct,
        "yes"), "words" (a row is positive when its token is one of
        `words`) or None.
    unit : what one observation is: "image" (the mean ratio of the image's rows; the default for
        per-image labels) or "token" (each row; the default for words).
    bootstrap : replicates of the 95 % interval (images resampled whole).

    Returns
    -------
    xr.Dataset: `ratio` [row, layer, head] with per-row coords image, image_name, position, token;
    with a label also `auroc`, `auroc_low`, `auroc_high`, `effect` (= |auroc - 0.5|) and `head_rank`
    (1 = separates best) over [layer, head], and `n_positive`, `n_negative` (observations).
    """
    if unit not in ("auto", "image", "token"):
        raise InvalidArgument("unit", f"must be auto, image or token, not {unit!r}")
    if bootstrap < 0:
        raise InvalidArgument("bootstrap", f"must be 0 or more, not {bootstrap}")

    def per_image(img: xr.Dataset, image: int) -> dict | None:
        rows = query_rows(img, queries)
        if not len(rows):
            return None
        positions = np.asarray(img["query_position"].values)[rows]
        texts = np.asarray(img["token_text"].values)
        return {
            "image": np.full(len(rows), image),
            "position": positions.astype(np.int32),
            "token": np.array([str(texts[p]) for p in positions], dtype=object),
            "ratio": ratio_rows(img, rows),
        }

    parts = scan(ds, per_image, images, num_workers, batch_size, name="visual-ratio", variables=TEXT_VARS)
    n_layers, n_heads = ds.sizes["layer"], ds.sizes["head"]
    image = stack(parts, "image", np.zeros(0, int))
    token = stack(parts, "token", np.zeros(0, object))
    ratio = stack(parts, "ratio", np.zeros((0, n_layers, n_heads), np.float32))
    out = xr.Dataset(
        {"ratio": (("row", "layer", "head"), ratio, {"long_name": "attention on image-patch keys"})},
        coords={
            "image": ("row", image),
            "image_name": ("row", names_of(ds, image)),
            "position": ("row", stack(parts, "position", np.zeros(0, np.int32))),
            "token": ("row", token),
            "layer": np.arange(n_layers),
            "head": np.arange(n_heads),
        },
        attrs={"analysis": "visual_ratio", "queries": queries, "reference": "Jiang et al. 2025, arXiv 2411.16724"},
    )
    labels, positive = _row_labels(ds, label, words, image, token)
    if labels is None:
        return out
    unit = (
        ("token" if label == "words" or (label == "auto" and positive == "token in words") else "image")
        if unit == "auto"
        else unit
    )
    out = out.assign(row_label=("row", labels))
    return out.merge(rank_heads(ratio, labels, image, unit, bootstrap, seed)).assign_attrs(positive=positive, unit=unit)


def rank_heads(ratio: np.ndarray, labels: np.ndarray, image: np.ndarray, unit: str, bootstrap: int, seed: int):
    """AUROC of each head's ratio as a score for label 1, its bootstrap interval and rank  # [layer, head]."""
    keep = labels >= 0
    ratio, labels, image = ratio[keep], labels[keep], image[keep]
    if unit == "image":  # one observation per image: the mean of its rows (a per-image label)
        ids, first, inverse = np.unique(image, return_index=True, return_inverse=True)  # image is sorted
        sums = np.add.reduceat(ratio.astype(np.float64), first, axis=0)  # rows come in image order
        ratio = sums / np.bincount(inverse, minlength=ids.size)[:, None, None]
        labels, image = labels[first], ids
    n, shape = ratio.shape[0], ratio.shape[1:]
    values = ratio.reshape(n, -1)  # [obs, layer*head]
    pos = labels == 1
    auc = auroc(values, pos)[0].reshape(shape)
    if bootstrap:
        reps = auroc(values, pos, cluster_bootstrap_weights(image, bootstrap, seed)).reshape(bootstrap, *shape)
        low, high = np.nanpercentile(reps, [2.5, 97.5], axis=0) if np.isfinite(reps).any() else (auc * np.nan,) * 2
    else:
        low = high = np.full(shape, np.nan)
    effect = np.abs(auc - 0.5)
    order = np.argsort(-np.nan_to_num(effect, nan=-1.0), axis=None, kind="stable")
    rank = np.empty(effect.size, np.int32)
    rank[order] = np.arange(1, effect.size + 1)
    dims = ("layer", "head")
    return xr.Dataset(
        {
            "auroc": (dims, auc.astype(np.float32)),
            "auroc_low": (dims, np.asarray(low, np.float32)),
            "auroc_high": (dims, np.asarray(high, np.float32)),
            "effect": (dims, effect.astype(np.float32)),
            "head_rank": (dims, rank.reshape(shape)),
        },
        attrs={"n_positive": int(pos.sum()), "n_negative": int((~pos).sum()), "bootstrap": bootstrap},
    )
