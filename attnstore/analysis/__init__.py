"""Analysis of stored attention: pure xarray -> xarray functions, vectorised, dask-friendly.

Modules, bottom up (each imports only those above it):

    registry   named choices every front end reads (methods, normalisations)
    kernels    numpy kernels (fp16 -> fp32, k-th largest, entropy, entropy-weighted top-k)
    fused      the aggregate's per-head summaries as one compiled kernel (numba: optional, loaded on first use)
    select     one image at its valid extents, one token's rows, layers/heads, range parsing
    tokens     token text -> query row (BPE-aware)
    keys       image-key masks, attention sinks, normalisations (`NORMALISATIONS`)
    reduce     per-head statistics, map methods (`METHODS`), rollout, reverse attention
    grid       key values -> image grids by the store's geometry; common normalised raster
    maps       MapSpec -> compute_map -> MapResult: the one token -> map pipeline
    aggregate  one token across a whole store (dask), and its table files
    studies    dataset-level analyses from the literature (`ANALYSES`: modality, visual_ratio, ...)
    grounding  does a token's attention fall in an object's box (in-box share, pointing game)
    accessor   `ds.attn` and every cache

Typical use (one token of one image)::

    ds = attnstore.open_dataset("store.zarr")
    grid = ds.attn.heatmap(token="jacket", image=0, method="entropy_topk", k=10)   # labelled grid
    result = ds.attn.map(MapSpec(image=0, token="jacket", normalise="no_sinks"))   # values + grids

Geometry always comes from the store's per-image variables (token_kind, patch_row/col, grid sizes).
"""

from attnstore.analysis.accessor import AttnAccessor
from attnstore.analysis.aggregate import (
    AGGREGATE_FORMATS,
    AGGREGATE_GRID,
    aggregate_token,
    check_aggregate_output,
    save_aggregate,
    summarise_rows,
)
from attnstore.analysis.grid import VIEWS, grid_boxes, lattice_cells, patch_grid, resample_density
from attnstore.analysis.grounding import grounding_scores, rank_heads, store_grounding, token_grounding
from attnstore.analysis.kernels import entropy_topk_np, fp16_to_fp32, kth_largest
from attnstore.analysis.keys import IMAGE_KEY_SETS, NORMALISATIONS, image_key_mask, normalise, sink_keys
from attnstore.analysis.maps import MapResult, MapSpec, compute_map, patch_at, row_of_patch, row_of_position, text_spec
from attnstore.analysis.reduce import (
    METHODS,
    entropy,
    entropy_topk,
    image_share,
    reduce_heads,
    reverse_attention,
    rollout,
)
from attnstore.analysis.registry import Registry
from attnstore.analysis.select import (
    image_extents,
    parse_range,
    read_rows,
    read_rows_fp16,
    select_image,
    select_layers_heads,
    token_weights,
)
from attnstore.analysis.tokens import (
    TokenNotFoundError,
    find_token,
    query_tokens,
    strip_bpe,
    token_occurrences,
)

__all__ = [
    "AGGREGATE_FORMATS",
    "AGGREGATE_GRID",
    "IMAGE_KEY_SETS",
    "METHODS",
    "NORMALISATIONS",
    "VIEWS",
    "AttnAccessor",
    "MapResult",
    "MapSpec",
    "Registry",
    "TokenNotFoundError",
    "aggregate_token",
    "check_aggregate_output",
    "compute_map",
    "entropy",
    "entropy_topk",
    "entropy_topk_np",
    "find_token",
    "fp16_to_fp32",
    "grid_boxes",
    "grounding_scores",
    "image_extents",
    "image_key_mask",
    "image_share",
    "kth_largest",
    "lattice_cells",
    "normalise",
    "parse_range",
    "patch_grid",
    "query_tokens",
    "rank_heads",
    "read_rows",
    "read_rows_fp16",
    "reduce_heads",
    "resample_density",
    "reverse_attention",
    "rollout",
    "row_of_position",
    "row_of_patch",
    "patch_at",
    "text_spec",
    "save_aggregate",
    "select_image",
    "select_layers_heads",
    "sink_keys",
    "store_grounding",
    "token_grounding",
    "strip_bpe",
    "summarise_rows",
    "token_occurrences",
    "token_weights",
]
