"""Honest colour scales: a map is drawn as bright as the attention it shows, not stretched to full
colour whatever its size (pure functions, shared by the explorer's figures and its gallery).

A token's map over the image only holds the part of its attention that went to image patches (its
*image share*). A head that puts 0.00001 % of the token's attention on the image still has a
largest cell; scaled to its own maximum it looks as vivid as a head that puts 90 % there. So:

- every map says its image share (status line, colour bar, gallery badge);
- a map whose image share is *negligible* (below `NEGLIGIBLE_SHARE`) is never stretched to full
  colour: its colour top is raised so its brightest cell is at share / NEGLIGIBLE_SHARE of the
  scale (and at least to the token's shared top), i.e. it fades out as its share does;
- on request (`scale="shared"`) every map of the token (each layer, each head of the gallery) is
  drawn on ONE scale: the largest value of any of its heads on an image patch.
"""

from __future__ import annotations

import math

NEGLIGIBLE_SHARE = 0.01  # under 1 % of a token's attention on the image: its map is not a place it looks at
SCALES = {"own": "this map's own maximum", "shared": "one scale: every layer and head of the token"}


def negligible(share: float | None) -> bool:
    """Whether a map's image share is too small for its map to mean anything (NaN counts as none)."""
    return share is None or not math.isfinite(share) or share < NEGLIGIBLE_SHARE


def colour_top(vmax: float | None, share: float | None, shared_top: float | None = None, scale: str = "own") -> float:
    """The top of a map's colour range (the bottom is 0).

    vmax : the map's own largest value; share : its image share (0..1);
    shared_top : the largest value of any layer/head of the token (`scale="shared"`).
    Never below `vmax` (nothing clipped); 1.0 for an all-zero map.
    """
    own = vmax if vmax and math.isfinite(vmax) else 0.0
    top = own
    if scale == "shared" and shared_top:
        top = max(top, shared_top)
    if negligible(share) and own > 0:
        # brightest cell at share / NEGLIGIBLE_SHARE of the scale: a 0.5 % head at half colour, 1e-7 black
        faded = own * NEGLIGIBLE_SHARE / max(share if share and math.isfinite(share) else 0.0, 1e-12)
        top = max(top, faded, shared_top or 0.0)
    return top if top > 0 else 1.0


def share_label(share: float | None) -> str:
    """'37% on image', or '≈0% on image' for a negligible share."""
    if negligible(share):
        return "≈0% on image" if not share or share < 0.0005 else f"{share:.1%} on image (negligible)"
    return f"{share:.0%} on image"


def colourbar_title(share: float | None, scale: str = "own") -> str:
    """The colour bar's title: what the colours are, and how much of the token they hold."""
    where = " · shared scale" if scale == "shared" else ""
    return f"attention · {share_label(share)}{where}"
