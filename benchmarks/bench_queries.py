"""Store size by `--queries` mode: which attention rows an extraction keeps.

  text        prompt text, chat specials and answer rows (the default)
  text+image  those plus the image patch tokens' rows (where a patch looks: the explorer's patch query)
  all         every row (image markers such as <fake_token_around_image> and <row_r_col_c> too)

The same images and prompt go through the same model once per mode (`run_extraction`); the table
prints the stored rows per image and the bytes of the attention array and of the whole store.
Model: the tiny random-weight Idefics3 (`--model tiny`, the tests' and the demo's) or the one with
SmolVLM-256M's text dims (`--model real-text`, 30 layers x 9 heads; slower).

Usage:  python benchmarks/bench_queries.py [--model tiny|real-text] [--images N] [--max-new-tokens N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from common import dir_bytes, mb, model_dir, photo_like_image, print_table

MODES = ("text", "text+image", "all")


def measure(adapter, paths: list[Path], out: Path, mode: str, max_new_tokens: int) -> list[object]:
    """One store for `mode`: [mode, rows per image, attention MB, store MB, x text]."""
    from attnstore.extraction.pipeline import run_extraction
    from attnstore.store import open_dataset

    run_extraction(adapter, paths, "Can you describe this image?", str(out), queries=mode,
                   max_new_tokens=max_new_tokens, show_progress=False)  # fmt: skip
    rows = np.asarray(open_dataset(str(out))["n_query"].values)
    return [mode, int(rows.mean()), dir_bytes(out / "attention"), dir_bytes(out)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "real-text"), default="tiny")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    from attnstore.models import load_adapter

    adapter = load_adapter(str(model_dir(args.model)))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = []
        for i in range(args.images):
            paths.append(root / f"photo{i}.png")
            photo_like_image(640, 480, seed=i).save(paths[-1])
        results = [measure(adapter, paths, root / f"{m.replace('+', '_')}.zarr", m, args.max_new_tokens) for m in MODES]
    text_bytes = results[0][2]
    table = [[m, rows, mb(att / args.images), mb(total / args.images), f"{att / text_bytes:.2f}"]
             for m, rows, att, total in results]  # fmt: skip
    print_table(
        f"store size by --queries ({args.model} model, {adapter.n_layers} layers x {adapter.n_heads} heads, "
        f"{args.images} 640x480 images, max_new_tokens={args.max_new_tokens})",
        ["queries", "rows/image", "attention MB/image", "store MB/image", "attention x text"],
        table,
    )


if __name__ == "__main__":
    main()
