"""Damaging a store on purpose (integrity tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr


def flip_attention_row(store: Path, image: int, row: int) -> None:
    """Flip one byte inside the stored chunk of query row `row` of image `image`."""
    shard = store / "attention" / "c" / str(image) / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    n_rows = zarr.open_array(store / "attention", mode="r").shape[3]
    index = np.frombuffer(bytes(data[-(16 * n_rows + 4) : -4]), "<u8").reshape(n_rows, 2)  # (offset, nbytes)
    offset, nbytes = (int(v) for v in index[row])
    assert nbytes > 0, "the row must be stored"
    data[offset + nbytes // 2] ^= 0x10
    shard.write_bytes(bytes(data))


def _edit_metadata(store: Path, edit) -> None:
    """Apply `edit(name, array_metadata)` to every array's zarr.json and its consolidated copy."""
    import json

    root = json.loads((store / "zarr.json").read_text())
    for name, meta in (root.get("consolidated_metadata") or {}).get("metadata", {}).items():
        edit(name, meta)
    (store / "zarr.json").write_text(json.dumps(root))
    for path in store.glob("*/zarr.json"):
        meta = json.loads(path.read_text())
        if meta.get("node_type") == "array":
            edit(path.parent.name, meta)
            path.write_text(json.dumps(meta))


def declare_size(store: Path, dim: str, size: int) -> None:
    """Make every array with dimension `dim` declare it `size` long (the chunks stay as they are)."""

    def edit(name, meta):
        dims = meta.get("dimension_names") or []
        meta["shape"] = [size if d == dim else s for d, s in zip(dims, meta["shape"])]

    _edit_metadata(store, edit)


def declare_dtype(store: Path, name: str, dtype: str) -> None:
    """Make array `name` declare data type `dtype` (its chunks stay as they are)."""

    def edit(array, meta):
        if array == name:
            meta["data_type"] = dtype

    _edit_metadata(store, edit)
