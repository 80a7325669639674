"""Compiled loops (numba) behind the metrics: binning chunks, merging exact tables, and the
single passes over a table that compute every ranking metric or the PRO area with its bound.

Positive weights (1 for ranking metrics, 1/|region| for AUPRO) are summed as double-doubles
(hi + lo, error-free TwoSum), so a bin's sum is the correctly rounded exact sum in practice and
does not depend on the order or grouping in which chunks arrive. Negative counts are integers
held in float64 (exact up to 2**53).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_SIGN = np.uint64(1 << 63)
_LOW = np.uint64((1 << 48) - 1)
_KEY_NEG_INF = np.uint64(0x000FFFFFFFFFFFFF)  # sortable key of -inf
_MIX = np.uint64(0xFF51AFD7ED558CCD)  # MurmurHash3 finalizer multiplier


@njit(inline="always")
def _slot(k, bits):
    """Hash table slot of a key: the top `bits` bits of a MurmurHash3-style mix."""
    k = (k ^ (k >> np.uint64(33))) * _MIX
    return (k ^ (k >> np.uint64(29))) >> np.uint64(64 - bits)


@njit(inline="always")
def _two_sum(a: float, b: float) -> tuple[float, float]:
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@njit(inline="always")
def _dd_add(hi: float, lo: float, b_hi: float, b_lo: float) -> tuple[float, float]:
    s, e = _two_sum(hi, b_hi)
    e += lo + b_lo
    s2 = s + e
    return s2, e - (s2 - s)


@njit(cache=True, nogil=True, boundscheck=False)
def bin_add(x, positive, valid, weights, table, neg, pos_hi, pos_lo, part_shift, check_f32):  # pragma: no cover
    """Add a flat chunk (no NaN where valid) into a binned table.

    Returns how many values are not float32 numbers (counted only when `check_f32`).
    `table[top]` packs (first bin of bucket `top`) << 8 | shift. `valid` of size 0 means all
    valid; `weights` of size 0 means every positive weighs 1 (then `pos_lo` may be empty).
    Negatives are counted in three cache-friendly passes (bin index, radix partition on
    `bin >> part_shift` into 256 groups, increments) instead of one random access each: a
    histogram of millions of bins does not fit in cache, one group does. part_shift < 0
    counts directly (small histograms).
    """
    n = x.shape[0]
    buf = np.empty(1, np.float64)
    ibuf = buf.view(np.uint64)
    use_valid = valid.shape[0] > 0
    use_w = weights.shape[0] > 0
    direct = part_shift < 0
    shift = np.uint32(max(part_shift, 0))
    pending = np.empty(0 if direct else n, np.uint32)
    starts = np.zeros(258, np.int64)
    m = 0
    not_f32 = 0
    for i in range(n):
        if use_valid and not valid[i]:
            continue
        v = np.float64(x[i]) + 0.0
        if check_f32 and np.float64(np.float32(v)) != v:
            not_f32 += 1
        buf[0] = v
        b = ibuf[0]
        k = ~b if b & _SIGN else b | _SIGN
        e = table[k >> np.uint64(48)]
        idx = (e >> 8) + np.int64((k & _LOW) >> np.uint64(e & 255))
        if positive[i]:
            if use_w:
                pos_hi[idx], pos_lo[idx] = _dd_add(pos_hi[idx], pos_lo[idx], weights[i], 0.0)
            else:
                pos_hi[idx] += 1.0
        elif direct:
            neg[idx] += 1.0
        else:
            pending[m] = np.uint32(idx)
            starts[(np.uint32(idx) >> shift) + 1] += 1
            m += 1
    if not direct:
        for j in range(256):
            starts[j + 1] += starts[j]
        grouped = np.empty(m, np.uint32)
        for i in range(m):
            j = pending[i] >> shift
            grouped[starts[j]] = pending[i]
            starts[j] += 1
        for i in range(m):
            neg[grouped[i]] += 1.0
    return not_f32


@njit(cache=True, nogil=True, boundscheck=False)
def _rehash(keys, neg, hi, lo, bits):  # pragma: no cover - compiled
    size = 1 << bits
    nk = np.zeros(size, np.uint64)
    nn = np.zeros(size, np.float64)
    nh = np.zeros(size, np.float64)
    nl = np.zeros(size, np.float64)
    for j in range(keys.shape[0]):
        k = keys[j]
        if k == 0:
            continue
        h = _slot(k, bits)
        while nk[h] != 0:
            h = (h + np.uint64(1)) & np.uint64(size - 1)
        nk[h], nn[h], nh[h], nl[h] = k, neg[j], hi[j], lo[j]
    return nk, nn, nh, nl


@njit(cache=True, nogil=True, boundscheck=False)
def _hash_fill(x, positive, valid, weights, start, keys, neg, hi, lo, bits, used):  # pragma: no cover
    """Count x[start:] into the table until it is half full; returns (next index, slots used)."""
    use_valid = valid.shape[0] > 0
    use_w = weights.shape[0] > 0
    buf = np.empty(1, np.float64)
    ibuf = buf.view(np.uint64)
    wrap = np.uint64((1 << bits) - 1)
    for i in range(start, x.shape[0]):
        if use_valid and not valid[i]:
            continue
        buf[0] = np.float64(x[i]) + 0.0
        b = ibuf[0]
        k = ~b if b & _SIGN else b | _SIGN
        h = _slot(k, bits)
        while keys[h] != k and keys[h] != 0:
            h = (h + np.uint64(1)) & wrap
        if keys[h] == 0:
            keys[h] = k
            used += 1
        if not positive[i]:
            neg[h] += 1.0
        elif use_w:
            hi[h], lo[h] = _dd_add(hi[h], lo[h], weights[i], 0.0)
        else:
            hi[h] += 1.0
        if 2 * used > (1 << bits):
            return i + 1, used
    return x.shape[0], used


@njit(cache=True, nogil=True, boundscheck=False)
def hash_count(x, positive, valid, weights, max_distinct):  # pragma: no cover - compiled
    """Exact (key, negatives, positive weight) per distinct score of a chunk, by hashing.

    Few distinct scores (quantized maps, float16) are counted in one pass instead of a sort.
    Returns (keys, neg, hi, lo, ok) in no particular order; ok is False once the chunk shows
    more than `max_distinct` distinct scores (the caller then sorts instead).
    """
    bits = 10
    keys = np.zeros(1 << bits, np.uint64)
    neg = np.zeros(1 << bits, np.float64)
    hi = np.zeros(1 << bits, np.float64)
    lo = np.zeros(1 << bits, np.float64)
    start = used = 0
    while start < x.shape[0]:
        start, used = _hash_fill(x, positive, valid, weights, start, keys, neg, hi, lo, bits, used)
        if 2 * used > (1 << bits):
            if used > max_distinct:
                return keys[:0], neg[:0], hi[:0], lo[:0], False
            bits += 1
            keys, neg, hi, lo = _rehash(keys, neg, hi, lo, bits)
    full = keys != 0
    return keys[full], neg[full], hi[full], lo[full], True


@njit(cache=True, nogil=True, boundscheck=False)
def runlength_dd(keys, weights):  # pragma: no cover - compiled
    """Unique keys of a sorted key array with the double-double sum of their weights."""
    n = keys.shape[0]
    uk = np.empty(n, np.uint64)
    hi = np.zeros(n, np.float64)
    lo = np.zeros(n, np.float64)
    j = -1
    for i in range(n):
        if j < 0 or keys[i] != uk[j]:
            j += 1
            uk[j] = keys[i]
        hi[j], lo[j] = _dd_add(hi[j], lo[j], weights[i], 0.0)
    return uk[: j + 1], hi[: j + 1], lo[: j + 1]


@njit(cache=True, nogil=True, boundscheck=False)
def rebin(keys, neg, hi, lo, table, out_neg, out_hi, out_lo):  # pragma: no cover - compiled
    """Add an exact (key, neg, hi, lo) table into a binned one (`out_lo` empty: plain sums)."""
    use_lo = out_lo.shape[0] > 0
    for i in range(keys.shape[0]):
        k = keys[i]
        e = table[k >> np.uint64(48)]
        j = (e >> 8) + np.int64((k & _LOW) >> np.uint64(e & 255))
        out_neg[j] += neg[i]
        if use_lo:
            out_hi[j], out_lo[j] = _dd_add(out_hi[j], out_lo[j], hi[i], lo[i])
        else:
            out_hi[j] += hi[i]


@njit(cache=True, nogil=True, boundscheck=False)
def merge_tables(ak, an, ah, al, bk, bn, bh, bl):  # pragma: no cover - compiled
    """Linear merge of two sorted unique tables into one (sizes counted first: no slack memory)."""
    i = j = size = 0
    while i < ak.shape[0] or j < bk.shape[0]:
        if j == bk.shape[0] or (i < ak.shape[0] and ak[i] < bk[j]):
            i += 1
        elif i == ak.shape[0] or bk[j] < ak[i]:
            j += 1
        else:
            i += 1
            j += 1
        size += 1
    keys = np.empty(size, np.uint64)
    neg = np.empty(size, np.float64)
    hi = np.empty(size, np.float64)
    lo = np.empty(size, np.float64)
    i = j = 0
    for o in range(size):
        if j == bk.shape[0] or (i < ak.shape[0] and ak[i] < bk[j]):
            keys[o], neg[o], hi[o], lo[o] = ak[i], an[i], ah[i], al[i]
            i += 1
        elif i == ak.shape[0] or bk[j] < ak[i]:
            keys[o], neg[o], hi[o], lo[o] = bk[j], bn[j], bh[j], bl[j]
            j += 1
        else:
            keys[o] = ak[i]
            neg[o] = an[i] + bn[j]
            hi[o], lo[o] = _dd_add(ah[i], al[i], bh[j], bl[j])
            i += 1
            j += 1
    return keys, neg, hi, lo


@njit(cache=True, nogil=True, boundscheck=False)
def compact_bins(neg2d, hi2d, lo2d, offsets, shifts, exact_shift, round_f32):  # pragma: no cover - compiled
    """Non-empty bins of per-thread histograms, summed over threads, in ascending key order.

    Returns (value, positive weight, negative count, exact) per non-empty bin, where value is
    the smallest score the bin can hold (rounded up to a float32 when `round_f32`) and exact
    means the bin's shift is at most `exact_shift` (it can hold one distinct score only).
    """
    threads, size = neg2d.shape
    use_lo = lo2d.shape[1] > 0
    count = 0
    for b in range(size):
        for t in range(threads):
            if neg2d[t, b] > 0 or hi2d[t, b] != 0:
                count += 1
                break
    values = np.empty(count, np.float64)
    pos = np.empty(count, np.float64)
    neg = np.empty(count, np.float64)
    exact = np.empty(count, np.bool_)
    ibuf = np.empty(1, np.uint64)
    fbuf = ibuf.view(np.float64)
    o = 0
    top = 0
    for b in range(size):
        n = 0.0
        h = 0.0
        lo = 0.0
        for t in range(threads):
            n += neg2d[t, b]
            if use_lo:
                h, lo = _dd_add(h, lo, hi2d[t, b], lo2d[t, b])
            else:
                h += hi2d[t, b]
        if n > 0 or h != 0:
            while offsets[top + 1] <= b:
                top += 1
            key = (np.uint64(top) << np.uint64(48)) | (np.uint64(b - offsets[top]) << shifts[top])
            key = max(key, _KEY_NEG_INF)
            ibuf[0] = key ^ _SIGN if key & _SIGN else ~key
            v = fbuf[0]
            if round_f32:
                v32 = np.float32(v)
                if np.float64(v32) < v:
                    v32 = np.nextafter(v32, np.float32(np.inf))
                v = np.float64(v32)
            values[o] = v
            pos[o] = h + lo
            neg[o] = n
            exact[o] = shifts[top] <= exact_shift
            o += 1
    return values, pos, neg, exact


@njit(inline="always")
def _acc(s: float, c: float, x: float) -> tuple[float, float]:
    """Neumaier compensated summation step."""
    t = s + x
    if abs(s) >= abs(x):
        c += (s - t) + x
    else:
        c += (x - t) + s
    return t, c


@njit(cache=True, nogil=True, boundscheck=False)
def ranking_pass(pos, neg, exact, n_pos):  # pragma: no cover - compiled
    """One pass over bins in DESCENDING score order computing every ranking metric and bound.

    Returns (auroc_num, auroc_bound_num, ap, ap_bound, aupr, aupr_bound, f1_best, f1_index,
    f1_upper, first95, near95, near95_low_fp, near95_high_fp); see `ranking.py` for the
    definitions. AUROC terms still need dividing by P * N.
    """
    n = pos.shape[0]
    tp = 0.0
    fp = 0.0
    auc = auc_c = bauc = bauc_c = ap = ap_c = bap = bap_c = aupr = aupr_c = baupr = baupr_c = 0.0
    prev_recall = 0.0
    prev_prec = 1.0
    f1_best = -1.0
    f1_index = 0
    f1_upper = 0.0
    first95 = -1
    near = -1
    near_d = np.inf
    reached_all = False
    for i in range(n):
        p = pos[i]
        q = neg[i]
        tpa = tp
        fpa = fp
        tp += p
        fp += q
        prec = tp / (tp + fp)
        recall = tp / n_pos
        auc, auc_c = _acc(auc, auc_c, q * (tp - 0.5 * p))
        ap, ap_c = _acc(ap, ap_c, p / n_pos * prec)
        aupr, aupr_c = _acc(aupr, aupr_c, (recall - prev_recall) * (prec + prev_prec) / 2)
        f1 = 2 * tp / (tp + fp + n_pos)
        if f1 >= f1_best:
            f1_best = f1
            f1_index = i
        if first95 < 0 and recall >= 0.95:
            first95 = i
        if not reached_all:
            d = abs(recall - 0.95)
            if d <= near_d:
                near_d = d
                near = i
            reached_all = tp == n_pos
        if not exact[i]:
            bauc, bauc_c = _acc(bauc, bauc_c, p * q)
            share = p / n_pos
            hi = (tpa + p) / (tpa + p + fpa) if tpa + p + fpa > 0 else 1.0
            lo = (tpa + 1) / (tpa + 1 + fpa + q)
            bap, bap_c = _acc(bap, bap_c, share * max(hi - prec, prec - lo))
            lo_start = tpa / (tpa + fpa + q) if tpa + fpa + q > 0 else 1.0
            top = max(hi, max(prev_prec, prec))
            bottom = min(min(lo, lo_start), min(prev_prec, prec))
            baupr, baupr_c = _acc(baupr, baupr_c, share * (top - bottom))
            f1_upper = max(f1_upper, 2 * (tpa + p) / (tpa + p + fpa + n_pos))
        prev_recall = recall
        prev_prec = prec
    # the span of bins whose recall range meets [0.95 - d, 0.95 + d] bounds fpr95_nearest
    low_fp = high_fp = -1.0
    tp = fp = 0.0
    inexact_in_span = False
    for i in range(n):
        tpa = tp
        fpa = fp
        tp += pos[i]
        fp += neg[i]
        if tp / n_pos >= 0.95 - near_d and tpa / n_pos <= 0.95 + near_d:
            if low_fp < 0:
                low_fp = fpa
            high_fp = fp
            inexact_in_span = inexact_in_span or not exact[i]
    if not inexact_in_span:
        low_fp = high_fp = -1.0
    return (
        auc + auc_c,
        bauc + bauc_c,
        ap + ap_c,
        bap + bap_c,
        aupr + aupr_c,
        baupr + baupr_c,
        f1_best,
        f1_index,
        f1_upper,
        first95,
        near,
        low_fp,
        high_fp,
    )


@njit(cache=True, nogil=True, boundscheck=False)
def pro_pass(pos, neg, exact, n_ok, n_regions, limit):  # pragma: no cover - compiled
    """Area under (FPR, PRO) up to `limit` (linear interpolation there) and its error bound.

    Bins in DESCENDING score order; FPR = cumulative negatives / n_ok, PRO = cumulative
    positive weight / n_regions; the curve starts at (0, 0).
    """
    fp = 0.0
    pro = 0.0
    x0 = 0.0
    y0 = 0.0
    area = area_c = bound = bound_c = 0.0
    for i in range(pos.shape[0]):
        fp += neg[i]
        pro += pos[i]
        x1 = fp / n_ok
        y1 = pro / n_regions
        if x1 <= limit:
            area, area_c = _acc(area, area_c, (x1 - x0) * (y1 + y0) / 2)
            if not exact[i]:
                bound, bound_c = _acc(bound, bound_c, (x1 - x0) * (y1 - y0) / 2)
        else:
            if x0 < limit:
                y_limit = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
                area, area_c = _acc(area, area_c, (limit - x0) * (y0 + y_limit) / 2)
                if not exact[i]:
                    bound, bound_c = _acc(bound, bound_c, (limit - x0) * (y1 - y0))
            break
        x0 = x1
        y0 = y1
    return area + area_c, bound + bound_c
