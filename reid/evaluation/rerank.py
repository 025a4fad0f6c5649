"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal Encoding",
CVPR 2017), with the numbers of the reference implementation (person-re-ranking / torchreid ``re_ranking``).

The reference stacks the three distance blocks into one dense (N, N) matrix, N = Q + G, sorts every row,
and keeps Python lists for the k-reciprocal sets and the inverted index. Here the (N, N) matrix is never
formed: its rows are rebuilt from the blocks a chunk at a time, only the nearest ``max(k1 + 1, k2)``
neighbours of each row are kept, and the sets, the encoding V and the inverted index are scipy.sparse
matrices, so memory is O(N k + Q G) on top of the inputs.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from reid.kreciprocal import k_reciprocal_expansion

# Entries of the (rows, N) float32 temporaries handled at a time: about 16 MB per temporary.
_CHUNK_ELEMENTS = 1 << 22


def re_ranking(q_g_dist: np.ndarray, q_q_dist: np.ndarray, g_g_dist: np.ndarray, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.3) -> np.ndarray:
    """Re-rank query-gallery distances with k-reciprocal Jaccard distances.

    As the reference: the block matrix ``[[q_q, q_g], [q_g.T, g_g]]`` is squared and each column divided
    by its maximum (the inputs are used as given, so pass plain, not squared, Euclidean distances to get the
    usual behaviour); the k-reciprocal set R(i, k1) of each item is expanded by every R(c, round(k1 / 2))
    of its members c that shares more than 2/3 of its items with R(i, k1); V[i] = softmax(-dist) over the
    expanded set; V is averaged over each item's k2 nearest neighbours (local query expansion, skipped for
    k2 = 1); ``jaccard(i, j) = 1 - sum min(V_i, V_j) / (2 - sum min(V_i, V_j))``; and the result is
    ``(1 - lambda_value) * jaccard + lambda_value * normalised original``. Neighbour lists come from
    ``np.argsort`` of the same float32 rows as the reference, so ties are broken identically.

    Args:
        q_g_dist: (Q, G) query-gallery distances.
        q_q_dist: (Q, Q) query-query distances.
        g_g_dist: (G, G) gallery-gallery distances.
        k1: size of the k-reciprocal neighbourhood (paper: 20).
        k2: size of the local query expansion (paper: 6; 1 switches it off).
        lambda_value: weight of the original distance (paper: 0.3).

    Returns:
        (Q, G) float32 re-ranked distances (smaller = more similar).

    Example:
        >>> feats = np.random.default_rng(0).normal(size=(12, 4))
        >>> d = np.linalg.norm(feats[:, None] - feats[None], axis=2)
        >>> re_ranking(d[:3, 3:], d[:3, :3], d[3:, 3:], k1=4, k2=2).shape
        (3, 9)
    """
    blocks = _DistanceBlocks(np.asarray(q_g_dist), np.asarray(q_q_dist), np.asarray(g_g_dist))
    num_query, num_all = blocks.num_query, blocks.num_all
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")

    nearest = blocks.nearest_neighbours(max(k1 + 1, k2))  # (N, K) int64, row i = argsort(original[i])[:K]
    expanded = k_reciprocal_expansion(nearest, k1 + 1, int(np.around(k1 / 2.0)) + 1)

    rows, cols = expanded.nonzero()
    weights = np.exp(-blocks.original_values(rows, cols).astype(np.float64))
    row_sums = np.bincount(rows, weights=weights, minlength=num_all)
    encoding = sp.csr_matrix((weights / row_sums[rows], (rows, cols)), shape=(num_all, num_all))
    if k2 != 1:
        num_expand = min(k2, num_all)
        neighbours = nearest[:, :num_expand]
        averaging = sp.csr_matrix((np.full(neighbours.size, 1.0 / num_expand),
                                   (np.repeat(np.arange(num_all), num_expand), neighbours.ravel())),
                                  shape=(num_all, num_all))
        encoding = (averaging @ encoding).tocsr()

    shared_mass = _sum_of_minima(encoding[:num_query], encoding[num_query:].tocsc())
    jaccard = 1.0 - shared_mass / (2.0 - shared_mass)
    original = blocks.original_query_gallery()
    return (jaccard * (1.0 - lambda_value) + original * lambda_value).astype(np.float32)


class _DistanceBlocks:
    """The reference's normalised matrix ``original = (D / D.max(axis=0)).T``, ``D = [[qq, qg], [qg.T, gg]]**2``
    in float32, served by rows, by entries or as its (Q, G) block, without forming it."""

    def __init__(self, q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray) -> None:
        num_query, num_gallery = q_g.shape
        if q_q.shape != (num_query, num_query) or g_g.shape != (num_gallery, num_gallery):
            raise ValueError(f"expected q_q_dist ({num_query}, {num_query}) and g_g_dist ({num_gallery}, "
                             f"{num_gallery}) for q_g_dist {q_g.shape}; got {q_q.shape} and {g_g.shape}")
        # The reference concatenates first, so all blocks are squared in their common dtype.
        dtype = np.result_type(q_g, q_q, g_g)
        self.q_g, self.q_q, self.g_g = q_g.astype(dtype, copy=False), q_q.astype(dtype, copy=False), \
            g_g.astype(dtype, copy=False)
        self.num_query, self.num_gallery = num_query, num_gallery
        self.num_all = num_query + num_gallery
        self.column_max = self._column_max()

    def _column_max(self) -> np.ndarray:
        """(N,) float32 maxima of the columns of D (the normalisers of the rows of ``original``)."""
        column_max = np.empty(self.num_all, dtype=np.float32)
        step = _rows_per_chunk(self.num_all)
        for start in range(0, self.num_all, step):
            stop = min(start + step, self.num_all)
            column_max[start:stop] = self._squared_columns(start, stop).max(axis=1)
        return column_max

    def _squared_columns(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, N) float32: columns start..stop-1 of D, one per row."""
        q_stop = min(stop, self.num_query)
        parts = []
        if start < q_stop:  # query columns: [qq[:, i]; qg[i, :]]
            parts.append(np.concatenate([self.q_q[:, start:q_stop].T, self.q_g[start:q_stop]], axis=1))
        g_start, g_stop = max(start, self.num_query) - self.num_query, stop - self.num_query
        if g_start < g_stop:  # gallery columns: [qg[:, g]; gg[:, g]]
            parts.append(np.concatenate([self.q_g[:, g_start:g_stop].T, self.g_g[:, g_start:g_stop].T], axis=1))
        columns = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return np.power(columns, 2).astype(np.float32)

    def nearest_neighbours(self, num_neighbours: int) -> np.ndarray:
        """(N, min(num_neighbours, N)) int64: the first columns of ``np.argsort(original, axis=1)``."""
        num_neighbours = min(num_neighbours, self.num_all)
        nearest = np.empty((self.num_all, num_neighbours), dtype=np.int64)
        step = _rows_per_chunk(self.num_all)
        for start in range(0, self.num_all, step):
            stop = min(start + step, self.num_all)
            rows = self._squared_columns(start, stop) / self.column_max[start:stop, None]
            nearest[start:stop] = np.argsort(rows, axis=1)[:, :num_neighbours]
        return nearest

    def original_values(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(M,) float32 entries ``original[rows, cols]`` = D[cols, rows] / column_max[rows]."""
        num_query = self.num_query
        values = np.empty(rows.size, dtype=self.q_g.dtype)
        row_is_query, col_is_query = rows < num_query, cols < num_query
        for row_query in (True, False):
            for col_query in (True, False):
                pick = (row_is_query == row_query) & (col_is_query == col_query)
                r, c = rows[pick], cols[pick]  # D[c, r]: block chosen by c (block row) and r (block column)
                if col_query and row_query:
                    values[pick] = self.q_q[c, r]
                elif col_query:
                    values[pick] = self.q_g[c, r - num_query]
                elif row_query:
                    values[pick] = self.q_g[r, c - num_query]
                else:
                    values[pick] = self.g_g[c - num_query, r - num_query]
        return np.power(values, 2).astype(np.float32) / self.column_max[rows]

    def original_query_gallery(self) -> np.ndarray:
        """(Q, G) float32 block ``original[:Q, Q:]`` = qg**2 / column_max[:Q] (row-wise)."""
        return np.power(self.q_g, 2).astype(np.float32) / self.column_max[:self.num_query, None]


def _rows_per_chunk(num_columns: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(num_columns, 1))


def _sum_of_minima(query_rows: sp.csr_matrix, gallery_columns: sp.csc_matrix) -> np.ndarray:
    """(Q, G) float64: ``sum_f min(V[q, f], V[Q + g, f])`` through the inverted index of the gallery.

    Args:
        query_rows: (Q, N) CSR, the encodings of the queries.
        gallery_columns: (G, N) CSC, the encodings of the gallery; column f lists the gallery items using f.
    """
    num_query, num_gallery = query_rows.shape[0], gallery_columns.shape[0]
    posting_lengths = np.diff(gallery_columns.indptr)
    # Work per query = total length of the postings of its features: chunk queries to bound the expansion.
    cumulative_lengths = np.concatenate([[0], np.cumsum(posting_lengths[query_rows.indices])])
    work = cumulative_lengths[query_rows.indptr[1:]] - cumulative_lengths[query_rows.indptr[:-1]]
    shared = np.zeros((num_query, num_gallery), dtype=np.float64)
    start = 0
    while start < num_query:
        cumulative = np.cumsum(work[start:])
        stop = start + max(1, int(np.searchsorted(cumulative, _CHUNK_ELEMENTS, side="right")))
        stop = min(stop, start + _rows_per_chunk(num_gallery))
        chunk = query_rows[start:stop].tocoo()
        lengths = posting_lengths[chunk.col]
        owner = np.repeat(np.arange(chunk.nnz), lengths)  # which (query, feature) entry each posting serves
        offset_in_posting = np.arange(owner.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        posting = gallery_columns.indptr[chunk.col][owner] + offset_in_posting
        minima = np.minimum(gallery_columns.data[posting], chunk.data[owner])
        flat = chunk.row[owner] * num_gallery + gallery_columns.indices[posting]
        shared[start:stop] = np.bincount(flat, weights=minima,
                                         minlength=(stop - start) * num_gallery).reshape(stop - start, -1)
        start = stop
    return shared
