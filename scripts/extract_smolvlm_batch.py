"""Seed-compatible wrapper: extract a folder of images into one store (was: one npy folder per image).

    python scripts/extract_smolvlm_batch.py --image-dir ../COCO/val2014 --output-root smol_outputs \
        --prompt "Can you describe this image?" --model-id HuggingFaceTB/SmolVLM-Instruct-256M --device cpu --limit 0

Writes <output-root>/attention.zarr (or --output-root itself if it ends in .zarr); reruns skip
images already complete. Same as `attnstore extract --image-dir DIR --out STORE --limit N`.
"""

import argparse
import sys
from pathlib import Path

from attnstore.cli import main

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--image-dir", required=True)
parser.add_argument("--output-root", default="smol_outputs")
parser.add_argument("--prompt", default="Can you describe this image?")
parser.add_argument("--model-id", default="HuggingFaceTB/SmolVLM-256M-Instruct")
parser.add_argument("--device", default="cpu")
parser.add_argument("--limit", default="0", help="At most N images (0 = all).")
parser.add_argument("--max-new-tokens", default="32")
args = parser.parse_args()
root = Path(args.output_root)
store = str(root if root.suffix == ".zarr" else root / "attention.zarr")
if root.suffix != ".zarr":
    root.mkdir(parents=True, exist_ok=True)
sys.exit(
    main(
        ["extract", "--image-dir", args.image_dir, "--out", store, "--prompt", args.prompt, "--model", args.model_id,
         "--device", args.device, "--limit", args.limit, "--max-new-tokens", args.max_new_tokens]
    )  # fmt: skip
)
