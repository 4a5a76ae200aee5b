"""The attention array's codec, chosen per store by measurement (issue 23).

When a store is created with its first image at hand, a few rows of that image are encoded with each
candidate pipeline below, one stored chunk (`[layer, head, key]` fp16, one query row) at a time, as the
sharding codec stores them; the smallest candidate whose decoding keeps the read goals (one row
<= 1 ms, a whole image >= 0.8 GB/s on 2 cores) is kept. Every candidate's size and decode speed is
recorded in the group attrs (`CODEC_ATTR`), and `attnstore info` prints them.

Candidates:
  blosc-zstdL-SHUFFLE   blosc (zstd level L; bitshuffle, shuffle = byte shuffle, or noshuffle): core
                        zarr v3 codecs, read by every zarr v3 reader (tensorstore, zarrs, zarrita...).
  zstdL                 plain zstd (core zarr v3).
  codesD-blosc-...      integer codes: value x 10^D as uint16 (`numcodecs.fixedscaleoffset`, scale
                        10^D, offset 0), then blosc. Only where every value lies on the 10^-D grid
                        (rounded attention: `--round`, or seed files), and only lossless there: the
                        writer checks each image round-trips bit for bit. Real rounded attention is
                        ~94 % exact zeros: as fp16 bit patterns the zeros are coded twice (both bytes)
                        and shuffling splits each value's information across two streams; as codes
                        < 1000 the high byte is all zero and the store lands below the order-0 entropy
                        of the values (benchmarks/bench_codecs.py).

Why `numcodecs.fixedscaleoffset` and not a core codec: the zarr v3 core spec has no scale-offset or
integer-code codec (bytes, transpose, blosc, gzip, zstd, crc32c, sharding only; the zarr-extensions
`scale_offset` / `cast_value` proposals are implemented by no released reader here). The
`numcodecs.fixedscaleoffset` name is registered in zarr-extensions and read by zarr-python >= 3.1
(built in: `zarr.codecs.numcodecs`, so `xarray.open_zarr` reads these stores without attnstore), zarrs
(Rust) and zarrita.js; tensorstore's zarr3 driver does not read it, but attnstore's tensorstore backend
only fetches bytes through tensorstore and decodes them here (`chunk_decoder`), so both read backends
read every candidate. A store that must open in tensorstore's own driver: `--codec` a core one.
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass

import numcodecs
import numpy as np
from zarr.codecs import BloscCodec, ZstdCodec

from attnstore.errors import InvalidArgument

# zarr-python warns on every parse of a numcodecs.* codec (each open, each metadata read): attnstore writes
# the one it does knowingly (module doc), so the warning is silenced for it, not for other codecs.
warnings.filterwarnings("ignore", "Numcodecs codecs are not in the Zarr version 3", UserWarning)
CODEC_ATTR = "attention_codec"  # group attr: {"name", "chosen_by", "candidates": {name: figures}, ...}
DEFAULT_CODEC = "blosc-zstd1-bitshuffle"  # stores created without a first image (and every store before issue 23)
AUTO = "auto"
SAMPLE_ROWS = 24  # rows of the first image encoded per candidate (spread over the image)
# Read goals: one row <= 1 ms, a whole image >= 0.8 GB/s on 2 cores. A candidate must decode on ONE
# thread at least this fast (the other core does the I/O and numpy), or no slower than the default
# (so the default always qualifies: a choice is never slower to read than the store was before).
DECODE_GOAL_GBPS = 0.8
ROW_DECODE_GOAL_MS = 0.5  # half the 1 ms a click may take: the rest is I/O and indexing
# A whole image decoding within this is fast whatever its GB/s (tiny images: per-call overhead sets the speed).
SMALL_IMAGE_MS = 5.0
MAX_DECIMALS = 3  # uint16 codes of values <= 1 on a 10^-d grid; 4 decimals are not distinct in fp16
_NAME = re.compile(r"^(?:codes(?P<dec>\d)-)?(?:blosc-zstd(?P<blevel>\d+)-(?P<shuffle>bitshuffle|shuffle|noshuffle)"
                   r"|zstd(?P<zlevel>\d+))$")  # fmt: skip


@dataclass(frozen=True)
class Pipeline:
    """One candidate: integer codes (optional) then a compressor."""

    compressor: str  # "blosc" or "zstd"
    level: int
    shuffle: str = ""  # blosc only
    decimals: int | None = None  # integer codes of value x 10^decimals (uint16)

    @property
    def name(self) -> str:
        base = f"blosc-zstd{self.level}-{self.shuffle}" if self.compressor == "blosc" else f"zstd{self.level}"
        return base if self.decimals is None else f"codes{self.decimals}-{base}"

    @property
    def portable(self) -> bool:
        """Core zarr v3 codecs only (every zarr v3 reader)."""
        return self.decimals is None

    # -- zarr (writing, and every zarr-python read) ----------------------------------------------
    def zarr_filters(self) -> tuple:
        if self.decimals is None:
            return ()
        from zarr.codecs.numcodecs import FixedScaleOffset

        with warnings.catch_warnings():  # "numcodecs codecs are not in the zarr v3 spec": see the module doc
            warnings.simplefilter("ignore")
            return (FixedScaleOffset(offset=0, scale=10**self.decimals, dtype="<f2", astype="<u2"),)

    def zarr_compressor(self):
        if self.compressor == "zstd":
            return ZstdCodec(level=self.level)
        return BloscCodec(cname="zstd", clevel=self.level, shuffle=self.shuffle, typesize=2)

    # -- numcodecs (measuring, and the tensorstore backend's decoding) ----------------------------
    def numcodec(self):
        if self.compressor == "zstd":
            return numcodecs.Zstd(level=self.level)
        shuffle = {"bitshuffle": numcodecs.Blosc.BITSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE}.get(
            self.shuffle, numcodecs.Blosc.NOSHUFFLE
        )
        return numcodecs.Blosc(cname="zstd", clevel=self.level, shuffle=shuffle)

    def codes_codec(self):
        return numcodecs.FixedScaleOffset(offset=0, scale=10**self.decimals, dtype="<f2", astype="<u2")

    def encode(self, chunk: np.ndarray) -> bytes:
        """One chunk as the store writes it (without the 4-byte crc32c)  # chunk [layer, head, key] fp16."""
        data = self.codes_codec().encode(chunk) if self.decimals is not None else chunk
        return bytes(self.numcodec().encode(np.ascontiguousarray(data)))


def parse(name: str) -> Pipeline:
    """The pipeline called `name` (see the module doc), or InvalidArgument."""
    m = _NAME.match(name.strip().lower())
    if not m:
        raise InvalidArgument(
            "codec", f"'{name}' is not a codec: use auto, blosc-zstdL-(bitshuffle|shuffle|noshuffle), zstdL "
            f"or codesD-<one of those> (D = decimals, 1-{MAX_DECIMALS})"
        )  # fmt: skip
    decimals = int(m["dec"]) if m["dec"] is not None else None
    if decimals is not None and not 1 <= decimals <= MAX_DECIMALS:
        raise InvalidArgument("codec", f"integer codes take 1-{MAX_DECIMALS} decimals, not {decimals}")
    if m["zlevel"] is not None:
        level = int(m["zlevel"])
        if not 1 <= level <= 22:
            raise InvalidArgument("codec", f"zstd levels are 1-22, not {level}")
        return Pipeline("zstd", level, decimals=decimals)
    level = int(m["blevel"])
    if not 1 <= level <= 9:
        raise InvalidArgument("codec", f"blosc levels are 1-9, not {level}")
    return Pipeline("blosc", level, m["shuffle"], decimals)


def check_request(name: str | None) -> str:
    """A --codec value: "auto" or a pipeline name (normalised); InvalidArgument otherwise."""
    if name is None or name.strip().lower() == AUTO:
        return AUTO
    return parse(name).name


def candidates(decimals: int | None) -> list[Pipeline]:
    """What is measured: core codecs always; integer codes too when the values lie on a 10^-d grid.
    (Levels above 5 are left out: blosc zstd-7/9 encode at 2-70 MB/s, slower than extraction.)"""
    core = [Pipeline("blosc", level, shuffle) for level in (1, 5) for shuffle in ("bitshuffle", "shuffle", "noshuffle")]
    core.append(Pipeline("zstd", 3))
    if decimals is None:
        return core
    return core + [Pipeline("blosc", level, "shuffle", decimals) for level in (1, 5)]


# -- the grid ----------------------------------------------------------------------------------------


def distinct_values(values: np.ndarray) -> np.ndarray:
    """Every distinct fp16 bit pattern of `values`, once  # [n] float16 (n <= 65536)."""
    bits = np.ascontiguousarray(values, dtype=np.float16).reshape(-1).view(np.uint16)
    return np.flatnonzero(np.bincount(bits, minlength=2**16)).astype(np.uint16).view(np.float16)


def on_grid(values: np.ndarray, decimals: int) -> bool:
    """Every value round-trips bit for bit through integer codes x 10^decimals (non-negative, <= 6.5)."""
    return _distinct_on_grid(distinct_values(values), decimals)


def _distinct_on_grid(distinct: np.ndarray, decimals: int) -> bool:
    # The codec works value by value: checking each distinct bit pattern once is exact, and far cheaper
    # than numcodecs' fp16 arithmetic over a whole image (~80 M values).
    if not distinct.size:
        return True
    wide = distinct.astype(np.float64)
    if not np.isfinite(wide).all() or wide.min() < 0 or wide.max() * 10**decimals > np.iinfo(np.uint16).max:
        return False
    codec = Pipeline("zstd", 1, decimals=decimals).codes_codec()
    back = np.asarray(codec.decode(codec.encode(distinct)), np.float16).reshape(-1)
    return bool(np.array_equal(back.view(np.uint16), distinct.view(np.uint16)))


def grid_decimals(values: np.ndarray) -> int | None:
    """The fewest decimals (1-3) whose 10^-d grid holds every value, or None (not rounded)."""
    distinct = distinct_values(values)
    for decimals in range(1, MAX_DECIMALS + 1):
        if _distinct_on_grid(distinct, decimals):
            return decimals
    return None


def round_to_grid(values: np.ndarray, decimals: int) -> np.ndarray:
    """Absolute rounding to `decimals` decimals, as seed 004 stores attention (numpy.round of the value,
    then fp16): the stored values are exactly the integer codes' decoded values  # same shape, float16."""
    if not 1 <= decimals <= MAX_DECIMALS:
        raise InvalidArgument("round", f"must be 1-{MAX_DECIMALS} decimals (fp16 holds no finer grid), not {decimals}")
    scale = 10**decimals
    table = (np.arange(scale + 1) / scale).astype(np.float16)  # code -> value, as the codec decodes
    out = np.empty(values.shape, np.float16)
    for i in np.ndindex(values.shape[:1]):  # one layer at a time: the float64 copy stays small
        codes = np.rint(np.clip(values[i].astype(np.float64), 0.0, 1.0) * scale).astype(np.int64)
        out[i] = table[codes]
    return out


# -- measuring ---------------------------------------------------------------------------------------


def sample_rows(attention: np.ndarray, key_capacity: int, n_rows: int = SAMPLE_ROWS) -> list[np.ndarray]:
    """Up to `n_rows` stored chunks spread over the image, zero-padded to the store's key capacity.

    attention # [layer, head, query, key] float16 -> chunks, each [layer, head, key_capacity]."""
    n_query = attention.shape[2]
    rows = np.unique(np.linspace(0, n_query - 1, min(n_rows, n_query)).round().astype(int)) if n_query else []
    chunks = []
    for q in rows:
        chunk = np.zeros((*attention.shape[:2], key_capacity), np.float16)
        chunk[..., : attention.shape[3]] = attention[:, :, q]
        chunks.append(chunk)
    return chunks


def measure(pipeline: Pipeline, chunks: list[np.ndarray], n_query: int) -> dict:
    """Size of a whole image (per row, scaled to `n_query` rows, crc32c included) and one-thread decode
    speed (CPU time of this thread: other jobs on the machine barely move it)."""
    blobs = [pipeline.encode(c) for c in chunks]
    decoder = chunk_decoder_for(pipeline)
    out = np.empty_like(chunks[0])
    times = []
    for blob in blobs * 3:  # three passes: the first warms the caches
        start = time.thread_time()
        decoder(blob, out)
        times.append(time.thread_time() - start)
    times = np.asarray(times[len(blobs) :])
    row_bytes = np.mean([len(b) + 4 for b in blobs])
    seconds = max(float(times.mean()), 1e-7)
    return {
        "bytes": int(round(row_bytes * n_query)),
        "decode_gbps": round(chunks[0].nbytes / seconds / 1e9, 3),
        "row_ms": round(float(np.median(times)) * 1e3, 4),
    }


def choose(attention: np.ndarray, key_capacity: int, request: str = AUTO) -> dict:
    """The codec record of a new store (`CODEC_ATTR`): `request` if forced, else the smallest candidate
    that keeps the read goals on these rows  # attention [layer, head, query, key] float16 (as stored)."""
    decimals = grid_decimals(attention)
    chunks = sample_rows(attention, key_capacity)
    if request != AUTO:
        pipeline = parse(request)
        if pipeline.decimals is not None and not on_grid(attention, pipeline.decimals):
            raise InvalidArgument(
                "codec", f"{pipeline.name} stores values on a 10^-{pipeline.decimals} grid only, and this attention "
                "is not on it: add --round or choose another codec"
            )  # fmt: skip
        figures = {pipeline.name: measure(pipeline, chunks, attention.shape[2])} if chunks else {}
        return record(pipeline, "forced (--codec)", figures, len(chunks), decimals)
    if not chunks:
        return default_record()
    with _one_blosc_thread():
        figures = {p.name: measure(p, chunks, attention.shape[2]) for p in candidates(decimals)}
    base = figures[DEFAULT_CODEC]
    speed_floor = min(DECODE_GOAL_GBPS, 0.9 * base["decode_gbps"])
    row_ceiling = max(ROW_DECODE_GOAL_MS, 1.1 * base["row_ms"])
    n_query = attention.shape[2]
    fast = lambda f: f["decode_gbps"] >= speed_floor or n_query * f["row_ms"] <= SMALL_IMAGE_MS  # noqa: E731
    fine = [n for n, f in figures.items() if fast(f) and f["row_ms"] <= row_ceiling]
    best = min(fine or [DEFAULT_CODEC], key=lambda n: (figures[n]["bytes"], n))
    return record(parse(best), "measured on the first image", figures, len(chunks), decimals)


def record(pipeline: Pipeline, chosen_by: str, figures: dict, n_rows: int, decimals: int | None) -> dict:
    return {
        "name": pipeline.name,
        "chosen_by": chosen_by,
        "portable": pipeline.portable,
        "sample_rows": n_rows,
        "grid_decimals": decimals,
        "candidates": figures,
        "goals": f"decode >= {DECODE_GOAL_GBPS} GB/s on one thread (or >= 0.9x {DEFAULT_CODEC}), "
        f"one row <= {ROW_DECODE_GOAL_MS} ms",
    }


def default_record() -> dict:
    return record(parse(DEFAULT_CODEC), "default (no first image to measure)", {}, 0, None)


def store_pipeline(attrs: dict) -> Pipeline:
    """The pipeline a store's attention uses (stores before issue 23: the default)."""
    return parse((attrs.get(CODEC_ATTR) or {}).get("name", DEFAULT_CODEC))


class _one_blosc_thread:
    """Measure one thread's work: blosc would otherwise decode with its own thread pool."""

    def __enter__(self):
        self.saved = numcodecs.blosc.use_threads
        numcodecs.blosc.use_threads = False

    def __exit__(self, *exc):
        numcodecs.blosc.use_threads = self.saved


# -- decoding (the tensorstore backend) ----------------------------------------------------------------


@dataclass(frozen=True)
class _Decoder:
    pipeline: Pipeline

    def __call__(self, data: bytes, out: np.ndarray) -> None:
        """Decode one chunk's bytes (crc32c removed) straight into `out`  # [layer, head, key] float16."""
        p = self.pipeline
        target = out if p.decimals is None else np.empty(out.shape, np.uint16)
        if p.compressor == "blosc":
            numcodecs.blosc.decompress(data, target)
        else:
            target.reshape(-1).view(np.uint8)[:] = np.frombuffer(numcodecs.Zstd().decode(data), np.uint8)
        if p.decimals is not None:
            np.take(_code_table(p.decimals), target, out=out)  # code -> value, as the codec decodes


def chunk_decoder_for(pipeline: Pipeline) -> _Decoder:
    return _Decoder(pipeline)


def chunk_decoder(codecs: list[dict]) -> tuple[_Decoder, bool] | None:
    """(decoder, has crc32c) for an inner-chunk codec list of the attention array's metadata, or None
    when it is not one this module writes (the caller falls back to zarr-python)."""
    names = [c.get("name") for c in codecs]
    checksum = names[-1:] == ["crc32c"]
    names = names[:-1] if checksum else names
    cfgs = [c.get("configuration", {}) for c in codecs]
    decimals = None
    if names[:1] == ["numcodecs.fixedscaleoffset"]:
        cfg = cfgs.pop(0)
        names = names[1:]
        scale = cfg.get("scale")
        if cfg.get("offset", 0) != 0 or cfg.get("astype") != "<u2" or scale not in {10**d: d for d in (1, 2, 3)}:
            return None
        decimals = {10**d: d for d in (1, 2, 3)}[scale]
    if len(names) != 2 or names[0] != "bytes" or cfgs[0].get("endian", "little") != "little":
        return None
    cfg = cfgs[1]
    if names[1] == "zstd":
        return _Decoder(Pipeline("zstd", int(cfg.get("level", 0)), decimals=decimals)), checksum
    if names[1] == "blosc" and cfg.get("cname") == "zstd":
        return _Decoder(Pipeline("blosc", int(cfg.get("clevel", 1)), cfg.get("shuffle", ""), decimals)), checksum
    return None


_TABLES: dict[int, np.ndarray] = {}


def _code_table(decimals: int) -> np.ndarray:
    """Every uint16 code's value, computed as numcodecs' FixedScaleOffset decodes (code / scale, fp16)."""
    if decimals not in _TABLES:
        _TABLES[decimals] = (np.arange(2**16, dtype=np.uint16) / 10**decimals).astype(np.float16)
    return _TABLES[decimals]
