"""`attnstore analyze NAME STORE`: a registered dataset-level analysis -> a tidy table and a figure."""

import inspect
from pathlib import Path
from typing import Annotated

import typer

from attnstore.analysis.studies import ANALYSES, Option
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


def analysis_options() -> dict[str, tuple[Option, list[str]]]:
    """Every option some registered analysis declares, once each, with the analyses that take it."""
    found: dict[str, tuple[Option, list[str]]] = {}
    for entry in ANALYSES.values():
        for option in entry.options:
            found.setdefault(option.name, (option, []))[1].append(entry.name)
    return found


def run(
    analysis: str | None, store: str | None, out: Path | None, plot: Path | None, images: str | None, workers: int,
    **given,
) -> None:  # fmt: skip
    """`attnstore analyze`: `given` holds the analyses' own options (None: not given)."""
    if analysis is None:
        typer.echo("analyses (attnstore analyze NAME STORE):\n" + listing())
        return
    entry = ANALYSES[analysis]
    if store is None:
        raise AttnstoreError(f"give the store: attnstore analyze {analysis} STORE")
    from attnstore.cli import flag

    declared = {o.name: o for o in entry.options}
    for name, value in given.items():
        if value is not None and name not in declared:
            raise AttnstoreError(f"{flag(name)} does not apply to {analysis}")
    options = {
        name: declared[name].parse(value) if declared[name].parse else value
        for name, value in given.items()
        if value is not None
    }
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


def _command_parameters() -> list[inspect.Parameter]:
    """`analyze`'s parameters: its own, then every option the registered analyses declare."""
    P, kw = inspect.Parameter, inspect.Parameter.POSITIONAL_OR_KEYWORD
    table = "Table: .csv / .parquet (one file per set of dims), .nc or .zarr."
    params = [
        P("analysis", kw, default=None, annotation=Annotated[str | None, typer.Argument(
            help="Analysis name (run without one to list them).")]),
        P("store", kw, default=None, annotation=Annotated[str | None, typer.Argument(
            help="Store path or fsspec URL.")]),
        P("out", kw, default=None, annotation=Annotated[Path | None, typer.Option(help=table)]),
        P("plot", kw, default=None, annotation=Annotated[Path | None, typer.Option(
            help="Figure: .png or .svg (needs matplotlib).")]),
    ]  # fmt: skip
    for name, (option, users) in analysis_options().items():
        shared = len(users) == len(ANALYSES)  # an option every analysis takes needs no "who" prefix
        help_ = f"{option.help[0].upper()}{option.help[1:]}." if shared else f"{', '.join(users)}: {option.help}."
        params.append(P(name, kw, default=None, annotation=Annotated[option.type | None, typer.Option(help=help_)]))
    params += [
        P("images", kw, default=None, annotation=Annotated[str | None, typer.Option(
            "--images", help="Images, e.g. 0-99 (default: all complete).")]),
        P("workers", kw, default=2, annotation=Annotated[int, typer.Option(help="Parallel dask threads.")]),
    ]  # fmt: skip
    return params


def analyze(**kwargs) -> None:
    run(**kwargs)


analyze.__signature__ = inspect.Signature(_command_parameters())  # typer reads the options from these
analyze.__annotations__ = {p.name: p.annotation for p in analyze.__signature__.parameters.values()}
app.command(help=HELP)(analyze)
