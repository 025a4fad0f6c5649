"""k-reciprocal neighbour sets and their expansion (Zhong et al., CVPR 2017), as sparse (N, N) patterns.

One implementation for both users: the clustering distance (:func:`reid.cluster.jaccard_distance`, neighbour
lists from faiss) and re-ranking (:func:`reid.evaluation.re_ranking`, neighbour lists from sorted distance
rows). Given ranked neighbour lists (row i: the nearest of item i, itself included):

- ``R(i)``: the j among the first ``k`` of i whose own first ``k`` hold i;
- ``Rh(i)``: the same with the first ``k_half`` (both users take ``round(k1 / 2) + 1``);
- ``E(i) = R(i) ∪ Rh(c)`` for every ``c`` in ``R(i)`` with ``|Rh(c) ∩ R(i)| > 2/3 |Rh(c)|``.

Only numpy and scipy: importing this does not pull in faiss or torch.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def k_reciprocal_expansion(ranked: np.ndarray, k: int, k_half: int) -> sp.csr_matrix:
    """The expanded k-reciprocal sets E of every item.

    Args:
        ranked: (N, K) int neighbour lists, nearest first, row i starting with i itself; K >= k, k_half
            (fewer columns: all of them are used).
        k: size of the lists R is built from (self included).
        k_half: size of the lists Rh is built from (self included).

    Returns:
        (N, N) CSR pattern of E: int32 ones, sorted column indices.
    """
    return expand_reciprocal(reciprocal_graph(ranked[:, :k]), reciprocal_graph(ranked[:, :k_half]))


def neighbour_graph(ranked: np.ndarray) -> sp.csr_matrix:
    """(N, k) neighbour indices -> (N, N) CSR pattern with a 1 at (i, ranked[i, p]); int32 data.

    A neighbour listed twice in a row gets a 2 (duplicates are summed, which also sorts each row's indices).
    """
    num_samples, k = ranked.shape
    indptr = np.arange(0, num_samples * k + 1, k, dtype=np.int64)
    graph = sp.csr_matrix(
        (np.ones(num_samples * k, dtype=np.int32), ranked.ravel(), indptr), shape=(num_samples, num_samples)
    )
    graph.sum_duplicates()  # sorts the indices of each row
    return graph


def reciprocal_graph(ranked: np.ndarray) -> sp.csr_matrix:
    """Pattern of k-reciprocal pairs: (i, j) with j in ranked[i] and i in ranked[j]. (N, k) -> (N, N) CSR."""
    forward = neighbour_graph(ranked)
    reciprocal = forward.multiply(forward.T).tocsr()
    reciprocal.sort_indices()
    return reciprocal


def expand_reciprocal(reciprocal: sp.csr_matrix, reciprocal_half: sp.csr_matrix) -> sp.csr_matrix:
    """Add to R(i) the half-size set Rh(c) of every candidate c in R(i) that overlaps R(i) by more than 2/3.

    Args:
        reciprocal: (N, N) CSR pattern of R (ones).
        reciprocal_half: (N, N) CSR pattern of Rh (ones).

    Returns:
        (N, N) CSR pattern (int32 ones, sorted indices) of the expanded sets E.
    """
    # overlap[i, c] = |Rh(c) ∩ R(i)|, needed only where c is in R(i).
    overlap = (reciprocal @ reciprocal_half.T).multiply(reciprocal).tocsr()
    half_sizes = np.diff(reciprocal_half.indptr)
    accepted = overlap.data > 2 / 3 * half_sizes[overlap.indices]  # same float64 comparison as the reference
    candidates = sp.csr_matrix(
        (accepted.astype(np.int32), overlap.indices, overlap.indptr), shape=overlap.shape
    )
    candidates.eliminate_zeros()
    expansion = (reciprocal + candidates @ reciprocal_half).tocsr()
    expansion.data[:] = 1
    expansion.sort_indices()
    return expansion
