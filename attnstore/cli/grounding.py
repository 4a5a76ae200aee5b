"""`attnstore grounding`: does a token's attention land on an object's box? (stores with boxes)"""

from pathlib import Path
from typing import Annotated

import typer

from attnstore.cli import app
from attnstore.schema import TARGET_OBJECT


@app.command()
def grounding(
    store: Annotated[str, typer.Argument(help="Store path or fsspec URL (with object boxes).")],
    token: Annotated[str, typer.Option(help="@answer (first generated token) or a token text.")] = "@answer",
    target: Annotated[
        str, typer.Option(help="Object: a per-image index variable (e.g. target_object), an index, or a label.")
    ] = TARGET_OBJECT,
    image_keys: Annotated[str, typer.Option(help="Patch keys that count: all | tiles | global.")] = "all",
    by: Annotated[str, typer.Option(help="Rank heads by inbox_share | inbox_lift | pointing | pointing_lift.")] = (
        "inbox_lift"
    ),
    top: Annotated[int, typer.Option(help="Print the N best heads.")] = 10,
    out: Annotated[Path | None, typer.Option(help="Write every (image, layer, head) score as CSV.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a layer x head PNG of the mean --by score.")] = None,
) -> None:
    """Per-head grounding: share of image attention inside the object's box, pointing game, both vs chance."""
    from attnstore.analysis import rank_heads, store_grounding
    from attnstore.render.raster import heatmap_image
    from attnstore.store import open_dataset

    target_value: str | int = int(target) if target.lstrip("-").isdigit() else target
    scores = store_grounding(open_dataset(store), token=token, target=target_value, keys=image_keys)
    ranked = rank_heads(scores, by=by)
    n, chance = scores.sizes["image"], float(ranked["chance"])
    typer.echo(
        f"{n} images, token {token!r}, object {target!r}, keys {image_keys}; chance (mean box area) {chance:.3f}"
    )
    table = ranked.to_dataframe()[["layer", "head", "inbox_share", "inbox_lift", "pointing", "pointing_lift"]]
    typer.echo(table.head(top).to_string(float_format=lambda v: f"{v:.3f}"))
    if out is not None:
        scores.to_dataframe().reset_index().to_csv(out, index=False, float_format="%.5g")
        typer.echo(f"wrote {out}")
    if plot is not None:
        matrix = scores[by].astype("float32").mean("image").values  # [layer, head]
        heatmap_image(matrix, cell_px=24).save(plot)
        typer.echo(f"wrote {plot} (rows: layers, columns: heads)")
