"""Start-up CPU of `attnstore info STORE` against the yardstick `python -c "import xarray, zarr"`.

Goal (issue 21): `info` costs <= 1.5x the CPU of importing xarray and zarr. The two commands run in
turn in fresh processes (A B A B ...) and the ratio is taken pair by pair, so a machine whose speed
drifts (another job starting) moves both sides of a pair alike. CPU is user + system seconds of the
finished child (`os.wait4`), not wall time: on a loaded machine wall time measures the other jobs.

    .venv/bin/python benchmarks/bench_startup.py            # 9 pairs (~30 s)
    .venv/bin/python benchmarks/bench_startup.py --quick    # 3 pairs
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

YARDSTICK = [sys.executable, "-c", "import xarray, zarr"]


def child_cpu(command: list[str]) -> float:
    """User + system CPU seconds of one run of `command` (its output thrown away)."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{command} exited {proc.returncode}")
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="pairs measured (after one warm-up pair)")
    parser.add_argument("--quick", action="store_true", help="3 pairs")
    parser.add_argument("--store", help="an existing store (default: a small synthetic one in a temp folder)")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if store is None:
            from attnstore.extraction.synthetic import make_synthetic_store

            store = make_synthetic_store(str(Path(tmp) / "startup.zarr"), n_images=3)
        info = [sys.executable, "-m", "attnstore", "info", store]
        child_cpu(info), child_cpu(YARDSTICK)  # warm-up: file caches, bytecode
        pairs = [(child_cpu(info), child_cpu(YARDSTICK)) for _ in range(runs)]
    a, b = zip(*pairs)
    ratios = [x / y for x, y in pairs]
    print(f"load average {os.getloadavg()[0]:.2f}; {runs} pairs; CPU seconds (user + system), median [min, max]")
    print(f"attnstore info STORE            {statistics.median(a):.3f}  [{min(a):.3f}, {max(a):.3f}]")
    print(f"python -c 'import xarray, zarr' {statistics.median(b):.3f}  [{min(b):.3f}, {max(b):.3f}]")
    spread = f"[{min(ratios):.2f}, {max(ratios):.2f}]"
    print(f"ratio (paired)                  {statistics.median(ratios):.2f}x {spread}  goal <= 1.5x")


if __name__ == "__main__":
    main()
