"""Attention codecs by measurement (issue 23): size of one image per codec against the order-0 entropy
and the seed's own `np.savez_compressed`, decode speed, the codec `auto` picks, and the size / error
trade-off of the lossy modes (`--keep-bits`, `--map-error`), on three sources:

  synthetic   `attnstore.extraction.synthetic.synthetic_attention`: peaky heads and a sink (dense: no zeros),
              30 layers x 9 heads, a 3 x 4-tile picture;
  demo        the trained demo model (`attnstore/data/demo_model`) on the demo's held-out scenes
              (what `attnstore demo` stores; a tiny model: its own layers, heads and keys);
  seed-style  `attnstore.extraction.synthetic.seed_style_attention`: the seed viewer's published SmolVLM-256M data's
              statistics (~94 % exact zeros after rounding, a sink at position 0, ~17 non-zero image keys per row),
              rounded to 3 decimals as seed 004 stores it; 30 x 9, 263 text rows x ~1,125 keys.

Every inner chunk (one query row of every layer and head, padded to the key count) is encoded on
its own, as the store's sharding codec does; sizes include the 4-byte crc32c per chunk. "auto" is
`attnstore.store.codecs.choose` on the same rows (what a new store picks). Then one real store is
written with auto and with the old default to check the estimate against the bytes on disk.

Usage:  python benchmarks/bench_codecs.py [--source synthetic|demo|seed|all] [--answer 250]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from common import dir_bytes, host_load, print_table
from PIL import Image

from attnstore.records import Extraction
from attnstore.store import codecs as C
from attnstore.store.writer import stored_values

KEEP_BITS = (7, 5, 3)
MAP_ERRORS = (0.002, 0.01, 0.05)


def entropy_mb(values: np.ndarray) -> float:
    """Order-0 empirical entropy of the fp16 values, MB for all of them."""
    _, counts = np.unique(values.view(np.uint16), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum()) * values.size / 8 / 1e6


def npz_mb(values: np.ndarray) -> float:
    buf = io.BytesIO()
    np.savez_compressed(buf, attention=values)
    return len(buf.getvalue()) / 1e6


def every_row(attention: np.ndarray) -> list[np.ndarray]:
    return C.sample_rows(attention, attention.shape[3], n_rows=attention.shape[2])


def codec_table(name: str, ex: Extraction) -> None:
    a = ex.attention  # [layer, head, query, key] float16
    zeros = float((a == 0).mean())
    note(f"[{name}] {a.shape}, {a.nbytes / 1e6:.1f} MB fp16, {100 * zeros:.1f} % zeros, grid {C.grid_decimals(a)}")
    chunks = every_row(a)
    with C._one_blosc_thread():
        figures = {p.name: C.measure(p, chunks, a.shape[2]) for p in C.candidates(C.grid_decimals(a))}
    auto = C.choose(a, a.shape[3])["name"]
    ent, npz = entropy_mb(a), npz_mb(a)
    rows = []
    for codec, f in sorted(figures.items(), key=lambda kv: kv[1]["bytes"]):
        mb = f["bytes"] / 1e6
        label = codec + (" (auto)" if codec == auto else "") + (" (old default)" if codec == C.DEFAULT_CODEC else "")
        speed = [f"{f['decode_gbps']:.2f}", f"{f['row_ms']:.3f}"]
        rows.append([label, f"{mb:.4g}", f"{mb / ent:.2f}", f"{mb / npz:.2f}", *speed])
    rows += [["order-0 entropy of the values", f"{ent:.4g}", "1.00", f"{ent / npz:.2f}", "", ""],
             ["np.savez_compressed (the seed's)", f"{npz:.4g}", f"{npz / ent:.2f}", "1.00", "", ""]]  # fmt: skip
    columns = ["coding", "MB", "x entropy", "x npz", "decode GB/s (1 thread)", "row ms"]
    print_table(f"One image, lossless — {name}", columns, rows)
    print_store_check(name, ex)


def print_store_check(name: str, ex: Extraction) -> None:
    """Bytes on disk of the attention array of a one-image store: auto vs the old default."""
    from attnstore.store import AttnStore, StoreShape

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for request in (C.AUTO, C.DEFAULT_CODEC):
            path = Path(tmp) / f"{request}.zarr"
            shape = StoreShape(*ex.attention.shape[:2], ex.n_query, ex.n_key)
            store = AttnStore.create(str(path), shape, {"model_id": "bench", "codec": request}, first=ex)
            (index,) = store.allocate(["a"], ["a"])
            start = time.perf_counter()
            store.write_image(index, ex, Image.new("RGB", (64, 48)))
            seconds = time.perf_counter() - start
            codec = dict(store.group.attrs)[C.CODEC_ATTR]["name"]
            rows.append([request, codec, f"{dir_bytes(path / 'attention') / 1e6:.2f}", f"{seconds:.2f}"])
    print_table(f"Store on disk (attention array) — {name}", ["--codec", "codec", "MB on disk", "write s"], rows)


def tradeoff_table(name: str, ex: Extraction) -> None:
    """Size (auto codec) and map error of each lossy setting."""
    from attnstore.analysis.fidelity import image_dataset, map_errors

    original = image_dataset(ex.attention, ex.layout.kind, ex.query_position)
    settings = [("lossless", {})] + [(f"keep_bits {k}", {"keep_bits": k}) for k in KEEP_BITS]
    settings += [(f"map_error {e}", {"map_error": e}) for e in MAP_ERRORS]
    rows = []
    for label, attrs in settings:
        stored = stored_values(ex, {"keep_bits": 10, **attrs})
        choice = C.choose(stored, stored.shape[3])
        mb = choice["candidates"][choice["name"]]["bytes"] / 1e6
        err = map_errors(original, original.assign(attention=(original["attention"].dims, stored)))
        methods = ("head", "mean", "max", "entropy_topk", "rollout")
        worst = [max(err[f"{n}/{m}"] for n in ("raw", "image", "no_sinks")) for m in methods]
        rows.append([label, choice["name"], f"{mb:.4g}"] + [f"{100 * w:.3f} %" for w in worst])
    print_table(
        f"Lossy modes: size and map error — {name}",
        ["setting", "auto codec", "MB/image", "single head", "mean", "max", "entropy_topk", "rollout"],
        rows,
        caption="error = worst |lossy map - lossless map| / lossless map max over image keys, worst of the raw, "
        "image and no_sinks normalisations, on 6 rows spread over the image (attnstore.analysis.fidelity).",
    )


# -- sources ---------------------------------------------------------------------------------------
def synthetic_source(answer: int) -> Extraction:
    from attnstore.extraction.synthetic import synthetic_extraction

    return synthetic_extraction((3, 4), answer, np.random.default_rng(0), n_layers=30, n_heads=9)


def seed_source(answer: int) -> Extraction:
    from attnstore.extraction.synthetic import seed_style_extraction

    return seed_style_extraction((3, 4), answer, np.random.default_rng(0))


def demo_sources(n_scenes: int = 2) -> list[Extraction]:
    """The trained demo model's attention on the demo's first held-out scenes."""
    from attnstore.extraction.demo import DEMO_ANSWER_TOKENS, cache_dir, demo_scene_items, trained_model_dir
    from attnstore.extraction.extract import extract
    from attnstore.inputs.images import load_image
    from attnstore.models import load_adapter

    adapter = load_adapter(str(trained_model_dir()))
    items = demo_scene_items(cache_dir() / "bench-codecs-scenes", n_scenes)
    return [extract(adapter, load_image(it.path), it.prompt, max_new_tokens=DEMO_ANSWER_TOKENS) for it in items]


def note(text: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {text}", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=("synthetic", "demo", "seed", "all"), default="all")
    p.add_argument("--answer", type=int, default=250, help="answer tokens (250: 263 text rows, as the issue's data)")
    p.add_argument("--no-tradeoff", action="store_true", help="skip the lossy-mode table")
    args = p.parse_args(argv)
    note(host_load())
    sources = []
    if args.source in ("seed", "all"):
        sources.append(("seed-style rounded (SmolVLM-256M statistics)", seed_source(args.answer)))
    if args.source in ("synthetic", "all"):
        sources.append(("synthetic peaky", synthetic_source(min(args.answer, 80))))
    if args.source in ("demo", "all"):
        sources += [(f"trained demo model, scene {i}", ex) for i, ex in enumerate(demo_sources())]
    for name, ex in sources:
        codec_table(name, ex)
        if not args.no_tradeoff:
            tradeoff_table(name, ex)
    note(host_load())


if __name__ == "__main__":
    main()
