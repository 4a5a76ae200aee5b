"""Modality allocation per layer (FastV, Chen et al. 2024, arXiv 2403.06764): where the text
queries' attention goes, by token type, and how much each token of a type gets on average."""

from __future__ import annotations

import numpy as np
import xarray as xr

from attnstore.analysis.scan import scan
from attnstore.analysis.studies import plots
from attnstore.analysis.studies.base import QUERIES, names_of, query_rows, read_rows_fp32, register, stack
from attnstore.schema import IMAGE_PATCH_KINDS, TokenKind, kind_mask

# Token types the keys are split into; together they cover every non-padding key.
KEY_GROUPS: dict[str, tuple[TokenKind, ...]] = {
    "prompt": (TokenKind.PROMPT_TEXT,),
    "image": IMAGE_PATCH_KINDS,
    "generated": (TokenKind.GENERATED,),
    "special": (TokenKind.SPECIAL, TokenKind.IMAGE_SPECIAL),  # chat template, image separators
}


def key_groups(img: xr.Dataset) -> np.ndarray:
    """One-hot key -> token type  # [key, group] float32 (padding keys are in no group)."""
    kinds = np.asarray(img["token_kind"].values)
    return np.stack([kind_mask(kinds, kinds_of) for kinds_of in KEY_GROUPS.values()], axis=-1).astype(np.float32)


def token_allocation(weights: np.ndarray, img: xr.Dataset) -> np.ndarray:
    """Attention mass on each token type, averaged over heads  # [..., layer, head, key] -> [..., layer, kind].

    One token's allocation by layer (the explorer's panel) or many rows' at once."""
    return (np.asarray(weights, np.float32) @ key_groups(img)).mean(-2)


@register(
    "modality",
    "per layer, attention mass of the text queries on prompt / image / generated / special tokens (FastV)",
    plot=plots.modality,
    label="modality allocation",
    options=(QUERIES,),
)
def modality_allocation(
    ds: xr.Dataset, queries: str = "generated", images=None, num_workers: int = 2, batch_size: int = 32
) -> xr.Dataset:
    """Attention mass of text queries per layer and token type (FastV's allocation).

    Parameters
    ----------
    ds : a store's Dataset.
    queries : which stored rows ask ("generated" = answer tokens, as FastV; "prompt", "text",
        "last_prompt").
    images : image indices (default: every complete image).

    Returns
    -------
    xr.Dataset over (image, layer, kind): `mass` = the rows' weight on the keys of each type,
    averaged over heads and query rows (sums to 1 over `kind` where the image has rows);
    `efficiency` = mass / `count` (the image's number of keys of that type; NaN for none);
    `n_queries` [image]. Images without such rows have NaN mass.
    """

    def per_image(img: xr.Dataset, image: int) -> dict:
        rows = query_rows(img, queries)
        w = read_rows_fp32(img, rows)  # [row, layer, head, key]
        onehot = key_groups(img)  # [key, group]
        mass = token_allocation(w, img).mean(0) if len(rows) else np.full((w.shape[1], onehot.shape[1]), np.nan)
        return {
            "image": np.array([image]),
            "mass": mass[None],
            "count": onehot.sum(0)[None],
            "n_queries": np.array([len(rows)]),
        }

    parts = scan(ds, per_image, images, num_workers, batch_size, name="modality")
    n_layers, groups = ds.sizes["layer"], len(KEY_GROUPS)
    image = stack(parts, "image", np.zeros(0, int))
    mass = stack(parts, "mass", np.zeros((0, n_layers, groups), np.float32)).astype(np.float32)
    count = stack(parts, "count", np.zeros((0, groups), np.float32)).astype(np.int32)
    with np.errstate(invalid="ignore", divide="ignore"):
        efficiency = np.where(count[:, None, :] > 0, mass / count[:, None, :], np.nan).astype(np.float32)
    return xr.Dataset(
        {
            "mass": (("image", "layer", "kind"), mass, {"long_name": "mean attention mass of the queries on the type"}),
            "efficiency": (("image", "layer", "kind"), efficiency, {"long_name": "mass per token of the type"}),
            "count": (("image", "kind"), count, {"long_name": "tokens of the type in the image"}),
            "n_queries": (("image",), stack(parts, "n_queries", np.zeros(0, int)).astype(np.int32)),
        },
        coords={
            "image": image,
            "image_name": ("image", names_of(ds, image)),
            "layer": np.arange(n_layers),
            "kind": list(KEY_GROUPS),
        },
        attrs={"analysis": "modality", "queries": queries, "reference": "FastV, arXiv 2403.06764"},
    )
