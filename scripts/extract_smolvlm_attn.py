"""Seed-compatible wrapper: extract one image's attention into a store (was: npy files in --output-dir).

    python scripts/extract_smolvlm_attn.py --image image.png --output-dir . \
        --prompt "Can you describe this image?" --model-id HuggingFaceTB/SmolVLM-Instruct-256M --device cpu

Writes <output-dir>/attention.zarr (same as `attnstore extract IMAGE --out ...`); with
--legacy-files it also writes the seed's decoded_tokens.npy / attention_array.npy / attentions_5/.
"""

import argparse
import sys
from pathlib import Path

from attnstore.cli import main

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--image", default="image.png")
parser.add_argument("--output-dir", default=".")
parser.add_argument("--prompt", default="Can you describe this image?")
parser.add_argument("--model-id", default="HuggingFaceTB/SmolVLM-256M-Instruct")
parser.add_argument("--device", default="cpu")
parser.add_argument("--max-new-tokens", default="32")
parser.add_argument("--legacy-files", action="store_true", help="Also write the seed's npy/npz files.")
args = parser.parse_args()
store = str(Path(args.output_dir) / "attention.zarr")
common = ["--prompt", args.prompt, "--model", args.model_id, "--device", args.device, "--out", store]
code = main(["extract", args.image, *common, "--max-new-tokens", args.max_new_tokens])
if code == 0 and args.legacy_files:
    code = main(["export-legacy", store, "--image", Path(args.image).name, "--out", args.output_dir])
sys.exit(code)
