"""Seed-compatible wrapper: check data before exploring it.

    python scripts/test_data.py [PATH]

PATH is a store (runs `attnstore validate`: schema, shapes, geometry, row sums, causality) or a
seed folder / batch root (checks decoded_tokens.npy, the attention files' shapes and the image,
from headers, like the seed's test_data.py). Default: the current folder.
"""

import sys
from pathlib import Path

from attnstore.cli import main
from attnstore.errors import AttnstoreError
from attnstore.legacy import find_sources, is_legacy_folder

path = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
if not (is_legacy_folder(path) or (path.is_dir() and any(map(is_legacy_folder, path.iterdir())))):
    sys.exit(main(["validate", str(path)]))
try:
    for src in find_sources(path):
        print(f"{src.folder}: {src.format}, {src.n_key} tokens, {src.n_layers} layers x {src.n_heads} heads, "
              f"rows {src.first_row}-{src.n_att - 1}, image {src.image.name}: ok")  # fmt: skip
except AttnstoreError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(1)
