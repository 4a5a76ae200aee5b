"""Reading untrusted stores safely: local files, declared shapes and dtypes.

A store folder may have been damaged or tampered with. zarr-python and tensorstore open whatever a
chunk's path names: a FIFO blocks the reader forever, a link to `/dev/zero` never ends, and a
declared shape of 1e9 keys makes the first read allocate gigabytes. So, before anything is read:

    check_local_file(root, key)   # a regular file inside the store (links resolved), of sane size
    CheckedLocalStore(root)       # zarr-python's LocalStore with that check on every read
    check_declared(metadata)      # every array's shape within the schema's limits, its dtype the schema's

The checks cost one `lstat` per file read (~2 us), and nothing per array beyond its metadata.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from zarr.storage import LocalStore

from attnstore.errors import StoreError
from attnstore.schema import DIM_LIMITS, MAX_CHUNK_BYTES, MAX_METADATA_BYTES, expected_dtype


def check_local_file(root: Path, key: str, whole: bool = True) -> None:
    """Refuse to read store entry `key` under `root` unless it is a regular file inside the store.

    A missing entry passes (zarr reads it as absent). Raises StoreError naming the entry for a FIFO,
    device, socket or folder, a link that leaves the store or loops, and, when it is to be read
    `whole`, a file larger than any the schema allows (metadata: MAX_METADATA_BYTES; chunks:
    MAX_CHUNK_BYTES). Shards are read by byte range (their index bounds each range): no size limit.
    """
    path = f"{root}/{key}"  # not pathlib: this runs on every click (~1 us against ~10)
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            real = Path(os.path.realpath(path, strict=True))
            if not real.is_relative_to(Path(root).resolve()):
                raise StoreError(f"store entry '{key}' links outside the store (to {real}): refusing to read it")
            info = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as err:  # a link loop (ELOOP), permissions
        raise StoreError(f"store entry '{key}' cannot be read ({err.strerror}): the store is damaged") from err
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(f"store entry '{key}' is not a regular file (a FIFO, device or folder): the store is damaged")
    limit = MAX_METADATA_BYTES if key.rsplit("/", 1)[-1] == "zarr.json" else MAX_CHUNK_BYTES
    if whole and info.st_size > limit:
        raise StoreError(
            f"store entry '{key}' is {info.st_size:,} bytes, more than the schema allows ({limit:,}): "
            "the store is damaged"
        )


class CheckedLocalStore(LocalStore):
    """zarr-python's local store, reading only regular files inside the store (`check_local_file`)."""

    async def get(self, key, prototype=None, byte_range=None):
        check_local_file(self.root, key, whole=byte_range is None)
        return await super().get(key, prototype, byte_range)

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        for key, byte_range in key_ranges:
            check_local_file(self.root, key, whole=byte_range is None)
        return await super().get_partial_values(prototype, key_ranges)

    def get_sync(self, key, *, prototype=None, byte_range=None):
        check_local_file(self.root, key, whole=byte_range is None)
        return super().get_sync(key, prototype=prototype, byte_range=byte_range)


# -- declared shapes and dtypes -----------------------------------------------------------------------


class Declared(NamedTuple):
    """What an array's metadata declares (read before any of its data)."""

    name: str
    shape: tuple[int, ...]
    dims: tuple[str | None, ...]
    data_type: str
    chunks: tuple[int, ...]  # the chunks a read decodes (inner chunks of a sharded array)

    @classmethod
    def of(cls, name: str, arr) -> Declared:
        """From a zarr.Array (metadata only)."""
        dims = tuple(arr.metadata.dimension_names or (None,) * len(arr.shape))
        return cls(name, tuple(arr.shape), dims, str(arr.metadata.to_dict()["data_type"]), tuple(arr.chunks))


def declared_problems(arrays: Iterable[Declared]) -> Iterator[str]:
    """Problems of a store's arrays as declared: a dimension longer than the schema allows
    (`DIM_LIMITS`), a chunk larger than MAX_CHUNK_BYTES, a dtype other than the schema's.
    Reads nothing but the metadata, so it runs before any allocation."""
    for arr in arrays:
        for dim, size in zip(arr.dims, arr.shape):
            limit = DIM_LIMITS.get(dim)
            if limit is not None and not 0 <= int(size) <= limit:
                yield f"array '{arr.name}' declares {dim} of {int(size):,}, outside the schema's limit of {limit:,}"
        wanted = expected_dtype(arr.name)
        if wanted is not None and arr.data_type != wanted:
            yield f"array '{arr.name}' is declared {arr.data_type}, but the schema says {wanted}"
        n = 2 if arr.data_type == "float16" else 8  # bytes per value: strings and wider types, a generous bound
        for size in arr.chunks:
            n *= max(int(size), 1)
        if n > MAX_CHUNK_BYTES:
            yield f"array '{arr.name}' declares chunks {arr.chunks} ({n:,} bytes), more than the schema allows"


def store_declared(group) -> list[Declared]:
    """Every array of an open zarr group, as declared."""
    return [Declared.of(name, arr) for name, arr in group.arrays()]


def check_declared(arrays: Iterable[Declared], path: str) -> None:
    """Raise StoreError (one line) for the first problem `declared_problems` finds."""
    for problem in declared_problems(arrays):
        raise StoreError(f"store '{path}' is damaged: {problem}")


def chunk_keys(name: str, meta: dict, region: tuple[slice, ...]) -> Iterator[str]:
    """Store keys of the chunk (or shard) files of array `name` (zarr.json `meta`) that `region` touches."""
    from itertools import product

    grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
    encoding = meta.get("chunk_key_encoding", {"name": "default"})
    separator = encoding.get("configuration", {}).get("separator", "/")
    spans = [range(s.start // c, -(-s.stop // c)) for s, c in zip(region, grid)]
    for at in product(*spans):
        if encoding.get("name") == "v2":
            yield f"{name}/" + separator.join(map(str, at or (0,)))
        else:
            yield f"{name}/" + separator.join(map(str, ("c", *at)))
