"""`attnstore import-legacy` and `attnstore export-legacy`: the seed prototypes' npy/npz folders."""

from pathlib import Path
from typing import Annotated

import typer

from attnstore.cli import app
from attnstore.errors import AttnstoreError


@app.command("import-legacy")
def import_legacy(
    path: Annotated[Path, typer.Argument(help="A seed folder, or a batch root with one seed folder per image.")],
    out: Annotated[Path, typer.Option(help="New store to create (must not exist).")],
    grid: Annotated[
        str | None,
        typer.Option(help="ROWSxCOLS tile grid when the tokens carry no <row_r_col_c> markers (seed default 3x4)."),
    ] = None,
    prompt_tokens: Annotated[
        int | None, typer.Option(help="Number of prompt tokens (default: up to the last 'Assistant:').")
    ] = None,
    queries: Annotated[
        str, typer.Option(help="'text': text rows only; 'text+image': + image patch rows; 'all': every stored row.")
    ] = "text",
    image_dir: Annotated[
        Path | None, typer.Option(help="Where to find <folder name>.png/.jpg when a folder has no image.png.")
    ] = None,
    attn_dir: Annotated[
        str | None,
        typer.Option(
            help="Folder of attention_fp16_rounded_layer_{i}.npz files inside each seed folder "
            "(default: attentions_5/, then attentions/, then the one folder holding such files)."
        ),
    ] = None,
    model_id: Annotated[str, typer.Option(help="Model the files came from (recorded).")] = (
        "HuggingFaceTB/SmolVLM-256M-Instruct"
    ),
    tile_tokens: Annotated[int, typer.Option(help="Patch tokens per tile when --grid is used (8x8).")] = 64,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Import seed 000 (attention_array.npy) / seed 004 (attentions_5/*.npz) folders into a new store.

    Every file is checked first. Pickles are never loaded, except a decoded_tokens.npy saved as
    an object array of strings, read by an unpickler that can build nothing else. The store is
    built in a temporary folder and renamed to --out only when complete.
    """
    from attnstore.legacy import find_sources, parse_grid
    from attnstore.legacy import import_legacy as run_import
    from attnstore.progress import progress_bar
    from attnstore.records import QUERY_MODES

    if queries not in QUERY_MODES:
        raise AttnstoreError(f"--queries must be one of {', '.join(QUERY_MODES)}, not '{queries}'")
    n = len(find_sources(path, image_dir, attn_dir))
    with progress_bar(n, progress) as bar:
        task = bar.add_task("importing", total=n)
        names = run_import(
            path, out, grid=parse_grid(grid), prompt_tokens=prompt_tokens, queries=queries, model_id=model_id,
            image_dir=image_dir, attn_dir=attn_dir, tile_tokens=tile_tokens, on_image=lambda name: bar.advance(task),
            on_warning=lambda text: typer.secho(f"warning: {text}", err=True, fg="yellow"),
        )  # fmt: skip
    typer.echo(f"{out}: {len(names)} image(s) imported ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")


@app.command("export-legacy")
def export_legacy(
    store: Annotated[str, typer.Argument(help="Store path or fsspec URL.")],
    out: Annotated[Path, typer.Option(help="Folder to write the seed files into.")],
    image: Annotated[str, typer.Option(help="Image index or image name.")] = "0",
    formats: Annotated[
        str,
        typer.Option(
            help="Comma list of: array (attention_array.npy, fp32 [layers, heads, seq, seq] full square: rows the "
            "store does not hold, i.e. image-token rows unless extracted with --queries all, are ZEROS), "
            "npz (attentions_5/attention_fp16_rounded_layer_{i}.npz, fp16 [heads, seq, seq], same zeros), "
            "image (image.png, the store's display copy). decoded_tokens.npy is always written."
        ),
    ] = "array,npz,image",
    npz_key: Annotated[str, typer.Option(help="Array name inside each .npz.")] = "attention",
) -> None:
    """Write one image of a store back in the seed formats, so the seed tools keep working."""
    import attnstore.analysis  # noqa: F401  (registers ds.attn)
    from attnstore.legacy import export_legacy as run_export
    from attnstore.store import open_dataset

    ds = open_dataset(store)
    index = ds.attn.image_index(int(image) if image.lstrip("-").isdigit() else image)
    wanted = tuple(f.strip() for f in formats.split(",") if f.strip())
    written = run_export(ds, index, out, formats=wanted, npz_key=npz_key)
    typer.echo(f"{out}: wrote {len(written)} file(s) for image {index} ({ds['image_name'].values[index]})")
