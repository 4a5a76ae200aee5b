"""How far a lossy store's maps are from the lossless ones: every map method x normalisation.

A store written with `--map-error`, `--keep-bits` < 10 or `--round` keeps values that differ from
the model's. What a person sees is a map over the image keys scaled to its own maximum, so the error
is measured that way: for each registered normalisation (`NORMALISATIONS`) and map method (`METHODS`,
over every layer and head), and for single-head maps ("head": one layer, one head), the largest
|lossy map - lossless map| over the image keys divided by the lossless map's maximum, worst over the
rows measured. `record_fidelity` puts the figures in the store's attrs (`MEASURED_ATTR`); `attnstore
info` prints them.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from attnstore.analysis.keys import NORMALISATIONS, image_key_mask, normalise
from attnstore.analysis.reduce import METHODS, reduce_heads
from attnstore.schema import KEY, QUERY

MEASURED_ATTR = "map_error_measured"  # group attr: "normalisation/method" -> worst relative error
ROWS_MEASURED = 6  # query rows of the first image, spread over it


def image_dataset(attention: np.ndarray, kind: np.ndarray, query_position: np.ndarray) -> xr.Dataset:
    """The variables the map functions read, for one image  # attention [layer, head, query, key]."""
    return xr.Dataset(
        {
            "attention": (("layer", "head", QUERY, KEY), attention),
            "token_kind": ((KEY,), np.asarray(kind)),
            "query_position": ((QUERY,), np.asarray(query_position)),
        },
        coords={QUERY: np.arange(attention.shape[2])},  # rollout finds its row by this coordinate
    )


def map_errors(original: xr.Dataset, lossy: xr.Dataset, rows: list[int] | None = None) -> dict[str, float]:
    """Worst relative error of every normalisation x method (and single heads) on `rows`.

    original, lossy : `image_dataset`s of the same image; rows : query rows (default: spread over the image).
    """
    n_query = original.sizes[QUERY]
    rows = rows if rows is not None else sorted(set(np.linspace(0, n_query - 1, ROWS_MEASURED).round().astype(int)))
    image = image_key_mask(original).values
    out: dict[str, float] = {}
    for norm in NORMALISATIONS:
        for query in rows:
            maps = [_maps(ds, norm, int(query)) for ds in (original, lossy)]
            for name in maps[0]:
                err = _relative(maps[0][name], maps[1][name], image)
                key = f"{norm}/{name}"
                out[key] = max(out.get(key, 0.0), err)
    return {k: round(v, 6) for k, v in out.items()}


def _maps(img: xr.Dataset, norm: str, query: int) -> dict[str, np.ndarray]:
    """Every method's map of one row, and every single head's  # name -> [..., key] float32."""
    weights = normalise(img["attention"].isel({QUERY: query}).astype(np.float32), img, norm)  # [layer, head, key]
    out = {"head": np.asarray(weights.values, np.float32)}
    for method in METHODS:
        out[method] = np.asarray(reduce_heads(weights, img, method).values, np.float32)
    return out


def _relative(original: np.ndarray, lossy: np.ndarray, image: np.ndarray) -> float:
    """Largest |lossy - original| over image keys / the original map's maximum, worst over maps  # [..., key]."""
    o, q = original[..., image], lossy[..., image]
    top = o.max(-1)
    drawn = top > 0
    if not drawn.any():
        return 0.0
    return float((np.abs(q - o).max(-1)[drawn] / top[drawn]).max())


def record_fidelity(store, first, stored: np.ndarray) -> dict[str, float]:
    """Measure `first` (an Extraction) against what the store keeps of it and record it in the attrs.

    Nothing is recorded when the store keeps the values exactly."""
    if np.array_equal(np.asarray(first.attention, np.float16).view(np.uint16), stored.view(np.uint16)):
        return {}
    original = image_dataset(first.attention, first.layout.kind, first.query_position)
    figures = map_errors(original, original.assign(attention=(original["attention"].dims, stored)))
    store.group.attrs[MEASURED_ATTR] = figures
    store.consolidate()
    return figures
