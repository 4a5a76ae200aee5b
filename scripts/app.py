"""Seed-compatible wrapper: the explorer (was: a Flask app on http://localhost:5001).

    python scripts/app.py STORE [--port 5001]       # same as `attnstore serve STORE`
    python scripts/app.py                           # in a seed folder: imports it, then serves

With no STORE in a folder holding the seed's files (decoded_tokens.npy + attention_array.npy
or attentions_5/ + image.png), they are imported once into ./attnstore_import.zarr.
"""

import sys
from pathlib import Path

from attnstore.cli import main
from attnstore.legacy import is_legacy_folder

args = sys.argv[1:]
if not args or args[0].startswith("-"):
    store = Path("attnstore_import.zarr")
    if not store.exists() and is_legacy_folder(Path(".")):
        code = main(["import-legacy", ".", "--out", str(store)])
        if code:
            sys.exit(code)
    args = [str(store), *args]
sys.exit(main(["serve", *args]))
