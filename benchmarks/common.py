"""Helpers shared by the benchmarks: cached random-weight models, a photo-like test image,
timing percentiles, peak RSS of fresh child processes, sizes on disk, result tables.

Benchmarks print figures; they never assert speed. Run them as scripts
(`python benchmarks/bench_store.py`), so this module is imported as `common`.
"""

from __future__ import annotations

import io
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from rich.console import Console
from rich.markup import escape
from rich.table import Table

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # benchmarks never download anything
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

console = Console(width=160)

BENCH_MODEL_VERSION = "1"  # bump when a builder changes, so cached benchmark models are rebuilt
# Real SigLIP-base size of SmolVLM-256M's vision tower (REAL_DIMS keeps it small: it does not change the store).
REAL_VISION = dict(vision_hidden=768, vision_layers=12)
MODEL_KINDS = ("tiny", "real-text", "real-vision")
PROMPT = "Can you describe this image?"
CHILD_MARKER = "BENCH-RESULT "


# -- models -----------------------------------------------------------------------------------
def model_dir(kind: str) -> Path:
    """Path of a cached random-weight Idefics3 of `kind` (built offline on first use).

    tiny        : the demo/test model (attnstore.models.tiny).
    real-text   : SmolVLM-256M's text model (30 layers, 9 heads, hidden 576), small vision tower.
    real-vision : the same plus a SmolVLM-size vision tower (hidden 768, 12 layers).
    """
    from attnstore.extraction.demo import cache_dir, tiny_model_dir
    from attnstore.models.tiny import IDEFICS3_REAL_DIMS as REAL_DIMS
    from attnstore.models.tiny import build_random_idefics3
    from attnstore.quiet import quiet_transformers

    quiet_transformers()
    if kind == "tiny":
        return tiny_model_dir()
    dims = {"real-text": REAL_DIMS, "real-vision": {**REAL_DIMS, **REAL_VISION}}[kind]
    path = cache_dir() / "bench" / f"idefics3-{kind}-v{BENCH_MODEL_VERSION}"
    if not (path / "config.json").is_file() or not (path / "processor_config.json").is_file():
        tmp = path.with_name(path.name + f".partial-{os.getpid()}")
        build_random_idefics3(tmp, dims=dims)
        if not path.exists():
            tmp.rename(path)
    return path


# -- input ------------------------------------------------------------------------------------
def photo_like_image(width: int = 640, height: int = 480, seed: int = 0) -> Image.Image:
    """A 'photo-like' RGB picture: smooth colour gradients, a few soft shapes, sensor noise.

    4:3 images are split by Idefics3 into 3 x 4 tiles (checked by the benchmarks on the store).
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            120 + 80 * np.sin(x / width * np.pi * rng.uniform(0.5, 2) + rng.uniform(0, 6)),
            110 + 70 * np.cos(y / height * np.pi * rng.uniform(0.5, 2) + rng.uniform(0, 6)),
            100 + 60 * np.sin((x + y) / (width + height) * np.pi * rng.uniform(1, 3)),
        ],
        axis=-1,
    )  # [y, x, rgb]
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        w, h = rng.integers(30, width // 3), rng.integers(30, height // 3)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x0 + w, y0 + h], fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(2))
    noisy = np.asarray(img, np.float32) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


# -- timing -----------------------------------------------------------------------------------
def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Wall time of one call (seconds) and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def percentiles(samples: Sequence[float], qs: Sequence[float] = (50, 95)) -> list[float]:
    return [float(np.percentile(np.asarray(samples), q)) for q in qs]


def host_load() -> str:
    """1/5/15-min load averages: other work on the machine (2 cores here) slows every wall time."""
    return "host load avg " + "/".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


# -- memory -----------------------------------------------------------------------------------
def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def current_rss_bytes() -> int:
    """Current resident set size of this process (from /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def emit_child_result(result: dict) -> None:
    """Child side of `run_child`: print the result as one marked JSON line."""
    print(CHILD_MARKER + json.dumps(result), flush=True)


def run_child(script: Path, args: list[str], timeout: float = 1200) -> dict:
    """Run `python script args` in a fresh process; return the dict it passed to `emit_child_result`.

    A fresh process per variant makes peak RSS comparable (nothing cached from an earlier variant).
    """
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(CHILD_MARKER)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {args} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(CHILD_MARKER) :])


# -- sizes ------------------------------------------------------------------------------------
def dir_bytes(path: str | Path) -> int:
    """Total size of the files under `path` (apparent size, as a copy or an upload would cost)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def npy_bytes(shape: tuple[int, ...], dtype: str = "<f4") -> int:
    """Exact size of `np.save` of an array of this shape/dtype, without writing it (header + data)."""
    buf = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": tuple(int(s) for s in shape)}
    try:
        np.lib.format.write_array_header_1_0(buf, header)
    except ValueError:  # header too long for format 1.0: np.save switches to 2.0
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, header)
    return buf.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize


def mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:,.1f}"


# -- output -----------------------------------------------------------------------------------
def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], caption: str = "") -> None:
    """Print one result table (numbers right-aligned)."""
    table = Table(title=escape(title), caption=escape(caption) or None, title_justify="left", caption_justify="left")
    for i, col in enumerate(columns):
        table.add_column(escape(col), justify="left" if i == 0 else "right")
    for row in rows:  # escape: "[i, :, q]" is text here, not rich markup
        table.add_row(*(escape(str(v)) for v in row))
    console.print(table)


# -- servers -----------------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until_serving(proc: subprocess.Popen, url: str, timeout: float) -> subprocess.Popen:
    """`proc` once `url` answers (polled); exits the benchmark if the server dies or never answers."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                raise SystemExit(f"server died: {err.decode() if isinstance(err, bytes) else err}") from None
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server did not start in {timeout:.0f} s")
