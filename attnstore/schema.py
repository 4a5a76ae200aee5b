"""The store's schema: dimension names, variables, token kinds, attrs, and `validate`.

Everything that defines what an attnstore store *is* lives here, so the writer
(`store.py`), the readers (analysis, explorer) and the validator agree.
A store is one zarr v3 group; `xarray.open_zarr(path)` opens it as a Dataset:

    attention       (image, layer, head, query, key)  float16
    n_query, n_key  (image,)                          int32   valid extent per image
    query_position  (image, query)                    int32   sequence position of each query row
    token_id        (image, key)                      int32   -1 = padding
    token_text      (image, key)                      str     raw token text (BPE markers kept)
    token_kind      (image, key)                      int8    TokenKind (CF flag_values/meanings)
    patch_tile      (image, key)                      int16   tile index (row-major), -1 if none
    patch_row/col   (image, key)                      int16   cell on the stitched tile grid
                                                              (tile tokens) or the global grid
    patch_box       (image, key, box)                 float32 x0, y0, x1, y1 on the original
                                                              image, normalised to [0, 1]
    tile_rows/cols, grid_rows/cols, global_rows/cols (image,) int16   grid shapes
    pixels          (image, pixel_y, pixel_x, rgb)     uint8   display copy of the image
    image_height/width (image,)                        int32   valid extent of `pixels`
    original_height/width (image,)                     int32   size of the source image
    image_name, image_source, prompt, answer (image,)  str
    complete        (image,)                           uint8   written last: 1 = image done
    <extra>         (image,)                           str | int32  optional, see EXTRA_ATTR
    object_box      (image, object, box)               float32 optional: object boxes, normalised
                                                              x0, y0, x1, y1 on the original image
    object_label    (image, object)                    str     optional: "" = no object
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

SCHEMA_VERSION = 1
FORMAT_NAME = "attnstore"

# Dimension names (the axis order of `attention` is part of the contract).
IMAGE, LAYER, HEAD, QUERY, KEY = "image", "layer", "head", "query", "key"
ATTENTION_DIMS = (IMAGE, LAYER, HEAD, QUERY, KEY)
BOX_DIM, PIXEL_Y, PIXEL_X, RGB = "box", "pixel_y", "pixel_x", "rgb"
BOX_CORNERS = ("x0", "y0", "x1", "y1")
OBJECT = "object"


class TokenKind(IntEnum):
    """What a sequence position holds. Stored as int8 in `token_kind`."""

    PAD = 0
    PROMPT_TEXT = 1
    IMAGE_TILE = 2
    IMAGE_GLOBAL = 3
    IMAGE_SPECIAL = 4  # <fake_token_around_image>, <row_r_col_c>, <global-img>, ...
    GENERATED = 5
    SPECIAL = 6  # chat-template specials: <|im_start|>, <end_of_utterance>, ...


IMAGE_PATCH_KINDS = (TokenKind.IMAGE_TILE, TokenKind.IMAGE_GLOBAL)
TEXT_KINDS = (TokenKind.PROMPT_TEXT, TokenKind.GENERATED, TokenKind.SPECIAL)

# name -> (dims, numpy dtype, fill value). Order matters only for readability.
PER_IMAGE_SCALARS: dict[str, tuple[str, object]] = {
    "n_query": ("int32", 0),
    "n_key": ("int32", 0),
    "tile_rows": ("int16", 0),
    "tile_cols": ("int16", 0),
    "grid_rows": ("int16", 0),
    "grid_cols": ("int16", 0),
    "global_rows": ("int16", 0),
    "global_cols": ("int16", 0),
    "image_height": ("int32", 0),
    "image_width": ("int32", 0),
    "original_height": ("int32", 0),
    "original_width": ("int32", 0),
    "complete": ("uint8", 0),
}
PER_IMAGE_STRINGS = ("image_name", "image_source", "prompt", "answer")
PER_KEY: dict[str, tuple[str, object]] = {
    "token_id": ("int32", -1),
    "token_kind": ("int8", int(TokenKind.PAD)),
    "patch_tile": ("int16", -1),
    "patch_row": ("int16", -1),
    "patch_col": ("int16", -1),
}
PER_KEY_STRINGS = ("token_text",)

# Extra per-image variables (optional; schema v1 stays v1): a workflow may add (image,) arrays of a kind
# below, e.g. `attnstore pope` adds pope_label, pope_answer, pope_correct ... so aggregates can be split
# by them. The group attr EXTRA_ATTR maps each name to its kind; extras are written before `complete`;
# readers and `validate` ignore variables they do not know.
EXTRA_ATTR = "extra_per_image"
EXTRA_KINDS: dict[str, tuple[object, object]] = {"str": (str, ""), "int32": ("int32", -1)}  # kind -> dtype, fill

# Optional object boxes (schema v1 stays v1): created when an extraction has boxes, grown along
# OBJECT as needed; NaN boxes / empty labels pad images with fewer objects.
OBJECT_BOX, OBJECT_LABEL = "object_box", "object_label"
TARGET_OBJECT = "target_object"  # optional (image,) int32 extra: the object slot the question is about (-1: none)

VARIABLE_ATTRS: dict[str, dict] = {
    "attention": {
        "long_name": "attention weight of a query token over a key position",
        "note": "rows are softmax outputs; padding beyond n_query/n_key is 0",
    },
    "token_kind": {
        "flag_values": [int(k) for k in TokenKind],
        "flag_meanings": " ".join(k.name.lower() for k in TokenKind),
    },
    "patch_box": {"long_name": "patch box on the original image", "units": "fraction of width/height"},
    "patch_row": {"long_name": "row on the stitched tile grid, or on the global grid for global tokens"},
    "patch_col": {"long_name": "column on the stitched tile grid, or on the global grid for global tokens"},
    "complete": {"long_name": "1 once every array of this image is written (written last)"},
    "query_position": {"long_name": "sequence position (key index) of each query row; -1 = padding"},
    OBJECT_BOX: {"long_name": "object box on the original image", "units": "fraction of width/height"},
    OBJECT_LABEL: {"long_name": "object label; empty = no object in this slot"},
}

# Limits on what a store may declare: checked on the metadata before anything is read or allocated
# (`attnstore.store.safety`), so a damaged or hostile zarr.json cannot make a reader allocate or loop
# without bound. Generous: real models have ~30 layers, ~16 heads and a few thousand keys.
DIM_LIMITS: dict[str, int] = {
    IMAGE: 10**8,
    LAYER: 1024,
    HEAD: 1024,
    QUERY: 2**16,
    KEY: 2**20,
    PIXEL_Y: 8192,
    PIXEL_X: 8192,
    RGB: 3,
    BOX_DIM: 4,
    OBJECT: 4096,
}
MAX_CHUNK_BYTES = 256 * 2**20  # one decoded chunk, and one chunk file read whole
MAX_METADATA_BYTES = 64 * 2**20  # one zarr.json (the consolidated one lists every array)

# Per-image variables a complete image always stores (a chunk of them is never all fill value:
# n_key > 0 tokens of some kind and text, positions >= 0, a display copy of the image), so an
# absent chunk means a deleted one. (`attention` is checked per query row below n_query: each row
# sums to 1. Not token_id: imported seed folders have none, all -1.)
REQUIRED_PER_IMAGE = ("query_position", "token_kind", "token_text", "pixels")


def is_fill(name: str, values: np.ndarray) -> bool:
    """Whether `values` of variable `name` are all its fill value (what zarr reads for an absent chunk)."""
    fills = {"query_position": -1, "pixels": 0, "token_text": ""} | {n: f for n, (_, f) in PER_KEY.items()}
    return bool(np.all(values == fills[name])) if name in fills else False


def expected_dtype(name: str) -> str | None:
    """The zarr v3 data type the schema gives variable `name` (None: not a schema variable)."""
    fixed = {"attention": "float16", "query_position": "int32", "patch_box": "float32", "pixels": "uint8"}
    fixed |= {OBJECT_BOX: "float32", OBJECT_LABEL: "string"}
    fixed |= {n: dtype for n, (dtype, _) in (PER_IMAGE_SCALARS | PER_KEY).items()}
    fixed |= {n: "string" for n in (*PER_IMAGE_STRINGS, *PER_KEY_STRINGS)}
    return fixed.get(name)


# Group attrs every store carries; `validate` checks them.
REQUIRED_ATTRS = (
    "format",
    "schema_version",
    "attnstore_version",
    "model_id",
    "model_family",
    "dtype",
    "keep_bits",
    "created",
    "random_weights",
)


def kind_mask(kinds: np.ndarray, wanted: tuple[TokenKind, ...]) -> np.ndarray:
    """Boolean mask of positions whose kind is one of `wanted`."""
    mask = np.zeros(np.shape(kinds), bool)
    for kind in wanted:  # a few kinds: one comparison each, ~20x faster than np.isin at ~1000 keys (measured)
        mask |= kinds == int(kind)
    return mask
