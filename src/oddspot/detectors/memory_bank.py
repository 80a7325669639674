"""Memory banks of normal patch features: greedy k-center coreset selection and exact kNN search.

The coreset is Gonzalez's farthest-first traversal (the greedy k-center used by PatchCore) on a
seeded random projection of the features. It is computed exactly but organised in rounds:
greedy runs among the points currently farthest from the centers for as long as no other point
can compete, then every point's distance is refreshed with one blocked matrix product. Patch
features have a high intrinsic dimension, so triangle-inequality pruning barely helps; the
rounds instead turn the N x k distance updates from memory-bound vector passes (the textbook
loop) into compute-bound matrix products.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from oddspot.errors import OddspotError


@njit(cache=True)
def _greedy_within(cand: np.ndarray, cand_sq: np.ndarray, cand_min: np.ndarray, tau: float, budget: int) -> np.ndarray:
    """Farthest-first picks among candidates while the best candidate is strictly farther than `tau`.

    `cand_min` holds each candidate's squared distance to its nearest center and is updated in place.
    """
    m, d = cand.shape
    picks = np.empty(budget, np.int64)
    count = 0
    while count < budget:
        best = 0
        for i in range(1, m):
            if cand_min[i] > cand_min[best]:
                best = i
        if cand_min[best] <= 0.0 or (cand_min[best] <= tau and count > 0):
            break
        picks[count] = best
        count += 1
        csq = cand_sq[best]
        for i in range(m):
            dot = 0.0
            for t in range(d):
                dot += cand[i, t] * cand[best, t]
            dist = max(cand_sq[i] + csq - 2.0 * dot, 0.0)
            if dist < cand_min[i]:
                cand_min[i] = dist
        cand_min[best] = 0.0
    return picks[:count]


def _greedy_k_center(x: np.ndarray, k: int, start: int, candidates: int = 2048, chunk: int = 4096) -> np.ndarray:
    """Farthest-first traversal of the rows of `x` from row `start`, `k` picks at most.

    Each round takes the `candidates` rows farthest from the current centers; tau is the largest
    distance among all other rows. Greedy among the candidates is exact while the best candidate
    is strictly farther than tau, because distances only shrink. (The first pick of a round is
    always exact: it is the global farthest row.) The round's new centers then update every
    row's distance in one blocked matrix product.
    """
    n = x.shape[0]
    xt = torch.from_numpy(x)
    sq = (xt * xt).sum(1)
    sq_np = sq.numpy().astype(np.float64)
    mind = torch.clamp(sq + sq[start] - 2.0 * (xt @ xt[start]), min=0.0)
    mind[start] = 0.0
    picks = [start]
    while len(picks) < k:
        mind_np = mind.numpy()
        m = min(candidates, n)
        if m < n:
            part = np.argpartition(-mind_np, m)
            cand_idx, tau = np.sort(part[:m]), float(mind_np[part[m]])
        else:
            cand_idx, tau = np.arange(n), -1.0
        local = _greedy_within(x[cand_idx], sq_np[cand_idx], mind_np[cand_idx].astype(np.float64), tau, k - len(picks))
        if local.size == 0:
            break  # every row coincides with a center: no further distinct picks exist
        new = torch.from_numpy(cand_idx[local])
        picks.extend(new.tolist())
        centers, csq = xt[new], sq[new]
        centers_t = centers.T.contiguous()
        for lo in range(0, n, chunk):
            # |x|^2 is the same for every center of a row: add it after the row minimum, so each
            # cache-sized block is written by the product and read once by the minimum.
            block = torch.addmm(csq[None, :], xt[lo:lo + chunk], centers_t, alpha=-2.0)
            nearest = block.min(dim=1).values.add_(sq[lo:lo + chunk]).clamp_(min=0.0)
            torch.minimum(mind[lo:lo + chunk], nearest, out=mind[lo:lo + chunk])
        mind[new] = 0.0
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


def greedy_coreset(features: np.ndarray, ratio: float, seed: int = 0, projection_dim: int = 128) -> np.ndarray:
    """Indices of a greedy k-center coreset holding `ratio` of the rows of `features`.

    Distances are measured on a random projection to `projection_dim` dimensions (seeded); the
    first center is a seeded random row. Returns fewer rows only when the data has fewer
    distinct points than asked for.
    """
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] == 0:
        raise OddspotError(f"coreset needs a non-empty N x D feature matrix, got shape {features.shape}")
    n = features.shape[0]
    k = coreset_size(n, ratio)
    if k >= n:
        return np.arange(n, dtype=np.int64)
    projected = random_projection(features, projection_dim, seed)
    start = int(np.random.default_rng(seed).integers(n))
    return _greedy_k_center(projected, k, start)


class KNNIndex:
    """Exact Euclidean nearest-neighbour search over a memory bank (faiss flat index)."""

    def __init__(self, bank: np.ndarray) -> None:
        import faiss

        bank = np.ascontiguousarray(bank, dtype=np.float32)
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise OddspotError(f"memory bank must be a non-empty N x D matrix, got shape {bank.shape}")
        self.bank = bank
        self._index = faiss.IndexFlatL2(bank.shape[1])
        self._index.add(bank)

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Return (distances, indices), each Q x k, distances Euclidean (not squared), ascending."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.bank.shape[0])
        sq, idx = self._index.search(queries, k)
        return np.sqrt(np.maximum(sq, 0.0)), idx
