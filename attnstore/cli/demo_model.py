"""`attnstore demo-model DIR`: write the trained demo model as a save_pretrained folder."""

from pathlib import Path
from typing import Annotated

import typer

from attnstore.cli import app


@app.command("demo-model")
def demo_model(
    out: Annotated[Path, typer.Argument(help="Folder to write (must be new or empty).")],
) -> None:
    """Write the trained demo model (model + processor) to a folder that `--model` and transformers load."""
    from attnstore.extraction.demo import write_demo_model

    folder = write_demo_model(out)
    typer.echo(f"{folder}: demo model written (load it with --model {folder})")
