"""The streaming state behind every ranking metric: weighted counts per distinct score.

Why this design
---------------
Every threshold metric (ROC, PR, AP, FPR@95, F1-max, PRO) is a function of one table: for each
distinct score, how many negatives and how much positive weight sit exactly at that score.
Holding that table instead of the scores makes the metrics exact (ties are kept as ties, as
scikit-learn does) and makes memory grow with the number of *distinct* scores, not of scores.

1. Exact mode. Each score becomes an order-preserving 64-bit key (`_keys`); a chunk is counted
   per distinct key (by a hash table when it has few distinct scores, else by sorting) and
   merged into a sorted (key, negatives, positive weight) table. This is exact for any input;
   memory is 32 bytes per distinct score.
2. Binned mode. Once the distinct count exceeds `max_exact_values`, the table is re-binned once
   into a fixed histogram over the key space and every later chunk is added by compiled passes
   (a table lookup per score, no sort; see below). The key's top 16 bits pick a bucket; each bucket
   gets 2**b equal sub-ranges of keys, with b chosen from the exact data seen so far so that
   resolution goes where positives and negatives overlap (that is where ranking errors come
   from), then to positives, to the top decile of negatives (where later anomalies meet them),
   and to all negatives; a base resolution covers the seen score range widened by 4 binades
   each way. Float32 data never needs sub-ranges finer than one float32 value, so a bucket at
   full float32 resolution stays exact. The allocation is fixed at the switch: a stream whose
   score distribution drifts far afterwards gets coarser bins there, and larger (reported)
   bounds; raise `max_exact_values`/`max_bins` or evaluate stationary parts separately.
3. Bounds. A bin that may hold more than one distinct value loses the order of its positives
   against its negatives. Metrics computed from the table treat such a bin as one tied group
   and report, next to every number, the largest error this can cause (see `ranking.py`);
   exact bins contribute nothing. The bound is 0 in exact mode.
4. Chunking never matters. The switch to binned mode is decided only at global block
   boundaries (every `block_size` elements of the stream, counted the same way however the
   stream is chunked), integer counts are order-free, and positive weights are summed as
   double-doubles, so any chunking of the same stream gives the same table.

Binned counting is one compiled pass per chunk that computes each score's bin, then counts
negatives through 256 radix groups of bins (each group's slice of the histogram fits in cache;
a histogram of millions of bins does not), optionally on several threads with one histogram
each. Memory is bounded by `max_exact_values` (exact mode: 32 bytes per distinct score, plus
one block in flight) or by `max_bins` (binned mode: 16 bytes per bin and thread, 24 for
weighted tables), whatever the number of scores.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from oddspot.errors import OddspotError
from oddspot.metrics import _kernels
from oddspot.metrics._keys import (
    F32_SHIFT,
    LOW_BITS,
    TOP_BITS,
    float32_exact,
    keys32,
    keys32_to_keys64,
    keys64,
    values64,
)

_N_TOP = 1 << TOP_BITS
_MIN_SPLIT = 1 << 18
"""Chunks shorter than this are binned by one thread."""
_CACHE_BINS = 1 << 17
"""Histograms up to this many bins are counted directly; larger ones through radix groups."""
_HASH_MIN = 1 << 12
"""Chunks with up to this many distinct scores (or an eighth of their size) are counted by hashing."""
_MARGIN = 64
"""Buckets (1/16 of a binade each) beyond the seen score range that still get a base resolution."""
_BASE_BITS = 12
"""Base resolution: at most 2**12 bins per bucket, from an eighth of the bin budget."""
_MAX_PIECES = 32
"""Small tables waiting to be merged are merged once this many pile up (many tiny updates)."""
_EMPTY_U8 = np.zeros(0, np.uint8)
_EMPTY_F8 = np.zeros(0, np.float64)


@dataclass(frozen=True)
class Bins:
    """The non-empty bins of a score table in DESCENDING score order (arrays may be views).

    `values[i]` is the smallest score bin i can hold (so "score >= values[i]" selects bins
    0..i), `pos`/`neg` the positive weight and negative count in the bin, and `exact[i]` whether
    the bin can hold only one distinct score (then it is an exact tie group).
    """

    values: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    exact: np.ndarray

    @property
    def all_exact(self) -> bool:
        """True when every bin is an exact tie group (metrics are then exact)."""
        return bool(self.exact.all())


_Table = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _empty_table() -> _Table:
    return (np.zeros(0, np.uint64), np.zeros(0), np.zeros(0), np.zeros(0))


def _unique_counts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique 64-bit keys of `x` and how often each occurs."""
    if x.dtype == np.float32:
        k = keys32(x)
        k.sort()
    else:
        k = keys64(x)
        k.sort()
    if k.size == 0:
        return np.zeros(0, np.uint64), np.zeros(0)
    starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
    counts = np.diff(np.append(starts, k.size)).astype(np.float64)
    u = k[starts]
    return (keys32_to_keys64(u) if u.dtype == np.uint32 else u), counts


def _merge(tables: list[_Table]) -> _Table:
    """One sorted unique table from several sorted unique tables (pairwise linear merges)."""
    tables = [t for t in tables if t[0].size]
    if not tables:
        return _empty_table()
    while len(tables) > 1:
        merged = [_kernels.merge_tables(*a, *b) for a, b in zip(tables[0::2], tables[1::2])]
        tables = merged + ([tables[-1]] if len(tables) % 2 else [])
    return tables[0]


def _allocate(keys: np.ndarray, neg: np.ndarray, pos: np.ndarray, max_bins: int, min_shift: int):
    """Per-bucket resolution for the binned table, from the exact distribution seen so far.

    Returns (offsets[65537], shifts[65536] uint64, packed int64 table for the kernel).
    """
    top = (keys >> np.uint64(LOW_BITS)).astype(np.int64)
    p = np.bincount(top, weights=pos, minlength=_N_TOP)
    n = np.bincount(top, weights=neg, minlength=_N_TOP)
    # anomalies score high: the top decile of negatives is where later positives will meet them
    tail = np.where(np.cumsum(n) >= 0.9 * n.sum(), n, 0.0)
    weight = np.zeros(_N_TOP)
    for part, share in ((np.sqrt(p * n), 1.0), (p, 0.5), (tail, 0.5), (n, 0.25)):
        total = part.sum()
        if total > 0:
            weight += share * part / total
    max_bits = LOW_BITS - min_shift
    want = (max_bins * 7 // 8) * weight / weight.sum()
    bits = np.zeros(_N_TOP, np.int64)
    ok = want >= 1
    bits[ok] = np.minimum(np.floor(np.log2(want[ok])), max_bits).astype(np.int64)
    # a base resolution around the range seen so far, for scores that only arrive later
    occupied = np.flatnonzero(p + n > 0)
    lo, hi = max(0, int(occupied[0]) - _MARGIN), min(_N_TOP - 1, int(occupied[-1]) + _MARGIN)
    per_bucket = max_bins / 8 / (hi - lo + 1)
    base = int(min(_BASE_BITS, max_bits, np.floor(np.log2(per_bucket)))) if per_bucket >= 1 else 0
    bits[lo : hi + 1] = np.maximum(bits[lo : hi + 1], base)
    left = max_bins + _N_TOP - int((1 << bits).sum())
    cand = np.flatnonzero((weight > 0) & (bits < max_bits))
    cand = cand[np.argsort(-weight[cand] / (1 << bits[cand]), kind="stable")]
    take = cand[np.cumsum(1 << bits[cand]) <= left]
    bits[take] += 1
    offsets = np.concatenate(([0], np.cumsum(1 << bits))).astype(np.int64)
    shifts = (LOW_BITS - bits).astype(np.uint64)
    packed = (offsets[:-1] << 8) | shifts.astype(np.int64)
    return offsets, shifts, packed


def _coarser(a_offsets: np.ndarray, a_shifts: np.ndarray, b_offsets: np.ndarray, b_shifts: np.ndarray):
    """The bucket layout holding both: per bucket the coarser shift, so every bin of either is inside one bin."""
    shifts = np.maximum(a_shifts, b_shifts)
    offsets = np.concatenate(([0], np.cumsum(np.uint64(1) << (np.uint64(LOW_BITS) - shifts)))).astype(np.int64)
    return offsets, shifts


class ScoreTable:
    """Streaming (score -> negative count, positive weight) table; see the module docstring.

    Args:
        max_exact_values: distinct scores kept exactly before switching to binned mode.
        max_bins: bins the binned mode may spend on resolution (plus one per top-level bucket,
            65,536); memory is 16 bytes per bin and thread (24 when `weighted`).
        block_size: stream elements per block; the switch is decided only at block ends.
        threads: threads that bin a large chunk in binned mode, each into its own histogram
            (so memory grows with threads; results do not change).
        weighted: positives carry float weights (AUPRO) rather than counting 1 each.
    """

    def __init__(
        self,
        max_exact_values: int = 2**22,
        max_bins: int = 2**23,
        block_size: int = 2**20,
        threads: int = 1,
        weighted: bool = False,
    ) -> None:
        limits = (
            ("max_exact_values", max_exact_values, 1),
            ("max_bins", max_bins, 1024),
            ("block_size", block_size, 1),
            ("threads", threads, 1),
        )
        for name, value, low in limits:
            if int(value) != value or value < low:
                raise OddspotError(f"ScoreTable: {name} must be an integer >= {low}, got {value!r}")
        if max_bins > 2**31:
            raise OddspotError(f"ScoreTable: max_bins must be <= 2**31, got {max_bins!r}")
        self.max_exact_values = int(max_exact_values)
        self.max_bins = int(max_bins)
        self.block_size = int(block_size)
        self.threads = int(threads)
        self.weighted = bool(weighted)
        self._pool: ThreadPoolExecutor | None = None
        self.reset()

    def reset(self) -> None:
        """Forget everything added."""
        self._seen = 0
        self._f32 = True
        self._state: _Table = _empty_table()
        self._pending: list[_Table] = []
        self._pending_n = 0
        self._current: list[_Table] = []
        self._part_shift = -1
        self._hash_first = True
        self._offsets: np.ndarray | None = None
        self._shifts: np.ndarray | None = None
        self._packed: np.ndarray | None = None
        self._neg = self._hi = self._lo = np.zeros((0, 0))

    @property
    def binned(self) -> bool:
        """True once the table has switched to binned mode."""
        return self._packed is not None

    @property
    def nbytes(self) -> int:
        """Bytes held by the table's arrays."""
        tables = [self._state, *self._pending, *self._current]
        arrays = [a for t in tables for a in t] + [self._neg, self._hi, self._lo]
        arrays += [a for a in (self._offsets, self._shifts, self._packed) if a is not None]
        return int(sum(a.nbytes for a in arrays))

    def add(
        self,
        scores: np.ndarray,
        positive: np.ndarray,
        valid: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> None:
        """Add flat float32/float64 scores (no NaN where valid) with bool positive flags.

        `weights` (float64, same length; weighted tables only) is the weight each positive
        adds; 1 when None.
        """
        if weights is not None and not self.weighted:
            raise OddspotError("ScoreTable.add: weights given to a table made with weighted=False")
        n = scores.shape[0]
        start = 0
        while start < n and not self.binned:
            stop = min(n, start + self.block_size - self._seen % self.block_size)
            part = slice(start, stop)
            self._current.append(
                self._exact_piece(
                    scores[part],
                    positive[part],
                    None if valid is None else valid[part],
                    None if weights is None else weights[part],
                )
            )
            self._seen += stop - start
            start = stop
            if self._seen % self.block_size == 0:
                self._complete_block()
            elif len(self._current) >= _MAX_PIECES:
                self._current = [_merge(self._current)]
        if start < n:
            self._bin_chunk(
                scores[start:],
                positive[start:],
                None if valid is None else valid[start:],
                None if weights is None else weights[start:],
            )
            self._seen += n - start

    def bins(self) -> Bins:
        """The current table as non-empty bins in descending score order."""
        if self.binned:
            return self._binned_bins()
        self._flush()
        self._current = [_merge(self._current)]
        keys, neg, hi, lo = _merge([self._state, self._current[0]])
        return Bins(values64(keys)[::-1], (hi + lo)[::-1], neg[::-1], np.ones(keys.size, bool))

    def merge(self, other: ScoreTable) -> ScoreTable:
        """Add everything `other` holds into this table (`other` is left as it was); returns self.

        Two exact tables merge exactly, in any order and grouping: the result equals the table of one
        process that saw both streams, as long as their distinct scores together stay within
        `max_exact_values` (past that the merged table switches to binned mode, as that process would
        have). A binned table takes the other's counts at the coarser of the two resolutions per
        bucket, so its bins and error bounds stay valid; binned results are not bit-identical to a
        single process (where that switches depends on the order of the stream).
        """
        if not isinstance(other, ScoreTable):
            raise OddspotError(f"ScoreTable.merge: expected a ScoreTable, got {type(other).__name__}")
        if other.weighted != self.weighted:
            raise OddspotError("ScoreTable.merge: a weighted table (AUPRO) and an unweighted one cannot be merged")
        f32 = self._f32 and other._f32
        if not self.binned and not other.binned:
            self._flush()
            self._state = _merge([self._state, *self._current, other._exact_table()])
            self._current = []
            self._seen += other._seen
            self._f32 = f32
            if self._state[0].size > self.max_exact_values:
                self._switch()
            return self
        if not self.binned:
            mine = self._exact_table()
            self._adopt_layout(other._offsets, other._shifts)
            self._rebin_exact(mine)
        elif other.binned and not (np.array_equal(self._offsets, other._offsets)
                                   and np.array_equal(self._shifts, other._shifts)):
            layout = (self._offsets, self._shifts, self._neg, self._hi, self._lo)
            self._adopt_layout(*_coarser(self._offsets, self._shifts, other._offsets, other._shifts))
            self._rebin_binned(*layout)
        if other.binned:
            self._rebin_binned(other._offsets, other._shifts, other._neg, other._hi, other._lo)
        else:
            self._rebin_exact(other._exact_table())
        self._seen += other._seen
        self._f32 = f32
        return self

    def _exact_table(self) -> _Table:
        """The exact-mode table of everything added (no state changes)."""
        return _merge([self._state, *self._pending, *self._current])

    def _adopt_layout(self, offsets: np.ndarray, shifts: np.ndarray) -> None:
        """Switch to binned mode with this bucket layout and empty histograms (exact state dropped)."""
        self._offsets = offsets.copy()
        self._shifts = shifts.copy()
        self._packed = (self._offsets[:-1] << 8) | self._shifts.astype(np.int64)
        size = int(self._offsets[-1])
        self._neg = np.zeros((self.threads, size))
        self._hi = np.zeros((self.threads, size))
        self._lo = np.zeros((self.threads, size if self.weighted else 0))
        self._part_shift = -1 if size <= _CACHE_BINS else max(0, int(size - 1).bit_length() - 8)
        self._state = _empty_table()
        self._pending, self._pending_n, self._current = [], 0, []

    def _rebin_exact(self, table: _Table) -> None:
        keys, neg, hi, lo = table
        _kernels.rebin(keys, neg, hi, lo, self._packed, self._neg[0], self._hi[0], self._lo[0])

    def _rebin_binned(self, offsets: np.ndarray, shifts: np.ndarray, neg: np.ndarray, hi: np.ndarray,
                      lo: np.ndarray) -> None:
        """Add histograms of another layout, each bin by its lowest key (this layout is as fine or coarser)."""
        for t in range(neg.shape[0]):
            lo_t = lo[t] if lo.shape[1] else np.zeros(neg.shape[1])
            idx = np.flatnonzero((neg[t] > 0) | (hi[t] != 0) | (lo_t != 0))
            top = np.searchsorted(offsets, idx, side="right") - 1
            keys = (top.astype(np.uint64) << np.uint64(LOW_BITS)) | ((idx - offsets[top]).astype(np.uint64) << shifts[top])
            self._rebin_exact((keys, neg[t][idx], hi[t][idx], lo_t[idx]))

    def __getstate__(self) -> dict:
        """Picklable state (for sending a table between processes): the thread pool is not sent."""
        return {**self.__dict__, "_pool": None}

    def _exact_piece(self, s: np.ndarray, p: np.ndarray, v: np.ndarray | None, w: np.ndarray | None) -> _Table:
        if self._f32 and s.dtype != np.float32:
            self._f32 = float32_exact(s if v is None else s[v])
        if self._hash_first:
            keys, neg, hi, lo, ok = _kernels.hash_count(
                np.ascontiguousarray(s),
                np.ascontiguousarray(p).view(np.uint8),
                _EMPTY_U8 if v is None else np.ascontiguousarray(v).view(np.uint8),
                _EMPTY_F8 if w is None else np.ascontiguousarray(w, dtype=np.float64),
                max(_HASH_MIN, s.size // 8),
            )
            if ok:
                order = np.argsort(keys)
                return keys[order], neg[order], hi[order], lo[order]
        neg_sel = ~p if v is None else ~p & v
        pos_sel = p if v is None else p & v
        nk, nc = _unique_counts(s[neg_sel])
        neg_table = (nk, nc, np.zeros(nk.size), np.zeros(nk.size))
        if w is None:
            pk, pc = _unique_counts(s[pos_sel])
            pos_table = (pk, np.zeros(pk.size), pc, np.zeros(pk.size))
        else:
            k = keys64(s[pos_sel])
            order = np.argsort(k, kind="stable")
            pk, hi, lo = _kernels.runlength_dd(k[order], np.ascontiguousarray(w[pos_sel][order], dtype=np.float64))
            pos_table = (pk, np.zeros(pk.size), hi, lo)
        # hash the next piece only if this one had few distinct scores
        self._hash_first = nk.size + pk.size <= max(_HASH_MIN, s.size // 16)
        return _merge([neg_table, pos_table])

    def _complete_block(self) -> None:
        block = _merge(self._current)
        self._current = []
        self._pending.append(block)
        self._pending_n += block[0].size
        size = self._state[0].size
        crowded = len(self._pending) >= _MAX_PIECES or self._pending_n >= max(size, 2**16)
        if crowded or size + self._pending_n > self.max_exact_values:
            self._flush()
            if self._state[0].size > self.max_exact_values:
                self._switch()

    def _flush(self) -> None:
        if self._pending:
            self._state = _merge([self._state, *self._pending])
            self._pending = []
            self._pending_n = 0

    def _switch(self) -> None:
        keys, neg, hi, lo = self._state
        min_shift = F32_SHIFT if self._f32 else 0
        self._offsets, self._shifts, self._packed = _allocate(keys, neg, hi + lo, self.max_bins, min_shift)
        size = int(self._offsets[-1])
        self._neg = np.zeros((self.threads, size))
        self._hi = np.zeros((self.threads, size))
        self._lo = np.zeros((self.threads, size if self.weighted else 0))
        self._part_shift = -1 if size <= _CACHE_BINS else max(0, int(size - 1).bit_length() - 8)
        _kernels.rebin(keys, neg, hi, lo, self._packed, self._neg[0], self._hi[0], self._lo[0])
        self._state = _empty_table()

    def _bin_chunk(self, s: np.ndarray, p: np.ndarray, v: np.ndarray | None, w: np.ndarray | None) -> None:
        s = np.ascontiguousarray(s)
        p = np.ascontiguousarray(p).view(np.uint8)
        v = _EMPTY_U8 if v is None else np.ascontiguousarray(v).view(np.uint8)
        w = _EMPTY_F8 if w is None else np.ascontiguousarray(w, dtype=np.float64)
        parts = min(self.threads, max(1, s.size // _MIN_SPLIT))
        edges = np.linspace(0, s.size, parts + 1).astype(np.int64)

        def run(i: int) -> int:
            a, b = edges[i], edges[i + 1]
            return _kernels.bin_add(
                s[a:b],
                p[a:b],
                v[a:b] if v.size else v,
                w[a:b] if w.size else w,
                self._packed,
                self._neg[i],
                self._hi[i],
                self._lo[i],
                self._part_shift,
                s.dtype != np.float32 and self._f32,
            )

        if parts == 1:
            not_f32 = run(0)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="oddspot-bins")
            not_f32 = sum(self._pool.map(run, range(parts)))
        if not_f32:
            self._f32 = False

    def _binned_bins(self) -> Bins:
        values, pos, neg, exact = _kernels.compact_bins(
            self._neg,
            self._hi,
            self._lo,
            self._offsets,
            self._shifts,
            np.uint64(F32_SHIFT if self._f32 else 0),
            self._f32,
        )
        return Bins(values[::-1], pos[::-1], neg[::-1], exact[::-1])
