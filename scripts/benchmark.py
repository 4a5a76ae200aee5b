"""Seed-compatible wrapper: the POPE benchmark (same as `attnstore pope ...`).

    python scripts/benchmark.py --question-file pope.jsonl --image-folder ../COCO/val2014 \
        --model-id HuggingFaceTB/SmolVLM-Instruct-256M --out pope.zarr
"""

import sys

from attnstore.cli import main

sys.exit(main(["pope", *sys.argv[1:]]))
