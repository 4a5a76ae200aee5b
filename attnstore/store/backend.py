"""Read backends for the attention array: tensorstore when it can open the store, zarr-python otherwise.

One query row of one image is one stored chunk (`[layer, head, key]` fp16, blosc-compressed) inside
one shard per image. Both backends return the stored fp16 values, rows first:

    reader = open_reader("store.zarr")                 # backend chosen once per open
    reader.read_rows(image, [3, 17])                   # [row, layer, head, key] float16
    reader.read_image_rows(image, slice(0, 40))        # a row block (or the whole shard)

`tensorstore`  tensorstore key-value stores (file, http, s3, zip: local or remote) fetch the shard
               index and the chunk bytes; the chunks are decoded with numcodecs' blosc straight into
               the output, concurrently. Decoding through tensorstore's own zarr3 driver measured
               ~0.4 GB/s per core against ~0.9 GB/s for numcodecs (the codec the writer uses), so
               only the I/O goes through tensorstore (`benchmarks/bench_read.py` prints both).
`zarr`         zarr-python: every store and storage option fsspec understands; always used to write.

The choice: the `backend` argument, else the ATTNSTORE_READ_BACKEND environment variable, else
"auto" (tensorstore when it can open the store, zarr otherwise, with the reason kept in
`reader.detail`). `attach` puts a reader behind the `attention` variable of an xarray Dataset, so
every lazy slice of it (`ds.attention.isel(...)`, dask chunks) reads through the reader.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from attnstore.errors import AttnstoreError, InvalidArgument, StoreError
from attnstore.schema import QUERY
from attnstore.store.codecs import chunk_decoder
from attnstore.store.integrity import missing_rows_error
from attnstore.store.remote import is_url, is_zip, protocol, resolve_storage_options, store_like
from attnstore.store.safety import check_local_file, chunk_keys
from attnstore.store.strings import StringChunks, strip_crc32c
from attnstore.store.threads import read_concurrently

BACKEND_ENV = "ATTNSTORE_READ_BACKEND"
BACKENDS = ("auto", "tensorstore", "zarr")
ATTENTION = "attention"
READER_OBJECT = "attnstore_reader"  # encoding key of the attention variable holding its reader (`reader_of`)
INDEX_CACHE_SHARDS = 4096  # shard indexes kept per reader (16 bytes per row each; ~1.5 KB for 95 rows)
MISSING = 2**64 - 1  # shard index entry of a chunk that is not stored (all fill value)
INLINE_DECODE = 2  # decode this many chunks or fewer in the calling thread (no pool hand-off)


def choose_backend(backend: str | None = None) -> str:
    """The requested backend: `backend`, else ATTNSTORE_READ_BACKEND, else "auto"."""
    name = (backend or os.environ.get(BACKEND_ENV) or "auto").strip().lower()
    if name not in BACKENDS:
        if backend:
            raise InvalidArgument("read_backend", f"must be one of {', '.join(BACKENDS)}, not '{name}'")
        raise AttnstoreError(f"{BACKEND_ENV} must be one of {', '.join(BACKENDS)}, not '{name}'")
    return name


@functools.cache
def _decode_pool() -> ThreadPoolExecutor:
    """Threads that decode chunks (blosc releases the GIL outside the main thread)."""
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="attnstore-decode")


class AttentionReader:
    """Reads the attention array of one store: `[image, layer, head, query, key]` float16."""

    name = ""

    def __init__(self, shape: tuple[int, ...], fill_value: float, detail: str):
        self.shape = tuple(int(s) for s in shape)  # [image, layer, head, query, key]
        self.fill_value = fill_value
        self.detail = detail  # one line for `attnstore info`
        # image -> how many leading query rows it must have stored (n_query of a complete image, else 0),
        # and its "index (name)" label; set by `attach`. A row with no stored chunk reads as zeros:
        # below that count it is a deleted chunk, an error, never a map.
        self.required_rows: Callable[[int], int] | None = None
        self.image_label: Callable[[int], str] = str

    def read_rows(self, image: int, rows: Sequence[int]) -> np.ndarray:
        """Query rows of one image  # -> [row, layer, head, key] float16 (one stored chunk per row)."""
        raise NotImplementedError

    def read_variable(self, name: str, region: tuple[slice, ...]) -> np.ndarray | None:
        """A region of another (small) variable of the store, if this backend reads it faster than
        zarr-python; None: load it through xarray as usual."""
        return None

    def bound_to(self, shape: tuple[int, ...]) -> None:
        """Read only `shape` of the array: the shape the rest of the store agrees on.

        A writer grows an array before the store's consolidated metadata says so (and a killed
        writer may never say so): what lies beyond is not part of the store yet."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != len(self.shape) or any(s > n for s, n in zip(shape, self.shape)):
            raise StoreError(
                f"the attention array is {self.shape} but the store's metadata says {shape}: the store is "
                "half-written; rerun the extract command that wrote it (it repairs the store)"
            )
        self.shape = shape

    def read_image_rows(self, image: int, rows: slice = slice(None)) -> np.ndarray:
        """A block of query rows of one image (default: the whole shard)  # -> [row, layer, head, key]."""
        return self.read_rows(image, range(*rows.indices(self.shape[3])))

    def _require_stored(self, image: int, absent: Sequence[int]) -> None:
        """Raise if any of the rows `absent` (read with no stored chunk) must be stored."""
        if not len(absent) or self.required_rows is None:
            return
        needed = self.required_rows(image)
        missing = sorted(int(r) for r in absent if r < needed)
        if missing:
            raise missing_rows_error(self.image_label(image), ATTENTION, missing)

    def _check(self, image: int, rows: Sequence[int]) -> tuple[int, list[int]]:
        n_images, n_rows = self.shape[0], self.shape[3]
        if not -n_images <= image < n_images:
            raise InvalidArgument("image", f"{image} is out of range: the store has {n_images} images")
        bad = [r for r in rows if not -n_rows <= r < n_rows]
        if bad:
            raise InvalidArgument("rows", f"{bad[:5]} are out of range: the store has {n_rows} rows per image")
        return image % n_images, [int(r) % n_rows for r in rows]


# -- zarr-python -------------------------------------------------------------------------------------


class ZarrReader(AttentionReader):
    """zarr-python: one basic-slice read per row (a list index would decode the whole shard)."""

    name = "zarr"

    def __init__(self, array, detail: str = "zarr-python"):
        super().__init__(array.shape, array.fill_value, detail)
        self.array = array

    @classmethod
    def open(cls, path: str, storage_options: dict | None = None, detail: str = "zarr-python") -> ZarrReader:
        import zarr

        target, options = store_like(path, storage_options)
        try:
            group = zarr.open_group(store=target, mode="r", zarr_format=3, storage_options=options)
            return cls(group[ATTENTION], detail)
        except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError) as err:
            raise StoreError(f"no attnstore store at '{path}'") from err

    def read_rows(self, image: int, rows: Sequence[int]) -> np.ndarray:
        image, rows = self._check(image, rows)
        out = np.empty((len(rows), *self.shape[1:3], self.shape[4]), np.float16)  # [row, layer, head, key]

        def read(i: int) -> None:
            out[i] = self.array[image, :, :, rows[i], : self.shape[4]]

        read_concurrently(read, range(len(rows)))  # zarr decodes in its event loop: the threads only wait
        if self.required_rows is not None:  # an absent chunk reads as the fill value: a stored row sums to 1
            self._require_stored(image, [r for r, row in zip(rows, out) if not row.view(np.uint16).any()])
        return out

    def read_image_rows(self, image: int, rows: slice = slice(None)) -> np.ndarray:
        image, _ = self._check(image, [])
        rows = slice(*rows.indices(self.shape[3]))  # within the bound (`bound_to`), not the live array
        block = self.array[image, :, :, rows, : self.shape[4]]  # [layer, head, row, key]: one read of the shard
        if self.required_rows is not None:  # an absent chunk reads as the fill value: a stored row sums to 1
            stored = block.view(np.uint16).any(axis=(0, 1, 3))  # [row]
            self._require_stored(image, np.arange(rows.start, rows.stop, rows.step)[~stored])
        return np.moveaxis(block, 2, 0)


# -- tensorstore ------------------------------------------------------------------------------------


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


# -- choosing ---------------------------------------------------------------------------------------


def open_reader(path: str, storage_options: dict | None = None, backend: str | None = None) -> AttentionReader:
    """A reader of the store's attention array, with the backend chosen as the module doc says.

    Raises
    ------
    StoreError : `backend="tensorstore"` (or the variable) is forced and tensorstore cannot open the store.
    """
    name = choose_backend(backend)
    store_like(path, storage_options)  # the checks (and one-line errors) of every other read: zip, http ranges
    if name == "zarr":
        return ZarrReader.open(path, storage_options, detail=f"zarr-python (forced by {_forced_by(backend)})")
    try:
        return TensorstoreReader.open(path, storage_options)
    except Unsupported as why:
        if name == "tensorstore":
            message = f"the tensorstore read backend cannot read '{path}': {why}"
            raise StoreError(message, param="read_backend" if backend else None) from why
        return ZarrReader.open(path, storage_options, detail=f"zarr-python (tensorstore: {why})")


def _forced_by(backend: str | None) -> str:
    return "the read_backend option" if backend else BACKEND_ENV


def _planned_backend(path: str, storage_options: dict | None) -> str:
    """What "auto" will open, told without importing tensorstore (its import alone costs ~0.6 s of
    CPU, more than the rest of `attnstore info`): installed, and a kvstore it has for this path."""
    if importlib.util.find_spec("tensorstore") is None:
        return "zarr-python (tensorstore: tensorstore is not installed)"
    try:
        driver = kvstore_spec(path, storage_options)["driver"]
    except Unsupported as why:
        return f"zarr-python (tensorstore: {why})"
    return f"tensorstore ({driver} kvstore), decoded by numcodecs; opened on the first attention read"


class LazyReader(AttentionReader):
    """The "auto" reader of a store Dataset, opened on its first attention read (`open_reader`):
    commands that read no attention row (`info`, listings) never import tensorstore."""

    name = "auto"  # the opened reader's name once opened

    def __init__(self, path: str, storage_options: dict | None, shape: tuple[int, ...], fill_value):
        super().__init__(shape, fill_value, _planned_backend(path, storage_options))
        self.path, self.storage_options = path, storage_options
        self._reader: AttentionReader | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # dask may ship a graph to other processes: no lock
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def opened(self) -> AttentionReader:
        """The real reader (opened once, bound to the Dataset's shape)."""
        with self._lock:
            if self._reader is None:
                reader = open_reader(self.path, self.storage_options, "auto")
                reader.bound_to(self.shape)
                for name in ("required_rows", "image_label"):  # what `attach` gave this reader: missing-row checks
                    if name in self.__dict__:
                        setattr(reader, name, self.__dict__[name])
                self._reader, self.detail, self.name = reader, reader.detail, reader.name
            return self._reader

    def read_rows(self, image: int, rows: Sequence[int]) -> np.ndarray:
        return self.opened().read_rows(image, rows)

    def read_image_rows(self, image: int, rows: slice = slice(None)) -> np.ndarray:
        return self.opened().read_image_rows(image, rows)

    def read_variable(self, name: str, region: tuple[slice, ...]) -> np.ndarray | None:
        return self.opened().read_variable(name, region)


def dataset_reader(path: str, storage_options: dict | None, backend: str | None, var: xr.Variable) -> AttentionReader:
    """The reader `open_dataset` attaches: a forced backend opens now (its errors are the open's),
    "auto" on the first attention read (`LazyReader`)."""
    if choose_backend(backend) != "auto":
        return open_reader(path, storage_options, backend)
    store_like(path, storage_options)  # the checks (and one-line errors) of every other read
    return LazyReader(path, storage_options, var.shape, var.encoding.get("_FillValue", 0))


# -- xarray ----------------------------------------------------------------------------------------


class AttentionArray(BackendArray):
    """The attention array for xarray's lazy indexing: every slice reads through a reader."""

    def __init__(self, reader: AttentionReader):
        self.reader = reader
        self.shape = reader.shape
        self.dtype = np.dtype(np.float16)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._read)

    def _read(self, key: tuple) -> np.ndarray:
        """Outer indexing: ints, slices or 1-d int arrays on [image, layer, head, query, key]."""
        for k, n, dim in zip(key, self.shape, ("image", "layer", "head", "query", "key")):
            if not isinstance(k, slice) and not np.all((-n <= np.asarray(k)) & (np.asarray(k) < n)):
                raise IndexError(f"{dim} index {k} is out of bounds for size {n}")  # as numpy and zarr
        image_k = key[0]
        if isinstance(image_k, (int, np.integer)):
            return self._read_image(int(image_k), key)
        images = _positions(image_k, self.shape[0])
        blocks = [self._read_image(int(i), key) for i in images]
        return np.stack(blocks) if blocks else np.empty((0, *self._rest_shape(key)), np.float16)

    def _read_image(self, image: int, key: tuple) -> np.ndarray:
        layer_k, head_k, query_k, key_k = key[1:]
        if isinstance(query_k, slice) and query_k.step in (None, 1):
            block = self.reader.read_image_rows(image, query_k)  # [row, layer, head, key]
        else:
            block = self.reader.read_rows(image, _positions(query_k, self.shape[3]))
        for axis, k in ((3, key_k), (2, head_k), (1, layer_k)):  # last axis first: int keys drop axes
            block = block[(slice(None),) * axis + (k,)]
        if isinstance(query_k, (int, np.integer)):
            return block[0]
        kept = sum(not isinstance(k, (int, np.integer)) for k in (layer_k, head_k))
        return np.moveaxis(block, 0, kept)  # rows back between head and key (a view: no copy)

    def _rest_shape(self, key: tuple) -> tuple[int, ...]:
        sizes = [len(_positions(k, n)) for k, n in zip(key[1:], self.shape[1:]) if not isinstance(k, (int, np.integer))]
        return tuple(sizes)


def _positions(k, n: int) -> list[int]:
    if isinstance(k, slice):
        return list(range(*k.indices(n)))
    if isinstance(k, (int, np.integer)):
        return [int(k)]
    return [int(i) for i in np.asarray(k).ravel()]


def attach(ds: xr.Dataset, reader: AttentionReader, chunks=None) -> xr.Dataset:
    """`ds` with its `attention` variable read through `reader` (lazily; dask-chunked if `chunks` is
    not None: one task per shard or row block, never per stored row)."""
    old = ds[ATTENTION].variable
    reader.bound_to(old.shape)  # the shape every other variable agrees on (a writer may be growing it)
    if "complete" in ds and "n_query" in ds:
        reader.required_rows = functools.partial(_required_rows, ds["complete"].variable, ds["n_query"].variable)
        reader.image_label = functools.partial(_image_label, ds["image_name"].variable if "image_name" in ds else None)
    data = indexing.LazilyIndexedArray(AttentionArray(reader))
    shard_chunks = attention_chunks(old, chunks if chunks is not None else {})
    preferred = {dim: old.shape[i] if size == -1 else size for i, (dim, size) in enumerate(shard_chunks.items())}
    encoding = {**old.encoding, READER_OBJECT: reader, "preferred_chunks": preferred}
    var = xr.Variable(old.dims, data, old.attrs, encoding)
    if chunks is not None:
        var = var.chunk(shard_chunks)
    return ds.assign({ATTENTION: var})


def _required_rows(complete: xr.Variable, n_query: xr.Variable, image: int) -> int:
    """Leading query rows image `image` must have stored: its n_query once complete, else none."""
    return int(n_query[image].values) if int(complete[image].values) else 0


def _image_label(names: xr.Variable | None, image: int) -> str:
    try:
        return f"{image} ({names[image].values})" if names is not None else str(image)
    except Exception:  # the name's own chunk may be the damaged one
        return f"{image} (name unreadable)"


def attention_chunks(var: xr.Variable, chunks) -> dict[str, int]:
    """Dask chunks of the attention variable: one image (whole shard) per task unless the caller asked
    for specific sizes of some dims; the query dim is never split finer than the caller asked."""
    wanted = chunks if isinstance(chunks, dict) else {}
    out = {dim: -1 for dim in var.dims}
    out["image"] = 1
    for dim, size in wanted.items():
        if dim in out and isinstance(size, int) and size > 0:
            out[dim] = size
    return out


def reader_of(ds: xr.Dataset) -> AttentionReader | None:
    """The reader behind a store Dataset's attention (also after selections); None if none was attached."""
    return ds[ATTENTION].encoding.get(READER_OBJECT) if ATTENTION in ds else None


def load_variables(ds: xr.Dataset, names: Sequence[str]) -> xr.Dataset:
    """`ds` (a store Dataset, or a selection of one) with the variables `names` loaded: numeric ones
    through the store's reader when it reads them (`read_variable`), the rest through xarray
    (zarr-python), each in one multi-chunk read, concurrently."""
    reader = reader_of(ds)

    def load(name: str) -> tuple[str, xr.Variable]:
        var = ds[name].variable
        region = _stored_region(var) if reader is not None else None
        values = None if region is None else reader.read_variable(name, region)
        if values is None or values.shape != var.shape or values.dtype != var.dtype:
            return name, var.load()
        return name, var.copy(deep=False, data=values)  # not deep: the encoding holds the reader

    return ds.assign(dict(read_concurrently(load, [n for n in names if n in ds])))


def _stored_region(var: xr.Variable) -> tuple[slice, ...] | None:
    """Where a lazily opened variable's values are in the stored array: its selection when that is
    one step-1 slice per axis (a basic selection of the store); None otherwise (loaded by xarray)."""
    data = var._data  # xarray's lazy wrappers: the selection is the LazilyIndexedArray's key
    while not isinstance(data, indexing.LazilyIndexedArray) and hasattr(data, "array"):
        data = data.array
    if not isinstance(data, indexing.LazilyIndexedArray) or not isinstance(data.key, indexing.BasicIndexer):
        return None
    stored = data.array.shape
    key = data.key.tuple
    if len(key) != len(stored) or not all(isinstance(k, slice) and k.step in (None, 1) for k in key):
        return None
    return tuple(slice(*k.indices(n)) for k, n in zip(key, stored))


def reader_name(ds: xr.Dataset) -> str:
    """Which reader the Dataset's attention goes through (one line), or "" if none was attached."""
    reader = reader_of(ds)
    return reader.detail if reader is not None else ""


def read_rows(source, image: int, rows: Sequence[int]) -> np.ndarray:
    """Query rows of one image  # -> [row, layer, head, key] float16.

    `source` is a reader or a store Dataset from `attnstore.store.open_dataset` (its whole
    `attention` variable, not a selection of it).
    """
    if isinstance(source, AttentionReader):
        return source.read_rows(image, rows)
    att = source[ATTENTION].isel(image=image, **{QUERY: list(rows)})  # one reader call for every row
    return np.moveaxis(np.asarray(att.values), att.dims.index(QUERY), 0)


def read_image_rows(source, image: int, rows: slice = slice(None)) -> np.ndarray:
    """A block of query rows of one image (default all)  # -> [row, layer, head, key] float16."""
    if isinstance(source, AttentionReader):
        return source.read_image_rows(image, rows)
    att = source[ATTENTION].isel(image=image, **{QUERY: rows})
    return np.moveaxis(np.asarray(att.values), att.dims.index(QUERY), 0)
