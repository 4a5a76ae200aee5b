"""`attnstore pack`: a single-file (zip) copy of a finished store."""

from typing import Annotated

import typer

from attnstore.cli import app


@app.command()
def pack(
    store: Annotated[str, typer.Argument(help="Store folder or s3:// URL.")],
    out: Annotated[str, typer.Argument(help="The .zip file to write.")],
    storage_options: Annotated[str | None, typer.Option(help="fsspec options for a remote STORE (JSON).")] = None,
    allow_incomplete: Annotated[bool, typer.Option(help="Pack even if some images are incomplete.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Copy a store into one uncompressed zip that attnstore and xarray open directly (read-only)."""
    from attnstore.store.pack import pack_store
    from attnstore.store.remote import parse_storage_options

    report = pack_store(store, out, parse_storage_options(storage_options), allow_incomplete, overwrite)
    typer.echo(f"{out}: {report.files} files, {report.bytes / 1e6:.1f} MB")
    typer.echo(f'open with: xarray.open_zarr(zarr.storage.ZipStore("{out}", mode="r")) or attnstore info {out}')
