"""`attnstore models`: the model families, their geometry and what the tests check."""

from rich.console import Console
from rich.table import Table

from attnstore.cli import app


@app.command()
def models() -> None:
    """List the model families: model types, image geometry, what the tests cover."""
    from attnstore.models.table import family_rows

    table = Table("family", "models", "model types", "geometry", "tests", show_lines=False)
    for row in family_rows():
        table.add_row(row.family, row.name, row.model_types, row.geometry, row.tests)
    console = Console()
    console.width = max(console.width, 160)  # a readable table in a pipe too (rich assumes 80 columns)
    console.print(table)
