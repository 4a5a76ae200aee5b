"""Seed-compatible wrapper: one token's entropy-weighted top-k heatmap + overlay PNG.

    python scripts/compute_token_heatmap.py --token jacket --decoded-tokens decoded_tokens.npy \
        --attn-dir attentions_5 --layers 0-29 --topk 10 --output token_heatmap.png \
        --overlay token_heatmap_overlay.png --overlay-alpha 0.5

On seed files (decoded_tokens.npy + attentions_5/ + image.png) the folder is imported into a
temporary store first (`attnstore import-legacy`); with --store STORE it reads the store directly.
Like the seed, top-k ranks the stitched tile grid (24x32 for 3x4 tiles); the grid comes from
the tokens' tile markers (or --grid ROWSxCOLS when there are none).
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

from attnstore.cli import main

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--token", default="jacket")
parser.add_argument("--decoded-tokens", default="decoded_tokens.npy")
parser.add_argument("--attn-dir", default="attentions_5")
parser.add_argument("--image-file", default=None, help="Default: image.png beside decoded_tokens.npy.")
parser.add_argument("--store", default=None, help="Read this store instead of seed files.")
parser.add_argument("--image", default="0", help="Image index or name in --store.")
parser.add_argument("--grid", default=None, help="ROWSxCOLS when the tokens carry no tile markers.")
parser.add_argument("--layers", default="0-29")
parser.add_argument("--topk", default="10")
parser.add_argument("--method", default="entropy_topk")
parser.add_argument("--output", default="token_heatmap.png")
parser.add_argument("--overlay", default="token_heatmap_overlay.png")
parser.add_argument("--overlay-alpha", default="0.5")
args = parser.parse_args()
heatmap = ["--token", args.token, "--layers", args.layers, "--topk", args.topk, "--method", args.method,
           "--image-keys", "tiles", "--output", args.output, "--overlay", args.overlay,
           "--overlay-alpha", args.overlay_alpha]  # fmt: skip
if args.store:
    sys.exit(main(["heatmap", args.store, "--image", args.image, *heatmap]))
with tempfile.TemporaryDirectory() as tmp:
    folder = Path(tmp) / "seed"  # the seed files, linked into one folder as import-legacy expects
    folder.mkdir()
    tokens = Path(args.decoded_tokens).resolve()
    image = Path(args.image_file or tokens.parent / "image.png").resolve()
    os.symlink(tokens, folder / "decoded_tokens.npy")
    os.symlink(Path(args.attn_dir).resolve(), folder / "attentions_5")
    if image.is_file():
        os.symlink(image, folder / "image.png")
    store = str(Path(tmp) / "store.zarr")
    grid = ["--grid", args.grid] if args.grid else []
    code = main(["import-legacy", str(folder), "--out", store, "--no-progress", *grid])
    sys.exit(code or main(["heatmap", store, *heatmap]))
