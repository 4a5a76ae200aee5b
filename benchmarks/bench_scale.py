"""Scale-out figures: distributed extraction throughput, S3 write overhead, store open time vs size.

  workers  images/s of the tiny random-weight model on photo-like 640x480 pictures (3 x 4 tiles):
           in this process (serial) and on a dask LocalCluster of 1 and 2 worker processes (one thread
           each, torch threads = cores / workers). Models are loaded before the clock starts (warm-up
           run), so the figure is the steady-state rate of a long batch; the ratio 2 / 1 workers is the
           scaling.
  s3       the same extraction results written with AttnStore.write_image to a local folder and to a
           local S3 (moto server on 127.0.0.1): ms per image, tiny dims and real SmolVLM text dims
           (30 layers x 9 heads, synthetic attention on the same token layout), plus a whole
           serial run to each.
  open     a metadata-sized store (AttnStore.create + allocate, tiny dims, nothing written) with
           100 / 1,000 / 10,000 image slots: allocate time, open_dataset time (median of 5), reading
           every `complete` flag / image name (what `info` and the explorer's image list read), and
           `attnstore info` as a whole.

Usage:  python benchmarks/bench_scale.py [--quick] [--sections workers,s3,open]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import PROMPT, host_load, model_dir, percentiles, photo_like_image, print_table, timed

from attnstore.extraction.distributed import dask_client, run_distributed
from attnstore.extraction.extract import Extraction, extract
from attnstore.extraction.pipeline import ExtractSettings, image_items, run_items, store_plan
from attnstore.extraction.synthetic import synthetic_attention
from attnstore.models import load_adapter
from attnstore.store import AttnStore, StoreShape, open_dataset

MAX_NEW_TOKENS = 12
REAL_LAYERS, REAL_HEADS = 30, 9  # SmolVLM-256M's text model


def clock(fn, *args, **kwargs) -> tuple[float, object]:
    """Wall seconds of fn(*args, **kwargs) and its result (no closure over loop variables)."""
    return timed(lambda: fn(*args, **kwargs))


def make_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo_{i:03d}.png" for i in range(n)]
    for i, path in enumerate(paths):
        photo_like_image(seed=i).save(path)
    return paths


# -- workers ----------------------------------------------------------------------------------
def bench_workers(tmp: Path, n_images: int, rounds: int) -> None:
    """Variants run interleaved, `rounds` times each: other work on a shared host slows all of them alike,
    and the best round of each is its least disturbed one."""
    model = str(model_dir("tiny"))
    settings = ExtractSettings(max_new_tokens=MAX_NEW_TOKENS)
    items = image_items(make_images(tmp / "images", n_images), PROMPT, str(tmp / "images"))
    warm = image_items(make_images(tmp / "warm", 2), PROMPT, str(tmp / "warm"))
    adapter = load_adapter(model)
    with contextlib.ExitStack() as stack:
        one, one_threads = stack.enter_context(dask_client(1))
        two, two_threads = stack.enter_context(dask_client(2))
        variants = {  # label -> (torch threads per worker, run(out))
            "in this process (serial)": (
                torch.get_num_threads(),
                lambda out: run_items(adapter, items, out, settings=settings, show_progress=False),
            ),
            "dask LocalCluster, 1 worker": (one_threads, distributed_run(model, items, settings, one, one_threads)),
            "dask LocalCluster, 1 worker, 1 thread": (1, distributed_run(model, items, settings, one, 1)),
            "dask LocalCluster, 2 workers": (two_threads, distributed_run(model, items, settings, two, two_threads)),
        }
        # warm-up: every worker loads the model before the clock starts
        run_items(adapter, warm, str(tmp / "warm-serial.zarr"), settings=settings, show_progress=False)
        distributed_run(model, warm, settings, one, one_threads)(str(tmp / "warm-one.zarr"))
        distributed_run(model, warm, settings, two, two_threads)(str(tmp / "warm-two.zarr"))
        times: dict[str, list[float]] = {label: [] for label in variants}
        for r in range(rounds):
            for i, (label, (_, run)) in enumerate(variants.items()):
                times[label].append(clock(run, str(tmp / f"run-{r}-{i}.zarr"))[0])
    best = {label: n_images / min(t) for label, t in times.items()}
    rows = [
        [label, threads, f"{best[label]:.2f}", f"{n_images / float(np.median(times[label])):.2f}"]
        for label, (threads, _) in variants.items()
    ]
    serial, one_w, one_1, two_w = (best[label] for label in variants)
    print_table(
        f"Distributed extraction, tiny model, {n_images} photo-like 640x480 images (3x4 tiles), "
        f"{MAX_NEW_TOKENS} new tokens, best / median of {rounds} interleaved rounds",
        ["run", "torch threads / worker", "images/s (best)", "images/s (median)"],
        rows,
        caption=f"scaling 2 workers / 1 worker: {two_w / one_w:.2f}x (default threads), {two_w / one_1:.2f}x "
        f"(vs 1 worker, 1 thread); 2 workers / serial: {two_w / serial:.2f}x. {host_load()}",
    )


def distributed_run(model: str, items, settings: ExtractSettings, client, threads: int):
    """A function out -> RunReport running `items` on `client` (asserting every image was written)."""

    def run(out: str):
        kw = dict(settings=settings, client=client, torch_threads=threads, show_progress=False)
        report = run_distributed(model, items, out, **kw)
        assert len(report.written) == len(items), report
        return report

    return run


# -- s3 ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def local_s3():
    """A moto S3 server on 127.0.0.1 (free port); AWS_* variables point s3fs at it."""
    import logging

    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_ENDPOINT_URL=endpoint)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    s3fs.S3FileSystem(endpoint_url=endpoint).mkdir("bench")
    try:
        yield "s3://bench"
    finally:
        server.stop()


def real_size(result: Extraction, rng) -> Extraction:
    """The same tokens and layout with SmolVLM-size attention (30 x 9 heads, synthetic values)."""
    image_keys = np.flatnonzero(result.layout.patch_tile >= 0)
    attention = synthetic_attention(REAL_LAYERS, REAL_HEADS, result.query_position, result.n_key, image_keys, rng)
    return Extraction(
        attention,
        result.query_position,
        result.token_id,
        result.token_text,
        result.layout,
        result.prompt,
        result.answer,
    )


def write_ms(target: str, shape: StoreShape, attrs: dict, results, images) -> float:
    """Median ms of one write_image into a fresh store at `target`."""
    store = AttnStore.create(target, shape, attrs)
    slots = store.allocate([f"img{i}" for i in range(len(results))], ["" for _ in results])
    times = [clock(store.write_image, i, r, im)[0] for i, r, im in zip(slots, results, images)]
    return 1000 * percentiles(times, (50,))[0]


def bench_s3(tmp: Path, n_images: int) -> None:
    model = str(model_dir("tiny"))
    adapter = load_adapter(model)
    settings = ExtractSettings(max_new_tokens=MAX_NEW_TOKENS)
    paths = make_images(tmp / "images", n_images)
    pictures = [photo_like_image(seed=i) for i in range(n_images)]
    results = [extract(adapter, p, PROMPT, max_new_tokens=MAX_NEW_TOKENS) for p in pictures]
    shape, attrs = store_plan(adapter, [PROMPT], settings, None)
    big_shape = StoreShape(REAL_LAYERS, REAL_HEADS, shape.query_capacity, shape.key_capacity)
    rng = np.random.default_rng(0)
    big = [real_size(r, rng) for r in results]
    rows, figures = [], {}
    with local_s3() as bucket:
        for label, root in (("local folder", str(tmp)), ("local S3 (moto)", bucket)):
            tiny = write_ms(f"{root}/tiny.zarr", shape, attrs, results, pictures)
            real = write_ms(f"{root}/real.zarr", big_shape, attrs, big, pictures)
            items = image_items(paths, PROMPT, str(tmp / "images"))
            run_s, _ = clock(run_items, adapter, items, f"{root}/run.zarr", settings=settings, show_progress=False)
            figures[label] = (tiny, real, run_s)
            rows.append([label, f"{tiny:.0f}", f"{real:.0f}", f"{n_images / run_s:.2f}"])
    (lt, lr, ls), (st, sr, ss) = figures["local folder"], figures["local S3 (moto)"]
    rows.append(["S3 / local", f"{st / lt:.2f}x", f"{sr / lr:.2f}x", f"{ls / ss:.2f}x"])
    print_table(
        f"Writing to S3 vs a local folder ({n_images} images, tiny model results)",
        ["target", "write ms/image (tiny dims)", "write ms/image (30x9 heads)", "serial run images/s"],
        rows,
        caption=f"write = AttnStore.write_image only (median). {host_load()}",
    )


# -- open ---------------------------------------------------------------------------------------
def read_all(path: str, name: str) -> np.ndarray:
    return open_dataset(path)[name].values  # a fresh Dataset: nothing cached from an earlier read


def bench_open(tmp: Path, sizes: list[int]) -> None:
    from attnstore.cli.inspect import print_info

    rows = []
    for n in sizes:
        path = str(tmp / f"open-{n}.zarr")
        attrs = {"model_id": "synthetic", "model_family": "idefics3", "random_weights": True}
        store = AttnStore.create(path, StoreShape(2, 4, 16, 64), attrs)
        alloc_s, _ = clock(store.allocate, [f"img_{i:06d}.png" for i in range(n)], [""] * n)
        opens = [clock(open_dataset, path)[0] for _ in range(5)]
        complete_s, _ = clock(read_all, path, "complete")
        names_s, _ = clock(read_all, path, "image_name")
        with contextlib.redirect_stdout(io.StringIO()):
            info_s, _ = clock(print_info, path)
        median = percentiles(opens, (50,))[0]
        rows.append(
            [f"{n:,}", f"{alloc_s:.2f}", f"{1000 * median:.0f}", f"{complete_s:.2f}", f"{names_s:.2f}", f"{info_s:.2f}"]
        )
    print_table(
        "Store open time vs number of images (metadata-sized store)",
        ["images", "allocate s", "open_dataset ms", "read complete s", "read image_name s", "attnstore info s"],
        rows,
        caption=f"open = consolidated metadata only (no chunk read). {host_load()}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images and smaller stores")
    parser.add_argument("--sections", default="workers,s3,open")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        if "workers" in sections:
            bench_workers(tmp / "workers", 4 if args.quick else 8, 2 if args.quick else 3)
        if "s3" in sections:
            bench_s3(tmp / "s3", 2 if args.quick else 4)
        if "open" in sections:
            bench_open(tmp / "open", [100, 1000] if args.quick else [100, 1000, 10000])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
