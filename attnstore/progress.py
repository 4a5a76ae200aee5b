"""One progress bar for every long command (extract, demo, aggregate, import-legacy): rich, on stderr."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(total: int, show: bool = True) -> Progress:
    """A transient bar on stderr, shown only when there is work and stderr is a terminal.

    Off a terminal rich's live display ends with a bare newline (an error would follow a blank line,
    a log file would hold a stale bar), and with nothing to do a bar only says `0/0 ETA -:--:--`.
    """
    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    return Progress(*columns, console=console, transient=True, disable=not (show and total > 0 and console.is_terminal))
