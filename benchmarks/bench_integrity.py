"""Cost of the per-chunk crc32c checksum: bytes on disk, click latency, full-image decode, deep validate.

Two stores of the same synthetic attention at SmolVLM-256M's text size (30 layers, 9 heads, a real
3 x 4 tile token layout plus an answer; text query rows only, lossless fp16), one written with the
crc32c codec after blosc (the default) and one without (the codec pipeline of stores written before).
Reads alternate between the two stores click by click, so load from other jobs hits both alike.

Usage:  python benchmarks/bench_integrity.py [--quick] [--images N] [--clicks N] [--answer N]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import google_crc32c
import numpy as np
from common import console, dir_bytes, host_load, mb, percentiles, photo_like_image, print_table, timed

import attnstore.store.writer as writer
from attnstore.extraction.synthetic import synthetic_extraction
from attnstore.records import Extraction
from attnstore.store import AttnStore, StoreShape, open_dataset
from attnstore.store.validation import validate_store

N_LAYERS, N_HEADS = 30, 9  # SmolVLM-256M's text model
VARIANTS = {"no checksum (before)": False, "crc32c (default)": True}


def extraction(n_answer: int, seed: int) -> Extraction:
    """Text query rows of synthetic attention on a 3x4-tile SmolVLM token layout, at real size."""
    return synthetic_extraction((3, 4), n_answer, np.random.default_rng(seed), n_layers=N_LAYERS, n_heads=N_HEADS)


def write_store(path: Path, checksum: bool, results: list[Extraction]) -> list[float]:
    """Write every image with or without the checksum codec; returns write seconds per image."""
    writer.CHUNK_CHECKSUM = checksum
    try:
        first = results[0]
        shape = StoreShape(N_LAYERS, N_HEADS, first.n_query, first.n_key)
        store = AttnStore.create(
            str(path), shape, {"model_id": "synthetic", "model_family": "idefics3", "random_weights": True}
        )
        image = photo_like_image(640, 480)
        seconds = []
        for index, result in zip(
            store.allocate([f"img{i}" for i in range(len(results))], [""] * len(results)), results
        ):
            seconds.append(timed(lambda index=index, result=result: store.write_image(index, result, image))[0])
        store.consolidate()
        return seconds
    finally:
        writer.CHUNK_CHECKSUM = True


def in_turn(names: list[str], turn: int) -> list[str]:
    """The variants, rotated so each goes first equally often (no order bias from caches or load)."""
    k = turn % len(names)
    return names[k:] + names[:k]


def crc_throughput(path: Path) -> float:
    """GB/s of google_crc32c over the attention shards' bytes (the work the codec adds on read)."""
    data = b"".join(p.read_bytes() for p in (path / "attention").rglob("*") if p.is_file() and p.name != "zarr.json")
    seconds = min(timed(lambda: google_crc32c.value(data))[0] for _ in range(5))
    return len(data) / seconds / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 images, 100 clicks")
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--clicks", type=int, default=400, help="random one-token reads per store")
    p.add_argument("--answer", type=int, default=256, help="answer tokens per image (text rows = prompt + answer)")
    args = p.parse_args()
    if args.quick:
        args.images, args.clicks = 2, 100
    console.print(host_load())
    root = Path(tempfile.mkdtemp(prefix="bench-integrity-"))
    try:
        results = [extraction(args.answer, seed) for seed in range(args.images)]
        r0 = results[0]
        print(f"{args.images} images, attention [layer {N_LAYERS}, head {N_HEADS}, query {r0.n_query}, key {r0.n_key}] "
              "per image")  # fmt: skip
        paths = {name: root / f"{i}.zarr" for i, name in enumerate(VARIANTS)}
        writes = {name: write_store(paths[name], on, results) for name, on in VARIANTS.items()}
        stats = {name: {"click": [], "full": []} for name in VARIANTS}
        opened = {name: open_dataset(str(path)) for name, path in paths.items()}
        rng = np.random.default_rng(0)
        for turn in range(args.clicks):  # alternate the stores click by click, each first in turn
            i, q = int(rng.integers(args.images)), int(rng.integers(r0.n_query))
            for name in in_turn(list(opened), turn):
                ds = opened[name]
                t, _ = timed(lambda ds=ds: ds["attention"][i, :, :, q, :].values)  # noqa: B023  [layer, head, key]
                stats[name]["click"].append(1e3 * t)
        for i in range(args.images):
            for name in in_turn(list(opened), i):
                ds = opened[name]
                t, _ = timed(lambda ds=ds: ds["attention"][i].values)  # noqa: B023  every row of one image
                stats[name]["full"].append(t)
        deep = {name: [] for name in paths}
        for turn in range(2):
            for name in in_turn(list(paths), turn):
                start = time.perf_counter()
                report = validate_store(str(paths[name]), deep=True)
                deep[name].append((time.perf_counter() - start) / args.images)
                assert report.ok, report.problems
        deep = {name: min(times) for name, times in deep.items()}
        base = next(iter(VARIANTS))
        base_att = dir_bytes(paths[base] / "attention")
        raw = r0.attention.nbytes  # decoded bytes of one image's stored rows
        rows = []
        for name, path in paths.items():
            att, total = dir_bytes(path / "attention"), dir_bytes(path)
            c50, c95 = percentiles(stats[name]["click"])
            full = float(np.median(stats[name]["full"]))
            rows.append([
                name, mb(att / args.images), mb(total / args.images), f"{att / base_att:.5f}",
                f"{float(np.median(writes[name])):.2f}", f"{c50:.2f} / {c95:.2f}",
                f"{full * 1e3:.0f} ({raw / full / 1e9:.2f} GB/s)", f"{deep[name]:.2f}",
            ])  # fmt: skip
        print_table(
            "Chunk checksum cost (per image)",
            [
                "store",
                "attention MB",
                "total MB",
                "attention size ratio",
                "write s",
                "click ms p50 / p95",
                "full image read ms",
                "validate --deep s",
            ],  # fmt: skip
            rows,
            caption=f"{args.clicks} clicks per store, alternating; full read = median of {args.images}; "
            "deep validate: best of 2; "
            f"google_crc32c alone: {crc_throughput(paths['crc32c (default)']):.1f} GB/s over the attention shards.",
        )
        crc = "crc32c (default)"
        click = percentiles(stats[crc]["click"])[0] / percentiles(stats[base]["click"])[0]
        full = np.median(stats[crc]["full"]) / np.median(stats[base]["full"])
        console.print(f"crc32c / none: click p50 ratio {click:.3f}, full read ratio {full:.3f}")
        console.print(host_load())
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
