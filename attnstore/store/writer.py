"""Create and append to attnstore stores (one zarr v3 group, schema in `attnstore.schema`).

Writes go through zarr-python directly (region writes into pre-sized arrays, so
several writers can fill different images of one store); reads go through
xarray. Per image: every array is written first, `complete[image] = 1` last, so
a killed run never leaves a half-written image marked complete.
"""

from __future__ import annotations

import datetime as _dt
import glob
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec
from zarr.storage import FsspecStore, LocalStore

from attnstore._version import __version__
from attnstore.errors import StoreError
from attnstore.records import Extraction
from attnstore.schema import (
    ATTENTION_DIMS,
    BOX_CORNERS,
    BOX_DIM,
    EXTRA_ATTR,
    EXTRA_KINDS,
    FORMAT_NAME,
    IMAGE,
    IMAGE_PATCH_KINDS,
    KEY,
    OBJECT,
    OBJECT_BOX,
    OBJECT_LABEL,
    PER_IMAGE_SCALARS,
    PER_IMAGE_STRINGS,
    PER_KEY,
    PER_KEY_STRINGS,
    PIXEL_X,
    PIXEL_Y,
    QUERY,
    RGB,
    SCHEMA_VERSION,
    VARIABLE_ATTRS,
    kind_mask,
)
from attnstore.store import codecs
from attnstore.store.journal import JournalStore, write_errors
from attnstore.store.lossy import MAP_ERROR_ATTR, map_quantise
from attnstore.store.reader import check_attrs, check_target, exists
from attnstore.store.remote import is_url, store_like

if TYPE_CHECKING:  # PIL is imported where a picture is made: `import attnstore` stays lighter
    from PIL import Image

MAX_DISPLAY_SIDE = 1024  # the store keeps a display copy of each image, longest edge at most this
DEFAULT_KEEP_BITS = 10  # lossless fp16; see README "Storage" for the measured trade-off
FP16_MANTISSA_BITS = 10
ROUND_ATTR = "round_decimals"  # group attr: values rounded to this many decimals (`--round`, seed files)
CODEC_REQUEST = "codec"  # run attr (never stored): "auto" or a codec name forced with --codec
# The schema's own variables: an extra variable never takes one of their names.
SCHEMA_VARIABLES = {"attention", "query_position", "patch_box", "pixels", *PER_KEY, *PER_KEY_STRINGS,
                    *PER_IMAGE_SCALARS, *PER_IMAGE_STRINGS}  # fmt: skip
# Per-image variables with one writer only (the serial run, or a distributed run's coordinator; workers
# never write them): many images per chunk, so listing names or counting complete images at 10k+ images
# reads a few objects instead of one per image (atomic chunk writes keep this crash-safe).
SINGLE_WRITER_VARIABLES = ("complete", "image_name", "image_source")
SINGLE_WRITER_CHUNK = 4096
CREATING = ".creating-"  # `.NAME.creating-PID`: a store being created beside NAME (renamed when whole)
# zarr's LocalStore writes each object to `NAME.<32 hex>.partial` first, then renames it: a killed
# writer can leave one behind (never read: zarr ignores it).
ZARR_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")


# Every chunk ends with a crc32c of its compressed bytes (the standard zarr v3 `crc32c` codec), so a
# flipped byte on disk is an error on read instead of a silently wrong heatmap. Stores written
# without it keep opening: each array's codecs are in its own metadata.
CHUNK_CHECKSUM = True


def _compressors(dtype) -> tuple:
    """Bytes-to-bytes codecs of one array: blosc for numbers, zstd for strings, then crc32c."""
    if np.dtype(dtype).kind in "OUT":
        compress = ZstdCodec(level=0)  # zarr's own default for variable-length strings
    else:
        compress = BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle", typesize=np.dtype(dtype).itemsize)
    return (compress, Crc32cCodec()) if CHUNK_CHECKSUM else (compress,)


def round_mantissa(values: np.ndarray, keep_bits: int) -> np.ndarray:
    """Round fp16 values to `keep_bits` mantissa bits (round half to even).

    Zeroed low bits compress far better; the relative error is at most 2**-(keep_bits+1) for
    normal fp16 values (>= 2**-14); subnormals have fewer mantissa bits, so their relative
    error is larger while their absolute error stays below 2**-25.
    """
    if not 0 <= keep_bits <= FP16_MANTISSA_BITS:
        raise ValueError(f"keep_bits must be in 0..{FP16_MANTISSA_BITS}, got {keep_bits}")
    drop = FP16_MANTISSA_BITS - keep_bits
    if drop == 0:
        return values
    bits = values.astype(np.float16, copy=False).view(np.uint16).astype(np.uint32)
    half = (1 << (drop - 1)) - 1
    mask = np.uint32(0xFFFF ^ ((1 << drop) - 1))
    bits = (bits + np.uint32(half) + ((bits >> np.uint32(drop)) & np.uint32(1))) & mask
    return bits.astype(np.uint16).view(np.float16)


def display_pixels(image: Image.Image) -> np.ndarray:
    """RGB display copy with longest edge <= MAX_DISPLAY_SIDE.  # [y, x, rgb] uint8"""
    from PIL import Image

    image = image.convert("RGB")
    scale = MAX_DISPLAY_SIDE / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


@dataclass(frozen=True)
class StoreShape:
    """Array sizes fixed at creation (capacities grow on demand)."""

    n_layers: int
    n_heads: int
    query_capacity: int
    key_capacity: int


class CapacityError(StoreError):
    """An image needs more query/key rows than the store has, and this writer may not resize
    (a distributed worker: only the coordinator resizes)."""

    def __init__(self, message: str, needed: tuple[int, int]):
        super().__init__(message)
        self.needed = needed  # (n_query, n_key)


class AttnStore:
    """A handle on one store for writing. Read with `open_dataset` (xarray)."""

    def __init__(self, group: zarr.Group, path: str):
        self.group = group
        self.path = path
        self._n_images: int | None = None  # known after the first look (only this writer grows the image axis)

    # -- creation / opening -----------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str,
        shape: StoreShape,
        attrs: dict,
        storage_options: dict | None = None,
        first: Extraction | None = None,
    ) -> AttnStore:
        """Create an empty store (0 images). Fails if a store is already there.

        `first`: the first image to be written; the attention codec is chosen by measuring its rows
        (`attnstore.store.codecs`). Without it the codec is the one `attrs["codec"]` forces, else the default.

        A local store is built in a hidden folder beside `path` and renamed into place when whole: a run
        killed while creating leaves no store (and `remove_leftovers` clears the folder), never one with
        half its arrays. An object store (s3://) has no rename: it is written in place.
        """
        check_target(path)
        attrs = dict(attrs)
        request = codecs.check_request(attrs.pop(CODEC_REQUEST, None))
        if first is not None:
            sample = stored_values(first, {"keep_bits": DEFAULT_KEEP_BITS, **attrs})
            codec = codecs.choose(sample, max(shape.key_capacity, first.n_key), request)  # a plan may undercount keys
        elif request != codecs.AUTO:
            codec = codecs.record(codecs.parse(request), "forced (--codec)", {}, 0, None)
        else:
            codec = codecs.default_record()
        attrs[codecs.CODEC_ATTR] = codec
        _, storage_options = store_like(path, storage_options, mode="w-")
        with write_errors(path):
            if is_url(path):
                cls._build(_writable(path, storage_options), path, shape, attrs)
                return cls.open(path, storage_options=storage_options)
            final = Path(path)
            if final.exists() and any(final.iterdir()):
                raise StoreError(f"'{path}' already exists and is not an empty folder")
            building = final.with_name(f".{final.name}{CREATING}{os.getpid()}")
            shutil.rmtree(building, ignore_errors=True)
            try:
                cls._build(JournalStore(LocalStore(building)), path, shape, attrs)
                building.rename(final)  # atomic: readers see no store, then the whole empty store
            except BaseException:
                shutil.rmtree(building, ignore_errors=True)
                raise
        return cls.open(path)

    @classmethod
    def _build(cls, target: JournalStore, path: str, shape: StoreShape, attrs: dict) -> None:
        """Every array of a new store, and its attributes (the attention codec's record among them), into
        `target`."""
        try:
            group = zarr.open_group(store=target, mode="w-", zarr_format=3)
        except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError) as err:
            raise StoreError(f"'{path}' already exists and is not an empty folder") from err
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        group.attrs.update(
            {
                "format": FORMAT_NAME,
                "schema_version": SCHEMA_VERSION,
                "attnstore_version": __version__,
                "created": now,
                "dtype": "float16",
                "keep_bits": DEFAULT_KEEP_BITS,
                "random_weights": False,
                **attrs,
            }
        )
        store = cls(group, path)
        store._create_arrays(shape, codecs.parse(attrs[codecs.CODEC_ATTR]["name"]))
        store.consolidate()

    @classmethod
    def open(cls, path: str, mode: str = "r+", storage_options: dict | None = None) -> AttnStore:
        """Open an existing store for appending; checks it is an attnstore store of this schema."""
        check_target(path)
        target, storage_options = store_like(path, storage_options, mode)
        if mode != "r":  # writes go through the journal (undo on a write error, fault injection in tests)
            if not is_url(path) and not Path(path).is_dir():
                raise StoreError(f"no attnstore store at '{path}'")
            target, storage_options = _writable(path, storage_options), None
        try:
            # Writers read live array metadata: the consolidated copy goes stale as arrays grow.
            group = zarr.open_group(
                store=target, mode=mode, zarr_format=3, storage_options=storage_options, use_consolidated=False
            )
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError) as err:
            raise StoreError(f"no attnstore store at '{path}'") from err
        check_attrs(dict(group.attrs), path)
        return cls(group, path)

    @contextmanager
    def journal(self) -> Iterator[None]:
        """Writes inside are all or nothing: should one fail (disk full, read-only store ...), every object
        changed inside gets its old bytes back, so the store is byte-identical to before."""
        target = self.group.store
        if not isinstance(target, JournalStore):
            yield
            return
        try:
            with target.journal():
                yield
        except Exception:
            self._n_images = None  # the image axis may have been put back
            raise

    @classmethod
    def open_or_create(cls, path: str, shape: StoreShape, attrs: dict, storage_options=None) -> AttnStore:
        if exists(path, storage_options):
            store = cls.open(path, storage_options=storage_options)
            store.check_compatible(shape, attrs)
            store.ensure_capacity(shape.query_capacity, shape.key_capacity)
            return store
        return cls.create(path, shape, attrs, storage_options)

    def _create_arrays(self, shape: StoreShape, codec: codecs.Pipeline) -> None:
        g, L, H, Q, K = self.group, shape.n_layers, shape.n_heads, shape.query_capacity, shape.key_capacity

        def array(name, dims, dtype, fill, chunks, shards=None, compressors=None, filters=()):
            arr = g.create_array(
                name,
                shape=(0, *(shards or chunks)[1:]) if dims[0] == IMAGE else chunks,
                chunks=chunks,
                shards=shards,
                dtype=dtype,
                fill_value=fill,
                dimension_names=dims,
                compressors=compressors or _compressors(dtype),
                filters=filters,
                attributes=VARIABLE_ATTRS.get(name, {}),
            )
            return arr

        # One clicked token = one inner chunk (one row read per click); one shard per image (one object per image).
        compress = (codec.zarr_compressor(), Crc32cCodec()) if CHUNK_CHECKSUM else (codec.zarr_compressor(),)
        with warnings.catch_warnings():  # integer codes: "not in the zarr v3 spec" (see store/codecs.py)
            warnings.simplefilter("ignore")
            array("attention", ATTENTION_DIMS, "float16", 0.0, (1, L, H, 1, K), shards=(1, L, H, Q, K),
                  compressors=compress, filters=codec.zarr_filters())  # fmt: skip
        array("query_position", (IMAGE, QUERY), "int32", -1, (1, Q))  # chunks = capacity: one chunk per image
        for name, (dtype, fill) in PER_KEY.items():
            array(name, (IMAGE, KEY), dtype, fill, (1, K))
        for name in PER_KEY_STRINGS:
            array(name, (IMAGE, KEY), str, "", (1, K))
        array("patch_box", (IMAGE, KEY, BOX_DIM), "float32", np.nan, (1, K, 4))
        per_image = lambda name: (SINGLE_WRITER_CHUNK if name in SINGLE_WRITER_VARIABLES else 1,)  # noqa: E731
        for name, (dtype, fill) in PER_IMAGE_SCALARS.items():
            array(name, (IMAGE,), dtype, fill, per_image(name))
        for name in PER_IMAGE_STRINGS:
            array(name, (IMAGE,), str, "", per_image(name))
        side = MAX_DISPLAY_SIDE
        array("pixels", (IMAGE, PIXEL_Y, PIXEL_X, RGB), "uint8", 0, (1, side, side, 3))
        # Small coordinate arrays so xarray users get labelled axes.
        for name, values in (("layer", np.arange(L)), ("head", np.arange(H)), (BOX_DIM, np.arange(4))):
            coord = g.create_array(
                name,
                shape=values.shape,
                dtype="int32",
                dimension_names=(name,),
                fill_value=0,
                compressors=_compressors("int32"),
            )
            coord[:] = values
        g[BOX_DIM].attrs["corners"] = list(BOX_CORNERS)

    def consolidate(self) -> None:
        # Consolidated metadata is how `xarray.open_zarr(path)` opens without a warning; zarr
        # warns that it is not in the v3 spec yet (it is ignorable: must_understand=false).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(self.group.store, path=self.group.path or "")

    # -- shape management -----------------------------------------------------------------
    def _per_image_arrays(self) -> dict[str, zarr.Array]:
        return {name: arr for name, arr in self.group.arrays() if (arr.metadata.dimension_names or ("",))[0] == IMAGE}

    @property
    def n_images(self) -> int:
        """Image slots every per-image array has (a run killed while growing the store may leave
        some arrays longer: `repair`)."""
        if self._n_images is None:  # every array's metadata: one read each, so once per writer
            self._n_images = min(int(arr.shape[0]) for arr in self._per_image_arrays().values())
        return self._n_images

    def repair(self) -> bool:
        """Make the arrays agree again after a run killed while it grew them; True if anything changed.

        The image axis goes back to the slots every array has: a slot is named, and written, only once
        every array has it, so what is cut was never written. The query and key axes grow to the largest
        (growing keeps data). Readers never saw the disagreement: they go by the consolidated metadata."""
        self._n_images = None
        arrays = self._per_image_arrays()
        n_images = self.n_images
        sizes = [(d, int(s)) for arr in arrays.values() for d, s in zip(arr.metadata.dimension_names, arr.shape)]
        capacity = {dim: max(s for d, s in sizes if d == dim) for dim in (QUERY, KEY)}
        changed = False
        for arr in arrays.values():
            dims = arr.metadata.dimension_names
            new = tuple(n_images if d == IMAGE else capacity.get(d, s) for d, s in zip(dims, arr.shape))
            if new != arr.shape:
                arr.resize(new)
                changed = True
        if changed:
            self.consolidate()
        return changed

    @property
    def query_capacity(self) -> int:
        return int(self.group["attention"].shape[3])

    @property
    def key_capacity(self) -> int:
        return int(self.group["attention"].shape[4])

    def check_compatible(self, shape: StoreShape, attrs: dict) -> None:
        att = self.group["attention"]
        if (att.shape[1], att.shape[2]) != (shape.n_layers, shape.n_heads):
            raise StoreError(
                f"store '{self.path}' has {att.shape[1]} layers x {att.shape[2]} heads; "
                f"the model has {shape.n_layers} x {shape.n_heads}: write to another store",
                param="out",
            )
        request = codecs.check_request(attrs.get(CODEC_REQUEST))
        codec = codecs.store_pipeline(dict(self.group.attrs)).name
        if request != codecs.AUTO and codec != request:
            raise StoreError(
                f"store '{self.path}' stores attention with codec {codec}, "
                f"this run asks for {request}: write to another store",
                param="out",
            )
        for key in ("model_id", "keep_bits", ROUND_ATTR, MAP_ERROR_ATTR):
            if key in attrs and self.group.attrs.get(key) != attrs[key]:
                raise StoreError(
                    f"store '{self.path}' was made with {key}={self.group.attrs.get(key)!r}, "
                    f"this run uses {attrs[key]!r}: write to another store",
                    param="out",
                )

    def _resize_axis(self, dim: str, size: int) -> None:
        """Grow `dim` to `size` on every per-image array (never shrinks: data is kept)."""
        for arr in self._per_image_arrays().values():
            dims = arr.metadata.dimension_names
            if dim in dims:
                new = tuple(max(size, s) if d == dim else s for d, s in zip(dims, arr.shape))
                if new != arr.shape:
                    arr.resize(new)

    def ensure_capacity(self, n_query: int, n_key: int) -> None:
        """Grow the query/key axes if a new image needs more (existing data is kept)."""
        changed = False
        if n_query > self.query_capacity:
            self._resize_axis(QUERY, n_query)
            changed = True
        if n_key > self.key_capacity:
            self._resize_axis(KEY, n_key)
            changed = True
        if changed:
            self.consolidate()

    def allocate(self, names: list[str], sources: list[str]) -> list[int]:
        """Reserve image slots (one per name); returns their indices. Names are written at once
        so a rerun after a crash finds and reuses the slot."""
        start = self.n_images
        self._resize_axis(IMAGE, start + len(names))
        self._n_images = start + len(names)
        self.consolidate()
        indices = list(range(start, start + len(names)))
        if names:  # one slice write per array: zarr writes the per-image chunks concurrently
            self.group["image_name"][start : start + len(names)] = np.asarray(names, dtype=object)
            self.group["image_source"][start : start + len(names)] = np.asarray(sources, dtype=object)
        return indices

    def assign_slot(self, index: int, name: str, source: str) -> None:
        """Name an existing incomplete slot (one left unnamed by a run killed while allocating)."""
        self.group["image_name"][index] = name
        self.group["image_source"][index] = source

    # -- extra per-image variables (schema.EXTRA_ATTR) ------------------------------------------
    def extra_kinds(self) -> dict[str, str]:
        return dict(self.group.attrs.get(EXTRA_ATTR, {}))

    def ensure_extras(self, spec: dict[str, tuple[str, str]]) -> None:
        """Add the extra (image,) variables of `spec` (name -> (kind, description)) that are missing."""
        known = self.extra_kinds()
        for name, (kind, description) in spec.items():
            if known.get(name, kind) != kind:
                raise StoreError(f"store '{self.path}' has extra variable '{name}' of kind {known[name]}, not {kind}")
            if name in known:
                continue
            if kind not in EXTRA_KINDS or (name in self.group and not self._half_added(name, kind, description)):
                raise StoreError(f"cannot add extra variable '{name}' ({kind}): name taken or kind unknown")
            dtype, fill = EXTRA_KINDS[kind]
            self.group.create_array(
                name,
                overwrite=True,  # an array a killed run created but never recorded (`_half_added`)
                shape=(self.n_images,),
                chunks=(1,),  # one chunk per image, like every per-image variable: writers never share one
                dtype=dtype,
                fill_value=fill,
                dimension_names=(IMAGE,),
                compressors=_compressors(dtype),
                attributes={"long_name": description},
            )
            known[name] = kind
        if known != self.extra_kinds():
            self.group.attrs[EXTRA_ATTR] = known
            self.consolidate()

    def _half_added(self, name: str, kind: str, description: str) -> bool:
        """`name` is the extra variable (`kind`, `description`) a run killed before recording it left behind."""
        arr = self.group.get(name)
        if name in SCHEMA_VARIABLES or not isinstance(arr, zarr.Array) or arr.metadata.dimension_names != (IMAGE,):
            return False
        if arr.attrs.get("long_name") != description:
            return False
        dtype, _ = EXTRA_KINDS[kind]
        return arr.dtype.kind in "OTU" if dtype is str else arr.dtype == np.dtype(dtype)

    # -- per-image state ----------------------------------------------------------------------
    def image_names(self) -> list[str]:
        n = self.n_images
        return [str(v) for v in self.group["image_name"][:n]] if n else []

    def complete_flags(self) -> np.ndarray:
        n = self.n_images
        return np.asarray(self.group["complete"][:n], dtype=bool) if n else np.array([], dtype=bool)

    # -- writing one image -----------------------------------------------------------------
    # -- optional object boxes (schema.OBJECT_BOX / OBJECT_LABEL) --------------------------------
    def object_capacity(self) -> int:
        return int(self.group[OBJECT_BOX].shape[1]) if OBJECT_BOX in self.group else 0

    def ensure_objects(self, n_objects: int) -> None:
        """Create the object variables, or grow their object axis, to hold `n_objects` per image."""
        if n_objects <= self.object_capacity():
            return
        if OBJECT_BOX in self.group:
            self.group[OBJECT_BOX].resize((self.n_images, n_objects, 4))
            self.group[OBJECT_LABEL].resize((self.n_images, n_objects))
        else:
            for name, dims, dtype, fill, tail in (
                (OBJECT_BOX, (IMAGE, OBJECT, BOX_DIM), "float32", np.nan, (n_objects, 4)),
                (OBJECT_LABEL, (IMAGE, OBJECT), str, "", (n_objects,)),
            ):
                self.group.create_array(
                    name,
                    shape=(self.n_images, *tail),
                    chunks=(1, *tail),
                    dtype=dtype,
                    fill_value=fill,
                    dimension_names=dims,
                    compressors="auto",
                    attributes=VARIABLE_ATTRS[name],
                )
        self.consolidate()

    def _write_objects(self, index: int, objects: list[tuple[str, tuple]] | None, resize: bool) -> None:
        """Labels and normalised boxes of image `index` (slots past its objects: "" and NaN)."""
        objects = objects or []
        if len(objects) > self.object_capacity():
            if not resize:
                raise StoreError(f"image has {len(objects)} objects, the store holds {self.object_capacity()}")
            self.ensure_objects(len(objects))
        if not self.object_capacity():
            return
        n = self.object_capacity()
        boxes = np.full((n, 4), np.nan, np.float32)
        labels = np.full(n, "", dtype=object)
        for i, (label, box) in enumerate(objects):
            boxes[i], labels[i] = box, label
        self.group[OBJECT_BOX][index] = boxes
        self.group[OBJECT_LABEL][index] = labels

    def write_image(
        self,
        index: int,
        result: Extraction,
        image: Image.Image,
        keep_bits: int | None = None,
        extra: dict | None = None,
        resize: bool = True,
        mark_complete: bool = True,
        objects: list[tuple[str, tuple]] | None = None,
    ) -> None:
        """Write every array of image `index` (and its `extra` variables), then mark it complete (last).

        With `resize=False` (concurrent writers) an image that does not fit raises CapacityError
        before anything is written, instead of resizing arrays other writers are using. With
        `mark_complete=False` the `complete` flag is not touched: a distributed worker leaves it to
        the coordinator (`mark_complete`), so only one process ever writes `complete`. `objects`
        are (label, normalised x0, y0, x1, y1) pairs stored in the optional object variables.
        """
        g = self.group
        unknown = set(extra or {}) - set(self.extra_kinds())
        if unknown:
            raise StoreError(f"unknown extra variable(s) {sorted(unknown)}: add them with ensure_extras first")
        if resize:
            self.ensure_capacity(result.n_query, result.n_key)
        elif result.n_query > self.query_capacity or result.n_key > self.key_capacity:
            raise CapacityError(
                f"needs {result.n_query} x {result.n_key} query x key rows, the store has "
                f"{self.query_capacity} x {self.key_capacity}",
                (result.n_query, result.n_key),
            )
        if mark_complete:
            g["complete"][index] = 0
        Q, K = self.query_capacity, self.key_capacity
        settings = dict(g.attrs) if keep_bits is None else {**g.attrs, "keep_bits": keep_bits}
        stored = stored_values(result, settings)
        self._check_codec(stored)
        # Whole shard in one write: zero padding chunks are not stored (write_empty_chunks=False).
        full = np.zeros((result.attention.shape[0], result.attention.shape[1], Q, K), np.float16)
        full[:, :, : result.n_query, : result.n_key] = stored
        g["attention"][index] = full
        g["query_position"][index] = _padded(result.query_position, Q, -1)
        lay = result.layout
        per_key = {
            "token_id": result.token_id,
            "token_kind": lay.kind,
            "patch_tile": lay.patch_tile,
            "patch_row": lay.patch_row,
            "patch_col": lay.patch_col,
        }
        for name, values in per_key.items():
            g[name][index] = _padded(values.astype(g[name].dtype), K, PER_KEY[name][1])
        g["token_text"][index] = _padded(np.asarray(result.token_text, dtype=object), K, "")
        g["patch_box"][index] = _padded(lay.patch_box, K, np.nan)
        pixels = display_pixels(image)
        canvas = np.zeros(g["pixels"].shape[1:], np.uint8)
        canvas[: pixels.shape[0], : pixels.shape[1]] = pixels
        g["pixels"][index] = canvas
        scalars = {
            "n_query": result.n_query,
            "n_key": result.n_key,
            "tile_rows": lay.tile_rows,
            "tile_cols": lay.tile_cols,
            "grid_rows": lay.grid_rows,
            "grid_cols": lay.grid_cols,
            "global_rows": lay.global_rows,
            "global_cols": lay.global_cols,
            "image_height": pixels.shape[0],
            "image_width": pixels.shape[1],
            "original_height": image.height,
            "original_width": image.width,
        }
        for name, value in scalars.items():
            g[name][index] = value
        g["prompt"][index] = result.prompt
        g["answer"][index] = result.answer
        for name, value in (extra or {}).items():
            g[name][index] = value
        self._write_objects(index, objects, resize)
        if mark_complete:
            self.mark_complete(index)

    def _check_codec(self, stored: np.ndarray) -> None:
        """Integer codes are lossless only on their grid: an image off it is refused before any write."""
        decimals = codecs.store_pipeline(dict(self.group.attrs)).decimals
        if decimals is not None and not codecs.on_grid(stored, decimals):
            raise StoreError(
                f"store '{self.path}' stores attention as integer codes on a 10^-{decimals} grid and this image's "
                f"values are not on it: extract with --round {decimals}, or write to another store"
            )

    def mark_complete(self, index: int) -> None:
        """Flag image `index` complete: only once every one of its arrays is written."""
        self.group["complete"][index] = 1  # last: the image is now visible as complete


def stored_values(result: Extraction, settings: dict) -> np.ndarray:
    """The attention as a store with these attrs keeps it: keep_bits, then rounding to decimals, then
    map-faithful quantisation  # [layer, head, query, key] float16."""
    values = round_mantissa(result.attention, int(settings.get("keep_bits", DEFAULT_KEEP_BITS)))
    if settings.get(ROUND_ATTR) is not None:
        values = codecs.round_to_grid(values, int(settings[ROUND_ATTR]))
    if settings.get(MAP_ERROR_ATTR) is not None:
        values = map_quantise(values, kind_mask(result.layout.kind, IMAGE_PATCH_KINDS), float(settings[MAP_ERROR_ATTR]))
    return values


def _writable(path: str, storage_options: dict | None) -> JournalStore:
    """A writable zarr store for `path` (local folder or fsspec URL), every write through the journal."""
    if is_url(path):
        return JournalStore(FsspecStore.from_url(path, storage_options=storage_options, read_only=False))
    return JournalStore(LocalStore(path))


def remove_leftovers(path: str) -> None:
    """Clear what killed writers of a local store left: a half-created store beside it, and zarr's
    partial objects inside it. Only the writer holding the store's lock may call this."""
    if is_url(path):
        return
    store = Path(path)
    for building in store.parent.glob(f".{glob.escape(store.name)}{CREATING}*"):
        shutil.rmtree(building, ignore_errors=True)
    if store.is_dir():
        for partial in store.rglob("*.partial"):
            if ZARR_PARTIAL.search(partial.name) and partial.is_file():
                partial.unlink(missing_ok=True)


def _padded(values: np.ndarray, size: int, fill) -> np.ndarray:
    out = np.full((size, *values.shape[1:]), fill, dtype=values.dtype)
    out[: values.shape[0]] = values
    return out
