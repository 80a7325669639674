"""Nearest-neighbour search over a memory bank of normal features (faiss; no torch).

`KNNIndex` is exact. `KNNIndex(bank, search="ivf")` scans only the bank entries of the
`nprobe` k-means cells nearest each query, and `"hnsw"` walks a faiss HNSW graph: much less work
on a large bank, with a recall below 1 that `benchmarks/predict.py` measures. Both re-rank what
they find exactly like the flat search, so a found neighbour has its exact distance, and a
missed one can only make a patch score higher.

The exact search: faiss computes distances with matrix products whose rounding depends on
where a query sits in its block, so the same patch could score differently (by ~1e-5) with other
patches around it. Its `k + RERANK` best candidates are therefore re-ranked by distances
recomputed from differences, row by row: a query's distances and neighbours never depend on the
other queries.
"""

from __future__ import annotations

import numpy as np

from oddspot.choices import SEARCHES
from oddspot.errors import OddspotError

RERANK = 4  # extra candidates faiss returns per query, re-ranked by exact distances
RERANK_ROWS = 4096  # queries re-ranked at once (bounds the candidates' memory)
HNSW_M = 16  # graph degree
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 16  # candidates kept while searching; more = higher recall, slower
IVF_POINTS_PER_CELL = 39  # faiss's minimum for training k-means without warnings
IVF_PROBE_SHARE = 16  # scan 1/16 of the cells


class KNNIndex:
    """Euclidean nearest-neighbour search over a memory bank: candidates from faiss, exact re-ranking.

    `search="exact"` scans the whole bank (flat index); `"hnsw"` walks an HNSW graph, built on one
    thread so that the same bank always gives the same graph (and the same answers).
    """

    def __init__(self, bank: np.ndarray, search: str = "exact") -> None:
        import faiss

        bank = np.ascontiguousarray(bank, dtype=np.float32)
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise OddspotError(f"memory bank must be a non-empty N x D matrix, got shape {bank.shape}")
        if search not in SEARCHES:
            raise OddspotError(f"--search {search!r} unknown; use one of {', '.join(SEARCHES)}")
        self.bank, self.search_mode = bank, search
        if search == "exact":
            self._index = faiss.IndexFlatL2(bank.shape[1])
            self._index.add(bank)
            return
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # one thread builds one graph / one k-means: the same bank, the same index
        try:
            self._index = _hnsw(bank) if search == "hnsw" else _ivf(bank)
        finally:
            faiss.omp_set_num_threads(threads)

    def candidates(self, queries: np.ndarray, m: int) -> np.ndarray:
        """Q x m indices of bank rows that hold each query's nearest neighbours (faiss's ranking)."""
        _, cand = self._index.search(queries, m)
        return cand

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Return (distances, indices), each Q x k, distances Euclidean (not squared), ascending."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.bank.shape[0])
        cand = self.candidates(queries, min(k + RERANK, self.bank.shape[0]))
        return rerank(self.bank, queries, cand, k)


def _hnsw(bank: np.ndarray) -> object:
    import faiss

    index = faiss.IndexHNSWFlat(bank.shape[1], HNSW_M)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.add(bank)
    index.hnsw.efSearch = HNSW_EF_SEARCH
    return index


def _ivf(bank: np.ndarray) -> object:
    """Inverted lists over about sqrt(N) k-means cells (seeded), `nprobe` = 1/16 of them; flat when the bank is small."""
    import faiss

    cells = min(int(round(np.sqrt(bank.shape[0]))), bank.shape[0] // IVF_POINTS_PER_CELL)
    if cells < 2 * IVF_PROBE_SHARE:  # too small to gain anything: scan it all
        index = faiss.IndexFlatL2(bank.shape[1])
        index.add(bank)
        return index
    quantizer = faiss.IndexFlatL2(bank.shape[1])
    index = faiss.IndexIVFFlat(quantizer, bank.shape[1], cells)
    index.cp.seed = 0
    index.train(bank)
    index.add(bank)
    index.nprobe = max(1, cells // IVF_PROBE_SHARE)
    return index


def rerank(bank: np.ndarray, queries: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest of each query's candidate rows, by distances recomputed from differences.

    Ties in distance go to the lower index; each query's result depends on its own row only.
    """
    dist = np.empty((queries.shape[0], k), np.float32)
    idx = np.empty((queries.shape[0], k), np.int64)
    cand = np.sort(cand, axis=1)
    for lo in range(0, queries.shape[0], RERANK_ROWS):
        c = cand[lo:lo + RERANK_ROWS]
        diff = bank[c]
        diff -= queries[lo:lo + RERANK_ROWS, None, :]
        d2 = np.einsum("qmc,qmc->qm", diff, diff)
        if k == 1:
            order = np.argmin(d2, axis=1)[:, None]  # the first minimum: the lower index on ties
        else:
            order = np.argsort(d2, axis=1, kind="stable")[:, :k]
        dist[lo:lo + RERANK_ROWS] = np.sqrt(np.take_along_axis(d2, order, axis=1))
        idx[lo:lo + RERANK_ROWS] = np.take_along_axis(c, order, axis=1)
    return dist, idx
