"""What the run commands (`extract`, `demo`, `pope`) share: how a run's outcome is printed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from attnstore.extraction.driver import RunReport

# Help of the model-running options every run command offers.
DEVICE_HELP = "torch device: cpu, cuda, cuda:N or mps (with --workers and several GPUs, 'cuda' gives each worker one)."
DTYPE_HELP = "Weights' dtype: float32, bfloat16 or float16 (default float32 on CPU, bfloat16 on CUDA); rows are fp32."
KERNEL_HELP = "Text attention kernel: sdpa, eager or flash_attention_2 (rows are captured through any of them)."
BATCH_HELP = "Images per generate (padding handled; same values as one at a time)."


def summarise_run(report: RunReport, out: str) -> None:
    """One line of counts, one line per failed entry; exit code 1 if any failed or the run was interrupted."""
    typer.echo(
        f"{out}: {len(report.written)} written, {len(report.skipped)} already complete, {len(report.failed)} failed"
    )
    for name, why in report.failed.items():
        typer.secho(f"  failed {name}: {why}", fg="red", err=True)
    if report.interrupted:
        typer.echo("interrupted: rerun the same command to continue where it stopped")
    if report.failed or report.interrupted:
        raise typer.Exit(1)
