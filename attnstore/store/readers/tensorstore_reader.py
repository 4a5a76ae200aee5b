"""The tensorstore reader: tensorstore fetches a shard's index and chunk bytes, numcodecs decodes them.

Tensorstore itself is imported only when a reader opens (its import alone costs ~0.6 s of CPU).
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from attnstore.errors import StoreError
from attnstore.store.codecs import chunk_decoder
from attnstore.store.readers.base import ATTENTION, AttentionReader
from attnstore.store.remote import is_url, is_zip, protocol, resolve_storage_options
from attnstore.store.safety import check_local_file, chunk_keys
from attnstore.store.strings import StringChunks, strip_crc32c

INDEX_CACHE_SHARDS = 4096  # shard indexes kept per reader (16 bytes per row each; ~1.5 KB for 95 rows)
MISSING = 2**64 - 1  # shard index entry of a chunk that is not stored (all fill value)
INLINE_DECODE = 2  # decode this many chunks or fewer in the calling thread (no pool hand-off)


@functools.cache
def _decode_pool() -> ThreadPoolExecutor:
    """Threads that decode chunks (blosc releases the GIL outside the main thread)."""
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="attnstore-decode")


class Unsupported(Exception):
    """Tensorstore cannot open this store (the reason is the message): zarr-python reads it."""


class ShardLayout:
    """Where each stored row lives: the attention array's zarr v3 metadata, checked to be the
    layout the writer makes (one image per shard, one query row of every layer and head per
    chunk, bytes + blosc (+ crc32c) chunks, bytes + crc32c index)."""

    def __init__(self, meta: dict):
        self.shape = tuple(meta["shape"])  # [image, layer, head, query, key]
        self.fill_value = float(meta.get("fill_value") or 0.0)
        sharding = (meta.get("codecs") or [{}])[0]
        if sharding.get("name") != "sharding_indexed" or len(meta["codecs"]) != 1:
            raise Unsupported("the attention array is not sharded")
        if meta.get("data_type") != "float16":
            raise Unsupported(f"attention is {meta.get('data_type')}, not float16")
        cfg = sharding["configuration"]
        self.shard = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.chunk = tuple(cfg["chunk_shape"])
        n_layer, n_head = self.shape[1:3]
        if self.shard[:3] != (1, n_layer, n_head) or self.chunk[:4] != (1, n_layer, n_head, 1):
            raise Unsupported(f"shards {self.shard} / chunks {self.chunk} are not one image / one query row each")
        decoder = chunk_decoder(cfg["codecs"])  # the pipelines the writer makes (`attnstore.store.codecs`)
        if decoder is None:
            raise Unsupported(f"chunk codecs {[c['name'] for c in cfg['codecs']]} are not ones attnstore writes")
        self.decode, self.chunk_checksum = decoder  # stores written before chunk checksums have none
        if [c["name"] for c in cfg["index_codecs"]] != ["bytes", "crc32c"] or _big_endian(cfg["index_codecs"][0]):
            raise Unsupported("the shard index is not bytes + crc32c")
        self.index_at_end = cfg.get("index_location", "end") == "end"
        encoding = meta.get("chunk_key_encoding", {"name": "default"})
        if encoding.get("name") != "default":
            raise Unsupported(f"chunk key encoding '{encoding.get('name')}'")
        self.separator = encoding.get("configuration", {}).get("separator", "/")
        self.key_chunks = -(-self.shard[4] // self.chunk[4])  # chunks along key in one shard
        self.n_chunks = self.shard[3] * self.key_chunks  # chunks per shard
        self.index_bytes = 16 * self.n_chunks + 4

    def shard_key(self, image: int, row_shard: int, key_shard: int) -> str:
        return ATTENTION + "/" + self.separator.join(map(str, ("c", image, 0, 0, row_shard, key_shard)))

    def pieces(self, row: int) -> list[tuple[int, int, int, int, int]]:
        """Where row `row`'s keys are stored: (row shard, key shard, index entry, key start, key stop)."""
        out, n_key, ck = [], self.shape[4], self.chunk[4]
        for ks in range(-(-n_key // self.shard[4])):
            for kc in range(self.key_chunks):
                start = ks * self.shard[4] + kc * ck
                if start < n_key:
                    entry = (row % self.shard[3]) * self.key_chunks + kc
                    out.append((row // self.shard[3], ks, entry, start, min(start + ck, n_key)))
        return out


def _big_endian(codec: dict) -> bool:
    return codec.get("configuration", {}).get("endian", "little") != "little"


def kvstore_spec(path: str, storage_options: dict | None = None) -> dict:
    """Tensorstore key-value store of a store path (folder, zip, http(s) or s3 URL, or a zip at one).

    Raises `Unsupported` for protocols and storage options tensorstore has no equivalent of.
    """
    options = dict(resolve_storage_options(path, storage_options) or {})
    base = _base_spec(path, options)  # the folder, or the zip file
    if options:
        raise Unsupported(f"storage options {sorted(options)}")
    if is_zip(path):
        return {"driver": "zip", "base": base}
    if base["driver"] == "http":
        return {**base, "base_url": base["base_url"] + "/"}
    return {**base, "path": base["path"] + "/"}


def _base_spec(path: str, options: dict) -> dict:
    """The tensorstore spec of `path` itself; pops the storage options it uses."""
    if not is_url(path):
        # Memory-mapped reads: half the CPU of pread-style reads (zarr writes files by atomic rename,
        # so a mapped file is never truncated under a reader). No lock files: nothing is written.
        return {"driver": "file", "path": str(Path(path).resolve()), "file_io_locking": {"mode": "none"},
                "file_io_mode": {"mode": "memmap"}}  # fmt: skip
    url = str(path).rstrip("/")
    if protocol(path) in ("http", "https"):
        headers = options.pop("headers", None) or {}
        return {"driver": "http", "base_url": url, "headers": [f"{k}: {v}" for k, v in headers.items()]}
    if protocol(path) != "s3":
        raise Unsupported(f"no tensorstore driver for {protocol(path)}:// URLs")
    bucket, _, key = url.split("://", 1)[1].partition("/")
    spec = {"driver": "s3", "bucket": bucket, "path": key}
    client = dict(options.pop("client_kwargs", None) or {})
    # s3fs/botocore read the same variables when no option is given
    endpoint = options.pop("endpoint_url", None) or client.pop("endpoint_url", None)
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = client.pop("region_name", None) or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if endpoint:
        spec["endpoint"] = endpoint
    if region:
        spec["aws_region"] = region
    if options.pop("anon", False):
        spec["aws_credentials"] = {"type": "anonymous"}
    if client:
        raise Unsupported(f"s3 client options {sorted(client)}")
    return spec


class TensorstoreReader(AttentionReader):
    """Tensorstore fetches the bytes (concurrently, without the GIL); numcodecs decodes them."""

    name = "tensorstore"

    def __init__(self, kvstore, layout: ShardLayout, detail: str, root: Path | None = None):
        super().__init__(layout.shape, layout.fill_value, detail)
        self.kv = kvstore
        self.root = root  # a local store's folder: each file is checked before tensorstore opens it
        self._metas: dict[str, dict] = {}  # name -> zarr.json of a variable read here (local stores)
        self.layout = layout
        self._indexes: OrderedDict[str, tuple[np.ndarray | None, bytes]] = OrderedDict()  # key -> (index, generation)
        self._variables: dict[str, object] = {}  # name -> its read (region -> values; `_open_variable`), or None
        self._lock = threading.Lock()

    def bound_to(self, shape: tuple[int, ...]) -> None:
        super().bound_to(shape)
        self.layout.shape = self.shape  # which stored pieces make a row

    def __getstate__(self) -> dict:  # dask may ship a graph to other processes: no lock, no cache
        return {k: v for k, v in self.__dict__.items() if k not in ("_indexes", "_variables", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _indexes=OrderedDict(), _variables={}, _lock=threading.Lock())

    # -- small variables -------------------------------------------------------------------------
    def read_variable(self, name: str, region: tuple[slice, ...]) -> np.ndarray | None:
        """A region of a variable: numeric ones through tensorstore's zarr3 driver, one call for many
        per-image chunks (32 images of `token_kind`: 1.1 ms against zarr-python's 11-14 ms, whose
        per-chunk Python also holds the GIL the analysis threads need); strings through
        `StringChunks`. Other layouts, and any error (a damaged chunk included), give None:
        zarr-python then reads it and reports what is wrong."""
        read = self._variables.get(name, False)
        if read is False:
            read = self._open_variable(name)
            with self._lock:
                self._variables[name] = read
        if read is None:
            return None
        try:
            if self.root is not None:  # a refused file: zarr-python reads it and says what is wrong
                self._check_files(name, region)
            return read(region)
        except Exception:  # tensorstore's errors are plain exceptions with status text; a bad checksum
            return None

    def _check_files(self, name: str, region: tuple[slice, ...]) -> None:
        """`check_local_file` on every chunk file of `name` that `region` touches."""
        meta = self._metas.get(name)
        if meta is None:
            check_local_file(self.root, f"{name}/zarr.json")
            meta = self._metas[name] = json.loads((self.root / name / "zarr.json").read_bytes())
        for key in chunk_keys(name, meta, region):
            check_local_file(self.root, key)

    def _open_variable(self, name: str):
        """How to read variable `name` (region -> values), or None (zarr-python reads it)."""
        import tensorstore as ts

        try:
            if self.root is not None:
                check_local_file(self.root, f"{name}/zarr.json")
            array = ts.open({"driver": "zarr3", "kvstore": (self.kv / f"{name}/").spec().to_json()}, open=True).result()
        except Exception:  # not an array tensorstore's driver reads: variable-length strings are read here
            strings = StringChunks.open(self.kv, name)
            return strings.read if strings is not None else None
        if np.dtype(array.dtype.numpy_dtype).kind not in "biuf":
            return None
        return lambda region: np.asarray(array[region].read().result())

    @classmethod
    def open(cls, path: str, storage_options: dict | None = None) -> TensorstoreReader:
        try:
            import tensorstore as ts
        except ImportError as err:
            raise Unsupported("tensorstore is not installed") from err
        spec = kvstore_spec(path, storage_options)
        root = Path(spec["path"]) if spec["driver"] == "file" else None
        try:
            if root is not None:
                check_local_file(root, f"{ATTENTION}/zarr.json")
            kv = ts.KvStore.open(spec).result()
            meta = kv.read(f"{ATTENTION}/zarr.json").result()
        except Exception as err:  # tensorstore raises ValueError / OSError-like errors with its status text
            raise Unsupported(f"tensorstore cannot open it ({str(err).splitlines()[0][:160]})") from err
        if meta.state != "value":
            raise Unsupported(f"no {ATTENTION}/zarr.json")
        try:
            layout = ShardLayout(json.loads(bytes(meta.value)))
        except (ValueError, KeyError, TypeError, IndexError, RecursionError) as err:  # zarr-python says what is wrong
            raise Unsupported(f"unreadable {ATTENTION}/zarr.json ({type(err).__name__})") from err
        codec = layout.decode.pipeline.name
        return cls(kv, layout, f"tensorstore ({spec['driver']} kvstore), {codec} decoded by numcodecs", root)

    # -- shard indexes ---------------------------------------------------------------------------
    def _fetch_indexes(self, keys: list[str]) -> dict[str, tuple[np.ndarray | None, bytes]]:
        """Shard index of each key  # each [chunk, (offset, nbytes)] uint64, None if no shard.

        Kept (least recently used first out) with the shard's generation: a chunk read from a shard
        rewritten since then is noticed (`_decode`) and its index read again."""
        with self._lock:
            found = {k: self._indexes[k] for k in keys if k in self._indexes}
        todo = [k for k in keys if k not in found]
        size = self.layout.index_bytes
        span = slice(-size, None) if self.layout.index_at_end else slice(0, size)
        futures = {k: self.kv.read(k, byte_range=span) for k in todo}
        for key, future in futures.items():
            try:
                result = future.result()
            except Exception as err:  # shorter than its index (a zero-length shard): tensorstore's OUT_OF_RANGE
                why = (str(err).splitlines() or [""])[0][:160]
                raise StoreError(f"shard '{key}' cannot be read ({why}): the store is damaged") from err
            found[key] = self._parse_index(key, result)
        with self._lock:
            for key in todo:
                if found[key][0] is not None:  # a missing shard may be written later: ask again next time
                    self._indexes[key] = found[key]
            for key in found:
                if key in self._indexes:
                    self._indexes.move_to_end(key)
            while len(self._indexes) > INDEX_CACHE_SHARDS:
                self._indexes.popitem(last=False)
        return found

    def _parse_index(self, key: str, result) -> tuple[np.ndarray | None, bytes]:
        import google_crc32c

        if result.state != "value":
            return None, b""
        raw = bytes(result.value)
        body, crc = raw[:-4], int.from_bytes(raw[-4:], "little")
        if len(raw) != self.layout.index_bytes or google_crc32c.value(body) != crc:
            raise StoreError(f"shard '{key}' has a corrupt index (checksum mismatch): the store is damaged")
        return np.frombuffer(body, "<u8").reshape(-1, 2), result.stamp.generation

    def _forget(self, keys) -> None:
        with self._lock:
            for key in keys:
                self._indexes.pop(key, None)

    # -- rows -----------------------------------------------------------------------------------
    def read_rows(self, image: int, rows: Sequence[int]) -> np.ndarray:
        image, rows = self._check(image, rows)
        for _ in range(3):  # a shard rewritten since its index was cached: read the index again
            try:
                return self._read_rows(image, rows)
            except _Stale as stale:
                self._forget(stale.keys)
        raise StoreError(f"image {image} keeps changing while it is read: is a writer still running?")

    def _read_rows(self, image: int, rows: list[int]) -> np.ndarray:
        lay = self.layout
        out = np.empty((len(rows), *self.shape[1:3], self.shape[4]), np.float16)  # [row, layer, head, key]
        plan = [(i, piece) for i, row in enumerate(rows) for piece in lay.pieces(row)]
        keys = {(rs, ks): lay.shard_key(image, rs, ks) for _, (rs, ks, *_rest) in plan}
        if self.root is not None:
            for key in set(keys.values()):
                check_local_file(self.root, key, whole=False)
        indexes = self._fetch_indexes(sorted(set(keys.values())))
        reads = []  # (row slot, key start, key stop, shard key, future)
        stored = np.zeros(len(rows), bool)  # [row]: some chunk of the row is stored
        for i, (rs, ks, entry, start, stop) in plan:
            key = keys[rs, ks]
            index, _ = indexes[key]
            offset, nbytes = (MISSING, MISSING) if index is None else (int(v) for v in index[entry])
            if offset == MISSING:
                out[i, ..., start:stop] = self.fill_value
            else:
                stored[i] = True
                reads.append((i, start, stop, key, self.kv.read(key, byte_range=slice(offset, offset + nbytes))))
        self._require_stored(image, [row for row, s in zip(rows, stored) if not s])  # from the index: no extra read
        if len(reads) <= INLINE_DECODE:
            stale = [self._decode(out, read, indexes) for read in reads]
        else:
            stale = list(_decode_pool().map(lambda read: self._decode(out, read, indexes), reads))
        if any(stale):
            raise _Stale({key for key in stale if key})
        return out

    def _decode(self, out: np.ndarray, read, indexes) -> str | None:
        """Decode one chunk into its place in `out`; returns the shard key if it changed meanwhile."""
        i, start, stop, key, future = read
        result = future.result()
        generation = indexes[key][1]
        if result.state != "value" or (generation and result.stamp.generation != generation):
            return key
        data = self._checked(result.value)
        n_key = self.layout.chunk[4]
        if start == 0 and stop == n_key == self.shape[4]:
            self.layout.decode(data, out[i])  # the common case: straight into the output row
        else:
            chunk = np.empty((*self.shape[1:3], n_key), np.float16)
            self.layout.decode(data, chunk)
            out[i, ..., start:stop] = chunk[..., : stop - start]
        return None

    def _checked(self, data: bytes) -> bytes:
        """The compressed bytes of a chunk, after checking its crc32c (if the store writes one)."""
        return strip_crc32c(data) if self.layout.chunk_checksum else data


class _Stale(Exception):
    def __init__(self, keys: set[str]):
        super().__init__(sorted(keys))
        self.keys = keys
