"""Dataset-level analyses from the literature, one registry (`ANALYSES`) that every front end reads.

Each analysis is a function `fn(ds, **options) -> xr.Dataset`, a tidy table over its natural dims
(image x layer x head, answer token x layer x head, ...), vectorised over layers and heads, streamed
over images in batches (`attnstore.analysis.scan`); its registry entry also holds its plot
(matplotlib) and the options front ends offer (`Option`: the CLI's come from there). Reached as
`ds.attn.<name>(...)`, `attnstore analyze NAME STORE --out table.csv --plot fig.png`, or
`run_analysis(name, ds, ...)`. Definitions, papers and choices: docs/analyses.md.

    modality      FastV's modality allocation per layer (arXiv 2403.06764)
    visual_ratio  visual attention ratio, heads ranked by AUROC against a label (arXiv 2411.16724)
    localisation  localisation heads: image attention + spatial entropy (arXiv 2503.06287)
    sinks         first-position mass (StreamingLLM) and detected sink keys per image and layer
    compare       two stores over their shared images: share differences, Jensen-Shannon divergence
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from attnstore.analysis.aggregate import WHOLE_DATASET_FORMATS, check_aggregate_output, save_whole
from attnstore.analysis.scan import scan
from attnstore.analysis.studies import compare, localisation, modality, sinks, visual_ratio  # noqa: F401 (register)
from attnstore.analysis.studies.base import ANALYSES, QUERY_SETS, Option, query_rows, register
from attnstore.analysis.studies.compare import compare_stores, matched_rows, shared_images
from attnstore.analysis.studies.localisation import localisation_heads
from attnstore.analysis.studies.modality import modality_allocation, token_allocation
from attnstore.analysis.studies.plots import PLOT_FORMATS, check_plot_output, save_figure
from attnstore.analysis.studies.sinks import attention_sinks
from attnstore.analysis.studies.visual_ratio import visual_ratio as visual_attention_ratio

__all__ = [
    "ANALYSES",
    "PLOT_FORMATS",
    "QUERY_SETS",
    "Option",
    "attention_sinks",
    "check_plot_output",
    "compare_stores",
    "localisation_heads",
    "matched_rows",
    "modality_allocation",
    "plot_analysis",
    "query_rows",
    "register",
    "run_analysis",
    "save_table",
    "scan",
    "shared_images",
    "token_allocation",
    "visual_attention_ratio",
]


def run_analysis(name: str, ds: xr.Dataset, **options) -> xr.Dataset:
    """The registered analysis `name` on `ds` (InvalidArgument("analysis") if there is none)."""
    return ANALYSES[name].func(ds, **options)


def plot_analysis(result: xr.Dataset, path: str | Path | None = None):
    """The figure of an analysis result (by its `analysis` attr); saved as PNG/SVG when `path` is given."""
    fig = ANALYSES[result.attrs.get("analysis")].plot(result)
    return save_figure(fig, path) if path is not None else fig


def save_table(result: xr.Dataset, path: str | Path) -> list[Path]:
    """Write an analysis result: .nc / .zarr hold it whole; .csv / .parquet hold one tidy table per
    set of dims, the largest at `path` and the others beside it as `<stem>_<dims><suffix>`."""
    path = Path(path)
    suffix = check_aggregate_output(path)
    if suffix in WHOLE_DATASET_FORMATS:
        return save_whole(result, path)
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, var in result.data_vars.items():
        groups.setdefault(var.dims, []).append(name)
    written = []
    for n, (dims, names) in enumerate(sorted(groups.items(), key=lambda g: -len(g[0]))):
        target = path if n == 0 else path.with_name(f"{path.stem}_{'_'.join(dims) or 'scalars'}{suffix}")
        table = result[names].to_dataframe()
        table.to_csv(target) if suffix == ".csv" else table.to_parquet(target)
        written.append(target)
    return written
