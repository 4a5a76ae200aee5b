"""Extraction runs: many images, one prompt, one store; resumable and interruptible.

The CLI, the seed-compatible scripts and the demo all call `run_extraction`
(or `run_items` for one prompt per entry, e.g. POPE). Images already complete in
the store are skipped; a slot left incomplete by a killed run is reused, so every
image ends up complete exactly once. The planning pieces (`store_plan`, `plan_run`,
`extract_item`) and the driver (`attnstore.extraction.driver`) are shared with the distributed
run (`attnstore.extraction.distributed`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from attnstore.errors import AttnstoreError, InputImageError, InvalidArgument
from attnstore.extraction.driver import RunDriver, RunReport, RunStore
from attnstore.inputs.images import image_name, load_image
from attnstore.records import Extraction
from attnstore.store import DEFAULT_KEEP_BITS, AttnStore, StoreShape
from attnstore.store.lock import writer_lock

if TYPE_CHECKING:  # models.base imports torch: bad input must fail before it loads
    from attnstore.models.base import ModelAdapter

QUERY_MARGIN = 8  # spare query/key rows so most appends never resize


def store_shape_for(adapter: ModelAdapter, prompt: str, max_new_tokens: int, queries: str) -> StoreShape:
    """Capacities from the model's worst-case image block + this prompt + the answer budget."""
    text = len(adapter.tokenizer(prompt)["input_ids"]) + 16  # + chat template tokens
    keys = adapter.max_image_tokens() + text + max_new_tokens + QUERY_MARGIN
    rows = keys if queries in ("all", "text+image") else text + max_new_tokens + QUERY_MARGIN
    return StoreShape(adapter.n_layers, adapter.n_heads, query_capacity=rows, key_capacity=keys)


def storage_settings(
    codec: str | None = None, round_decimals: int | None = None, map_error: float | None = None
) -> dict:
    """Run attrs of how attention is stored (None: the default, or the store's own when appending)."""
    from attnstore.store.codecs import MAX_DECIMALS, check_request
    from attnstore.store.lossy import check_eps

    out: dict = {}
    if codec is not None:
        out["codec"] = check_request(codec)
    if round_decimals is not None:
        if not 1 <= round_decimals <= MAX_DECIMALS:
            raise InvalidArgument("round", f"must be 1-{MAX_DECIMALS} decimals, not {round_decimals}")
        out["round_decimals"] = int(round_decimals)
    if map_error is not None:
        out["map_error"] = check_eps(map_error)
    return out


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
        "attention_implementation": f"{adapter.attn_kernel} (text model); rows: fp32 softmax captured in generate",
        "attention_mask": getattr(adapter, "attention_mask", "causal"),  # bidirectional parts: validation's rule
        "model_dtype": str(adapter.model.dtype).removeprefix("torch."),
        **adapter.geometry_attrs(),
    }


@dataclass
class WorkItem:
    """One store entry to extract: its name, image file, prompt and extra per-image values."""

    name: str
    path: str
    prompt: str
    extra: dict = field(default_factory=dict)  # values of the store's extra variables (ensure_extras)
    objects: list = field(default_factory=list)  # (label, x, y, w, h) object boxes in the image's pixels


@dataclass(frozen=True)
class ExtractSettings:
    """What every extraction of a run shares (picklable: distributed runs send it to workers)."""

    max_new_tokens: int = 32
    queries: str = "text"
    # Extra values that depend on the answer (e.g. POPE's parsed answer); a module-level function.
    annotate: Callable[[WorkItem, Extraction], dict] | None = None


@dataclass(frozen=True)
class WriteOptions:
    """How a run writes its store, the same for a serial and a distributed run.

    storage_options : fsspec options of a remote store (s3://...).
    extras : extra per-image variables (name -> (kind, description)); see `AttnStore.ensure_extras`.
    keep_bits : fp16 mantissa bits kept (default `DEFAULT_KEEP_BITS`).
    storage : codec, rounding and map-faithful lossy mode of a new store (`storage_settings`;
        checked against an existing one).
    """

    storage_options: dict | None = None
    extras: dict | None = None
    keep_bits: int | None = None
    storage: dict | None = None


@dataclass
class RunPlan:
    """Where each entry goes: its existing slot by name, else an orphan slot (unnamed and
    incomplete: left by a run killed while allocating), else a new one."""

    slots: dict[str, int]
    done: list[str]
    todo: list[WorkItem]
    orphans: list[int]

    def reserve(self, store: AttnStore, items: list[WorkItem]) -> dict[str, int]:
        """Slot index of every item, allocating the missing ones at once (names written)."""
        for item in items:  # a slot of an earlier run: named again, as a run killed between its name and source
            if item.name in self.slots:  # left it without the source
                store.assign_slot(self.slots[item.name], item.name, _source(item.path))
        new = [it for it in items if it.name not in self.slots]
        for item in new[: len(self.orphans)]:
            index = self.orphans.pop(0)
            store.assign_slot(index, item.name, _source(item.path))
            self.slots[item.name] = index
        new = [it for it in new if it.name not in self.slots]
        indices = store.allocate([it.name for it in new], [_source(it.path) for it in new])
        self.slots.update({it.name: i for it, i in zip(new, indices)})
        return {it.name: self.slots[it.name] for it in items}


def _source(path: str) -> str:
    return str(Path(path).resolve())


def plan_run(store: AttnStore | None, items: list[WorkItem]) -> RunPlan:
    """Existing slot per name (incomplete ones are reused), entries already complete, entries to do.

    `store` is None when the run will create it.
    """
    names = [it.name for it in items]
    _check_unique(names)
    existing = store.image_names() if store is not None else []
    complete = store.complete_flags() if store is not None else np.array([], dtype=bool)
    slots = {n: i for i, n in enumerate(existing) if n}
    done = [n for n in names if n in slots and complete[slots[n]]]
    finished = set(done)
    orphans = [i for i, n in enumerate(existing) if not n and not complete[i]]
    return RunPlan(slots, done, [it for it in items if it.name not in finished], orphans)


def store_plan(
    adapter: ModelAdapter, prompts: list[str], settings: ExtractSettings, keep_bits: int | None
) -> tuple[StoreShape, dict]:
    """Capacities (fitting the longest prompt) and attrs of a store for this run."""
    shapes = [store_shape_for(adapter, p, settings.max_new_tokens, settings.queries) for p in sorted(set(prompts))]
    shape = StoreShape(
        adapter.n_layers,
        adapter.n_heads,
        query_capacity=max(s.query_capacity for s in shapes),
        key_capacity=max(s.key_capacity for s in shapes),
    )
    kept = DEFAULT_KEEP_BITS if keep_bits is None else keep_bits
    attrs = store_attrs(adapter, kept, settings.queries, settings.max_new_tokens)
    if keep_bits is None:
        attrs.pop("keep_bits")  # appending: keep the store's own setting
    return shape, attrs


def extract_item(
    adapter: ModelAdapter,
    store: AttnStore,
    index: int,
    item: WorkItem,
    image,
    settings: ExtractSettings,
    resize: bool = True,
    mark_complete: bool = True,
) -> None:
    """Run the model on one entry and write it into slot `index` (complete flag last, see write_image)."""
    (result,) = extract_entries(adapter, [(item, image)], settings)
    store.write_image(
        index, result, image, extra=entry_extra(item, result, settings), resize=resize, mark_complete=mark_complete,
        objects=normalised_boxes(item.objects, image.width, image.height),
    )  # fmt: skip


def extract_entries(adapter: ModelAdapter, entries: list[tuple[WorkItem, object]], settings: ExtractSettings):
    """Run the model on (item, image) entries in one batch; one Extraction each."""
    from attnstore.extraction.extract import (
        extract_batch,  # torch: imported only once a model runs, so bad input fails fast
    )

    images = [image for _, image in entries]
    prompts = [item.prompt for item, _ in entries]
    return extract_batch(adapter, images, prompts, max_new_tokens=settings.max_new_tokens, queries=settings.queries)


def entry_extra(item: WorkItem, result: Extraction, settings: ExtractSettings) -> dict | None:
    """Values of the store's extra variables for this entry (its own, and those read from the answer)."""
    extra = dict(item.extra)
    if settings.annotate is not None:
        extra.update(settings.annotate(item, result))
    return extra or None


def normalised_boxes(objects: list, width: int, height: int) -> list[tuple[str, tuple]]:
    """(label, x, y, w, h) pixel boxes as (label, (x0, y0, x1, y1)) normalised to the image (clipped).

    Boxes are checked against the image when they are attached (`boxes.boxes_for_items`).
    """
    return [
        (str(label), tuple(min(1.0, max(0.0, v)) for v in (x / width, y / height, (x + w) / width, (y + h) / height)))
        for label, x, y, w, h in objects
    ]


def image_items(image_paths: list[Path], prompt: str, image_dir: str | None = None) -> list[WorkItem]:
    """One entry per image, all with the same prompt; names from `images.image_name`."""
    return [WorkItem(image_name(Path(p), image_dir), str(p), prompt) for p in image_paths]


def run_extraction(
    adapter: ModelAdapter,
    image_paths: list[Path],
    prompt: str,
    out: str,
    *,
    image_dir: str | None = None,
    max_new_tokens: int = 32,
    queries: str = "text",
    write: WriteOptions = WriteOptions(),
    show_progress: bool = True,
    batch_size: int = 1,
) -> RunReport:
    """Extract every image into the store at `out` (created if needed); skip complete ones."""
    if not prompt.strip():
        raise InvalidArgument("prompt", "is empty")
    return run_items(
        adapter,
        image_items(image_paths, prompt, image_dir),
        out,
        settings=ExtractSettings(max_new_tokens=max_new_tokens, queries=queries),
        write=write,
        show_progress=show_progress,
        batch_size=batch_size,
    )


def open_run(
    out: str,
    items: list[WorkItem],
    shape: StoreShape,
    attrs: dict,
    write: WriteOptions = WriteOptions(),
) -> tuple[RunStore, RunPlan]:
    """The run's store (`driver.RunStore`: checked now, created or changed only at a write) with room
    for the items' object boxes, and its plan: which entries are done, which to do and in which slots.
    Serial and distributed runs both start here, under the writer lock."""
    n_objects = max((len(it.objects) for it in items), default=0)
    run_store = RunStore(out, shape, attrs, write.storage_options, write.extras, n_objects)
    return run_store, plan_run(run_store.store, items)


def run_items(
    adapter: ModelAdapter,
    items: list[WorkItem],
    out: str,
    *,
    settings: ExtractSettings = ExtractSettings(),
    write: WriteOptions = WriteOptions(),
    show_progress: bool = True,
    batch_size: int = 1,
) -> RunReport:
    """Extract every entry into the store at `out` in this process; skip complete ones.

    The store is created, grown or given new variables only once an image is ready to be written:
    a run that writes nothing leaves an existing store byte-identical and creates none.
    `write` says how the store is written (`WriteOptions`); `batch_size` entries run through the
    model in one generate.
    """
    if batch_size < 1:
        raise InvalidArgument("batch_size", f"must be at least 1, got {batch_size}")
    shape, attrs = store_plan(adapter, [it.prompt for it in items], settings, write.keep_bits)
    attrs.update(write.storage or {})
    with writer_lock(out):  # one writer per store: a second run fails at once, naming this one
        run_store, plan = open_run(out, items, shape, attrs, write)
        return _run_plan(adapter, run_store, plan, settings, show_progress, batch_size)


def _run_plan(adapter, run_store: RunStore, plan: RunPlan, settings, show_progress: bool, batch_size: int):
    report = RunReport(skipped=plan.done)
    with RunDriver("extracting", len(plan.todo), show_progress) as driver:
        for start in range(0, len(plan.todo), batch_size):
            if driver.stop_requested:
                report.interrupted = True
                break
            entries = _load_images(plan.todo[start : start + batch_size], report, driver)
            if entries:
                results = extract_entries(adapter, entries, settings)
                _write_entries(run_store, plan, entries, results, settings, report, driver)
    return report


def _load_images(items: list[WorkItem], report: RunReport, driver: RunDriver) -> list[tuple[WorkItem, object]]:
    """(item, image) for the items whose image decodes; the others are reported failed."""
    entries = []
    for item in items:
        try:
            entries.append((item, load_image(item.path)))
        except InputImageError as err:
            report.failed[item.name] = str(err)
            driver.advance()
    return entries


def _write_entries(run_store: RunStore, plan: RunPlan, entries, results, settings, report, driver) -> None:
    for (item, image), result in zip(entries, results):
        objects = normalised_boxes(item.objects, image.width, image.height)
        with run_store.writing(first=result) as store:  # the image whole, or (a write error) the store as before
            run_store.fit(result.n_query, result.n_key)
            index = plan.reserve(store, [item])[item.name]
            store.write_image(index, result, image, extra=entry_extra(item, result, settings), objects=objects)
        report.written.append(item.name)
        driver.advance()


def _check_unique(names: list[str]) -> None:
    values, counts = np.unique(np.asarray(names, dtype=object).astype(str), return_counts=True)
    if (counts > 1).any():
        dup = values[counts > 1][0]
        raise AttnstoreError(
            f"two images would share the name '{dup}' in the store: use --image-dir so names keep their folders"
        )
