"""One figure per analysis (matplotlib, imported only when a plot is drawn: `pip install
"attnstore[analyses]"`). Each takes the analysis' result Dataset and returns a matplotlib Figure."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from attnstore.errors import InvalidArgument, check_output_file

PLOT_FORMATS = (".png", ".svg")


def _pyplot():
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise InvalidArgument("plot", "needs matplotlib: pip install 'attnstore[analyses]'") from None
    matplotlib.use("Agg", force=False)  # files only: never a window
    import matplotlib.pyplot as plt

    return plt


def check_plot_output(path: str | Path) -> str:
    """The plot's format (suffix), after checking it can be written (before any work is done)."""
    suffix = check_output_file(path, "plot", PLOT_FORMATS)
    _pyplot()
    return suffix


def save_figure(fig, path: str | Path) -> Path:
    path = Path(path)
    check_plot_output(path)
    fig.savefig(path, dpi=120, bbox_inches="tight", metadata={"Date": None} if path.suffix == ".svg" else None)
    _pyplot().close(fig)
    return path


def _nanmean(da: xr.DataArray, dim: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # empty or all-NaN: NaN is drawn as a gap
        return np.nanmean(da.values, axis=da.dims.index(dim)) if da.sizes[dim] else np.full(da.shape[1:], np.nan)


def _heatmap(ax, values: np.ndarray, title: str, cmap: str = "viridis", centre: float | None = None, label: str = ""):
    kw = {}
    if centre is not None and np.isfinite(values).any():
        span = max(float(np.nanmax(np.abs(values - centre))), 1e-9)
        kw = {"vmin": centre - span, "vmax": centre + span}
    im = ax.imshow(values, aspect="auto", origin="lower", cmap=cmap, interpolation="nearest", **kw)
    ax.set(title=title, xlabel="head", ylabel="layer")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.figure.colorbar(im, ax=ax, label=label)


def modality(result: xr.Dataset):
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    layers = result["layer"].values
    for kind in result["kind"].values:
        left.plot(layers, _nanmean(result["mass"].sel(kind=kind), "image"), marker=".", label=str(kind))
        right.plot(layers, _nanmean(result["efficiency"].sel(kind=kind), "image"), marker=".", label=str(kind))
    left.set(title="attention mass by token type", xlabel="layer", ylabel="mean mass")
    right.set(title="efficiency (mass per token)", xlabel="layer", ylabel="mass / token", yscale="log")
    left.legend()
    fig.suptitle(f"modality allocation of {result.attrs.get('queries')} queries, {result.sizes['image']} images")
    return fig


def visual_ratio(result: xr.Dataset):
    plt = _pyplot()
    if "auroc" not in result:
        fig, ax = plt.subplots(figsize=(6, 5))
        _heatmap(ax, _nanmean(result["ratio"], "row"), "mean visual attention ratio", label="ratio")
        return fig
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    _heatmap(left, result["auroc"].values, f"AUROC ({result.attrs.get('positive')})", "RdBu_r", 0.5, "AUROC")
    best = result["head_rank"].values.reshape(-1).argsort()[:15]
    layer, head = np.unravel_index(best, result["head_rank"].shape)
    auc = result["auroc"].values[layer, head]
    err = np.abs(np.stack([result["auroc_low"].values[layer, head], result["auroc_high"].values[layer, head]]) - auc)
    right.errorbar(auc, np.arange(best.size), xerr=err, fmt="o")
    right.set_yticks(np.arange(best.size), [f"L{a} H{b}" for a, b in zip(layer, head)])
    right.axvline(0.5, color="grey", lw=0.8)
    right.invert_yaxis()
    right.set(title="heads ranked by |AUROC - 0.5| (95 % bootstrap)", xlabel="AUROC")
    return fig


def localisation(result: xr.Dataset):
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    flat = result["mean_image_sum"].values.reshape(-1)
    order = np.argsort(-flat)
    above = result["above_elbow"].values.reshape(-1)[order]
    left.plot(np.arange(flat.size), flat[order], color="grey", lw=1)
    left.scatter(np.flatnonzero(above), flat[order][above], s=10, color="C3", label="above the elbow")
    left.set(title="criterion 1: last prompt token's image attention", xlabel="heads, sorted", ylabel="mean sum")
    left.legend()
    _heatmap(right, result["frequency"].values, "criterion 2: selection frequency", "magma", label="fraction")
    return fig


def sinks(result: xr.Dataset):
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    layers = result["layer"].values
    left.plot(layers, _nanmean(result["first_mass"], "image"), marker=".", label="first position")
    left.plot(layers, _nanmean(result["top_mass"], "image"), marker=".", label="largest key")
    left.set(title="mean attention on the sink", xlabel="layer", ylabel="mass")
    left.legend()
    right.bar(layers, _nanmean(result["n_sinks"].astype(float), "image"))
    right.set(title="image keys flagged as sinks", xlabel="layer", ylabel="mean count")
    return fig


def compare(result: xr.Dataset):
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    _heatmap(left, result["mean_share_diff"].values, "image attention, B - A", "RdBu_r", 0.0, "difference")
    jsd = result["mean_jsd"]
    if "head" in jsd.dims:
        _heatmap(right, jsd.values, "Jensen-Shannon divergence", "magma", label="bits")
    else:  # per layer (the head-mean distributions)
        right.plot(jsd["layer"].values, jsd.values, marker=".")
        right.set(title="Jensen-Shannon divergence (head mean)", xlabel="layer", ylabel="bits")
    fig.suptitle(f"{result.attrs.get('compared_images')} shared images, {result.attrs.get('matched_tokens')} tokens")
    return fig
