"""What the read-safety checks cost a click: one query row read through a store Dataset's reader
(completeness: a missing row of a complete image is an error; local files: `lstat` before a shard is
opened) against the same read through a bare reader (`open_reader`, no checks), per backend.

    .venv/bin/python benchmarks/bench_read_checks.py [--images 5] [--clicks 400]

Real-size synthetic store (30 layers x 9 heads, 95 rows x 957 keys). Goal: one row <= 1 ms p50.
Run it on two checkouts (PYTHONPATH=...) to compare before / after.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from attnstore.extraction.synthetic import make_synthetic_store
from attnstore.store import open_dataset
from attnstore.store.readers.choice import open_reader
from attnstore.store.xarray_glue import reader_of


def clicks(read, picks, repeats: int = 3) -> np.ndarray:
    """Wall time of each read  # [repeat * click] seconds (a first untimed round warms the indexes)."""
    for image, row in picks:
        read(image, row)
    times = []
    for _ in range(repeats):
        for image, row in picks:
            start = time.perf_counter()
            read(image, row)
            times.append(time.perf_counter() - start)
    return np.asarray(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--clicks", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = make_synthetic_store(
            str(Path(tmp) / "s.zarr"), n_images=args.images, n_layers=30, n_heads=9, n_answer=80
        )
        n_text = int(open_dataset(path)["n_query"].values.min())
        rng = np.random.default_rng(0)
        picks = [
            (int(i), int(r))
            for i, r in zip(rng.integers(0, args.images, args.clicks), rng.integers(0, n_text, args.clicks))
        ]
        print(f"one row of {args.images} real-size images, {args.clicks} clicks x 3; p50 / p95 ms")
        for backend in ("tensorstore", "zarr"):
            readers = {
                "bare reader (no checks)": open_reader(path, backend=backend),
                "store Dataset's reader": reader_of(open_dataset(path, read_backend=backend)),
            }
            for label, reader in readers.items():
                times = clicks(lambda i, r, rd=reader: rd.read_rows(i, [r]), picks) * 1e3
                p50, p95 = np.percentile(times, 50), np.percentile(times, 95)
                print(f"  {backend:12s} {label:26s} p50 {p50:6.3f} ms  p95 {p95:6.3f} ms")
        start = time.perf_counter()
        for _ in range(20):
            open_dataset(path)
        print(f"  open_dataset: {(time.perf_counter() - start) / 20 * 1e3:.1f} ms per open")


if __name__ == "__main__":
    main()
