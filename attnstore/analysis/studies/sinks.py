"""Attention sinks per image and layer: the first position's mass (StreamingLLM, Xiao et al. 2024,
arXiv 2309.17453) and the image keys the sink detector of the `no_sinks` normalisation flags."""

from __future__ import annotations

import numpy as np
import xarray as xr

from attnstore.analysis.kernels import mean_fp32
from attnstore.analysis.keys import sink_keys
from attnstore.analysis.scan import scan
from attnstore.analysis.select import read_rows_fp16
from attnstore.analysis.studies import plots
from attnstore.analysis.studies.base import QUERIES, Option, names_of, query_rows, register, stack
from attnstore.errors import InvalidArgument
from attnstore.schema import KEY


@register(
    "sinks",
    "per image and layer, the first position's attention mass and the detected sink keys",
    plot=plots.sinks,
    label="attention sinks",
    options=(QUERIES, Option("factor", float, "median ratio above which a key is a sink")),
)
def attention_sinks(
    ds: xr.Dataset,
    queries: str = "generated",
    factor: float = 20.0,
    images=None,
    num_workers: int = 2,
    batch_size: int = 32,
) -> xr.Dataset:
    """Sinks of every image and layer, from the rows of `queries`.

    Returns
    -------
    xr.Dataset over (image, layer): `first_mass` = the rows' mean weight on position 0 (over heads
    and rows; StreamingLLM's sink); `top_position` / `top_mass` = the key with the largest mean
    weight and that weight; `n_sinks` / `sink_mass` = the image keys the sink detector flags and
    their total mean weight: `sink_keys` (the `no_sinks` normalisation's) on each head's mean row,
    one layer at a time (the key's median over heads > `factor` x the median image key's);
    `sink_positions` [image] = every flagged image key of any layer, as "p1 p2 ..." (what the
    explorer marks). Images without such rows have NaN / -1.
    """
    if not factor > 0:
        raise InvalidArgument("factor", f"must be positive, not {factor}")
    n_layers = ds.sizes["layer"]

    def per_image(img: xr.Dataset, image: int) -> dict:
        rows = query_rows(img, queries)
        if not len(rows):
            nan, none = np.full((1, n_layers), np.nan, np.float32), np.full((1, n_layers), -1)
            return {
                "image": np.array([image]),
                "first_mass": nan,
                "top_position": none,
                "top_mass": nan,
                "n_sinks": np.zeros((1, n_layers), int),
                "sink_mass": nan,
                "sink_positions": np.array([""], object),
            }
        heads = mean_fp32(read_rows_fp16(img, [int(r) for r in rows]))  # [layer, head, key]: each head's mean row
        mean = heads.mean(1)  # [layer, key]
        # The no_sinks detector on the mean row, one layer at a time: median over heads > factor x median image key.
        sinks = sink_keys(xr.DataArray(heads, dims=("layer", "head", KEY)), img, factor, bos=False,
                          first_image=False, per=("layer",)).values  # [layer, key]  # fmt: skip
        flagged = np.flatnonzero(sinks.any(0))
        return {
            "image": np.array([image]),
            "first_mass": mean[None, :, 0],
            "top_position": mean.argmax(-1)[None],
            "top_mass": mean.max(-1)[None],
            "n_sinks": sinks.sum(-1)[None],
            "sink_mass": (mean * sinks).sum(-1)[None],
            "sink_positions": np.array([" ".join(str(p) for p in flagged)], object),
        }

    parts = scan(ds, per_image, images, num_workers, batch_size, name="sinks")
    empty = np.zeros((0, n_layers))
    image = stack(parts, "image", np.zeros(0, int))
    dims = ("image", "layer")
    return xr.Dataset(
        {
            "first_mass": (dims, stack(parts, "first_mass", empty).astype(np.float32)),
            "top_position": (dims, stack(parts, "top_position", empty).astype(np.int32)),
            "top_mass": (dims, stack(parts, "top_mass", empty).astype(np.float32)),
            "n_sinks": (dims, stack(parts, "n_sinks", empty).astype(np.int32)),
            "sink_mass": (dims, stack(parts, "sink_mass", empty).astype(np.float32)),
            "sink_positions": (("image",), stack(parts, "sink_positions", np.zeros(0, object))),
        },
        coords={"image": image, "image_name": ("image", names_of(ds, image)), "layer": np.arange(n_layers)},
        attrs={
            "analysis": "sinks",
            "queries": queries,
            "factor": factor,
            "reference": "StreamingLLM (Xiao et al. 2024, arXiv 2309.17453); sink_keys",
        },
    )
