"""Extraction runs: many images, one prompt, one store; resumable and interruptible.

The CLI, the seed-compatible scripts and the demo all call `run_extraction`.
Images already complete in the store are skipped; a slot left incomplete by a
killed run is reused, so every image ends up complete exactly once.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from attnstore.errors import AttnstoreError, InputImageError
from attnstore.extract import extract
from attnstore.images import image_name, load_image
from attnstore.models.base import ModelAdapter
from attnstore.store import DEFAULT_KEEP_BITS, AttnStore, StoreShape

QUERY_MARGIN = 8  # spare query/key rows so most appends never resize


@dataclass
class RunReport:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False


def store_shape_for(adapter: ModelAdapter, prompt: str, max_new_tokens: int, queries: str) -> StoreShape:
    """Capacities from the model's worst-case image block + this prompt + the answer budget."""
    text = len(adapter.tokenizer(prompt)["input_ids"]) + 16  # + chat template tokens
    keys = adapter.max_image_tokens() + text + max_new_tokens + QUERY_MARGIN
    rows = keys if queries == "all" else text + max_new_tokens + QUERY_MARGIN
    return StoreShape(adapter.n_layers, adapter.n_heads, query_capacity=rows, key_capacity=keys)


def store_attrs(adapter: ModelAdapter, keep_bits: int, queries: str, max_new_tokens: int) -> dict:
    return {
        "model_id": adapter.model_id,
        "model_revision": adapter.revision or "",
        "model_family": adapter.family,
        "model_class": type(adapter.model).__name__,
        "processor": adapter.processor_settings(),
        "keep_bits": keep_bits,
        "queries": queries,
        "max_new_tokens": max_new_tokens,
        "random_weights": adapter.random_weights,
        "attention_implementation": "eager (text model)",
    }


class _StopAfterCurrent:
    """Ctrl-C sets a flag; the run stops cleanly after the image being written."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._previous)
        return False


def plan_slots(store: AttnStore, names: list[str]) -> tuple[dict[str, int], list[str]]:
    """Existing slot per name (incomplete ones are reused) and the names already complete."""
    existing = store.image_names()
    complete = store.complete_flags()
    slots = {str(n): i for i, n in enumerate(existing)}
    done = [n for n in names if n in slots and complete[slots[n]]]
    return slots, done


def run_extraction(
    adapter: ModelAdapter,
    image_paths: list[Path],
    prompt: str,
    out: str,
    *,
    image_dir: str | None = None,
    max_new_tokens: int = 32,
    keep_bits: int | None = None,
    queries: str = "text",
    storage_options: dict | None = None,
    show_progress: bool = True,
) -> RunReport:
    """Extract every image into the store at `out` (created if needed); skip complete ones."""
    if not prompt.strip():
        raise AttnstoreError("the prompt is empty: pass --prompt TEXT")
    shape = store_shape_for(adapter, prompt, max_new_tokens, queries)
    attrs = store_attrs(adapter, DEFAULT_KEEP_BITS if keep_bits is None else keep_bits, queries, max_new_tokens)
    if keep_bits is None:
        attrs.pop("keep_bits")  # appending: keep the store's own setting
    store = AttnStore.open_or_create(out, shape, attrs, storage_options)
    names = [image_name(p, image_dir) for p in image_paths]
    _check_unique(names)
    slots, done = plan_slots(store, names)
    report = RunReport(skipped=done)
    todo = [(p, n) for p, n in zip(image_paths, names) if n not in done]
    with _StopAfterCurrent() as stop, _progress(show_progress) as progress:
        task = progress.add_task("extracting", total=len(todo))
        for path, name in todo:
            if stop.requested:
                report.interrupted = True
                break
            try:
                image = load_image(path)
            except InputImageError as err:
                report.failed[name] = str(err)
                progress.advance(task)
                continue
            index = slots.get(name)
            if index is None:
                index = store.allocate([name], [str(Path(path).resolve())])[0]
            result = extract(adapter, image, prompt, max_new_tokens=max_new_tokens, queries=queries)
            store.write_image(index, result, image)
            report.written.append(name)
            progress.advance(task)
    return report


def _check_unique(names: list[str]) -> None:
    values, counts = np.unique(np.asarray(names, dtype=object).astype(str), return_counts=True)
    if (counts > 1).any():
        dup = values[counts > 1][0]
        raise AttnstoreError(
            f"two images would share the name '{dup}' in the store: use --image-dir so names keep their folders"
        )


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        disable=not enabled,
    )
