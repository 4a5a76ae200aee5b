"""Extraction cost: wall time and peak memory of `attnstore.extraction.extract` vs a plain SDPA `generate`.

Rows are captured inside `generate` (one pass, the vision tower once). Every variant runs in a
fresh child process (so peak RSS is its own), on the same photo-like 640x480 picture (3 x 4
tiles, ~1150 tokens), prompt and answer budget, with random-weight Idefics3 models:
  real-text    SmolVLM-256M text dims (30 layers, 9 heads, hidden 576), small vision tower
  real-vision  the same with a SmolVLM-size vision tower (hidden 768, 12 layers)
  tiny         the demo/test model, for reference (--tiny)
Variants:
  generate-sdpa     plain `model.generate` with SDPA attention, no capture (what a user runs)
  extract-text      attnstore extraction, SDPA kernel, prompt text + answer rows (the default)
  extract-all       the same keeping every query row (full square in fp16, rows computed in chunks)
Then, in one process each (ratios from interleaved runs: load drift on the host hits all alike):
  interleaved       generate-sdpa and extract-text alternated, 1 and 2 torch threads
  batch             4 images in one generate (`extract_batch`) vs 4 x one image, images/s

Usage:  python benchmarks/bench_extract.py [--quick] [--no-real-vision] [--max-new-tokens 32 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from common import (
    PROMPT,
    current_rss_bytes,
    emit_child_result,
    host_load,
    mb,
    model_dir,
    npy_bytes,
    peak_rss_bytes,
    photo_like_image,
    print_table,
    run_child,
    timed,
)

VARIANTS = ("generate-sdpa", "extract-text", "extract-all")
# The real-size vision tower is slow: time the essentials.
VISION_VARIANTS = ("generate-sdpa", "extract-text")
BASELINE = "generate-sdpa"
BATCH = 4


# -- child: one variant in a fresh process -------------------------------------------------------
def load(kind: str, variant: str):
    """The adapter for `kind`; `generate-sdpa` loads the model with plain transformers SDPA (no capture)."""
    from attnstore.models import load_adapter
    from attnstore.models.idefics3 import Idefics3Adapter

    path = str(model_dir(kind))
    if variant != "generate-sdpa":
        return load_adapter(path)
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(
        path, attn_implementation="sdpa", local_files_only=True, dtype=torch.float32
    )
    return Idefics3Adapter(model, AutoProcessor.from_pretrained(path, local_files_only=True), model_id=path)


def run_variant(adapter, variant: str, max_new_tokens: int) -> dict:
    """Run one variant on the benchmark picture; returns sequence facts."""
    from attnstore.extraction.extract import extract, generate_answer

    image = photo_like_image(640, 480, seed=0)
    if variant.startswith("extract"):
        result = extract(adapter, image, PROMPT, max_new_tokens=max_new_tokens, queries=variant.split("-")[1])
        return {
            "seq": result.n_key,
            "n_query": result.n_query,
            "tiles": [result.layout.tile_rows, result.layout.tile_cols],
        }
    inputs = adapter.prepare(image, PROMPT)
    sequence = generate_answer(adapter, inputs, max_new_tokens)
    return {"seq": int(sequence.shape[0]), "n_query": 0}


def child_main(kind: str, variant: str, max_new_tokens: int, repeats: int) -> None:
    import torch

    from attnstore.quiet import quiet_transformers

    quiet_transformers()
    torch.manual_seed(0)
    rss_start = current_rss_bytes()
    load_s, adapter = timed(lambda: load(kind, variant))
    rss_loaded = current_rss_bytes()
    peak_loaded = peak_rss_bytes()
    walls, cpus = [], []
    for _ in range(repeats):  # the first run sets the peak; min wall time resists other load on the host
        cpu0 = time.process_time()
        wall, facts = timed(lambda: run_variant(adapter, variant, max_new_tokens))
        walls.append(wall)
        cpus.append(time.process_time() - cpu0)
    emit_child_result(
        {
            "kind": kind,
            "variant": variant,
            "load_s": load_s,
            "run_s": min(walls),
            "walls": walls,
            "cpu_s": cpus[walls.index(min(walls))],
            "loadavg": os.getloadavg()[0],
            "rss_start": rss_start,
            "rss_loaded": rss_loaded,
            "peak_loaded": peak_loaded,
            "peak": peak_rss_bytes(),
            "layers": adapter.n_layers,
            "heads": adapter.n_heads,
            "threads": torch.get_num_threads(),
            **facts,
        }
    )


PAIRED = ("generate-sdpa", "extract-text")


def paired_main(kind: str, max_new_tokens: int, rounds: int, threads: int) -> None:
    """Time PAIRED variants interleaved in one process (A B C A B C ...): drifting load on the host
    hits all of them alike, so the ratios are steadier than across separate processes.

    With 1 thread, process CPU time is the variant's compute work, nearly independent of other load
    (with 2 threads, OpenMP threads spin while waiting for a descheduled partner, inflating it).
    """
    import torch

    from attnstore.quiet import quiet_transformers

    quiet_transformers()
    torch.set_num_threads(threads)
    adapters = {"plain": load(kind, "generate-sdpa"), "capture": load(kind, "extract-text")}
    walls: dict[str, list[float]] = {v: [] for v in PAIRED}
    cpus: dict[str, list[float]] = {v: [] for v in PAIRED}
    for _ in range(rounds):
        for variant in PAIRED:
            adapter = adapters["plain" if variant == "generate-sdpa" else "capture"]
            cpu0 = time.process_time()
            wall, _ = timed(lambda adapter=adapter, variant=variant: run_variant(adapter, variant, max_new_tokens))
            walls[variant].append(wall)
            cpus[variant].append(time.process_time() - cpu0)
    result = {"kind": kind, "walls": walls, "cpus": cpus, "threads": threads, "loadavg": os.getloadavg()[0]}
    emit_child_result(result)


def batch_main(kind: str, max_new_tokens: int, rounds: int) -> None:
    """BATCH images in one generate vs one at a time, interleaved; same pictures, same answers budget."""
    from attnstore.extraction.extract import extract, extract_batch
    from attnstore.quiet import quiet_transformers

    quiet_transformers()
    adapter = load(kind, "extract-text")
    images = [photo_like_image(640, 480, seed=i) for i in range(BATCH)]
    prompts = [PROMPT] * BATCH
    walls = {"batch": [], "single": []}
    for _ in range(rounds):
        walls["batch"].append(timed(lambda: extract_batch(adapter, images, prompts, max_new_tokens=max_new_tokens))[0])
        one_by_one = lambda: [extract(adapter, im, PROMPT, max_new_tokens=max_new_tokens) for im in images]  # noqa: E731
        walls["single"].append(timed(one_by_one)[0])
    emit_child_result({"kind": kind, "walls": walls, "loadavg": os.getloadavg()[0], "peak": peak_rss_bytes()})


def report_batch(result: dict, max_new_tokens: int) -> None:
    rows = []
    base = min(result["walls"]["single"])
    for name, walls in result["walls"].items():
        label = f"{BATCH} images in one generate" if name == "batch" else f"{BATCH} x one image"
        rows.append([label, f"{min(walls):.2f}", f"{BATCH / min(walls):.2f}", f"{base / min(walls):.2f}x"])
    print_table(
        f"Batch vs one at a time — {result['kind']}, max_new_tokens {max_new_tokens}, {BATCH} photos (3 x 4 tiles)",
        ["run", "min wall s", "images/s", "speed-up"],
        rows,
        caption=f"interleaved rounds in one process; host load {result['loadavg']:.1f}; "
        f"peak RSS {mb(result['peak'])} MB",
    )


def report_paired(results: list[dict], rounds: int) -> None:
    rows = []
    for result in results:
        walls, cpus = result["walls"], result["cpus"]
        base_wall, base_cpu = min(walls[BASELINE]), min(cpus[BASELINE])
        for v in PAIRED:
            rows.append(
                [
                    v,
                    result["threads"],
                    f"{min(walls[v]):.2f}",
                    f"{float(np.median(walls[v])):.2f}",
                    f"{min(walls[v]) / base_wall:.2f}x",
                    f"{min(cpus[v]):.2f}",
                    f"{min(cpus[v]) / base_cpu:.2f}x",
                    " ".join(f"{x:.1f}" for x in walls[v]),
                    f"{result['loadavg']:.1f}",
                ]
            )
    print_table(
        f"Interleaved timing in one process — {results[0]['kind']}, {rounds} rounds per thread count",
        [
            "variant",
            "threads",
            "min wall s",
            "median wall s",
            "x base",
            "min cpu s",
            "x base",
            "all walls s",
            "host load",
        ],
        rows,
        caption=f"base = {BASELINE}. With 1 thread the cpu s column is the compute work, steady under other load.",
    )


# -- parent: run every variant, print tables -----------------------------------------------------
def report(kind: str, results: list[dict], max_new_tokens: int) -> None:
    base = next((r for r in results if r["variant"] == BASELINE), results[0])
    rows = []
    for r in results:
        rows.append(
            [
                r["variant"],
                f"{r['run_s']:.1f}",
                f"{r['run_s'] / base['run_s']:.2f}x",
                f"{r['cpu_s']:.1f}",
                f"{r['loadavg']:.1f}",
                mb(r["peak"]),
                f"{r['peak'] / base['peak']:.2f}x",
                f"{(r['peak'] - base['peak']) / 1e6:+,.0f}",
                f"{r['load_s']:.1f}",
                r["seq"],
                r["n_query"] or "-",
            ]
        )
    r0 = results[0]
    seq = base["seq"]
    square = npy_bytes((r0["layers"], r0["heads"], seq, seq)) - npy_bytes((0,))
    print_table(
        f"Extraction vs plain generate — {kind} ({r0['layers']} layers x {r0['heads']} heads), "
        f"max_new_tokens {max_new_tokens}, torch threads {r0['threads']}",
        [
            "variant",
            "wall s",
            "x base",
            "cpu s",
            "host load",
            "peak RSS MB",
            "x base",
            "+MB",
            "model load s",
            "seq",
            "query rows",
        ],
        rows,
        caption=f"base = {BASELINE}. A full fp32 attention [layer, head, seq, seq] at seq {seq} would be "
        f"{mb(square)} MB; capture never builds it (kept rows only, in chunks). "
        "wall s excludes model loading (min over repeats); cpu s = process CPU time of that run; "
        "host load = 1-min load average when the child finished (other work on the machine slows wall time); "
        "peak RSS covers the whole child process (Python, torch, weights); +MB = peak minus the base's peak.",
    )


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="32 answer tokens, fewer variants, no real-size vision")
    p.add_argument("--max-new-tokens", type=int, nargs="+", default=None, help="answer budgets (default 32 256)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per variant (default 2, quick 1)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds, real-text (default 3, quick 0)")
    p.add_argument("--batch-rounds", type=int, default=2, help="rounds of the batch comparison (0 = skip)")
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--no-real-vision", action="store_true", help="skip the real-size vision tower run")
    p.add_argument("--tiny", action="store_true", help="also run the tiny test model (for reference)")
    p.add_argument("--only-vision", action="store_true", help="only the real-size vision tower run")
    p.add_argument("--child", nargs=2, metavar=("KIND", "VARIANT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.max_new_tokens = args.max_new_tokens or ([32] if args.quick else [32, 256])
    args.repeats = args.repeats or (1 if args.quick else 2)
    args.rounds = (0 if args.quick else 3) if args.rounds is None else args.rounds
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        kind, variant = args.child
        budget = args.max_new_tokens[0]
        if variant == "paired":
            paired_main(kind, budget, args.rounds, args.threads)
        elif variant == "batch":
            batch_main(kind, budget, args.batch_rounds)
        else:
            child_main(kind, variant, budget, args.repeats)
        return
    start = time.perf_counter()
    print(f"  {host_load()}", flush=True)
    plan = [("real-text", VARIANTS)] + ([("tiny", VARIANTS)] if args.tiny else [])
    if not (args.quick or args.no_real_vision):
        plan.append(("real-vision", VISION_VARIANTS))
    if args.only_vision:
        plan = [("real-vision", VISION_VARIANTS)]
    for budget in args.max_new_tokens:
        tokens = ["--max-new-tokens", str(budget)]
        for kind, variants in plan:
            model_dir(kind)  # build (and cache) before timing anything
            results = []
            for variant in variants:
                print(f"  {time.strftime('%H:%M:%S')} {kind} {variant} {budget} tokens ...", flush=True)
                repeats = 1 if kind == "real-vision" else args.repeats
                flags = ["--child", kind, variant, *tokens, "--repeats", str(repeats)]
                results.append(run_child(Path(__file__), flags, timeout=3600))
            report(kind, results, budget)
            if kind == "real-text" and args.rounds:
                paired = []
                for threads in (1, 2):
                    print(f"  {time.strftime('%H:%M:%S')} {kind} interleaved, {threads} thread(s) ...", flush=True)
                    flags = [
                        "--child",
                        kind,
                        "paired",
                        *tokens,
                        "--rounds",
                        str(args.rounds),
                        "--threads",
                        str(threads),
                    ]
                    paired.append(run_child(Path(__file__), flags, timeout=3600))
                report_paired(paired, args.rounds)
        if args.batch_rounds and budget == args.max_new_tokens[0] and not args.only_vision:
            print(f"  {time.strftime('%H:%M:%S')} real-text batch of {BATCH} ...", flush=True)
            flags = ["--child", "real-text", "batch", *tokens, "--batch-rounds", str(args.batch_rounds)]
            report_batch(run_child(Path(__file__), flags, timeout=3600), budget)
    print(f"total {time.perf_counter() - start:.0f} s; at the end: {host_load()}")


if __name__ == "__main__":
    sys.exit(main())
