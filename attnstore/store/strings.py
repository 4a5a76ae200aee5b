"""Variable-length string arrays (token texts, image names) read through a tensorstore key-value store.

Tensorstore's zarr3 driver has no string type, and zarr-python decodes a per-image string chunk in
~0.8 ms, mostly Python (holding the GIL the analysis threads need): 17 ms for the token texts of
20 images, the largest part of a dataset aggregate's batch preload (measured). Here tensorstore
fetches the chunks' bytes concurrently and numcodecs decodes them (vlen-utf8, after zstd or gzip),
for the layouts zarr-python writes for the store's string variables: a regular chunk grid, default
chunk keys, no sharding. Anything else is not read here (`open` gives None): zarr-python reads it.
"""

from __future__ import annotations

import json
from itertools import product

import numpy as np

COMPRESSORS = ("zstd", "gzip")  # bytes-to-bytes codecs this reads after vlen-utf8 (plus crc32c last)


def strip_crc32c(data: bytes) -> bytes:
    """A chunk's bytes without its trailing crc32c (zarr's crc32c codec), after checking it."""
    import google_crc32c

    body = data[:-4]
    if google_crc32c.value(body) != int.from_bytes(data[-4:], "little"):
        # zarr's crc32c codec's words: `attnstore.store.integrity.is_checksum_error` recognises them
        raise ValueError("Stored and computed checksum do not match")
    return body


class StringChunks:
    """One zarr v3 string array of a store: `read(region)` -> its values there (numpy StringDType)."""

    def __init__(self, kv, name: str, meta: dict):
        self.kv, self.name = kv, name
        self.chunk = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.fill = meta.get("fill_value") or ""
        self.separator = meta.get("chunk_key_encoding", {}).get("configuration", {}).get("separator", "/")
        self.codecs = [c["name"] for c in meta["codecs"]]

    @classmethod
    def open(cls, kv, name: str) -> StringChunks | None:
        """The reader of variable `name`, or None when it is not a string array in a layout read here."""
        try:
            found = kv.read(f"{name}/zarr.json").result()
            meta = json.loads(bytes(found.value)) if found.state == "value" else None
        except Exception:  # tensorstore's errors are plain exceptions with status text
            return None
        return cls(kv, name, meta) if meta is not None and _readable(meta) else None

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        """The values in `region` (one step-1 slice per axis): every chunk it touches is fetched at once."""
        out = np.full([s.stop - s.start for s in region], self.fill, dtype=np.dtypes.StringDType())
        spans = [range(s.start // c, -(-s.stop // c)) for s, c in zip(region, self.chunk)]
        reads = {at: self.kv.read(self._key(at)) for at in product(*spans)}  # concurrent fetches
        for at, future in reads.items():
            found = future.result()
            if found.state != "value":  # never written: the fill value
                continue
            chunk = self._decode(bytes(found.value))  # [chunk shape]
            inside = [slice(max(s.start, i * c), min(s.stop, (i + 1) * c)) for s, i, c in zip(region, at, self.chunk)]
            out[tuple(slice(w.start - s.start, w.stop - s.start) for w, s in zip(inside, region))] = chunk[
                tuple(slice(w.start - i * c, w.stop - i * c) for w, i, c in zip(inside, at, self.chunk))
            ]
        return out

    def _key(self, at: tuple[int, ...]) -> str:
        return f"{self.name}/" + self.separator.join(map(str, ("c", *at)))

    def _decode(self, data: bytes) -> np.ndarray:
        from numcodecs import GZip, VLenUTF8, Zstd

        if self.codecs[-1] == "crc32c":
            data = strip_crc32c(data)
        for codec in reversed(self.codecs[1:]):
            if codec == "zstd":
                data = Zstd().decode(data)
            elif codec == "gzip":
                data = GZip().decode(data)
        return VLenUTF8().decode(data).reshape(self.chunk)


def _readable(meta: dict) -> bool:
    """The layouts `StringChunks` reads: strings, a regular grid, default keys, vlen-utf8 + COMPRESSORS."""
    codecs = [c.get("name") for c in meta.get("codecs", [])]
    rest = codecs[1:-1] if codecs[-1:] == ["crc32c"] else codecs[1:]
    return (
        meta.get("data_type") == "string"
        and meta.get("chunk_grid", {}).get("name") == "regular"
        and meta.get("chunk_key_encoding", {"name": "default"}).get("name") == "default"
        and codecs[:1] == ["vlen-utf8"]
        and len(rest) <= 1
        and all(name in COMPRESSORS for name in rest)
        and not meta.get("storage_transformers")
    )
