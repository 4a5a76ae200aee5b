"""`attnstore analyze NAME STORE`: a registered dataset-level analysis -> a tidy table and a figure."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer

from attnstore.analysis.studies import ANALYSES
from attnstore.cli import app
from attnstore.errors import AttnstoreError, InvalidArgument


def listing() -> str:
    """Every registered analysis with its summary (read from the registry when asked)."""
    width = max((len(name) for name in ANALYSES), default=0)
    return "\n".join(f"  {e.name:<{width}}  {e.summary}" for e in ANALYSES.values())


HELP = f"""Run a dataset-level analysis over a store: a tidy table (--out) and a figure (--plot).

\b
Analyses (definitions and papers: docs/analyses.md):
{listing()}
"""


@app.command(help=HELP)
def analyze(
    analysis: Annotated[str | None, typer.Argument(help="Analysis name (run without one to list them).")] = None,
    store: Annotated[str | None, typer.Argument(help="Store path or fsspec URL.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Table: .csv / .parquet (one file per set of dims), .nc or .zarr.")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Figure: .png or .svg (needs matplotlib).")] = None,
    other: Annotated[str | None, typer.Option(help="compare: the second store.")] = None,
    queries: Annotated[str | None, typer.Option(help="Rows that ask: generated | prompt | text | last_prompt.")] = None,
    label: Annotated[
        str | None, typer.Option(help="visual_ratio: a per-image variable (pope_correct ...) or 'words'.")
    ] = None,
    words: Annotated[
        str | None, typer.Option(help="visual_ratio: object words, comma-separated (label 'words').")
    ] = None,
    unit: Annotated[str | None, typer.Option(help="visual_ratio: one observation per image | token.")] = None,
    bootstrap: Annotated[
        int | None, typer.Option(help="visual_ratio: bootstrap replicates of the AUROC interval.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="visual_ratio: bootstrap seed.")] = None,
    threshold: Annotated[
        str | None, typer.Option(help="localisation: mean | 2mean | a fraction of the map's maximum.")
    ] = None,
    connectivity: Annotated[int | None, typer.Option(help="localisation: 4 or 8 neighbours.")] = None,
    weight: Annotated[str | None, typer.Option(help="localisation: components weighed by size | mass.")] = None,
    view: Annotated[str | None, typer.Option(help="localisation: tiles | global grid.")] = None,
    top: Annotated[int | None, typer.Option(help="localisation: lowest-entropy heads kept per image.")] = None,
    factor: Annotated[float | None, typer.Option(help="sinks: median ratio above which a key is a sink.")] = None,
    images: Annotated[str | None, typer.Option("--images", help="Images, e.g. 0-99 (default: all complete).")] = None,
    workers: Annotated[int, typer.Option(help="Parallel dask threads.")] = 2,
) -> None:
    if analysis is None:
        typer.echo("analyses (attnstore analyze NAME STORE):\n" + listing())
        return
    entry = ANALYSES[analysis]
    if store is None:
        raise AttnstoreError(f"give the store: attnstore analyze {analysis} STORE")
    given = dict(
        other=other,
        queries=queries,
        label=label,
        unit=unit,
        bootstrap=bootstrap,
        seed=seed,
        threshold=threshold,
        connectivity=connectivity,
        weight=weight,
        view=view,
        top=top,
        factor=factor,
        words=words.split(",") if words else None,
    )
    options = {k: v for k, v in given.items() if v is not None}
    from attnstore.cli import flag

    takes = inspect.signature(entry.func).parameters
    for name in options:
        if name not in takes:
            raise AttnstoreError(f"{flag(name)} does not apply to {analysis}")
    from attnstore.analysis import parse_range
    from attnstore.analysis.aggregate import check_aggregate_output
    from attnstore.analysis.studies import check_plot_output, plot_analysis, save_table
    from attnstore.store import open_dataset

    if out is not None:
        check_aggregate_output(out)  # before the work: a missing writer or folder fails at once
    if plot is not None:
        check_plot_output(plot)
    if workers < 1:
        raise AttnstoreError("--workers must be at least 1")
    ds = open_dataset(store)
    try:
        picked = parse_range(images, ds.sizes["image"], "images")
    except InvalidArgument as err:
        raise AttnstoreError(f"--images {err.detail}") from None
    result = entry.func(ds, images=picked, num_workers=workers, **options)
    sizes = " x ".join(f"{n} {d}" for d, n in result.sizes.items())
    typer.echo(f"{analysis}: {sizes}")
    written = save_table(result, out) if out is not None else []
    if plot is not None:
        written.append(plot_analysis(result, plot))
    typer.echo(
        "wrote " + ", ".join(str(p) for p in written) if written else "nothing written: give --out and/or --plot"
    )
