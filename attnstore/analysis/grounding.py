"""Grounding metrics: does a token's attention fall on an object's box?

Pure, vectorised functions over image x layer x head (no loops over layers or heads):

- `inbox_share`: share of the image attention inside the box, each patch weighted by the
  fraction of its area that lies inside the box (patches straddling the edge count partly);
- `pointing_hit`: whether the centre of the most attended patch lies inside the box;
- `box_area`: the chance level of both (a uniform attention over any set of views that each
  tile the image puts exactly this share inside the box, and a random top patch lands in it
  with about this probability);
- `grounding_scores`: all of them, plus their ratios to chance, as an xarray Dataset;
- `rank_heads`: heads sorted by how well they localise, averaged over images.

Patch boxes are the store's `patch_box` (normalised x0, y0, x1, y1 on the original image),
so tiles, the global view and padded views are handled by the geometry, not by the metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from attnstore.analysis.keys import image_key_mask
from attnstore.analysis.select import select_image, token_weights
from attnstore.analysis.tokens import ANSWER, find_token
from attnstore.errors import AttnstoreError, InvalidArgument, NotFound
from attnstore.schema import OBJECT_BOX, OBJECT_LABEL, TARGET_OBJECT


def box_area(box: np.ndarray) -> np.ndarray:
    """Area of normalised boxes, clipped to the image  # [..., 4] -> [...]."""
    box = np.clip(np.asarray(box, dtype=np.float32), 0.0, 1.0)
    return np.clip(box[..., 2] - box[..., 0], 0, None) * np.clip(box[..., 3] - box[..., 1], 0, None)


def patch_overlap(patch_box: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Fraction of each patch's area inside the box.

    Parameters
    ----------
    patch_box : # [image, key, 4] normalised patch boxes (NaN for non-patch keys).
    box : # [image, 4] one normalised box per image.

    Returns
    -------
    np.ndarray  # [image, key] float32 in [0, 1]; 0 for NaN or empty patches
    """
    patch_box = np.asarray(patch_box, dtype=np.float32)
    box = np.asarray(box, dtype=np.float32)[:, None, :]  # [image, 1, 4]
    width = np.minimum(patch_box[..., 2], box[..., 2]) - np.maximum(patch_box[..., 0], box[..., 0])
    height = np.minimum(patch_box[..., 3], box[..., 3]) - np.maximum(patch_box[..., 1], box[..., 1])
    inside = np.clip(width, 0, None) * np.clip(height, 0, None)  # [image, key]
    area = box_area(patch_box)  # [image, key]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(area > 0, inside / area, 0.0)
    return np.nan_to_num(share, nan=0.0).astype(np.float32)


def inbox_share(weights: np.ndarray, overlap: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Share of the attention on the image keys that falls inside the box.

    Parameters
    ----------
    weights : # [image, layer, head, key] attention of one query per image.
    overlap : # [image, key] from `patch_overlap`.
    keys : # [image, key] bool, the image-patch keys to count (e.g. tiles and global).

    Returns
    -------
    np.ndarray  # [image, layer, head] float32; NaN where a row has no weight on the keys
    """
    w = np.where(keys[:, None, None, :], np.asarray(weights, dtype=np.float32), 0.0)  # [image, layer, head, key]
    total = w.sum(-1)
    inside = np.einsum("ilhk,ik->ilh", w, overlap.astype(np.float32))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan).astype(np.float32)


def pointing_hit(weights: np.ndarray, patch_box: np.ndarray, keys: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Whether the centre of the most attended image patch lies inside the box.

    Parameters are as in `inbox_share` and `patch_overlap`. Ties go to the first key.

    Returns
    -------
    np.ndarray  # [image, layer, head] bool
    """
    w = np.where(keys[:, None, None, :], np.asarray(weights, dtype=np.float32), -np.inf)
    top = w.argmax(-1)  # [image, layer, head]
    pb = np.asarray(patch_box, dtype=np.float32)
    centre = (pb[..., :2] + pb[..., 2:]) / 2  # [image, key, 2]
    picked = centre[np.arange(top.shape[0])[:, None, None], top]  # [image, layer, head, xy]
    b = np.asarray(box, dtype=np.float32)[:, None, None, :]  # [image, 1, 1, 4]
    x, y = picked[..., 0], picked[..., 1]
    return (x >= b[..., 0]) & (x <= b[..., 2]) & (y >= b[..., 1]) & (y <= b[..., 3])


def view_keys(token_kind: np.ndarray, keys: str = "all") -> np.ndarray:
    """Image-patch keys of a key set ("all", "tiles", "global")  # [image, key] kinds -> [image, key] bool."""
    kinds = xr.Dataset({"token_kind": (("image", "key"), np.asarray(token_kind))})
    return image_key_mask(kinds, keys).values


def grounding_scores(
    weights: np.ndarray, patch_box: np.ndarray, token_kind: np.ndarray, box: np.ndarray, keys: str = "all"
) -> xr.Dataset:
    """Every grounding metric of one query and one box per image.

    Parameters
    ----------
    weights : # [image, layer, head, key] attention rows.
    patch_box : # [image, key, 4] the store's `patch_box`.
    token_kind : # [image, key] the store's `token_kind`.
    box : # [image, 4] the object box of each image (normalised x0, y0, x1, y1).
    keys : which patch keys count: "all" (tiles + global), "tiles" or "global".

    Returns
    -------
    xr.Dataset with, over (image, layer, head): `inbox_share`, `inbox_lift` (share / chance),
    `pointing` (bool), `pointing_lift` (hit / chance); over (image,): `chance` (box area).
    """
    mask = view_keys(token_kind, keys)
    overlap = patch_overlap(patch_box, box)
    chance = box_area(box)  # [image]
    share = inbox_share(weights, overlap, mask)
    hit = pointing_hit(weights, patch_box, mask, box)
    ratio = 1.0 / np.where(chance > 0, chance, np.nan)[:, None, None]
    dims = ("image", "layer", "head")
    return xr.Dataset(
        {
            "inbox_share": (dims, share),
            "inbox_lift": (dims, (share * ratio).astype(np.float32)),
            "pointing": (dims, hit),
            "pointing_lift": (dims, (hit * ratio).astype(np.float32)),
            "chance": (("image",), chance.astype(np.float32)),
        },
        attrs={"keys": keys},
    )


def rank_heads(scores: xr.Dataset, by: str = "inbox_lift") -> xr.Dataset:
    """Heads sorted by their mean score over images, best first.

    The lifts are ratios of means (mean score / mean chance), which stay finite when one
    image's box is tiny.

    Returns
    -------
    xr.Dataset over `rank` (1 = best, as a reader counts) with `layer`, `head`, `inbox_share`, `inbox_lift`, `pointing`,
    `pointing_lift`, `chance` (mean box area).
    """
    if by not in ("inbox_share", "inbox_lift", "pointing", "pointing_lift"):
        raise InvalidArgument("by", f"must be a grounding score name, not '{by}'")
    chance = float(scores["chance"].mean())
    share = scores["inbox_share"].mean("image", skipna=True)  # [layer, head]
    point = scores["pointing"].astype(np.float32).mean("image")
    table = xr.Dataset(
        {
            "inbox_share": share,
            "inbox_lift": share / chance,
            "pointing": point,
            "pointing_lift": point / chance,
        }
    ).stack(rank=("layer", "head"))
    order = np.argsort(-np.nan_to_num(table[by].values, nan=-np.inf), kind="stable")
    ranked = table.isel(rank=order)
    layer, head = ranked["layer"].values, ranked["head"].values
    ranked = ranked.drop_vars(["rank", "layer", "head"]).assign_coords(rank=np.arange(1, order.size + 1))
    return ranked.assign(layer=("rank", layer), head=("rank", head), chance=chance)


# -- from a store ------------------------------------------------------------------------------


def object_index(img: xr.Dataset, target: str | int) -> int:
    """Object slot of one image: an index, the name of a per-image int variable holding it
    (e.g. "target_object"), or an object label; -1 if the image has no such object."""
    if isinstance(target, (int, np.integer)):
        return int(target)
    if target in img and img[target].dims == ():
        return int(img[target].values)
    labels = [str(v) for v in img[OBJECT_LABEL].values]
    return labels.index(target) if target in labels else -1


def has_object(img: xr.Dataset, obj: int) -> bool:
    """Whether object slot `obj` of one image holds an object (slots past an image's objects are empty)."""
    return 0 <= obj < img.sizes.get("object", 0) and bool(str(img[OBJECT_LABEL].values[obj]))


def token_grounding(img: xr.Dataset, query: int, obj: int, keys: str = "all") -> xr.Dataset:
    """Grounding scores of one stored query row of one image against its object `obj`  # (layer, head).

    `img` is one image of a store with object boxes (`select_image`); `obj` an object slot
    (`object_index`)."""
    weights = token_weights(img, query).values[None]  # [1, layer, head, key]
    box = img[OBJECT_BOX].values[obj][None]  # [1, 4]
    scores = grounding_scores(weights, img["patch_box"].values[None], img["token_kind"].values[None], box, keys)
    return scores.isel(image=0)


def store_grounding(
    ds: xr.Dataset,
    token: str = ANSWER,
    target: str | int = TARGET_OBJECT,
    keys: str = "all",
    images: Sequence[int] | None = None,
) -> xr.Dataset:
    """Grounding scores of one token against one object box, for every image of a store that has both.

    Parameters
    ----------
    ds : a store (`attnstore.store.open_dataset`) with object boxes.
    token : "@answer" (the first generated token) or a token text (first occurrence).
    target : which object: see `object_index`.
    keys : "all", "tiles" or "global" patch keys.
    images : image indices to score (default: every complete image).

    Returns
    -------
    `grounding_scores` over the images used, with `image` coords = their indices in the store.
    """
    if OBJECT_BOX not in ds:
        raise NotFound("the store has no object boxes (extract with boxes, or build the demo)", param="store")
    complete = np.flatnonzero(ds["complete"].values.astype(bool))
    if images is not None:
        complete = np.intersect1d(complete, np.asarray(images, np.int64))
    rows = []
    for i in complete:
        img = select_image(ds, int(i))
        obj = object_index(img, target)
        if not has_object(img, obj):
            continue
        query = _token_row(img, token)
        if query < 0:
            continue
        rows.append((int(i), token_weights(img, query).values, img, obj))
    if not rows:
        raise NotFound(f"no image has both the token '{token}' and the object {target!r}", param="token")
    n_key = max(r[1].shape[-1] for r in rows)
    weights = np.stack([_pad(w, n_key, 0.0) for _, w, _, _ in rows])  # [image, layer, head, key]
    patch_box = np.stack([_pad(img["patch_box"].values, n_key, np.nan, axis=0) for _, _, img, _ in rows])
    kinds = np.stack([_pad(img["token_kind"].values, n_key, 0, axis=0) for _, _, img, _ in rows])
    box = np.stack([img[OBJECT_BOX].values[obj] for _, _, img, obj in rows])  # [image, 4]
    scores = grounding_scores(weights, patch_box, kinds, box, keys=keys)
    return scores.assign_coords(image=[i for i, *_ in rows])


def _token_row(img: xr.Dataset, token: str) -> int:
    try:
        return find_token(img, token)
    except AttnstoreError:
        return -1


def _pad(values: np.ndarray, size: int, fill, axis: int = -1) -> np.ndarray:
    pad = [(0, 0)] * values.ndim
    pad[axis] = (0, size - values.shape[axis])
    return np.pad(values, pad, constant_values=fill)
