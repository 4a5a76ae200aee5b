"""Store size, rounding error, write time and read speed at real SmolVLM text size, vs the seed formats.

Attention comes from two sources, neither of them a trained model:
  model      the random-weight Idefics3 with SmolVLM-256M's text dims (30 layers, 9 heads, hidden 576;
             small vision tower) on a 640x480 photo-like picture (3 x 4 tiles), greedy answer;
  synthetic  `attnstore.extraction.synthetic.synthetic_attention` (softmax rows with a sink and focused heads)
             on the same token layout.
Random-weight attention is nearly uniform over the causal keys; a trained model's is peakier with
many tiny values, so its sizes differ (the design notes, measured on the real model: lossless ~100 MB
per image, keep 3 bits ~28 MB at ~6 % max relative error).

Formats per image:
  seed 000  attention_array.npy: fp32 full square [layer, head, seq, seq] (np.save)
  seed 004  attentions_5/attention_fp16_rounded_layer_{i}.npz: fp16 [head, seq, seq] per layer
            (np.savez_compressed), written for real
  store     attnstore zarr store at several keep_bits; text queries (the default) and all queries

Usage:  python benchmarks/bench_store.py [--quick] [--source model|synthetic|both]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from common import (
    PROMPT,
    dir_bytes,
    host_load,
    mb,
    model_dir,
    npy_bytes,
    percentiles,
    photo_like_image,
    print_table,
    timed,
)
from PIL import Image

from attnstore.extraction.extract import Extraction, extract, query_positions
from attnstore.extraction.pipeline import store_attrs, store_shape_for
from attnstore.extraction.synthetic import idefics3_tokens, synthetic_attention, token_layout, tokens_extraction
from attnstore.models import load_adapter
from attnstore.schema import IMAGE_PATCH_KINDS, kind_mask
from attnstore.store import AttnStore, open_dataset

FP16_MIN_NORMAL = 2.0**-14  # below this fp16 is subnormal: fewer mantissa bits, larger relative error
DESIGN_REFERENCE = (
    "Design notes (real SmolVLM-256M, trained): lossless ~100 MB/image; keep 3 bits ~28 MB, ~6 % max rel err"
)


@dataclass
class Source:
    """One image's attention with every query row (full square) and the picture it came from."""

    name: str
    full: Extraction  # attention # [layer, head, seq, seq] float16
    image: Image.Image
    seconds: float  # time to produce it


@dataclass
class StoreRun:
    keep_bits: int
    queries: str
    attention_bytes: float  # per image, the attention array only
    total_bytes: float  # per image, every array (tokens, geometry, display pixels ...)
    write_s: list[float] = field(default_factory=list)
    errors: dict = field(default_factory=dict)
    click_ms: list[float] = field(default_factory=list)
    click_int_ms: list[float] = field(default_factory=list)
    read_gbs: float = float("nan")
    tiles: tuple[int, int] = (0, 0)  # tile grid as the store recorded it


# -- attention sources -----------------------------------------------------------------------
def model_source(adapter, max_new_tokens: int) -> Source:
    """Full-square attention of the random-weight real-size model on a photo-like 640x480 picture."""
    image = photo_like_image(640, 480, seed=0)
    seconds, full = timed(lambda: extract(adapter, image, PROMPT, max_new_tokens=max_new_tokens, queries="all"))
    return Source("model (random weights)", full, image, seconds)


def synthetic_source(n_layers: int, n_heads: int, n_answer: int, seed: int = 0) -> Source:
    """Synthetic attention on a real 3x4-tile token layout (the layout of a 4:3 picture) plus `n_answer` tokens."""
    tokens, n_prompt = idefics3_tokens(3, 4, n_answer)
    layout = token_layout(tokens, n_prompt)
    rows = np.arange(len(tokens), dtype=np.int32)
    image_keys = np.flatnonzero(layout.patch_tile >= 0)
    rng = np.random.default_rng(seed)

    def make() -> np.ndarray:  # one layer at a time keeps the fp32 logits small
        return np.concatenate(
            [synthetic_attention(1, n_heads, rows, len(tokens), image_keys, rng) for _ in range(n_layers)]
        )

    seconds, attention = timed(make)
    full = tokens_extraction(tokens, n_prompt, layout, rows, attention, PROMPT)
    return Source("synthetic", full, photo_like_image(640, 480, seed=1), seconds)


def text_rows(full: Extraction) -> Extraction:
    """The default store content: only the text query rows of a full-square extraction.

    Same forward pass, same values: `extract(..., queries="text")` keeps exactly these rows.
    """
    rows = query_positions(full.layout.kind, "text")
    return replace(full, attention=np.ascontiguousarray(full.attention[:, :, rows]), query_position=rows)


# -- seed formats ----------------------------------------------------------------------------
def seed_formats(full: np.ndarray, workdir: Path, write_npy: bool) -> dict:
    """Bytes and write seconds of seed 000 (.npy fp32) and seed 004 (per-layer .npz fp16).

    full: # [layer, head, seq, seq] float16
    """
    out = {"npy_bytes": npy_bytes(full.shape, "<f4"), "npy_s": float("nan")}
    if write_npy:
        path = workdir / "attention_array.npy"
        out["npy_s"], _ = timed(lambda: np.save(path, full.astype(np.float32)))
        assert path.stat().st_size == out["npy_bytes"], "npy size formula disagrees with np.save"
        path.unlink()
    folder = workdir / "attentions_5"
    folder.mkdir()

    def write_npz() -> None:
        for i, layer in enumerate(full):  # [head, seq, seq]
            np.savez_compressed(folder / f"attention_fp16_rounded_layer_{i}.npz", attention=layer)

    out["npz_s"], _ = timed(write_npz)
    out["npz_bytes"] = dir_bytes(folder)
    # The seed 004 viewer loads one layer's npz per click.
    layer_s = []
    for i in range(min(5, full.shape[0])):
        t, _ = timed(lambda i=i: np.load(folder / f"attention_fp16_rounded_layer_{i}.npz")["attention"][:, -1])
        layer_s.append(t)
    out["npz_click_ms"] = 1e3 * float(np.median(layer_s))
    shutil.rmtree(folder)
    return out


# -- the store -------------------------------------------------------------------------------
def write_store(path: Path, adapter, result: Extraction, image, keep_bits: int, queries: str, n_writes: int, max_new):
    """Write `result` into `n_writes` image slots of a new store; returns (StoreRun, empty-store bytes)."""
    shape = store_shape_for(adapter, PROMPT, max_new, queries)  # the shape `attnstore extract` creates
    attrs = {**store_attrs(adapter, keep_bits, queries, max_new), "model_id": "benchmark"}
    store = AttnStore.create(str(path), shape, attrs)
    empty = dir_bytes(path)
    times = []
    for index in store.allocate([f"image_{i}.png" for i in range(n_writes)], ["bench"] * n_writes):
        t, _ = timed(lambda index=index: store.write_image(index, result, image))
        times.append(t)
    run = StoreRun(
        keep_bits=keep_bits,
        queries=queries,
        attention_bytes=dir_bytes(path / "attention") / n_writes,
        total_bytes=(dir_bytes(path) - empty) / n_writes,
        write_s=times,
    )
    return run


def rounding_errors(original: np.ndarray, stored: np.ndarray, image_keys: np.ndarray) -> dict:
    """Error of the stored values vs the lossless fp16 ones (one layer at a time: bounded memory).

    original, stored: # [layer, head, query, key] float16
    """
    acc = dict(max_rel=0.0, max_rel_normal=0.0, rel_sum=0.0, nonzero=0, flushed=0, subnormal=0, max_heat=0.0)
    for o16, s16 in zip(original, stored):  # [head, query, key]
        o, s = o16.astype(np.float32), s16.astype(np.float32)
        nonzero = o != 0
        rel = np.abs(s - o)[nonzero] / o[nonzero]
        normal = o[nonzero] >= FP16_MIN_NORMAL
        # A heatmap scales colours to its own max: error as a fraction of that max, over image keys.
        oi, si = o[..., image_keys], s[..., image_keys]
        row_max = oi.max(-1, keepdims=True)
        heat = np.abs(si - oi) / np.where(row_max > 0, row_max, 1)
        acc["max_rel"] = max(acc["max_rel"], float(rel.max(initial=0)))
        acc["max_rel_normal"] = max(acc["max_rel_normal"], float(rel[normal].max(initial=0)))
        acc["rel_sum"] += float(rel.sum(dtype=np.float64))
        acc["nonzero"] += int(nonzero.sum())
        acc["flushed"] += int(((s == 0) & nonzero).sum())
        acc["subnormal"] += int((~normal).sum())
        acc["max_heat"] = max(acc["max_heat"], float(heat.max(initial=0)))
    n = max(1, acc.pop("nonzero"))
    acc["mean_rel"] = acc.pop("rel_sum") / n
    acc["flushed"] /= n
    acc["subnormal"] /= n
    return acc


def measure_reads(path: Path, run: StoreRun, original: np.ndarray, image_keys, clicks: int, rng) -> None:
    """Click latency (basic slice vs integer-array key index), full-image decode speed, errors."""
    ds = open_dataset(str(path))
    n_images = ds.sizes["image"]
    run.tiles = (int(ds["tile_rows"][0]), int(ds["tile_cols"][0]))
    n_query, n_key = original.shape[2], original.shape[3]
    att = ds["attention"]
    for _ in range(clicks):
        i, q = int(rng.integers(n_images)), int(rng.integers(n_query))
        t, _ = timed(lambda i=i, q=q: att[i, :, :, q, :n_key].values)  # [layer, head, key]
        run.click_ms.append(1e3 * t)
        t, _ = timed(lambda i=i, q=q: att[i, :, :, q, image_keys].values)  # [layer, head, image key]
        run.click_int_ms.append(1e3 * t)
    seconds = []
    for i in range(min(3, n_images)):
        t, stored = timed(lambda i=i: att[i, :, :, :n_query, :n_key].values)  # [layer, head, query, key]
        seconds.append(t)
    run.read_gbs = stored.nbytes / float(np.median(seconds)) / 1e9  # decoded fp16 bytes per second
    run.errors = rounding_errors(original, stored, image_keys)


def measure_source(src: Source, adapter, args, workdir: Path) -> tuple[dict, list[StoreRun]]:
    console_note(f"[{src.name}] seq {src.full.n_key}, seed formats ...")
    seeds = seed_formats(src.full.attention, workdir, write_npy=not args.quick)
    text = text_rows(src.full)
    image_keys = np.flatnonzero(kind_mask(text.layout.kind, IMAGE_PATCH_KINDS))
    rng = np.random.default_rng(0)
    runs = []
    for queries, result, n_writes in (("text", text, args.writes), ("all", src.full, 1)):
        if queries == "all" and args.quick:
            continue
        for kb in args.keep_bits:
            console_note(f"[{src.name}] store queries={queries} keep_bits={kb} ...")
            path = workdir / f"store-{queries}-{kb}.zarr"
            run = write_store(path, adapter, result, src.image, kb, queries, n_writes, args.max_new_tokens)
            clicks = args.clicks if queries == "text" else max(10, args.clicks // 10)
            measure_reads(path, run, result.attention, image_keys, clicks, rng)
            runs.append(run)
            shutil.rmtree(path)
    return seeds, runs


def console_note(text: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {text}", flush=True)


# -- report ----------------------------------------------------------------------------------
def report(src: Source, seeds: dict, runs: list[StoreRun]) -> None:
    full = src.full
    n_layers, n_heads = full.attention.shape[:2]
    text = text_rows(full)
    lossless = {r.queries: r.attention_bytes for r in runs if r.keep_bits == 10}
    npy = seeds["npy_bytes"]
    head = (
        f"{src.name}: {n_layers} layers x {n_heads} heads, seq {full.n_key} "
        f"({text.n_query} text query rows), store tile_rows x tile_cols {runs[0].tiles[0]}x{runs[0].tiles[1]}"
    )
    rows = [
        ["seed 000 attention_array.npy (fp32, full square)", mb(npy), "1.00", "-", "0", _s(seeds["npy_s"])],
        [
            "seed 004 30 x layer .npz (fp16, full square)",
            mb(seeds["npz_bytes"]),
            f"{seeds['npz_bytes'] / npy:.3f}",
            "-",
            "0",
            _s(seeds["npz_s"]),
        ],
    ]
    for r in runs:
        base = lossless.get(r.queries)
        rows.append(
            [
                f"store {r.queries} queries, keep_bits {r.keep_bits}",
                mb(r.attention_bytes),
                f"{r.attention_bytes / npy:.3f}",
                f"{r.attention_bytes / base:.2f}" if base else "-",
                f"{100 * r.errors['max_rel']:.2f} %",
                _s(float(np.median(r.write_s))),
            ]
        )
    print_table(
        "Bytes per image (attention only) — " + head,
        ["format", "MB/image", "vs seed npy", "vs lossless store", "max rel err", "write s (p50)"],
        rows,
        caption="Reference — " + DESIGN_REFERENCE,
    )
    text_runs = [r for r in runs if r.queries == "text"]
    print_table(
        f"Rounding error vs lossless fp16 (text rows) — {src.name}",
        ["keep_bits", "bound 2^-(k+1)", "max rel", "max rel (normal)", "mean rel", "flushed to 0", "max err / map max"],
        [
            [
                r.keep_bits,
                f"{100 * 2.0 ** -(r.keep_bits + 1) if r.keep_bits < 10 else 0:.3f} %",
                f"{100 * r.errors['max_rel']:.3f} %",
                f"{100 * r.errors['max_rel_normal']:.3f} %",
                f"{100 * r.errors['mean_rel']:.4f} %",
                f"{100 * r.errors['flushed']:.4f} %",
                f"{100 * r.errors['max_heat']:.3f} %",
            ]
            for r in text_runs
        ],
        caption=f"subnormal (< 2^-14) share of nonzero values: {100 * text_runs[0].errors['subnormal']:.3f} %"
        if text_runs
        else "",
    )
    read_rows = []
    for r in runs:
        p50, p95 = percentiles(r.click_ms)
        i50, i95 = percentiles(r.click_int_ms)
        read_rows.append(
            [
                f"{r.queries} queries, keep_bits {r.keep_bits}",
                mb(r.total_bytes),
                f"{p50:.2f}",
                f"{p95:.2f}",
                f"{i50:.2f}",
                f"{i95:.2f}",
                f"{i50 / p50:.1f}x",
                f"{r.read_gbs:.2f}",
            ]
        )
    print_table(
        f"Store reads (warm page cache) — {src.name}",
        [
            "store",
            "MB/image all arrays",
            "click p50 ms",
            "p95 ms",
            "int-index key p50",
            "p95",
            "int/basic",
            "full image GB/s",
        ],
        read_rows,
        caption=f"click = ds.attention[i, :, :, q, :n_key].values ({len(runs[0].click_ms)} random clicks); "
        f"int-index = same with an integer array of the image keys. Seed 004 click (np.load one layer npz): "
        f"{seeds['npz_click_ms']:.0f} ms for ONE layer.",
    )


def _s(seconds: float) -> str:
    return "-" if np.isnan(seconds) else f"{seconds:.2f}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short answer, fewer writes/clicks, no all-query store")
    p.add_argument("--source", choices=("model", "synthetic", "both"), default="both")
    p.add_argument("--keep-bits", type=int, nargs="+", default=[10, 7, 5, 3])
    p.add_argument("--max-new-tokens", type=int, default=None, help="answer length (default 256: ~1150 tokens)")
    p.add_argument("--writes", type=int, default=None, help="images written per store (write time p50)")
    p.add_argument("--clicks", type=int, default=None, help="random one-token reads per store")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    args = p.parse_args(argv)
    args.max_new_tokens = args.max_new_tokens or (32 if args.quick else 256)
    args.writes = args.writes or (3 if args.quick else 5)
    args.clicks = args.clicks or (50 if args.quick else 200)
    if 10 not in args.keep_bits:
        args.keep_bits = [10, *args.keep_bits]  # ratios are vs the lossless store
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    console_note(host_load())
    adapter = load_adapter(str(model_dir("real-text")))
    sources = []
    if args.source in ("model", "both"):
        console_note("extracting (real text dims, random weights, queries=all) ...")
        sources.append(model_source(adapter, args.max_new_tokens))
        console_note(f"extraction took {sources[-1].seconds:.1f} s; answer tokens: {args.max_new_tokens} max")
    if args.source in ("synthetic", "both"):
        _, n_prompt = idefics3_tokens(3, 4, 0)
        # Same sequence length as the model run (when there is one), so sizes compare like for like.
        n_answer = sources[0].full.n_key - n_prompt if sources else args.max_new_tokens
        sources.append(synthetic_source(adapter.n_layers, adapter.n_heads, n_answer))
    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=args.workdir) as tmp:
        results = []
        for i, src in enumerate(sources):
            workdir = Path(tmp) / str(i)
            workdir.mkdir()
            results.append((src, *measure_source(src, adapter, args, workdir)))
    for src, seeds, runs in results:
        report(src, seeds, runs)
    print(f"Neither source is a trained model's attention. {DESIGN_REFERENCE}.")
    print(f"total {time.perf_counter() - start:.0f} s; at the end: {host_load()}")


if __name__ == "__main__":
    main()
