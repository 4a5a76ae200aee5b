"""Map-faithful lossy storage (`extract --map-error EPS`): error bounded by each drawn map's maximum.

`--keep-bits` bounds the error relative to each value, so a value of 1e-5 keeps as many bits as a
peak of 0.3, though a map scaled to its maximum shows it as 0. What a person sees is a map of one
(layer, head, query) row over the image keys, with or without the sinks, scaled to its own maximum.
Here each such row gets one quantisation step, a power of two (so stored values k x 2^e stay exact
fp16 and their low mantissa bits are zero, which compresses), the largest with

    |stored - value| <= EPS x REF            for every key of the row (image, text and sink keys), and
    sum |stored - value| <= EPS x REST       over the row's image keys but its SINK_ALLOWANCE largest,

REF being the (SINK_ALLOWANCE + 1)-th largest image-key value of the row and REST the image-key mass
without those largest keys. Any map drawn from the row that drops at most SINK_ALLOWANCE keys (the
sinks) still has a maximum >= REF, so:
  - raw map (as stored) over image keys, with or without up to SINK_ALLOWANCE sinks: error <= EPS x
    the map's maximum;
  - a map renormalised over its keys ("image"; "no_sinks" when it drops at most SINK_ALLOWANCE keys):
    error <= 5 EPS / (1 - 4 EPS) x its maximum (the renormalising sum moves by at most 4 EPS of itself).
Limit: `analysis.sink_keys` calls a sink every image key most heads attend to, which in sparse real
attention (a median of 0) is dozens of keys; a "no_sinks" map may then peak below REF and its error
exceed the bound (measured on seed-style rows: 1.08 % at EPS 0.002, bound 1.0 %). The exact fix is the
quantiser using the same sink rule (it lives in `analysis`, which the store may not import).
A row whose REF is 0 (no image attention past the sinks) is kept exactly; a non-zero value never
becomes 0 (it becomes 2^-24), so the sinks found in the stored rows are the ones of the model's rows
(sparse rows; in dense rows a key near `sink_keys`' threshold may still change side: measured). Aggregates over heads
and layers ("mean", "max") stay within EPS x the mean / max of the heads' REF; top-k selection and
rollout are not bounded by construction: their errors are measured (`attnstore.fidelity`) and
recorded in the store's attrs.
"""

from __future__ import annotations

import numpy as np

MAP_ERROR_ATTR = "map_error"  # group attr: EPS of the map-faithful mode (absent: off)
SINK_ALLOWANCE = 3  # keys a drawn map may drop (BOS is not an image key; the first image token + data sinks)
MAX_HALVINGS = 24  # the step halves until the sum bound holds (fp16 has no finer steps than 2^-24)


def renormalised_bound(eps: float) -> float:
    """The guaranteed bound of a renormalised single-head map, relative to its maximum."""
    return 5 * eps / (1 - 4 * eps)


def check_eps(eps: float) -> float:
    from attnstore.errors import InvalidArgument

    if not 0 < eps < 0.1:
        raise InvalidArgument("map_error", f"must be > 0 and < 0.1 (a fraction of each map's maximum), not {eps}")
    return float(eps)


def map_quantise(attention: np.ndarray, image_keys: np.ndarray, eps: float) -> np.ndarray:
    """Quantise every (layer, head, query) row with its own power-of-two step (see the module doc).

    attention # [layer, head, query, key] float16; image_keys # [key] bool -> [layer, head, query, key] float16
    """
    eps = check_eps(eps)
    out = np.empty_like(attention, dtype=np.float16)
    for layer in range(attention.shape[0]):  # one layer at a time: fp32 copies stay small
        out[layer] = _quantise_rows(attention[layer].astype(np.float32), image_keys, eps)
    return out


def _quantise_rows(x: np.ndarray, image_keys: np.ndarray, eps: float) -> np.ndarray:
    """x # [head, query, key] float32 -> float16."""
    img = x[..., image_keys]  # [head, query, n_image]
    ranked = -np.sort(-img, axis=-1)  # descending
    ref = ranked[..., SINK_ALLOWANCE] if img.shape[-1] > SINK_ALLOWANCE else np.zeros(img.shape[:-1], np.float32)
    rest = ranked[..., SINK_ALLOWANCE:].sum(-1)  # [head, query]
    with np.errstate(divide="ignore"):
        step = np.where(ref > 0, np.exp2(np.floor(np.log2(np.maximum(2 * eps * ref, 2.0**-24)))), 0.0)
    rest_keys = img <= ref[..., None]  # REST, and any key tied at REF (a stricter check)
    for _ in range(MAX_HALVINGS):
        rest_err = np.where(rest_keys, np.abs(_on_steps(img, step) - img), 0.0).sum(-1)
        bad = (rest_err > eps * rest) & (step > 0)
        if not bad.any():
            break
        step = np.where(bad, step / 2, step)
    return _on_steps(x, step).astype(np.float16)


def _on_steps(x: np.ndarray, step: np.ndarray) -> np.ndarray:
    """x rounded to multiples of its row's step (rows with step 0 unchanged)  # [..., key].

    A value rounded to 0 becomes 2^-24 (fp16's smallest) instead: which keys a row attends to at all
    stays as it was, so the attention sinks `analysis.sink_keys` finds in sparse rows (keys most heads
    attend to, against a median of 0) are the same keys, and "no_sinks" maps drop the same keys."""
    s = step[..., None]
    safe = np.where(s > 0, s, 1.0)
    q = np.where(s > 0, np.rint(x / safe) * safe, x)
    return np.where((q == 0) & (x > 0), np.float32(2.0**-24), q)
