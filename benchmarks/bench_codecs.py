"""Attention codecs by measurement: bits per stored value vs the entropy bound, speed, and the error
a user sees on a drawn map, for each keep_bits setting (standard zarr v3 codecs only).

Sources (text rows, real SmolVLM text dims: 30 layers x 9 heads, a 3 x 4-tile picture):
  synthetic  `attnstore.synthetic.synthetic_attention`: peaky heads and a sink, realistic shape;
  model      the random-weight real-text-dims Idefics3 on a photo-like picture (nearly uniform rows).
Compared (each inner chunk encoded on its own, as the store's sharding codec does):
  codec      blosc zstd levels 1 / 3 / 5 / 9 x byte or bit shuffle, plain zstd 3 (zarr's ZstdCodec);
  layout     inner chunk = one query row of every layer and head (the store's: one click, one chunk),
             one head's map of every row, or one layer.
Reported per keep_bits: bits per stored value next to the empirical (order-0) entropy of the same
rounded fp16 values, encode/decode speed, and the rounding error against the maximum of every map
a user can draw: one (layer, head, query) over image keys (sinks kept), and the same without the
sink keys (`attnstore.analysis.sink_keys`), never against the row maximum a sink dominates.

Usage:  python benchmarks/bench_codecs.py [--max-new-tokens 32] [--source synthetic|model|both]
"""

from __future__ import annotations

import argparse
import time

import numcodecs
import numpy as np
from common import PROMPT, host_load, model_dir, photo_like_image, print_table, timed

from attnstore.records import Extraction
from attnstore.schema import IMAGE_PATCH_KINDS, kind_mask
from attnstore.store.writer import round_mantissa

KEEP_BITS = (10, 7, 5, 3)
CODECS = {
    **{
        f"blosc zstd-{level} {name}": numcodecs.Blosc(cname="zstd", clevel=level, shuffle=shuffle)
        for level in (1, 3, 5, 9)
        for name, shuffle in (("byte", numcodecs.Blosc.SHUFFLE), ("bit", numcodecs.Blosc.BITSHUFFLE))
    },
    "zstd-3 (no shuffle)": numcodecs.Zstd(level=3),
}
DEFAULT_CODEC = "blosc zstd-1 bit"
LAYOUTS = {  # inner chunk of one image's [layer, head, query, key]
    "row (L, H, 1, K)": lambda a: (a[:, :, q] for q in range(a.shape[2])),
    "head map (1, 1, Q, K)": lambda a: (a[layer, head] for layer in range(a.shape[0]) for head in range(a.shape[1])),
    "layer (1, H, Q, K)": lambda a: (a[layer] for layer in range(a.shape[0])),
}
DEFAULT_LAYOUT = "row (L, H, 1, K)"


def entropy_bits(values: np.ndarray) -> float:
    """Order-0 empirical entropy of the fp16 bit patterns, bits per value."""
    _, counts = np.unique(values.view(np.uint16), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def encoded(codec, attention: np.ndarray, layout: str) -> dict:
    """Bits per value and MB/s of encoding, then decoding, every inner chunk of `layout`."""
    chunks = [np.ascontiguousarray(c) for c in LAYOUTS[layout](attention)]
    seconds, blobs = timed(lambda: [codec.encode(c) for c in chunks])
    decode_s, _ = timed(lambda: [codec.decode(b) for b in blobs])
    n_bytes = sum(len(b) for b in blobs)
    return {
        "bits": 8 * n_bytes / attention.size,
        "mb": n_bytes / 1e6,
        "enc": attention.nbytes / seconds / 1e6,
        "dec": attention.nbytes / decode_s / 1e6,
    }


def map_errors(original: np.ndarray, stored: np.ndarray, image_keys: np.ndarray, sinks: np.ndarray) -> dict:
    """Largest |stored - original| as a fraction of each drawn map's maximum.

    A map is one (layer, head, query) over the image keys; "no sinks" drops the sink keys first.
    original, stored # [layer, head, query, key] float16.
    """
    out = {}
    for name, keys in (("image keys", image_keys), ("no sinks", image_keys[~np.isin(image_keys, sinks)])):
        o = original[..., keys].astype(np.float32)
        s = stored[..., keys].astype(np.float32)
        top = o.max(-1)  # [layer, head, query]
        drawn = top > 0
        err = np.abs(s - o).max(-1)[drawn] / top[drawn]
        out[name] = (float(err.max()), float(np.percentile(err, 99)))
    return out


def sink_positions(full, image_keys: np.ndarray) -> np.ndarray:
    """The keys `attnstore.analysis.sink_keys` calls sinks for this image (what the explorer drops)."""
    import xarray as xr

    from attnstore.analysis import sink_keys

    img = xr.Dataset({"token_kind": ("key", full.layout.kind)})
    weights = xr.DataArray(full.attention, dims=("layer", "head", "query", "key"))
    return np.flatnonzero(sink_keys(weights, img).values)


def model_rows(max_new_tokens: int) -> Extraction:
    """Text rows of the random-weight real-text-dims model on the benchmark photo."""
    from attnstore.extract import extract
    from attnstore.models import load_adapter

    adapter = load_adapter(str(model_dir("real-text")))
    return extract(adapter, photo_like_image(640, 480, seed=0), PROMPT, max_new_tokens=max_new_tokens)


def synthetic_rows(like: Extraction, seed: int = 0) -> Extraction:
    """Synthetic attention on the same token layout and text rows as `like`."""
    from attnstore.synthetic import synthetic_attention

    image_keys = np.flatnonzero(like.layout.patch_tile >= 0)
    rng = np.random.default_rng(seed)
    L, H = like.attention.shape[:2]
    layers = [synthetic_attention(1, H, like.query_position, like.n_key, image_keys, rng) for _ in range(L)]
    return Extraction(**{**like.__dict__, "attention": np.concatenate(layers)})


def study(name: str, rows_only: Extraction) -> None:
    attention = rows_only.attention  # [layer, head, query, key] float16
    image_keys = np.flatnonzero(kind_mask(rows_only.layout.kind, IMAGE_PATCH_KINDS))
    sinks = sink_positions(rows_only, image_keys)
    note(f"[{name}] {attention.shape} text rows, {attention.nbytes / 1e6:.0f} MB fp16; sinks at keys {sinks.tolist()}")
    codec_rows, layout_rows, error_rows = [], [], []
    for keep in KEEP_BITS:
        stored = round_mantissa(attention, keep)
        bound = entropy_bits(stored)
        for codec_name, codec in CODECS.items():
            r = encoded(codec, stored, DEFAULT_LAYOUT)
            codec_rows.append(
                [keep, codec_name, f"{r['bits']:.2f}", f"{bound:.2f}", f"{r['bits'] / bound:.2f}", f"{r['mb']:.1f}"]
                + [f"{r['enc']:.0f}", f"{r['dec']:.0f}"]
            )
        for layout in LAYOUTS:
            r = encoded(CODECS[DEFAULT_CODEC], stored, layout)
            layout_rows.append([keep, layout, f"{r['bits']:.2f}", f"{r['bits'] / bound:.2f}", f"{r['dec']:.0f}"])
        errors = map_errors(attention, stored, image_keys, sinks)
        error_rows.append(
            [keep, f"{100 * 2.0 ** -(keep + 1) if keep < 10 else 0:.3f} %"]
            + [f"{100 * v:.3f} %" for pair in errors.values() for v in pair]
        )
    print_table(
        f"Codecs (inner chunk {DEFAULT_LAYOUT}) — {name}",
        ["keep_bits", "codec", "bits/value", "entropy", "x entropy", "MB/image", "encode MB/s", "decode MB/s"],
        codec_rows,
        caption="entropy = order-0 empirical entropy of the rounded fp16 values (bits/value); "
        "MB/s of fp16 bytes, one thread.",
    )
    print_table(
        f"Inner chunk layout ({DEFAULT_CODEC}) — {name}",
        ["keep_bits", "layout", "bits/value", "x entropy", "decode MB/s"],
        layout_rows,
    )
    print_table(
        f"Rounding error vs each drawn map's maximum — {name}",
        ["keep_bits", "bound 2^-(k+1)", "image keys max", "p99", "no sinks max", "p99"],
        error_rows,
        caption="map = one (layer, head, query) over image keys; error = max |stored - lossless| / map max.",
    )


def note(text: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {text}", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--source", choices=("synthetic", "model", "both"), default="both")
    args = p.parse_args(argv)
    numcodecs.blosc.set_nthreads(1)
    note(host_load())
    model = model_rows(args.max_new_tokens)
    if args.source in ("synthetic", "both"):
        study("synthetic (peaky heads, sink)", synthetic_rows(model))
    if args.source in ("model", "both"):
        study("model (random weights)", model)
    note(host_load())


if __name__ == "__main__":
    main()
