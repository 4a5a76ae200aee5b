"""Device check: every registered family's tiny model at real text dims, on one CUDA GPU, in one table.

For each family in the adapter registry that has a tiny-model builder (families added later join
by themselves), a random-weight model with the text dims of the family's smallest real checkpoint
(hidden size, heads, kv heads; `--layers` layers) is built offline, then for each kernel
(SDPA, eager, flash-attention-2 where installed) in bfloat16, and SDPA in float32:
  - `extract` on one wide picture vs a plain greedy `generate` of the same loaded model (time,
    and whether the answers are the same tokens);
  - the stored rows vs transformers' eager `output_attentions` of the model in float32 (max |diff|);
  - peak GPU memory of the extraction.
Exit status 1 when an answer differs from plain generate or the float32 rows are off by more than
2e-3 (bfloat16 rows are reported, not judged: bf16 weights move them by ~1e-2).

    python benchmarks/device_check.py                         # CUDA, real text dims, <= 8 minutes
    python benchmarks/device_check.py --device cpu --dims tiny # the suite's smoke test

Runs from a checkout without installing attnstore (Python 3.12 works). Needs torch and
transformers, plus what `import attnstore` needs: carry these as wheels (docs/scale.md):
pillow, xarray, pandas, zarr, numcodecs and their dependencies.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never downloads anything
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's attnstore, installed or not

NEEDED = ("torch", "transformers", "PIL", "numpy", "xarray", "pandas", "zarr", "numcodecs")
# Text dims of each family's smallest real checkpoint (layers from --layers): real head sizes and GQA.
REAL_TEXT = {
    "idefics3": dict(hidden=576, heads=9, kv_heads=3),  # SmolVLM-256M
    "smolvlm": dict(hidden=576, heads=9, kv_heads=3),  # SmolVLM2-256M
    "llava": dict(hidden=4096, heads=32, kv_heads=32),  # llava-1.5-7b
    "qwen2_vl": dict(hidden=1536, heads=12, kv_heads=2),  # Qwen2-VL-2B
    "qwen2_5_vl": dict(hidden=2048, heads=16, kv_heads=2),  # Qwen2.5-VL-3B
    "qwen3_vl": dict(hidden=2048, heads=16, kv_heads=8),  # Qwen3-VL-2B
    "sequence_only": dict(hidden=4096, heads=32, kv_heads=8),  # idefics2-8b (tested as the fallback)
}
OTHER_TEXT = dict(hidden=2048, heads=16, kv_heads=8)  # a family without an entry above
PROMPT = "Can you describe this image?"
ATOL = 2e-3  # fp16 rounding of values in [0, 1]


@dataclass
class Row:
    family: str
    kernel: str
    dtype: str
    shape: str = ""
    tokens: int = 0
    max_diff: float = float("nan")
    same_answer: bool | None = None
    extract_s: float = float("nan")
    generate_s: float = float("nan")
    peak_mib: float = float("nan")
    note: str = ""

    @property
    def ok(self) -> bool:
        if self.note and self.same_answer is None:
            return self.note.startswith("skipped")
        exact = self.dtype != "float32" or self.max_diff <= ATOL
        return bool(self.same_answer) and exact


def missing_packages() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def variants(device: str, asked: str | None = None) -> list[tuple[str, str]]:
    """(kernel, dtype) runs: as `asked` ("sdpa:float32,eager:bfloat16"), else every kernel this machine
    has in bfloat16, then SDPA in float32."""
    if asked:
        return [tuple(item.split(":", 1)) for item in asked.split(",")]
    kernels = ["sdpa", "eager"]
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        kernels.append("flash_attention_2")
    return [(k, "bfloat16") for k in kernels] + [("sdpa", "float32")]


def model_dir(family: str, dims: str, layers: int, root: Path) -> Path:
    """The family's tiny model: its own dims (`tiny`), or real text dims with `layers` layers."""
    from attnstore.models import tiny_builder

    if dims == "tiny":
        from attnstore.extraction.demo import tiny_model_dir

        return tiny_model_dir(family)
    text = REAL_TEXT.get(family, OTHER_TEXT)
    path = root / f"{family}-{text['hidden']}x{layers}"
    if not (path / "config.json").is_file():
        shutil.rmtree(path, ignore_errors=True)
        tiny_builder(family)(path, dims={**text, "intermediate": 2 * text["hidden"], "layers": layers})
    return path


def eager_rows(reference, adapter, image, token_ids):
    """transformers' own eager output_attentions (float32 model) over the extracted sequence
    # [layer, head, seq, seq]."""
    import numpy as np
    import torch

    inputs = adapter.prepare(image, PROMPT)
    sequence = torch.as_tensor(np.asarray(token_ids), dtype=torch.long)
    extra = {k: v.to(reference.device) for k, v in adapter.forward_inputs(inputs, sequence).items()}
    extra = {k: v.float() if v.is_floating_point() else v for k, v in extra.items()}
    with torch.inference_mode():
        out = reference(
            input_ids=sequence[None].to(reference.device),
            attention_mask=torch.ones_like(sequence)[None].to(reference.device),
            output_attentions=True,
            use_cache=False,
            **extra,
        )
    return np.stack([a[0].float().cpu().numpy() for a in out.attentions])


def timed(device: str, run):
    """(result, seconds, peak MiB of GPU memory or NaN) of `run()`."""
    import torch

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = run()
    if cuda:
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
    return result, time.perf_counter() - start, peak


def check_variant(family, path, kernel, dtype, reference, args, image) -> Row:
    import numpy as np

    from attnstore.extraction.extract import extract
    from attnstore.models import load_adapter
    from attnstore.schema import TokenKind

    row = Row(family, kernel, dtype)
    adapter = load_adapter(str(path), device=args.device, dtype=dtype, attn_kernel=kernel)
    row.shape = f"{adapter.n_layers}x{adapter.n_heads}"
    extract(adapter, image, PROMPT, max_new_tokens=2)  # warm-up: kernels, allocator, processor
    result, row.extract_s, row.peak_mib = timed(args.device, lambda: extract(adapter, image, PROMPT, args.new_tokens))
    plain, row.generate_s, _ = timed(args.device, lambda: plain_generate(adapter, image, args.new_tokens))
    generated = result.token_id[result.layout.kind == TokenKind.GENERATED]
    row.same_answer = generated.tolist() == plain.tolist()
    row.tokens = int(result.n_key)
    expected = eager_rows(reference, adapter, image, result.token_id)[:, :, result.query_position]
    row.max_diff = float(np.abs(result.attention.astype(np.float32) - expected).max())
    return row


def plain_generate(adapter, image, new_tokens: int):
    """Answer ids of a plain greedy `generate` of the adapter's model (no capture running)  # [answer]."""
    import torch

    inputs = {k: v.to(adapter.model.device) for k, v in adapter.prepare(image, PROMPT).items()}
    inputs = {k: v.to(adapter.model.dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    with torch.inference_mode():
        out = adapter.model.generate(
            **inputs, max_new_tokens=new_tokens, do_sample=False,
            suppress_tokens=adapter.banned_token_ids() or None, eos_token_id=adapter.eos_token_ids or None,
        )  # fmt: skip
    return out[0, inputs["input_ids"].shape[1] :].cpu().numpy()


def check_family(family: str, args, root: Path, image) -> list[Row]:
    import torch
    from transformers import AutoModelForImageTextToText

    path = model_dir(family, args.dims, args.layers, root)
    reference = AutoModelForImageTextToText.from_pretrained(
        str(path), attn_implementation="eager", dtype=torch.float32, local_files_only=True
    )
    reference = reference.to(args.device).eval()
    rows = []
    for kernel, dtype in variants(args.device, args.variants):
        try:
            rows.append(check_variant(family, path, kernel, dtype, reference, args, image))
        except Exception as err:  # one failing run must not hide the others: the table says what failed
            rows.append(Row(family, kernel, dtype, note=f"error: {type(err).__name__}: {str(err)[:80]}"))
        gc.collect()
        torch.cuda.empty_cache() if args.device.startswith("cuda") else None
    del reference
    return rows


def print_table(rows: list[Row]) -> None:
    head = ("family", "kernel", "dtype", "LxH", "keys", "max|d| vs eager fp32", "answer=generate",
            "extract s", "generate s", "ratio", "peak GPU MiB", "ok")  # fmt: skip
    lines = [head]
    for r in rows:
        lines.append((
            r.family, r.kernel, r.dtype, r.shape, str(r.tokens or ""), f"{r.max_diff:.2e}",
            {True: "yes", False: "NO", None: ""}[r.same_answer], f"{r.extract_s:.3f}", f"{r.generate_s:.3f}",
            f"{r.extract_s / r.generate_s:.2f}" if r.generate_s > 0 else "", f"{r.peak_mib:.0f}",
            "ok" if r.ok else "FAIL",
        ) if not r.note else (r.family, r.kernel, r.dtype, *[""] * 8, r.note))  # fmt: skip
    widths = [max(len(str(line[i])) for line in lines if i < len(line)) for i in range(len(head))]
    for line in lines:
        print("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (the smoke test)")
    parser.add_argument("--dims", choices=("real", "tiny"), default="real", help="real text dims, or the tests' tiny")
    parser.add_argument("--layers", type=int, default=4, help="text layers of the real-dims models")
    parser.add_argument("--new-tokens", type=int, default=16, help="answer budget")
    parser.add_argument("--families", nargs="*", help="only these registered families")
    parser.add_argument("--variants", help="kernel:dtype runs, comma-separated (default: every kernel)")
    parser.add_argument("--image-size", default="640x360", help="WIDTHxHEIGHT of the test picture")
    parser.add_argument("--budget-s", type=float, default=420, help="start no family after this many seconds")
    parser.add_argument("--models-dir", help="where to build the models (default: a temporary folder)")
    args = parser.parse_args(argv)
    missing = missing_packages()
    if missing:
        print(f"error: missing packages {', '.join(missing)}: pip install the carried wheels", file=sys.stderr)
        return 1
    from attnstore.errors import AttnstoreError
    from attnstore.extraction.synthetic import _gradient_image
    from attnstore.models import FAMILIES, tiny_builder
    from attnstore.models.base import resolve_device
    from attnstore.quiet import quiet_transformers

    quiet_transformers()
    try:
        resolve_device(args.device)
    except AttnstoreError as err:  # e.g. no CUDA GPU: one line, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 1
    families = [f for f in FAMILIES if tiny_builder(f) is not None and (not args.families or f in args.families)]
    image = _gradient_image(*(int(v) for v in args.image_size.split("x")))  # wide: tiles, a non-square grid
    start, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="attnstore-device-") as tmp:
        root = Path(args.models_dir or tmp)
        for family in families:
            if time.perf_counter() - start > args.budget_s:
                rows.append(Row(family, "-", "-", note=f"skipped: over the {args.budget_s:.0f} s budget"))
                continue
            rows += check_family(family, args, root, image)
            print(f"{family}: done at {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    print_table(rows)
    print(f"{len(families)} families, {time.perf_counter() - start:.0f} s, device {args.device}, dims {args.dims}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
