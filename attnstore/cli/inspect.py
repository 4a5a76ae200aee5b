"""`attnstore info` and `attnstore validate`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from attnstore.cli import app
from attnstore.store import open_dataset
from attnstore.store.summary import store_size_bytes, store_summary  # noqa: F401  (re-exported)

MAX_ROWS = 50


def print_info(path: str, max_rows: int = MAX_ROWS) -> None:
    summary = store_summary(open_dataset(path), path, max_rows)
    console = Console()
    a = summary.attrs
    sizes = ", ".join(f"{d}={n}" for d, n in summary.sizes.items())
    console.print(f"[bold]{path}[/bold]  schema v{a['schema_version']}, attnstore {a['attnstore_version']}")
    random = " [yellow]RANDOM WEIGHTS[/yellow]" if a.get("random_weights") else ""
    console.print(f"model: {a['model_id']} ({a.get('model_family', '?')}){random}")
    if a.get("geometry") == "none":  # sequence-only mode
        console.print(f"geometry: none, {escape(str(a.get('geometry_note', '')))}")
    console.print(f"attention({sizes}) float16, keep_bits={a.get('keep_bits')}, queries={a.get('queries', 'text')}")
    console.print(f"images: {summary.n_images} ({summary.n_complete} complete); size on disk: {summary.size_text}")
    console.print(f"read backend: {escape(summary.backend)}")
    table = Table("#", "image", "tiles", "tokens", "answer", "ok")
    for r in summary.rows:
        table.add_row(
            str(r.index), r.name, r.tiles, str(r.n_key), r.answer[:60], "yes" if r.complete else "[red]no[/red]"
        )
    console.print(table)
    if summary.n_images > max_rows:
        console.print(f"... {summary.n_images - max_rows} more images")


@app.command()
def info(store: Annotated[str, typer.Argument(help="Store path or fsspec URL.")]) -> None:
    """Summarise a store: images, dims, model, size on disk, answers."""
    print_info(store)


@app.command()
def validate(
    store: Annotated[str, typer.Argument(help="Store path or fsspec URL.")],
    deep: Annotated[
        bool,
        typer.Option(
            "--deep",
            help="Also read every stored chunk of every array (checksums included) and name the damaged images.",
        ),
    ] = False,
) -> None:
    """Check schema, shapes, completeness, geometry, row sums and causality; exit 1 on problems."""
    from attnstore.validation import validate_store

    report = validate_store(store, deep=deep)
    for problem in report.problems:
        typer.secho(f"problem: {problem}", fg="red")
    status = "valid" if report.ok else f"{len(report.problems)} problem(s)"
    typer.echo(f"{store}: {report.n_images} images, {report.n_complete} complete, {status}")
    if report.damaged:
        listed = ", ".join(f"{i} ({name})" for i, name in sorted(report.damaged.items()))
        typer.secho(f"damaged image(s): {listed}", fg="red")
    if not report.ok:
        raise typer.Exit(1)
