"""The compiled aggregate kernel (`attnstore.analysis.fused`, numba) against the numpy kernels it replaces.

Tolerances: the numpy path sums float32 pairwise, the kernel sums exactly (values) or in float64
(a*log(a)), both from the same float32 terms; the differences measured are <= 5e-7 relative on
the entropies and <= 1.5e-6 on the maps. Sums and maps: rtol 1e-5; entropies (0..1, computed as
log S - sum(a log a) / S, which cancels for peaked rows): rtol 1e-5 + atol 1e-6.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import attnstore.analysis as A
from attnstore.analysis import aggregate as agg
from attnstore.analysis.kernels import key_runs
from attnstore.store import open_dataset

pytest.importorskip("numba", reason="numba is not installed (pip install attnstore[fast])")
from support.probes import probe_output, without

from attnstore.analysis import fused  # noqa: E402  (after the skip: a broken kernel module must fail, not skip)

RTOL, ENTROPY_ATOL = 1e-5, 1e-6


# -- rows ------------------------------------------------------------------------------------------------


def softmax_rows(rng, shape, zeros=0.0) -> np.ndarray:
    """Softmax-like fp16 rows  # [occ, layer, head, key], a fraction `zeros` of them set to 0."""
    w = np.exp(rng.standard_normal(shape) * 2)
    w /= w.sum(-1, keepdims=True)
    w[rng.random(shape) < zeros] = 0
    return w.astype(np.float16)


def tied_rows(rng, shape) -> np.ndarray:
    """Few distinct values: many ties at the k-th largest."""
    return (rng.integers(0, 4, shape) * 0.01).astype(np.float16)


def case_rows(case: str, rng) -> tuple[np.ndarray, np.ndarray]:
    """(rows  # [occ, layer, head, key] float16, image-key mask  # [key]) of one test case."""
    shape = (3, 4, 5, 60)
    mask = np.zeros(shape[-1], bool)
    mask[[2, 3, 4, 9, *range(20, 52)]] = True  # several runs of image keys
    if case == "random":
        return softmax_rows(rng, shape), mask
    if case == "zeros":
        return softmax_rows(rng, shape, zeros=0.3), mask
    if case == "ties":
        return tied_rows(rng, shape), mask
    if case == "zero_rows":  # whole rows, and heads with no image attention at all
        w = softmax_rows(rng, shape)
        w[0] = 0
        w[1, :, 2][..., mask] = 0
        return w, mask
    if case == "subnormal":  # fp16 subnormals (< 6.1e-5) next to normal values
        w = softmax_rows(rng, shape) * np.float16(1e-3)
        return w.astype(np.float16), mask
    if case == "one_key":
        return softmax_rows(rng, shape), np.isin(np.arange(shape[-1]), [7])
    if case == "no_image_keys":
        return softmax_rows(rng, shape), np.zeros(shape[-1], bool)
    if case == "only_image_keys":
        return softmax_rows(rng, shape), np.ones(shape[-1], bool)
    raise ValueError(case)


CASES = ["random", "zeros", "ties", "zero_rows", "subnormal", "one_key", "no_image_keys", "only_image_keys"]


def numpy_stats(w16, mask, k, renorm):
    """The numpy path: `aggregate._head_stats`, one occurrence at a time."""
    runs = key_runs(np.flatnonzero(mask)), key_runs(np.flatnonzero(~mask))
    stats = [agg._head_stats(w16[i : i + 1], runs, k, "image" if renorm else "raw", True) for i in range(len(w16))]
    return [np.concatenate([st[j] for st in stats]) for j in range(4)]


def fused_stats(w16, mask, k, renorm):
    return fused.head_stats(w16, key_runs(np.flatnonzero(mask)), key_runs(np.flatnonzero(~mask)), k, renorm)


def assert_same_stats(got, want):
    names = ("attn_sum", "row_sum", "entropy", "map")
    assert got is not None
    for name, g, w in zip(names, got, want):
        assert g.dtype == np.float32 and g.shape == w.shape, name
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ENTROPY_ATOL if name == "entropy" else 0, err_msg=name)
        np.testing.assert_array_equal(g == 0, w == 0, err_msg=f"{name}: zeros")


# -- the kernel ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("renorm", [False, True])
@pytest.mark.parametrize("k", [0, 1, 3, 10, 50])
@pytest.mark.parametrize("case", CASES)
def test_kernel_equals_numpy_kernels(case, k, renorm):
    w16, mask = case_rows(case, np.random.default_rng(len(case) * 100 + k))
    assert_same_stats(fused_stats(w16, mask, k, renorm), numpy_stats(w16, mask, k, renorm))


@pytest.mark.parametrize("k", [1, 10, 40, 100])
@pytest.mark.parametrize("case", ["random", "zeros", "ties", "zero_rows"])
def test_kernel_equals_numpy_kernels_at_real_length(case, k):
    """~830 image keys in runs of 64 between short separators: many chunks of the top-k search, candidate
    lists of every length (counted in one vector or two, or sorted)."""
    rng = np.random.default_rng(k)
    shape = (2, 3, 4, 957)
    mask = np.zeros(shape[-1], bool)
    for start in range(5, 900, 68):
        mask[start : start + 64] = True
    w16 = {"random": softmax_rows, "zeros": lambda r, s: softmax_rows(r, s, zeros=0.97), "ties": tied_rows}.get(
        case, softmax_rows
    )(rng, shape)
    if case == "zero_rows":
        w16[0, 1] = 0
        w16[1, :, 2][..., mask] = 0
    for renorm in (False, True):
        assert_same_stats(fused_stats(w16, mask, k, renorm), numpy_stats(w16, mask, k, renorm))


def test_ties_at_the_threshold_are_all_kept():
    """One head, values 4 3 3 3 1 on the image keys, k = 2: the three 3s are kept (numpy's rule)."""
    w16 = np.array([4, 3, 3, 3, 1, 9], np.float16).reshape(1, 1, 1, 6) / 10
    mask = np.array([1, 1, 1, 1, 1, 0], bool)
    top_map = fused_stats(w16, mask, 2, False)[3][0]
    np.testing.assert_allclose(top_map, np.array([4, 3, 3, 3, 0]) / 13, rtol=1e-3)
    assert_same_stats(fused_stats(w16, mask, 2, False), numpy_stats(w16, mask, 2, False))


def test_strided_rows_as_a_backend_returns_them():
    """Rows cut from a buffer with a longer key axis (what the read backends return) and a layer subset."""
    rng = np.random.default_rng(7)
    base = softmax_rows(rng, (2, 6, 3, 70))
    w16 = base[:, ::2, :, :60]  # neither the keys nor the layers contiguous
    mask = case_rows("random", rng)[1]
    assert not w16.flags.c_contiguous
    assert_same_stats(fused_stats(w16, mask, 5, False), numpy_stats(np.ascontiguousarray(w16), mask, 5, False))


@pytest.mark.parametrize("bad", [-0.01, np.inf, np.nan])
def test_negative_or_non_finite_values_are_left_to_numpy(bad):
    w16 = softmax_rows(np.random.default_rng(3), (2, 2, 2, 60))
    w16[1, 1, 1, 59] = bad  # an other key: its value is summed too
    assert fused_stats(w16, case_rows("random", np.random.default_rng(0))[1], 5, False) is None


def test_lookup_table_is_numpys_a_log_a():
    bits = np.array([0, 1, 0x03FF, 0x0400, 0x2E66, 0x3BFF, 0x7BFF], np.uint16)
    a = bits.view(np.float16).astype(np.float32)
    want = a * np.log(np.maximum(a, np.finfo(np.float32).tiny))
    np.testing.assert_array_equal(fused._ALOG[bits], want)


# -- aggregate_token on both paths ------------------------------------------------------------------------


def aggregate_both(monkeypatch, ds, **kwargs):
    """aggregate_token with the compiled kernel (checked to be called) and with ATTNSTORE_KERNELS=numpy."""
    calls = []
    head_stats = fused.head_stats
    monkeypatch.setattr(fused, "head_stats", lambda *a, **k: calls.append(1) or head_stats(*a, **k))
    got = A.aggregate_token(ds, **kwargs)
    assert calls, "the compiled kernel was not used"
    with monkeypatch.context() as m:
        m.setenv("ATTNSTORE_KERNELS", "numpy")
        n = len(calls)
        want = A.aggregate_token(ds, **kwargs)
        assert len(calls) == n, "ATTNSTORE_KERNELS=numpy still used the compiled kernel"
    return got, want


def assert_same_aggregate(got, want):
    assert set(got.variables) == set(want.variables) and got.attrs == want.attrs
    for name, var in want.variables.items():
        if var.dtype.kind in "OUSib" or (name.startswith("peak_") and name != "peak_value"):
            np.testing.assert_array_equal(got[name].values, var.values, err_msg=name)  # peak keys identical
        else:
            atol = ENTROPY_ATOL if "entropy" in name else 0
            np.testing.assert_allclose(got[name].values, var.values, rtol=RTOL, atol=atol, err_msg=name)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(token="dog"),
        dict(token="a", k=3, normalise_mode="image", grid_size=8),
        dict(token="a", k=50, layers=[1], heads=[0, 2]),  # k > n on the small images; strided rows
    ],
)
def test_aggregate_token_same_dataset_on_both_paths(synthetic_store, monkeypatch, kwargs):
    got, want = aggregate_both(monkeypatch, open_dataset(synthetic_store), num_workers=2, **kwargs)
    assert got.sizes["occurrence"] > 0
    assert_same_aggregate(got, want)


@pytest.mark.slow
def test_aggregate_token_same_dataset_at_real_size(tmp_path, monkeypatch):
    """30 layers x 9 heads, ~830 image keys: the benchmark's geometry."""
    from attnstore.extraction.synthetic import make_synthetic_store

    path = make_synthetic_store(str(tmp_path / "real.zarr"), n_images=2, n_layers=30, n_heads=9, n_answer=20)
    got, want = aggregate_both(monkeypatch, open_dataset(path), token="dog", num_workers=2)
    assert_same_aggregate(got, want)


def test_without_numba_aggregate_takes_the_numpy_path(synthetic_store):
    """numba hidden from the import system: the same aggregate, through numpy, without an error."""
    probe = (
        without("numba") + "import json\n"
        "import attnstore.analysis as A\n"
        "from attnstore.store import open_dataset\n"
        "table = A.aggregate_token(open_dataset(sys.argv[1]), 'dog', num_workers=1)\n"
        "print(json.dumps({'rows': int(table.sizes['occurrence']), 'entropy': table['entropy'].values.tolist(),\n"
        "                  'fused': 'attnstore.analysis.fused' in sys.modules}))\n"
    )
    seen = json.loads(probe_output(probe, synthetic_store, timeout=300).strip().splitlines()[-1])
    want = A.aggregate_token(open_dataset(synthetic_store), "dog", num_workers=1)
    assert not seen["fused"] and seen["rows"] == want.sizes["occurrence"]
    np.testing.assert_allclose(seen["entropy"], want["entropy"].values, rtol=RTOL, atol=ENTROPY_ATOL)
