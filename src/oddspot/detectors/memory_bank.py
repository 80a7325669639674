"""Memory banks of normal patch features: greedy k-center coreset selection (search: `oddspot.neighbors`).

The coreset is Gonzalez's farthest-first traversal (the greedy k-center used by PatchCore) on a
seeded random projection of the features. It makes the same picks as the textbook loop, which
updates every point's distance to the nearest center after every pick (N x k distances), yet
evaluates only about a third of those distances, in matrix products:

- **Rounds.** Greedy runs among the 2048 points with the largest distance bounds for as long
  as no other point can compete; the round's picks then form one block of centers.
- **Lazy bounds.** Every point keeps an upper bound on its distance to the nearest center.
  Only points whose bound is at least `theta` (95% of the last pick's distance) must be exact;
  the others are "frozen" and skip the refresh. The bound of a frozen point stays below every
  later pick's distance until `theta` drops under it, so it can never be the farthest point
  while frozen.
- **Early exit.** When `theta` drops, the points whose bound is now at least `theta` are
  compared with the blocks they have not seen, newest first, and leave as soon as their
  bound falls below `theta`. A bitset per point records which blocks it has seen.

Picks agree with the textbook loop except in the order of ties and of near-ties within float32
rounding. The data is centred first. The product formula |x|^2 + |c|^2 - 2 x.c loses
distances that are tiny next to the norms (tight clusters far from the mean, duplicates) to
cancellation, so those are recomputed from differences; duplicate rows are never picked.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from oddspot.errors import OddspotError

FREEZE = 0.95  # theta = FREEZE x the last pick's distance; lower freezes less, higher adds rounds
CANCELLATION = 2.0 ** -6  # products giving distances below this share of the norms are redone


@njit(cache=True, fastmath=True)
def _greedy_within(cand: np.ndarray, cand_min: np.ndarray, tau: float, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Farthest-first picks among candidates while the best candidate is strictly farther than `tau`.

    `cand_min` holds each candidate's squared distance to its nearest center and is updated in
    place. The first pick is unconditional: the caller guarantees it is the global farthest.
    Distances are sums of squared differences, exact to float32 rounding of the distance itself
    (duplicates give exactly 0). Returns the picks (candidate positions) and their squared
    distances when picked.
    """
    m, d = cand.shape
    picks = np.empty(budget, np.int64)
    values = np.empty(budget, np.float32)
    count = 0
    while count < budget:
        best = 0
        best_value = cand_min[0]
        for i in range(1, m):
            if cand_min[i] > best_value:
                best, best_value = i, cand_min[i]
        if best_value <= 0.0 or (best_value <= tau and count > 0):
            break
        picks[count], values[count] = best, best_value
        count += 1
        for i in range(m):
            dist = np.float32(0.0)
            for t in range(d):
                diff = cand[i, t] - cand[best, t]
                dist += diff * diff
            if dist < cand_min[i]:
                cand_min[i] = dist
        cand_min[best] = 0.0
    return picks[:count], values[:count]


class _DistanceBounds:
    """Per-point upper bounds on the squared distance to the nearest center, refreshed lazily."""

    def __init__(self, x: np.ndarray, start: int, chunk: int, min_centers: int) -> None:
        self.chunk, self.min_centers = chunk, min_centers
        self.xt = torch.from_numpy(x)
        self.sq = (self.xt * self.xt).sum(1)
        self.bound = (self.xt - self.xt[start]).square_().sum(1)
        self.bound_np = self.bound.numpy()  # shares memory with self.bound
        self.blocks: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.seen = np.zeros((x.shape[0], 1), np.uint64)  # bit j of row i: row i compared with block j
        self._add_block(np.array([start], dtype=np.int64))
        self.seen[:, 0] = 1
        self.evaluations = x.shape[0]  # point-center distances computed so far
        self._rows = torch.empty(chunk, x.shape[1])
        self._products = torch.empty(0)
        self._near = torch.empty(x.shape[0])

    def _add_block(self, rows: np.ndarray) -> None:
        idx = torch.from_numpy(rows)
        self.blocks.append((self.xt.index_select(0, idx).T.contiguous(), self.sq.index_select(0, idx)))
        if len(self.blocks) > 64 * self.seen.shape[1]:
            self.seen = np.concatenate([self.seen, np.zeros_like(self.seen)], axis=1)

    def add_centers(self, rows: np.ndarray) -> None:
        """Record a round's picks as the next block; their own bounds become zero."""
        self._add_block(rows)
        self.bound_np[rows] = 0.0

    def _compare(self, rows: np.ndarray, blocks: list[int]) -> None:
        """Lower the bounds of `rows` with their distances to the centers of `blocks`."""
        if len(blocks) == 1:
            centers_t, csq = self.blocks[blocks[0]]
        else:
            centers_t = torch.cat([self.blocks[j][0] for j in blocks], dim=1)
            csq = torch.cat([self.blocks[j][1] for j in blocks])
        width = csq.numel()
        self.evaluations += len(rows) * width
        if self._products.numel() < self.chunk * width:
            self._products = torch.empty(self.chunk * width)
        idx = torch.from_numpy(rows)
        near = self._near[:len(rows)]
        for lo in range(0, len(rows), self.chunk):
            # Reused buffers: fresh multi-megabyte tensors per product cost page faults.
            n = min(self.chunk, len(rows) - lo)
            xr = torch.index_select(self.xt, 0, idx[lo:lo + n], out=self._rows[:n])
            block = self._products[:n * width].view(n, width)
            # |x|^2 is the same for every center of a row: added after the row minimum.
            torch.addmm(csq[None, :], xr, centers_t, alpha=-2.0, out=block)
            torch.amin(block, 1, out=near[lo:lo + n])
        row_sq = self.sq.index_select(0, idx)
        near.add_(row_sq).clamp_(min=0.0)
        # |x|^2 + |c|^2 - 2 x.c loses about eps * (|x|^2 + |c|^2) to cancellation: distances
        # that small next to the norms (tight clusters far from the mean, duplicates) are
        # recomputed from differences.
        noisy = torch.nonzero(near < CANCELLATION * (row_sq + csq.max())).flatten()
        for lo in range(0, noisy.numel(), self.chunk):
            sub = noisy[lo:lo + self.chunk]
            xs = self.xt.index_select(0, idx.index_select(0, sub))
            exact = torch.cdist(xs, centers_t.T, compute_mode="donot_use_mm_for_euclid_dist").square_()
            near.index_copy_(0, sub, exact.amin(1))
        self.bound.index_copy_(0, idx, torch.minimum(self.bound.index_select(0, idx), near))
        self.seen[rows] |= self._mask(blocks)

    def _mask(self, blocks: list[int]) -> np.ndarray:
        mask = np.zeros(self.seen.shape[1], np.uint64)
        for j in blocks:
            mask[j // 64] |= np.uint64(1 << (j % 64))
        return mask

    def _segments(self) -> list[list[int]]:
        """Blocks from newest to oldest, consecutive small ones grouped to at least `min_centers`.

        Many rounds pick only a few centers; one product per group keeps the
        matrix products compute-bound. Rows may then see a block twice, which is harmless.
        """
        segments, current, size = [], [], 0
        for j in range(len(self.blocks) - 1, -1, -1):
            current.append(j)
            size += self.blocks[j][1].numel()
            if size >= self.min_centers:
                segments.append(current)
                current, size = [], 0
        if current:
            segments.append(current)
        return segments

    def make_exact_above(self, theta: float) -> None:
        """Make every bound that is at least `theta` exact; stop early for rows that fall below."""
        need = np.flatnonzero(self.bound_np >= theta)
        need = need[(self.seen[need] != self._mask(list(range(len(self.blocks))))).any(1)]
        for blocks in self._segments():
            if need.size == 0:
                break
            mask = self._mask(blocks)
            todo = need[((self.seen[need] & mask) != mask).any(1)]
            if todo.size:
                self._compare(todo, blocks)
                need = need[self.bound_np[need] >= theta]


def _greedy_k_center(x: np.ndarray, k: int, start: int, candidates: int = 2048, chunk: int = 512,
                     freeze: float = FREEZE, min_centers: int = 256, stats: dict | None = None) -> np.ndarray:
    """Farthest-first traversal of the rows of `x` from row `start`, `k` picks at most.

    `stats`, when given, receives the number of rounds and of point-center distances computed
    outside the rounds' candidate sets (the textbook loop computes N x k of them).

    Invariant at the start of each round: every bound >= theta is exact, every other bound is
    below theta. The round's first pick is the largest exact bound, hence the global farthest
    row; later picks are exact while they beat every other bound (tau).
    """
    if not 0.0 < freeze < 1.0:
        raise ValueError(f"freeze must lie in (0, 1), got {freeze}")
    x = np.ascontiguousarray(x - x.mean(0, dtype=np.float64).astype(np.float32), dtype=np.float32)
    bounds = _DistanceBounds(x, start, chunk, min_centers)
    b = bounds.bound_np
    picks, theta = [start], 0.0
    while len(picks) < k:
        active = np.flatnonzero(b >= theta) if theta > 0 else np.arange(len(b))
        frozen_max = float(b[b < theta].max(initial=-1.0))
        if active.size == 0:
            break
        values = b[active]
        m = min(candidates, active.size)
        if m < active.size:
            part = np.argpartition(-values, m)
            cand, tau = np.sort(active[part[:m]]), max(float(values[part[m]]), frozen_max)
        else:
            cand, tau = active, frozen_max
        local, picked = _greedy_within(x[cand], b[cand].copy(), np.float32(tau), k - len(picks))
        if local.size == 0:
            break  # every row coincides with a center: no further distinct picks exist
        new = cand[local]
        picks.extend(new.tolist())
        bounds.add_centers(new)
        if len(picks) >= k:
            break
        theta = freeze * float(picked[-1])
        bounds.make_exact_above(theta)
        while not (b >= theta).any() and b.max() > 0.0:
            theta = freeze * float(b.max())
            bounds.make_exact_above(theta)
    if stats is not None:
        stats.update(rounds=len(bounds.blocks) - 1, distance_evaluations=int(bounds.evaluations))
    return np.asarray(picks, dtype=np.int64)


def random_projection(features: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Gaussian random projection to `dim` dimensions (Johnson-Lindenstrauss); identity if already small."""
    d = features.shape[1]
    if dim <= 0 or d <= dim:
        return np.ascontiguousarray(features, dtype=np.float32)
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((d, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
    return np.ascontiguousarray(features.astype(np.float32, copy=False) @ matrix)


def coreset_size(n: int, ratio: float) -> int:
    """Number of picks for `ratio` of `n` points (at least one)."""
    if not 0.0 < ratio <= 1.0:
        raise OddspotError(f"coreset ratio {ratio} out of range; use a value in (0, 1]")
    return max(1, min(n, int(round(n * ratio))))


def greedy_coreset(features: np.ndarray, ratio: float, seed: int = 0, projection_dim: int = 128,
                   stats: dict | None = None) -> np.ndarray:
    """Indices of a greedy k-center coreset holding `ratio` of the rows of `features`.

    Distances are measured on a random projection to `projection_dim` dimensions (seeded); the
    first center is a seeded random row. Returns fewer rows only when the data has fewer
    distinct points than asked for. `stats`, when given, receives the work done (rounds,
    distance evaluations).
    """
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] == 0:
        raise OddspotError(f"coreset needs a non-empty N x D feature matrix, got shape {features.shape}")
    if not np.isfinite(features).all():
        raise OddspotError("coreset features contain NaN or infinite values; check the images and the backbone")
    n = features.shape[0]
    k = coreset_size(n, ratio)
    if k >= n:
        return np.arange(n, dtype=np.int64)
    projected = random_projection(features, projection_dim, seed)
    start = int(np.random.default_rng(seed).integers(n))
    return _greedy_k_center(projected, k, start, stats=stats)
