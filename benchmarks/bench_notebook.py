"""The quick-start notebook's run time (goal <= ~60 s on 2 cores), and one `ds.attn.show` figure.

    .venv/bin/python benchmarks/bench_notebook.py [--repeats 5]

(1) docs/notebooks/quickstart.ipynb executed by nbclient in a fresh kernel, as the suite does
    (kernel start, synthetic store, every figure, the explorer started and stopped).
(2) `ds.attn.show(token, image, layer, head)` on an open store: p50 over `--repeats` calls (the
    first call's plotly import reported apart).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "notebooks" / "quickstart.ipynb"


def run_notebook() -> float:
    import nbclient
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        nbclient.NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": folder}}
        ).execute()
    return time.perf_counter() - start


def time_show(repeats: int) -> tuple[float, float]:
    import attnstore
    from attnstore.extraction.synthetic import make_synthetic_store

    with tempfile.TemporaryDirectory() as folder:
        ds = attnstore.open_dataset(make_synthetic_store(folder + "/s.zarr", n_images=2))
        start = time.perf_counter()
        ds.attn.show("dog", image=0, layer=1, head=0)
        first = time.perf_counter() - start
        times = []
        for head in range(repeats):
            start = time.perf_counter()
            ds.attn.show("dog", image=0, layer=1, head=head % ds.sizes["head"], scale="shared")
            times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"quickstart.ipynb (nbclient, fresh kernel): {run_notebook():.1f} s")
    first, p50 = time_show(args.repeats)
    print(f"ds.attn.show: first call {first * 1e3:.0f} ms (plotly import), then p50 {p50 * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
