"""`attnstore heatmap` (one token -> PNG / overlay / CSV) and `attnstore aggregate` (one token across a store)."""

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from attnstore.cli import app
from attnstore.errors import AttnstoreError

METHOD_HELP = "How layers and heads combine: see `attnstore methods` for every registered method."
NORMALISE_HELP = "Row normalisation before combining: see `attnstore methods`."
LAYERS_HELP = "Layers, e.g. 0-29 or 0,3,5-7 (default: all)."
HEADS_HELP = "Heads, e.g. 0-8 (default: all)."


def _check_writable(path: Path) -> None:
    if not path.parent.is_dir():
        raise AttnstoreError(f"cannot write {path}: folder {path.parent} does not exist")


@app.command()
def heatmap(
    store: Annotated[str, typer.Argument(help="Store path or fsspec URL.")],
    token: Annotated[
        str | None, typer.Option(help="Token text ('jacket' matches 'Ġjacket'); @answer: the answer's tokens.")
    ] = None,
    patch: Annotated[
        str | None,
        typer.Option(
            help="Instead of --token: an image patch as the query (where it looks), as ROW,COL on the --view grid "
            "or as its sequence position KEY. Needs a store extracted with --queries text+image or all."
        ),
    ] = None,
    image: Annotated[str, typer.Option(help="Image index or image name.")] = "0",
    occurrence: Annotated[int, typer.Option(help="Which occurrence of the token (0 = first, -1 = last).")] = 0,
    layers: Annotated[str | None, typer.Option(help=LAYERS_HELP)] = None,
    heads: Annotated[str | None, typer.Option(help=HEADS_HELP)] = None,
    topk: Annotated[int, typer.Option(help="k of entropy_topk.")] = 10,
    method: Annotated[str, typer.Option(help=METHOD_HELP)] = "entropy_topk",
    normalise: Annotated[str, typer.Option(help=NORMALISE_HELP)] = "raw",
    view: Annotated[str, typer.Option(help="tiles (stitched tile grid) | global (the thumbnail's grid).")] = "tiles",
    image_keys: Annotated[
        str, typer.Option(help="Keys ranked by entropy_topk: all | tiles (the seed's 24x32 grid) | global.")
    ] = "all",
    output: Annotated[Path, typer.Option(help="Heatmap PNG.")] = Path("token_heatmap.png"),
    overlay: Annotated[Path | None, typer.Option(help="Overlay PNG on the image (nearest-neighbour cells).")] = None,
    overlay_alpha: Annotated[float, typer.Option(help="Overlay opacity, 0-1.")] = 0.5,
    csv: Annotated[Path | None, typer.Option(help="Also write the map as CSV, one row per patch token.")] = None,
    svg: Annotated[Path | None, typer.Option(help="Also write the overlay as standalone SVG.")] = None,
    json: Annotated[Path | None, typer.Option(help="Also write the map (spec + grids) as JSON.")] = None,
    cmap: Annotated[str, typer.Option(help="viridis | magma | inferno | plasma | cividis | turbo | ...")] = "viridis",
    cell_px: Annotated[int, typer.Option(help="Pixels per grid cell in the heatmap PNG.")] = 16,
) -> None:
    """Heatmap of one token's attention over the image (the seed's compute_token_heatmap.py), or of
    where one image patch looks (--patch): its map over the other patches, and its top text tokens."""
    from attnstore.analysis import MapSpec, compute_map
    from attnstore.render import Style, export_map
    from attnstore.store import open_dataset

    files = {"png": output, "overlay": overlay, "csv": csv, "svg": svg, "json": json}
    files = {fmt: path for fmt, path in files.items() if path is not None}
    for path in files.values():
        _check_writable(path)
    style = Style(cmap=cmap, opacity=overlay_alpha, cell_px=cell_px).checked()
    if (token is None) == (patch is None):
        raise AttnstoreError("give exactly one of --token TEXT or --patch ROW,COL (or --patch KEY)")
    ds = open_dataset(store)
    if patch is not None:
        query = {"patch": _patch_key(ds, image, patch, view)}
    else:
        query = {"token": token, "occurrence": occurrence}
    spec = MapSpec.from_cli(
        ds, image=image, layers=layers, heads=heads, method=method, k=topk, normalise=normalise, keys=image_keys,
        view=view, **query,
    )  # fmt: skip
    result = compute_map(ds, spec)
    if result.sees_no_image:
        raise AttnstoreError(
            f"token {result.token!r} (position {result.position}) comes before the image: causal attention cannot "
            "see image patches, so its map is all zero; pick a token after the image (e.g. --token @answer)"
        )
    grid = result.grid().values
    if grid.size == 0:
        raise AttnstoreError(f"image {spec.image} has no {view} grid (0 tiles); try --view global")
    for fmt, path in files.items():
        path.write_bytes(export_map(result, fmt, style))
    peak = tuple(int(i) for i in np.unravel_index(np.nanargmax(grid), grid.shape)) if np.isfinite(grid).any() else None
    label = f"patch {patch}" if patch is not None else repr(token)
    typer.echo(
        f"{label}: row {result.row} (position {result.position}, {result.token!r}) of image {spec.image} "
        f"({ds['image_name'].values[spec.image]}), {grid.shape[0]}x{grid.shape[1]} {view} grid, peak at (row, col) "
        f"{peak}; {spec.describe()}"
    )
    if patch is not None:
        typer.echo("text it looks at most " + _top_text(ds, spec))
    typer.echo("wrote " + ", ".join(str(p) for p in files.values()))


def _patch_key(ds, image: str, patch: str, view: str) -> int:
    """--patch ROW,COL (a cell of the --view grid) or KEY (a sequence position) -> the patch's key position."""
    from attnstore.analysis import patch_at

    parts = patch.split(",")
    if not all(p.strip().isdigit() for p in parts) or len(parts) not in (1, 2):
        raise AttnstoreError(f"--patch must be ROW,COL or a token position KEY (non-negative integers), not {patch!r}")
    if len(parts) == 1:
        return int(parts[0])
    return patch_at(ds.attn.image(ds.attn.image_index(image)), (int(parts[0]), int(parts[1])), view)


def _top_text(ds, spec, top: int = 5) -> str:
    """The text tokens a patch query looks at most, e.g. "'User' #1 0.41, ..." (`text_spec`'s map)."""
    from attnstore.analysis import compute_map, text_spec

    text = compute_map(ds, text_spec(spec)).text_values()  # [key]: text keys only
    order = np.argsort(-np.nan_to_num(text.values, nan=-1.0))[:top]
    tokens = ds.attn.image(spec.image)["token_text"].values
    keys = text["key"].values
    picks = ", ".join(f"{str(tokens[keys[i]])!r} #{int(keys[i])} {float(text.values[i]):.3g}" for i in order)
    return f"({text_spec(spec).describe()}): {picks}"


@app.command()
def methods() -> None:
    """The registered map methods and normalisations (what --method and --normalise accept)."""
    from attnstore.analysis import METHODS, NORMALISATIONS

    for title, registry in (("methods (--method)", METHODS), ("normalisations (--normalise)", NORMALISATIONS)):
        typer.echo(title)
        for entry in registry.values():
            typer.echo(f"  {entry.name:<14} {entry.summary}")


@app.command()
def aggregate(
    store: Annotated[str, typer.Argument(help="Store path or fsspec URL.")],
    token: Annotated[str, typer.Option(help="Token text; every image whose text contains it is used.")],
    out: Annotated[Path, typer.Option(help="Table: .csv / .parquet (+ <stem>_mean_map beside it), .nc or .zarr.")],
    method: Annotated[str, typer.Option(help=METHOD_HELP)] = "entropy_topk",
    layers: Annotated[str | None, typer.Option(help=LAYERS_HELP)] = None,
    heads: Annotated[str | None, typer.Option(help=HEADS_HELP)] = None,
    topk: Annotated[int, typer.Option(help="k of entropy_topk.")] = 10,
    normalise: Annotated[str, typer.Option(help=NORMALISE_HELP)] = "raw",
    grid_size: Annotated[int, typer.Option(help="Side of the common normalised grid of the mean map.")] = 32,
    workers: Annotated[int, typer.Option(help="Parallel dask threads.")] = 2,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """One row per (image, occurrence) of a token: image share, entropy, peak; plus the mean map.

    Maps from images with different tile grids are resampled onto one grid_size x grid_size grid
    over the normalised image, as densities (value / cell area; 1 = uniform), then averaged.
    """
    from attnstore import analysis as A
    from attnstore.progress import progress_bar
    from attnstore.store import open_dataset

    A.check_aggregate_output(out)  # before the work: a missing writer fails at once
    if grid_size < 1 or workers < 1:
        raise AttnstoreError("--grid-size and --workers must be at least 1")
    ds = open_dataset(store)
    lay = A.parse_range(layers, ds.sizes["layer"], "layers")
    hea = A.parse_range(heads, ds.sizes["head"], "heads")
    n = int(np.asarray(ds["complete"].values).astype(bool).sum())
    with progress_bar(n, progress) as bar:
        task = bar.add_task(f"aggregating '{token}'", total=n)
        result = A.aggregate_token(
            ds, token, method=method, layers=lay, heads=hea, k=topk, normalise_mode=normalise,
            grid_size=grid_size, num_workers=workers, on_image=lambda done: bar.advance(task, done),
        )  # fmt: skip
    written = A.save_aggregate(result, out)
    n_images = len(np.unique(result["image"].values))
    typer.echo(f"'{token}': {result.sizes['occurrence']} occurrence(s) in {n_images} of {n} images")
    typer.echo("wrote " + ", ".join(str(p) for p in written))
