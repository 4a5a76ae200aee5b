"""`attnstore info` and `attnstore validate`."""

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from attnstore.analysis.correctness import EXPECTED_ANSWER, RIGHT, WRONG, accuracy, correctness_values, has_correctness
from attnstore.cli import app
from attnstore.store import open_dataset
from attnstore.store.summary import store_summary

MAX_ROWS = 50


def storage_lines(attrs: dict) -> list[str]:
    """How the attention is stored: codec (and why), every measured candidate, rounding, lossy mode."""
    from attnstore.store.codecs import CODEC_ATTR, DEFAULT_CODEC

    codec = attrs.get(CODEC_ATTR) or {"name": DEFAULT_CODEC, "chosen_by": "the default (made before codec choice)"}
    portable = "" if codec.get("portable", True) else " (numcodecs.fixedscaleoffset codes: not tensorstore's driver)"
    lines = [f"codec: {codec['name']}, {codec.get('chosen_by', '')}{portable}"]
    candidates = codec.get("candidates") or {}
    for name, f in sorted(candidates.items(), key=lambda kv: kv[1]["bytes"]):
        mark = "*" if name == codec["name"] else " "
        lines.append(f"  {mark} {name:<28} {f['bytes'] / 1e6:8.2f} MB/image  decode {f['decode_gbps']:.2f} GB/s  "
                     f"row {f['row_ms']:.3f} ms")  # fmt: skip
    if attrs.get("round_decimals") is not None:
        lines.append(f"rounded to {attrs['round_decimals']} decimals ({attrs.get('round_source', '--round')})")
    if attrs.get("map_error") is not None:
        lines.append(f"map-faithful lossy: error <= {attrs['map_error']} x each drawn map's maximum")
    measured = attrs.get("map_error_measured") or {}
    if measured:
        lines.append("map error measured on the first image (normalisation/method: worst |error| / map max):")
        lines += [f"  {key:<24} {100 * value:.3f} %" for key, value in measured.items()]
    return lines


def print_info(path: str, max_rows: int = MAX_ROWS) -> None:
    ds = open_dataset(path)
    summary = store_summary(ds, path, max_rows)  # the same summary as ds.attn.summary() in a notebook
    console = Console(highlight=False)  # no automatic colouring of numbers: its regexes cost ~20 ms a run
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
    for line in storage_lines(a):
        console.print(escape(line))
    judged = has_correctness(ds)
    verdicts = correctness_values(ds) if judged else None  # [image]; numpy: no DataArray, no dask
    if judged:  # reads every answer: a store with expected answers says how many are right
        right, known = accuracy(verdicts)
        share = f" ({right / known:.0%})" if known else ""
        console.print(f"answers: {right} of {known} right{share} (against expected_answer / pope_correct)")
    expected = ["expected", "right"] if judged else []
    table = Table("#", "image", "tiles", "tokens", "answer", *expected, "complete")
    for r in summary.rows:
        table.add_row(
            str(r.index),
            escape(r.name),
            r.tiles,
            str(r.n_key),
            escape(r.answer[:60]),
            *(_judgement(ds, r.index, int(verdicts[r.index])) if judged else []),
            "yes" if r.complete else "[red]no[/red]",
        )
    console.print(table)
    if summary.n_images > max_rows:
        console.print(f"... {summary.n_images - max_rows} more images")


def _judgement(ds, i: int, verdict: int) -> list[str]:
    """The expected answer of image `i` and whether its answer is right (table cells)."""
    expected = str(ds[EXPECTED_ANSWER].values[i]) if EXPECTED_ANSWER in ds else ""
    mark = {RIGHT: "[green]right[/green]", WRONG: "[red]wrong[/red]"}.get(verdict, "?")
    return [escape(expected[:30]), mark]


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
    from attnstore.store.validation import validate_store

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
