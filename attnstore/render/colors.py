"""Colour maps as numpy lookup tables (no matplotlib): interpolated from plotly's sequential scales
(a project dependency), so the CLI's PNGs, the exports and the explorer's figures share colours."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from attnstore.errors import InvalidArgument

CMAPS = ("viridis", "magma", "inferno", "plasma", "cividis", "turbo", "hot", "jet", "greys")


@lru_cache(maxsize=16)
def colormap_lut(name: str = "viridis", n: int = 256) -> np.ndarray:
    """Lookup table of a plotly sequential colour scale  # [n, 3] uint8."""
    import plotly.colors as pc

    scales = {k.lower(): v for k, v in vars(pc.sequential).items() if isinstance(v, list) and not k.startswith("_")}
    if name.lower() not in scales:
        raise InvalidArgument("cmap", f"'{name}' is unknown; try one of {', '.join(CMAPS)}")
    anchors = np.array([_rgb(c) for c in scales[name.lower()]], np.float64)  # [m, 3]
    at = np.linspace(0.0, 1.0, anchors.shape[0])
    t = np.linspace(0.0, 1.0, n)
    lut = np.stack([np.interp(t, at, anchors[:, ch]) for ch in range(3)], axis=1)
    return np.round(lut).astype(np.uint8)


def _rgb(colour: str) -> tuple[int, int, int]:
    if colour.startswith("#"):
        return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    inner = colour[colour.index("(") + 1 : colour.index(")")]
    return tuple(int(float(v)) for v in inner.split(",")[:3])


def colorize(
    values: np.ndarray, cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None
) -> np.ndarray:
    """Map values to RGBA  # [...] float -> [..., 4] uint8; NaN -> fully transparent.

    vmin/vmax default to the finite min/max; a constant map gets the lowest colour.
    """
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    lo = float(np.min(values[finite])) if vmin is None and finite.any() else (vmin or 0.0)
    hi = float(np.max(values[finite])) if vmax is None and finite.any() else (vmax if vmax is not None else 1.0)
    span = hi - lo if hi > lo else 1.0
    lut = colormap_lut(cmap)
    t = np.clip((np.where(finite, values, lo) - lo) / span, 0.0, 1.0)
    rgba = np.empty(values.shape + (4,), np.uint8)
    rgba[..., :3] = lut[np.round(t * (lut.shape[0] - 1)).astype(np.intp)]
    rgba[..., 3] = np.where(finite, 255, 0)
    return rgba


def plotly_colorscale(name: str, n: int = 11) -> list[list]:
    """A plotly colour scale from the same lookup table, so PNG exports and figures match."""
    lut = colormap_lut(name)
    at = np.linspace(0, lut.shape[0] - 1, n).round().astype(int)
    return [[i / (n - 1), f"rgb({r},{g},{b})"] for i, (r, g, b) in enumerate(lut[at])]
