"""`attnstore pope`: the POPE benchmark with every question's attention stored (seed `benchmark.py`)."""

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from attnstore.cli import app
from attnstore.cli.runs import BATCH_HELP, DEVICE_HELP, DTYPE_HELP, KERNEL_HELP, summarise_run
from attnstore.errors import AttnstoreError


@app.command()
def pope(
    questions: Annotated[
        list[Path],
        typer.Option("--questions", "--question-file", help="POPE .jsonl file; repeat for several splits."),
    ],
    image_dir: Annotated[
        Path, typer.Option("--image-dir", "--image-folder", help="Folder the questions' `image` names are in.")
    ],
    model: Annotated[
        str, typer.Option("--model", "--model-id", help="Hub id (from the HF cache) or local folder.")
    ] = "HuggingFaceTB/SmolVLM-256M-Instruct",
    out: Annotated[str, typer.Option(help="Store path or fsspec URL (created or appended to).")] = "pope.zarr",
    limit: Annotated[int, typer.Option(help="At most N questions per file (0 = all).")] = 0,
    report: Annotated[Path | None, typer.Option(help="Also write the metrics as JSON here.")] = None,
    prompt_template: Annotated[
        str, typer.Option(help="Prompt asked with each image; {question} is the question text.")
    ] = "{question}",
    max_new_tokens: Annotated[int, typer.Option(help="Answer length budget (greedy).")] = 8,
    keep_bits: Annotated[int | None, typer.Option(help="fp16 mantissa bits kept, 0-10 (default 10).")] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "cpu",
    dtype: Annotated[str | None, typer.Option(help=DTYPE_HELP)] = None,
    attn_kernel: Annotated[str, typer.Option(help=KERNEL_HELP)] = "sdpa",
    batch_size: Annotated[int, typer.Option(help=BATCH_HELP)] = 1,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    workers: Annotated[int, typer.Option(help="Local dask cluster of N worker processes (0 = here).")] = 0,
    scheduler: Annotated[str | None, typer.Option(help="Address of an existing dask scheduler.")] = None,
    storage_options: Annotated[str | None, typer.Option(help="fsspec options for a remote --out (JSON).")] = None,
) -> None:
    """Ask every POPE question with its image; report accuracy, precision, recall, F1, yes-ratio per split."""
    from attnstore.extraction import pope as bench
    from attnstore.extraction.pipeline import ExtractSettings, WriteOptions
    from attnstore.store import open_dataset
    from attnstore.store.remote import parse_storage_options

    if keep_bits is not None and not 0 <= keep_bits <= 10:
        raise AttnstoreError(f"--keep-bits must be between 0 and 10, got {keep_bits}")
    if not image_dir.is_dir():
        raise AttnstoreError(f"--image-dir {image_dir} is not a folder")
    items = bench.question_items(bench.read_questions(questions, limit), image_dir, prompt_template)
    options = parse_storage_options(storage_options)
    settings = ExtractSettings(max_new_tokens=max_new_tokens, queries="text", annotate=bench.annotate)
    write = WriteOptions(storage_options=options, extras=bench.EXTRAS, keep_bits=keep_bits)
    common = dict(settings=settings, write=write)
    loading = dict(device=device, dtype=dtype, attn_kernel=attn_kernel)
    run = _run(model, items, out, common, loading, batch_size, workers, scheduler, progress)
    ds = open_dataset(out, storage_options=options)
    metrics = bench.metrics_by_split(*bench.results_from_store(ds, [it.name for it in items]))
    print_metrics(metrics)
    if report is not None:
        report.write_text(json.dumps(bench.report_json(metrics, store=out, model=model), indent=2) + "\n")
    summarise_run(run, out)


def _run(model, items, out, common, loading, batch_size, workers, scheduler, progress):
    if workers or scheduler:
        from attnstore.extraction.distributed import run_distributed

        return run_distributed(
            model, items, out, workers=workers, scheduler=scheduler, show_progress=progress, **loading, **common
        )
    from attnstore.extraction.pipeline import run_items
    from attnstore.models import load_adapter
    from attnstore.quiet import quiet_transformers

    quiet_transformers()
    adapter = load_adapter(model, **loading)
    return run_items(adapter, items, out, show_progress=progress, batch_size=batch_size, **common)


def print_metrics(metrics: dict) -> None:
    """The POPE metrics as a rich table, one row per split and one for all."""
    table = Table("split", "n", "accuracy", "precision", "recall", "F1", "yes-ratio", "other", title="POPE")
    for split, m in metrics.items():
        style = "bold" if split == "all" else None
        cells = (m.accuracy, m.precision, m.recall, m.f1, m.yes_ratio)
        table.add_row(split, str(m.n), *(f"{v:.3f}" for v in cells), str(m.n_other), style=style)
    Console().print(table)
