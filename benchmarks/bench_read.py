"""Read speed of the attention array per read backend, against the raw codec, side by side.

    .venv/bin/python benchmarks/bench_read.py [--images 200] [--distinct 20] [--clicks 300]

Real-size synthetic store (30 layers x 9 heads, 95 text rows x 957 keys, ~49 MB of fp16 per image).
`--distinct` images are generated; the other slots hard-link their files (the same bytes under other
names: the decode work is the same, the disk and page cache hold 20 images, not 200).

(1) One image, every row (a whole shard), and one row (a click: the first one in an image also
    reads the shard index), p50 / p95, GB/s of fp16 decoded; per backend (`attnstore.store.readers`:
    tensorstore I/O + numcodecs decode, zarr-python), tensorstore's own zarr3 driver (its decoder),
    and the raw codec: numcodecs blosc decode of the same chunk bytes held in memory (1 and 2 threads).
(2) `aggregate_token` over every image on 2 threads, per backend, against reading the same rows with
    the same backend on the same 2 threads (goal >= 60 %), and against the fast whole-image read speed;
    and (tensorstore) its ceilings: the read plus the aggregate's per-head kernel alone, then inside the
    aggregate's scan (the batches' small variables preloaded), without token matching or summaries.
    Which per-head kernel runs (numba's compiled one, or numpy's), loaded before the clock starts; its
    load time in fresh interpreters with an empty numba cache (compiles) and with the cache filled.
Goals on 2 cores: one row <= 1 ms p50, whole image >= 0.8 GB/s, aggregate >= 60 % of the read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask
import numpy as np

import attnstore.analysis as A
from attnstore.extraction.synthetic import make_synthetic_store
from attnstore.store import AttnStore, open_dataset
from attnstore.store.readers.base import ATTENTION
from attnstore.store.readers.choice import open_reader
from attnstore.store.readers.tensorstore_reader import MISSING, ShardLayout

TOKEN = "dog"
BACKENDS = ("tensorstore", "zarr")


# -- the store ---------------------------------------------------------------------------------------
def real_size_store(path: Path, n_images: int, distinct: int, rows: str = "synthetic") -> str:
    """`distinct` generated images, then slots up to `n_images` whose files hard-link theirs.

    rows "seed-style": a trained model's statistics rounded as seed 004 stores them, the codec chosen by
    measurement (integer codes: `attnstore.store.codecs`); "synthetic": the default codec."""
    make_synthetic_store(str(path), n_images=distinct, n_layers=30, n_heads=9, n_answer=80, rows=rows,
                         measure_codec=rows != "synthetic")  # fmt: skip
    store = AttnStore.open(str(path))
    names = [f"copy_{i:05d}.png" for i in range(distinct, n_images)]
    store.allocate(names, names)
    for array in path.iterdir():
        chunks = array / "c"
        meta = json.loads((array / "zarr.json").read_text()) if (array / "zarr.json").is_file() else {}
        per_image = (meta.get("dimension_names") or [""])[0] == "image" and meta["chunk_grid"]["configuration"][
            "chunk_shape"
        ][0] == 1
        if not per_image or not chunks.is_dir():
            continue
        for image in range(distinct, n_images):
            source = chunks / str(image % distinct)
            files = [source] if source.is_file() else [f for f in source.rglob("*") if f.is_file()]
            for file in files:
                target = chunks / str(image) / file.relative_to(source) if file != source else chunks / str(image)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(file, target)
    store.group["complete"][:] = 1
    store.consolidate()
    return str(path)


# -- timing ------------------------------------------------------------------------------------------
def row(label: str, times: np.ndarray, nbytes: float, cpu: float) -> str:
    """p50 / p95 wall time, GB/s at the p50, and the CPU cost: GB per CPU second does not depend on
    how busy the (shared) machine is, wall times do."""
    p50, p95 = np.percentile(times, 50) * 1e3, np.percentile(times, 95) * 1e3
    per_read = cpu / len(times)
    return (
        f"    {label:42s} p50 {p50:8.2f} ms  p95 {p95:8.2f} ms  {nbytes / (p50 / 1e3) / 1e9:5.2f} GB/s"
        f"  CPU {per_read * 1e3:7.2f} ms/read = {nbytes / max(per_read, 1e-9) / 1e9:5.2f} GB/CPU-s"
    )


# -- raw codec ---------------------------------------------------------------------------------------
def shard_chunks(path: str, image: int) -> list[bytes]:
    """The blosc-compressed bytes of each chunk of one image's shard (read once, untimed; without
    the crc32c the writer appends: the raw codec row is the decode alone)."""
    data = (Path(path) / ATTENTION / "c" / str(image) / "0" / "0" / "0" / "0").read_bytes()
    layout = ShardLayout(json.loads((Path(path) / ATTENTION / "zarr.json").read_text()))
    index = np.frombuffer(data[-layout.index_bytes : -4], "<u8").reshape(-1, 2)  # [chunk, (offset, nbytes)]
    tail = 4 if layout.chunk_checksum else 0
    return [data[int(o) : int(o + s) - tail] for o, s in index if o != MISSING]


def raw_decoder(chunks: list[bytes], shape: tuple[int, ...], threads: int, decode):
    """Decode every chunk of one shard into one array  # [row, layer, head, key] float16."""
    out = np.empty((len(chunks), shape[1], shape[2], shape[4]), np.float16)
    pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def decode_one(i: int) -> None:
        decode(chunks[i], out[i])

    def run(_) -> np.ndarray:
        list(pool.map(decode_one, range(len(chunks))) if pool else map(decode_one, range(len(chunks))))
        return out

    return run


# -- (1) reads ---------------------------------------------------------------------------------------
def bench_reads(path: str, n_images: int, clicks: int, repeats: int) -> dict[str, float]:
    decode = ShardLayout(json.loads((Path(path) / ATTENTION / "zarr.json").read_text())).decode  # the store's codec
    shape = open_reader(path).shape
    n_text = int(open_dataset(path)["n_query"].values[0])
    image_bytes = int(np.prod(shape[1:])) * 2
    row_bytes = image_bytes / shape[3]
    rng = np.random.default_rng(0)
    images = [int(i) for i in rng.permutation(n_images)[: max(repeats, 2)]]
    picks = [(int(i), int(r)) for i, r in zip(rng.integers(0, n_images, clicks), rng.integers(0, n_text, clicks))]
    chunks = shard_chunks(path, images[0] % n_images)
    print(
        f"(1) reads: {n_images} images of {image_bytes / 1e6:.1f} MB fp16 ({shape[3]} rows x {row_bytes / 1e3:.0f} kB)"
    )
    print("  whole image (one shard, every row); each image read by every reader in turn (same machine load):")
    whole = {f"{name} backend": open_reader(path, backend=name).read_image_rows for name in BACKENDS}
    driver = ts_driver(path)
    if driver is not None:
        whole["tensorstore zarr3 driver (its own decoder)"] = lambda i, d=driver: d[i].read().result()
    for threads in (1, 2):
        label = f"raw codec, {decode.pipeline.name} decode ({threads} thread{'s' * (threads > 1)})"
        whole[label] = raw_decoder(chunks, shape, threads, decode)
    results = interleaved(whole, images)
    for label, (times, cpu) in results.items():
        print(row(label, times, image_bytes, cpu))
    print(f"  one row (a click; {clicks} random (image, row), the first in each image also reads its index):")
    readers = {f"{name} backend": open_reader(path, backend=name) for name in BACKENDS}  # fresh: no index cached
    click = {label: (lambda p, r=reader: r.read_rows(p[0], [p[1]])) for label, reader in readers.items()}
    if driver is not None:
        click["tensorstore zarr3 driver (its own decoder)"] = lambda p, d=driver: d[p[0], :, :, p[1]].read().result()
    buffer = np.empty((shape[1], shape[2], shape[4]), np.float16)
    click[f"raw codec, {decode.pipeline.name} decode"] = lambda p: decode(chunks[p[1] % len(chunks)], buffer)
    for label, (times, cpu) in interleaved(click, picks).items():
        print(row(label, times, row_bytes, cpu))
    return {label: image_bytes / np.percentile(times, 50) / 1e9 for label, (times, _) in results.items()}


def ts_driver(path: str):
    """Tensorstore's own zarr3 driver on the attention array (decodes with its bundled blosc); None when it
    cannot read the store's codec (integer codes: `numcodecs.fixedscaleoffset`)."""
    import tensorstore as ts

    try:
        return ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{path}/{ATTENTION}"}}).result()
    except ValueError:
        print("  (tensorstore's own zarr3 driver cannot read this store's codec: left out)")
        return None


def interleaved(fns: dict, args: list) -> dict[str, tuple[np.ndarray, float]]:
    """Wall seconds of each call and total process CPU seconds, per function; every argument is run
    by each function in turn, so a burst of load on the shared machine hits them all alike."""
    times = {label: [] for label in fns}
    cpu = dict.fromkeys(fns, 0.0)
    for arg in args:
        for label, fn in fns.items():
            c, t = time.process_time(), time.perf_counter()
            fn(arg)
            times[label].append(time.perf_counter() - t)
            cpu[label] += time.process_time() - c
    return {label: (np.asarray(times[label]), cpu[label]) for label in fns}


# -- (2) aggregate -----------------------------------------------------------------------------------
def read_same_rows(images: dict, rows: dict[int, list[int]], then=None) -> int:
    """Read the rows the aggregate reads, through the same reader, as 2-thread dask tasks; `then(i,
    w16)` after each image's read (`read_and_kernel`). Returns the bytes read.

    `images` are selected before the clock starts: only the attention rows are read while timed.
    """

    def read(i: int) -> int:
        w16 = A.read_rows_fp16(images[i], rows[i])
        if then is not None:
            then(i, w16)
        return w16.nbytes

    tasks = [dask.delayed(read, name="read", pure=False)(i, dask_key_name=f"read-{i}") for i in rows]
    return int(sum(dask.compute(*tasks, scheduler="threads", num_workers=2)))


def read_and_kernel(images: dict, rows: dict[int, list[int]], runs: dict) -> int:
    """`read_same_rows` plus the aggregate's per-head kernel on the rows read, nothing else (no
    token matching, no metadata, no summaries): the most any aggregate built on this kernel reaches."""
    from attnstore.analysis.aggregate import _all_head_stats

    return read_same_rows(images, rows, then=lambda i, w16: _all_head_stats(w16, runs[i], 10, "raw", True))


def scan_read_and_kernel(ds, rows: dict[int, list[int]], runs: dict) -> int:
    """`read_and_kernel` inside the aggregate's scan as the aggregate runs it (`scan_batches`: each
    batch's small variables preloaded, each image's as arrays, its rows read by the store's reader):
    the aggregate without the token matching and the per-occurrence summaries."""
    from attnstore.analysis.aggregate import _SMALL_VARS, _all_head_stats
    from attnstore.analysis.scan import scan_batches
    from attnstore.store.xarray_glue import reader_of

    reader = reader_of(ds)

    def read(arrays: dict, i: int) -> int:
        w16 = reader.read_rows(i, rows[i])[..., : arrays["token_kind"].shape[0]]
        _all_head_stats(w16, runs[i], 10, "raw", True)
        return w16.nbytes

    batches = scan_batches(ds, read, list(rows), 2, 32, "scan-read-kernel", _SMALL_VARS, arrays=True)
    return int(sum(n for batch in batches for n in batch))


def key_runs_of(img) -> tuple:
    """(runs of image keys, runs of the other keys) of one image, as the aggregate computes them."""
    from attnstore.analysis.kernels import key_runs

    mask = A.image_key_mask(img).values
    return key_runs(np.flatnonzero(mask)), key_runs(np.flatnonzero(~mask))


def kernel_load(cache_dir: str) -> float:
    """Seconds to import the compiled kernel (numba imported already) in a fresh interpreter."""
    probe = (
        "import time, numba, attnstore.analysis.aggregate as agg; t = time.perf_counter(); "
        "assert agg.fused_kernel(); print(time.perf_counter() - t)"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    return float(proc.stdout.split()[-1])


def describe_kernel() -> str:
    """Which per-head kernel `aggregate_token` runs; loads it (the timed runs do not pay for it)."""
    from attnstore.analysis.aggregate import fused_kernel

    t = time.perf_counter()
    if fused_kernel() is None:
        return "numpy kernels (numba not installed, or ATTNSTORE_KERNELS=numpy)"
    loaded = time.perf_counter() - t
    with tempfile.TemporaryDirectory(prefix="attnstore-numba-") as cache:
        cold, cached = kernel_load(cache), kernel_load(cache)
    return (
        f"numba's compiled kernel, loaded before timing ({loaded:.2f} s here); in a fresh interpreter"
        f" {cold:.2f} s with an empty numba cache (compiles), {cached:.2f} s cached"
    )


def bench_aggregate(path: str, repeats: int, fast_read: float) -> None:
    print(f"(2) per-head kernel: {describe_kernel()}")
    datasets = {name: open_dataset(path, read_backend=name) for name in BACKENDS}
    ds0 = datasets["tensorstore"]
    rows = {i: A.token_occurrences(A.select_image(ds0, i), TOKEN) for i in range(ds0.sizes["image"])}
    n_occ = sum(map(len, rows.values()))
    best: dict[str, float] = {}
    cpu: dict[str, float] = {}
    nbytes = 0
    selected = {name: {i: A.select_image(ds, i) for i in rows} for name, ds in datasets.items()}
    key_runs = {i: key_runs_of(img) for i, img in selected["tensorstore"].items()}
    for round_ in range(repeats + 1):  # interleaved, best of N (the machine is shared) after an untimed round:
        for name, ds in datasets.items():  # the first read of a store pays for its shard indexes and page cache
            runs = (
                ("read", lambda name=name: read_same_rows(selected[name], rows)),
                ("read+kernel", lambda name=name: read_and_kernel(selected[name], rows, key_runs)),
                ("scan+read+kernel", lambda ds=ds: scan_read_and_kernel(ds, rows, key_runs)),
                ("aggregate", lambda ds=ds: A.aggregate_token(ds, TOKEN, num_workers=2)),
            )
            if name != "tensorstore":  # the floors: on the fast backend only
                runs = (runs[0], runs[-1])
            for kind, run in runs:
                t, c = time.perf_counter(), time.process_time()
                out = run()
                key = f"{name} {kind}"
                if round_:
                    best[key] = min(best.get(key, np.inf), time.perf_counter() - t)
                    cpu[key] = min(cpu.get(key, np.inf), time.process_time() - c)
                if kind == "read":
                    nbytes = out
                elif kind == "aggregate":
                    assert out.sizes["occurrence"] == n_occ
    print(f"    aggregate '{TOKEN}': {n_occ} occurrences in {len(rows)} images, {nbytes / 1e6:.0f} MB of fp16 rows,"
          f" 2 threads, best of {repeats}:")  # fmt: skip
    for name in BACKENDS:
        for kind in ("read", "read+kernel", "scan+read+kernel", "aggregate"):
            key = f"{name} {kind}"
            if key not in best:
                continue
            gbs, cpu_gbs = nbytes / best[key] / 1e9, nbytes / cpu[key] / 1e9
            print(
                f"    {key:22s} {best[key] * 1e3:7.0f} ms {gbs:6.3f} GB/s"
                f" = {100 * best[f'{name} read'] / best[key]:5.1f} % of its read,"
                f" {100 * gbs / fast_read:5.1f} % of the fast whole-image read"
                f" | CPU {cpu[key] * 1e3:6.0f} ms = {cpu_gbs:5.2f} GB/CPU-s,"
                f" {100 * cpu[f'{name} read'] / cpu[key]:5.1f} % of its read's"
            )
    ratio = best["tensorstore read"] / best["tensorstore aggregate"]
    cpu_ratio = cpu["tensorstore read"] / cpu["tensorstore aggregate"]
    met = "met" if ratio >= 0.6 else "NOT met"
    print(f"    goal: aggregate >= 60 % of the read -> {met} ({100 * ratio:.0f} % wall, {100 * cpu_ratio:.0f} % CPU)")
    print("    ceilings of the ratio (what the aggregate does on top of the read, step by step):")
    steps = {"read+kernel": "read + the per-head kernel",
             "scan+read+kernel": "+ the scan (the batches' small variables preloaded)"}  # fmt: skip
    for kind, what in steps.items():
        wall, cpu_share = (
            best["tensorstore read"] / best[f"tensorstore {kind}"],
            cpu["tensorstore read"] / cpu[f"tensorstore {kind}"],
        )
        print(f"      {what}: {100 * wall:.0f} % wall, {100 * cpu_share:.0f} % CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--distinct", type=int, default=20)
    parser.add_argument("--clicks", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", choices=("synthetic", "seed-style"), default="synthetic",
                        help="seed-style: rounded rows like a trained model's, codec by measurement")  # fmt: skip
    parser.add_argument("--no-aggregate", action="store_true", help="only the read table (1)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="attnstore-bench-read-"))
    try:
        t = time.perf_counter()
        path = real_size_store(tmp / "bench.zarr", args.images, min(args.distinct, args.images), args.rows)
        print(f"attention codec: {AttnStore.open(path).group.attrs.get('attention_codec', {}).get('name')}")
        print(f"store: {args.images} images ({args.distinct} distinct) built in {time.perf_counter() - t:.0f} s; "
              f"load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip
        fast = bench_reads(path, args.images, args.clicks, repeats=max(10, args.repeats))
        if not args.no_aggregate:
            bench_aggregate(path, args.repeats, fast["tensorstore backend"])
        print(f"load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (wall times are noisy above that)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
