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
