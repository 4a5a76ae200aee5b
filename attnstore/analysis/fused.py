"""The per-head summaries of `aggregate_token` as one compiled kernel (numba): the numbers of the numpy
kernels (`attnstore.analysis.kernels`) without their ~12 passes over fp32 temporaries.

Imported lazily, only by `aggregate.fused_kernel` (measured: numba's import ~0.2 s, then loading the
kernel from numba's on-disk cache ~0.4 s, or compiling it without the cache ~4-5 s). `aggregate` takes
the numpy path instead when numba is missing, or when the environment sets ATTNSTORE_KERNELS=numpy.

Each (occurrence, layer, head) row is read as stored (fp16 bits), in passes over its keys:

1. gather the image keys' bits into a contiguous buffer x  # [n], and the other keys' into another
   (copies of their runs), with the largest bits: a negative, inf or NaN value stops the kernel;
2. over x: the sum of the values, exact in integers (every fp16 value is a multiple of 2**-24), and
   the sum of a*log(a) from a lookup table indexed by the bits (numpy's fp16 -> fp32 and log: the
   numbers `entropy_np` sums); the sum of the other keys;
3. the k-th largest value: the smallest of the maxima of k blocks of x is a lower bound (k keys
   reach it), so only the keys at or above it (a few dozen in attention rows) are candidates, and
   the k-th largest of those is found by counting; the bits of non-negative fp16 values order like
   the values;
4. the keys at or above the k-th largest (ties all kept, like `entropy_topk_np`): their share of
   the head's weight attn_sum x (1 - entropy) added to the occurrence's map.

The loops walk contiguous slices with non-negative indices, which LLVM vectorises (the same loops
with computed indices ran several times slower, measured). Sums are float64 (the value sums exact) returned as
float32; numpy sums float32 pairwise: the two agree to ~1e-6 relative. Negative, inf or NaN values
(never in attention) make `head_stats` return None: the caller takes the numpy path.
"""

from __future__ import annotations

import numba
import numpy as np

from attnstore.analysis.kernels import fp16_to_fp32

_FINITE_STOP = 0x7C00  # fp16 bits at and above: inf, NaN, or the sign bit set
_ULP = 2.0**-24  # every finite fp16 value is an integer multiple of this


def _alog_table() -> np.ndarray:
    """a*log(a) of every finite non-negative fp16 bit pattern  # [bits] float32, as `entropy_np` computes it."""
    a = fp16_to_fp32(np.arange(_FINITE_STOP, dtype=np.uint16).view(np.float16))
    return a * np.log(np.maximum(a, np.finfo(np.float32).tiny))  # 0 log 0 = 0


_ALOG = _alog_table()  # a constant of the maths (124 kB), not a cache of data


@numba.njit(nogil=True, cache=True, inline="always")
def _fixed(b):
    """fp16 bits (finite, non-negative) -> the value in units of 2**-24, exactly (int64)."""
    b = np.int64(b)
    e = b >> 10
    return ((b & 0x3FF) | (np.int64(e > 0) << 10)) << max(e - 1, 0)


@numba.njit(nogil=True, cache=True, inline="always")
def _gather(row, runs, x):
    """Pass 1: the keys of `runs` of one row  # [key], contiguous in x  # [n]; returns the largest bits."""
    n, top = 0, np.uint16(0)
    for r in range(runs.shape[0]):
        seg = row[runs[r, 0] : runs[r, 1]]
        dst = x[n : n + seg.shape[0]]
        for j in range(seg.shape[0]):
            dst[j] = seg[j]
            top = max(top, seg[j])
        n += seg.shape[0]
    return top


@numba.njit(nogil=True, cache=True, inline="always")
def _fixed_sum(x):
    """Sum of fp16 bits' values  # [n] -> int64, in units of 2**-24."""
    s = 0
    for j in range(x.shape[0]):
        s += _fixed(x[j])
    return s


@numba.njit(nogil=True, cache=True, inline="always")
def _alog_sum(x, table):
    """Sum of a*log(a) over fp16 bits x  # [n] (four independent chains: the loads overlap)."""
    a0 = a1 = a2 = a3 = 0.0
    n4 = x.shape[0] - x.shape[0] % 4
    for j in range(0, n4, 4):
        a0 += table[x[j]]
        a1 += table[x[j + 1]]
        a2 += table[x[j + 2]]
        a3 += table[x[j + 3]]
    for j in range(n4, x.shape[0]):
        a0 += table[x[j]]
    return (a0 + a1) + (a2 + a3)


@numba.njit(nogil=True, cache=True, inline="always")
def _lower_bound(x, k):
    """The smallest of the maxima of k contiguous blocks of x  # [n] (1 <= k <= n): <= its k-th largest
    (the k maxima are k values reaching it)."""
    n = x.shape[0]
    bound = np.uint16(0xFFFF)
    for q in range(k):
        block = x[q * n // k : (q + 1) * n // k]
        top = np.uint16(0)
        for j in range(block.shape[0]):
            top = max(top, block[j])
        bound = min(bound, top)
    return bound


@numba.njit(nogil=True, cache=True, inline="always")
def _top_keys(x, k, kept, cand):
    """Positions of x  # [n] at or above its k-th largest (1 <= k <= n; ties all kept) -> kept[:m];
    returns m. cand  # [n]: scratch."""
    bound = _lower_bound(x, k)
    m = 0
    for j in range(x.shape[0]):  # branch-free: the candidates are at random positions
        kept[m] = j
        m += x[j] >= bound
    for i in range(m):
        cand[i] = x[kept[i]]
    threshold = _kth_largest(cand[:m], k)
    top = 0
    for i in range(m):
        kept[top] = kept[i]
        top += x[kept[i]] >= threshold
    return top


@numba.njit(nogil=True, cache=True, inline="always")
def _kth_largest(c, k):
    """The k-th largest of c  # [m] (k <= m): the largest value that k values reach. By counting, O(m**2)
    but vectorised and branch-free: faster than sorting a few dozen candidates (measured); sorts when long."""
    m = c.shape[0]
    if m > 256:
        return np.sort(c)[m - k]
    best = np.uint16(0)
    for i in range(m):
        v = c[i]
        reach = 0
        for j in range(m):
            reach += c[j] >= v
        best = max(best, v if reach >= k else np.uint16(0))
    return best


@numba.njit(nogil=True, cache=True, inline="always")
def _add_top(x, kept, weight, combined):
    """Pass 4: the keys kept  # [m] positions of x, renormalised to sum to `weight`, added to combined  # [n]."""
    top_sum = 0
    for i in range(kept.shape[0]):
        top_sum += _fixed(x[kept[i]])
    if top_sum == 0 or weight == 0:
        return
    scale = weight / top_sum
    for i in range(kept.shape[0]):
        combined[kept[i]] += _fixed(x[kept[i]]) * scale


@numba.njit(nogil=True, cache=True, inline="always")
def _run_length(runs):
    """How many keys `runs`  # [run, (start, stop)] hold."""
    n = 0
    for r in range(runs.shape[0]):
        n += runs[r, 1] - runs[r, 0]
    return n


_SIGNATURE = numba.types.Tuple([numba.float32[:, :, ::1]] * 3 + [numba.float32[:, ::1], numba.boolean])(
    numba.uint16[::1], numba.int64[:, :, ::1], numba.int64, numba.int64[:, ::1], numba.int64[:, ::1],
    numba.float32[::1], numba.int64, numba.boolean,
)  # fmt: skip


@numba.njit(_SIGNATURE, nogil=True, cache=True)
def _head_stats_kernel(flat, starts, n_key, image_runs, other_runs, table, k, renorm):
    """Rows of fp16 bits (finite, non-negative): row (o, l, h) is flat[starts[o, l, h]:][:n_key];
    runs  # [run, (start, stop)] of keys; table  # [bits] a*log(a).
    Returns attn_sum, row_sum, entropy  # each [occ, layer, head]; map  # [occ, n]; and False if a
    value is negative, inf or NaN (the rest is then incomplete)."""
    n_occ, n_layer, n_head = starts.shape
    n, n_other = _run_length(image_runs), _run_length(other_runs)
    attn_sum = np.zeros((n_occ, n_layer, n_head), np.float32)
    row_sum = np.zeros((n_occ, n_layer, n_head), np.float32)
    ent = np.zeros((n_occ, n_layer, n_head), np.float32)
    maps = np.zeros((n_occ, n), np.float32)
    k = min(max(k, 1), n)
    x = np.empty(n, np.uint16)  # [n] one row's image keys
    other_x = np.empty(n_other, np.uint16)  # [n_other] one row's other keys
    kept = np.empty(n, np.int64)  # [n] positions in x
    cand = np.empty(n, np.uint16)  # [n] scratch of _top_keys
    combined = np.zeros(n, np.float64)  # [n] one occurrence's map
    log_n = np.log(n) if n > 1 else 1.0
    for o in range(n_occ):
        combined[:] = 0.0
        for layer in range(n_layer):
            for h in range(n_head):
                row = flat[starts[o, layer, h] : starts[o, layer, h] + n_key]  # [key]
                if max(_gather(row, image_runs, x), _gather(row, other_runs, other_x)) >= _FINITE_STOP:
                    return attn_sum, row_sum, ent, maps, False
                s, other = _fixed_sum(x) * _ULP, _fixed_sum(other_x) * _ULP
                e = 0.0
                if s > 0 and n > 1:  # H = log S - sum(a log a) / S, normalised by log n
                    e = min(max((np.log(s) - _alog_sum(x, table) / s) / log_n, 0.0), 1.0)
                attn_sum[o, layer, h], row_sum[o, layer, h], ent[o, layer, h] = s, s + other, e
                if s > 0:
                    weight = (1.0 if renorm else s) * (1.0 - np.float32(e))  # as entropy_topk_np: float32 entropy
                    _add_top(x, kept[: _top_keys(x, k, kept, cand)], weight, combined)
        total = combined.sum()
        if total > 0:
            for j in range(n):
                maps[o, j] = combined[j] / total
    return attn_sum, row_sum, ent, maps, True


def head_stats(w16: np.ndarray, image_runs: list[slice], other_runs: list[slice], k: int, renorm: bool):
    """`aggregate._head_stats` with `topk`, compiled: attn_sum, row_sum, entropy  # each [occ, layer, head]
    and the entropy-weighted top-k map on the image keys  # [occ, n]; from rows  # [occ, layer, head, key]
    float16 and the runs of image keys and of the other keys (`key_runs`). `renorm`: the "image"
    normalisation (each head's weight is 1 - entropy). None if a value is negative, inf or NaN."""
    bits = w16.view(np.uint16)
    runs = [np.array([[r.start, r.stop] for r in rr], np.int64).reshape(-1, 2) for rr in (image_runs, other_runs)]
    *stats, finite = _head_stats_kernel(*_flat_rows(bits), bits.shape[-1], *runs, _ALOG, int(k), bool(renorm))
    return tuple(stats) if finite else None


def _flat_rows(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows  # [occ, layer, head, key] uint16 as (a 1-D C-contiguous buffer, each row's start in it
    # [occ, layer, head]), without copying a view whose keys are contiguous: the rows a backend
    returns are cut from a buffer with a longer key axis, and a 4 MB copy into fresh pages costs
    ~0.9 ms per image (measured), a fifth of this kernel."""
    root = bits
    while isinstance(root.base, np.ndarray):
        root = root.base
    offset = bits.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    if not (root.flags.c_contiguous and bits.strides[-1] == 2 and min(bits.strides) >= 0 and offset % 2 == 0):
        root = bits = np.ascontiguousarray(bits)
        offset = 0
    steps = [np.arange(size) * (stride // 2) for size, stride in zip(bits.shape[:3], bits.strides[:3])]
    starts = offset // 2 + steps[0][:, None, None] + steps[1][None, :, None] + steps[2][None, None, :]
    return root.reshape(-1).view(np.uint16), np.ascontiguousarray(starts, np.int64)
