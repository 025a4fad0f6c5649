"""k-reciprocal Jaccard distance for clustering (Zhong et al., CVPR 2017), sparse and O(N·k) in memory.

The result equals ``compute_jaccard_distance(features, k1, k2)`` of SpCL / Cluster Contrast
(``utils/faiss_rerank.py``), which OpenUnReID also follows, so that their published DBSCAN ``eps`` values
carry over. What that reference computes, step by step, for features ``x`` (L2-normalised):

1. ``initial_rank``: for every point its ``k1`` nearest neighbours by inner product, **itself included**
   (faiss is asked for ``k1`` results). ``k_reciprocal_neigh(initial_rank, i, k1)`` slices
   ``initial_rank[i, :k1 + 1]``, but there are only ``k1`` columns, so the k1 "neighbours" are self + k1-1.
2. ``R(i)``: the j in the top-k1 of i whose own top-k1 holds i (i itself normally among them).
   ``Rh(i)``: the same with the top ``int(np.around(k1 / 2)) + 1`` (self included; ``np.around`` rounds half
   to even, so k1=5 -> 3, k1=20 -> 11).
3. Expansion: ``E(i) = R(i) ∪ Rh(c)`` for every ``c`` in ``R(i)`` with ``|Rh(c) ∩ R(i)| > 2/3 |Rh(c)|``.
4. ``V[i, j] = softmax_j(-(2 - 2 x_i·x_j))`` over ``j`` in ``E(i)``, zero elsewhere; each row sums to 1.
5. Query expansion (skipped when ``k2 == 1``): ``V[i] <- mean(V[initial_rank[i, :k2]])``, self included.
6. ``d(i, j) = 1 - m / (2 - m)`` with ``m = sum_c min(V[i, c], V[j, c])``; the reference writes the literal
   ``2`` (= sum V_i + sum V_j, so this is 1 - min-sum / max-sum), and clips negative values to 0.

Unlike the reference, k1 is clipped to N (faiss would pad with index -1) and k2 to k1.
Here each step is a sparse-matrix operation; no N×N array is ever formed. The min-sums are accumulated
column by column of V: every column contributes ``min(V[i, c], V[j, c])`` to each pair of its nonzero rows.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from reid.cluster.camera import camera_neighbours
from reid.cluster.knn import KnnMethod, knn_search
from reid.kreciprocal import k_reciprocal_expansion, neighbour_graph, reciprocal_graph

# Pairs (i, j, c) handled at once while summing minima: ~16 bytes each, so 2**22 pairs ~ 64 MiB per array.
_MAX_PAIRS_PER_CHUNK = 2**22
# Bytes of features gathered at once to compute the inner products the k-NN search did not return.
_GATHER_BYTES = 2**26
# Largest |norm - 1| of a float16 row taken as already unit: rounding each entry of a unit row to float16 moves
# its norm by ~2**-11 (relative); renormalising would change nothing but that rounding.
_FLOAT16_UNIT = 2e-3


def jaccard_distance(
    features: np.ndarray, k1: int = 20, k2: int = 6, use_gpu: bool | None = None, knn: KnnMethod | None = None,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
) -> sp.csr_matrix:
    """k-reciprocal Jaccard distances between all pairs of ``features``, as SpCL computes them.

    Args:
        features: (N, D) float32 (or convertible, or float16: kept in float16) features; rows are L2-normalised
            here.
        k1: neighbourhood size, self included (k1=20 -> self + 19); clipped to N.
        k2: query-expansion size, self included; ``k2=1`` disables it; clipped to ``k1``.
        use_gpu, knn: passed to :func:`reid.cluster.knn.knn_search` (``use_gpu=None``: GPU when faiss has
            one; ``knn=None``: exact search).
        neighbours: the (N, >= k1) similarities and indices :func:`reid.cluster.knn.knn_search` returned for
            these features (e.g. a sharded search all ranks ran); skips the search.

    Returns:
        (N, N) float32 CSR matrix of distances in [0, 1). Every pair with distance < 1 (the pairs whose V
        rows share a column) is stored, explicit zeros kept, the diagonal included; an absent entry means
        distance 1. Exactly symmetric. Column indices are not sorted within rows (``.sort_indices()`` if
        needed). Memory O(N·k1²): tens to a few hundred entries per row on clustered features.

    Example:
        >>> x = np.array([[1, 0], [0.99, 0.14], [0, 1], [0.14, 0.99]], dtype=np.float32)
        >>> dist = jaccard_distance(x, k1=2, k2=1)
        >>> dist.nnz  # the pairs within each group; across the groups the distance is 1 (absent)
        8
        >>> round(float(dist[0, 1]), 3)
        0.02
    """
    features = l2_normalise(features)
    num_samples = features.shape[0]
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    k1 = min(k1, num_samples)
    k2 = min(k2, k1)

    if neighbours is None:
        neighbours = knn_search(features, k1, use_gpu=use_gpu, method=knn)
    similarities, initial_rank = neighbours[0][:, :k1], neighbours[1][:, :k1]
    expansion = k_reciprocal_expansion(initial_rank, k1, int(np.around(k1 / 2)) + 1)
    weights = _softmax_weights(features, expansion, similarities, initial_rank)
    if k2 != 1:
        weights = _query_expansion(weights, initial_rank[:, :k2])
    return _jaccard_from_weights(weights)


def camera_jaccard_distance(
    features: np.ndarray, camids: np.ndarray, k1_intra: int = 5, k1_inter: int = 20, k2_intra: int = 2,
    k2_inter: int = 4, use_gpu: bool | None = None,
) -> sp.csr_matrix:
    """Camera-aware Jaccard distance (CA-Jaccard, Chen et al., CVPR 2024), sparse like :func:`jaccard_distance`.

    What changes against the plain distance, as the authors' code does it:

    1. CKRNNs: the k-reciprocal sets are found on two ranking lists per image, its own camera's images
       (self + ``k1_intra`` others) and the other cameras' images (``k1_inter + 1``); ``R(i)`` is the union of
       the intra-camera and the inter-camera k-reciprocal neighbours, so every image keeps cross-camera
       neighbours however strongly its own camera pulls. There is no expansion step.
    2. ``V`` as in the plain distance (softmax of ``-(2 - 2 x_i.x_j)`` over ``R(i)``).
    3. CLQE: ``V[i]`` is averaged over its ``k2_intra`` nearest same-camera images (self included) and its
       ``k2_inter`` nearest other-camera images (``k2_intra = k2_inter = 0`` would be none: at least one of the
       two must be positive; ``k2_intra = 1, k2_inter = 0`` disables it).
    4. ``d(i, j) = 1 - m / (2 - m)`` as in the plain distance.

    Args:
        features: (N, D) float32; rows L2-normalised here.
        camids: (N,) camera ids with at least two distinct cameras (callers fall back to
            :func:`jaccard_distance` otherwise, see :func:`reid.cluster.camera.camera_fallback_reason`).
        k1_intra, k1_inter, k2_intra, k2_inter: as above (defaults: the authors' Market-1501 command,
            ``--k2-intra 2 --k2-inter 4``; k1 values ours). A camera with fewer images than asked contributes
            what it has.

    Returns:
        (N, N) float32 CSR distances, the same conventions as :func:`jaccard_distance`.
    """
    features = l2_normalise(features)
    camids = np.asarray(camids).ravel()
    if camids.shape[0] != features.shape[0]:
        raise ValueError(f"camids has {camids.shape[0]} entries for {features.shape[0]} feature rows")
    if np.unique(camids).size < 2:
        raise ValueError("camera_jaccard_distance needs at least two cameras; use jaccard_distance")
    if min(k1_intra, k1_inter) < 0 or min(k2_intra, k2_inter) < 0 or k2_intra + k2_inter < 1:
        raise ValueError(f"k1_intra, k1_inter, k2_intra, k2_inter must be >= 0 with k2_intra + k2_inter >= 1, got "
                         f"{k1_intra}, {k1_inter}, {k2_intra}, {k2_inter}")
    intra_sims, intra = camera_neighbours(features, camids, max(k1_intra + 1, k2_intra), same_camera=True)
    inter_sims, inter = camera_neighbours(features, camids, max(k1_inter + 1, k2_inter, 1), same_camera=False)
    reciprocal = (reciprocal_graph(intra[:, : k1_intra + 1]) + reciprocal_graph(inter[:, : k1_inter + 1])).tocsr()
    reciprocal.data[:] = 1
    reciprocal.sort_indices()
    weights = _softmax_weights(features, reciprocal, np.hstack([intra_sims, inter_sims]), np.hstack([intra, inter]))
    if (k2_intra, k2_inter) != (1, 0):
        # a camera with fewer images than asked pads its lists with repeats: each image counts once
        weights = _query_expansion(weights, np.hstack([intra[:, :k2_intra], inter[:, :k2_inter]]), distinct=True)
    return _jaccard_from_weights(weights)


def l2_normalise(features: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, D) unit rows (zero rows stay zero, as ``F.normalize`` does): float32, or float16 for
    float16 input (normalised in float32 chunk by chunk, so no float32 copy of the whole array is made).
    Float16 rows whose norms are all 1 to float16 precision (within ``_FLOAT16_UNIT``) come back as they are,
    without a copy: 4 GB saved at 1,000,000 x 2048."""
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be a non-empty 2-D (N, D) array, got shape {features.shape}")
    if features.dtype != np.float16:
        features = np.asarray(features, dtype=np.float32)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        return np.ascontiguousarray(features / np.maximum(norms, 1e-12), dtype=np.float32)
    chunk = max(1, _GATHER_BYTES // (4 * features.shape[1]))
    if all(np.abs(np.linalg.norm(features[start : start + chunk].astype(np.float32), axis=1) - 1).max()
           <= _FLOAT16_UNIT for start in range(0, features.shape[0], chunk)):
        return features
    out = np.empty(features.shape, dtype=np.float16)
    for start in range(0, features.shape[0], chunk):
        block = features[start : start + chunk].astype(np.float32)
        out[start : start + chunk] = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
    return out


def _softmax_weights(
    features: np.ndarray, expansion: sp.csr_matrix, similarities: np.ndarray, initial_rank: np.ndarray
) -> sp.csr_matrix:
    """V[i, j] = softmax over j in E(i) of -(2 - 2 x_i·x_j).

    Inner products already found by the k-NN search are reused; the others (points brought in by the
    expansion) are computed here.

    Args:
        features: (N, D) float32, L2-normalised.
        expansion: (N, N) CSR pattern of E, sorted indices.
        similarities, initial_rank: (N, k1) k-NN output.

    Returns:
        (N, N) float64 CSR V with the pattern of E; each nonempty row sums to 1.
    """
    num_samples = features.shape[0]
    rows = np.repeat(np.arange(num_samples, dtype=np.int64), np.diff(expansion.indptr))
    cols = expansion.indices.astype(np.int64)
    wanted_keys = rows * num_samples + cols

    knn_keys = np.arange(num_samples, dtype=np.int64)[:, None] * num_samples + initial_rank
    order = np.argsort(knn_keys, axis=None)
    knn_keys = knn_keys.ravel()[order]
    knn_sims = similarities.ravel()[order]
    position = np.minimum(np.searchsorted(knn_keys, wanted_keys), knn_keys.size - 1)
    known = knn_keys[position] == wanted_keys

    pair_sims = np.empty(wanted_keys.size, dtype=np.float32)
    pair_sims[known] = knn_sims[position[known]]
    missing = np.flatnonzero(~known)
    chunk = max(1, _GATHER_BYTES // (8 * features.shape[1]))  # two gathered (chunk, D) float32 arrays
    for start in range(0, missing.size, chunk):
        pairs = missing[start : start + chunk]
        pair_sims[pairs] = np.einsum("ij,ij->i", features[rows[pairs]].astype(np.float32, copy=False),
                                     features[cols[pairs]].astype(np.float32, copy=False))

    # The reference evaluates 2 - 2 x_i·x_j in float32, then a (max-shifted) softmax.
    logits = -(np.float32(2) - np.float32(2) * pair_sims).astype(np.float64)
    row_max = np.full(num_samples, -np.inf)
    np.maximum.at(row_max, rows, logits)
    weights = np.exp(logits - row_max[rows])
    weights /= np.bincount(rows, weights=weights, minlength=num_samples)[rows]
    return sp.csr_matrix((weights, expansion.indices, expansion.indptr), shape=expansion.shape)


def _query_expansion(weights: sp.csr_matrix, neighbours: np.ndarray, distinct: bool = False) -> sp.csr_matrix:
    """V[i] <- mean of V over the rows neighbours[i] (self included). (N, N) CSR, (N, k2) -> (N, N) CSR.

    ``distinct``: a row listed more than once in neighbours[i] counts once (the mean is over distinct rows).
    """
    num_samples, k2 = neighbours.shape
    if distinct:
        pattern = neighbour_graph(neighbours).astype(np.float64)  # duplicates summed, then counted once
        pattern.data[:] = 1.0
        pattern = sp.csr_matrix(pattern.multiply(1.0 / np.diff(pattern.indptr)[:, None]))
        expanded = (pattern @ weights).tocsr()
        expanded.sort_indices()
        return expanded
    averaging = sp.csr_matrix(
        (
            np.full(num_samples * k2, 1.0 / k2),
            neighbours.ravel(),
            np.arange(0, num_samples * k2 + 1, k2, dtype=np.int64),
        ),
        shape=(num_samples, num_samples),
    )
    expanded = (averaging @ weights).tocsr()
    expanded.sort_indices()
    return expanded


def _jaccard_from_weights(weights: sp.csr_matrix) -> sp.csr_matrix:
    """d(i, j) = 1 - m / (2 - m), m = sum_c min(V[i, c], V[j, c]), for all pairs sharing a column of V.

    Args:
        weights: (N, N) float64 CSR V, nonnegative.

    Returns:
        (N, N) float32 CSR distances, negatives clipped to 0, entries < 1 only. Column indices are sorted
        within each row below the diagonal, not above it (``.sort_indices()`` makes it canonical).
    """
    num_samples = weights.shape[0]
    upper = _upper_min_sums(weights)
    dist = np.maximum(1.0 - upper.data / (2.0 - upper.data), 0.0).astype(np.float32)
    keep = dist < 1  # a distance that rounds to 1 in float32 is the same as absent
    kept_before = np.concatenate([[0], np.cumsum(keep)]).astype(upper.indptr.dtype)
    upper = sp.csr_matrix((dist[keep], upper.indices[keep], kept_before[upper.indptr]), shape=upper.shape)

    # Mirror the strict upper triangle: its CSC form is the lower triangle in CSR form.
    rows = np.repeat(np.arange(num_samples, dtype=upper.indices.dtype), np.diff(upper.indptr))
    strict = upper.indices != rows
    strict_before = np.concatenate([[0], np.cumsum(strict)]).astype(upper.indptr.dtype)
    lower = sp.csr_matrix(
        (upper.data[strict], upper.indices[strict], strict_before[upper.indptr]), shape=upper.shape
    ).tocsc()  # lower.indptr / .indices / .data: row i of the lower triangle, columns ascending

    # Row i of the result: its lower-triangle entries, then its upper-triangle ones.
    indptr = lower.indptr.astype(np.int64) + upper.indptr
    lower_rows = np.repeat(np.arange(num_samples), np.diff(lower.indptr))
    lower_dest = np.arange(lower.nnz) + upper.indptr[lower_rows]
    upper_dest = np.arange(upper.nnz) + lower.indptr[rows + 1]
    indices = np.empty(indptr[-1], dtype=upper.indices.dtype)
    data = np.empty(indptr[-1], dtype=np.float32)
    indices[lower_dest], data[lower_dest] = lower.indices, lower.data
    indices[upper_dest], data[upper_dest] = upper.indices, upper.data
    return sp.csr_matrix((data, indices, indptr), shape=(num_samples, num_samples))


def _upper_min_sums(weights: sp.csr_matrix) -> sp.csr_matrix:
    """m(i, j) = sum_c min(V[i, c], V[j, c]) for j >= i sharing a column with i. (N, N) CSR -> (N, N) CSR.

    Every column c with nonzero rows r_1 < ... < r_n contributes min(V[r_a, c], V[r_b, c]) to each pair
    a <= b. The (i, j, min) triples are summed per pair by a sparse product ``A @ B`` (A: row i -> its
    triples, B: triple -> column j), which scipy runs with a dense row accumulator, without sorting. Rows
    are processed in chunks of about ``_MAX_PAIRS_PER_CHUNK`` triples. The result's column indices are
    not sorted within rows.
    """
    weights = weights.tocsr()
    weights.eliminate_zeros()  # the reference's inverted index holds only nonzero entries
    weights.sort_indices()
    num_samples = weights.shape[0]
    # Where each CSR entry of V sits in the CSC layout (rows ascending within each column).
    entry_ids = sp.csr_matrix(
        (np.arange(weights.nnz, dtype=np.int64), weights.indices, weights.indptr), shape=weights.shape
    ).tocsc()
    csc_position = np.empty(weights.nnz, dtype=np.int64)
    csc_position[entry_ids.data] = np.arange(weights.nnz, dtype=np.int64)
    column_rows = entry_ids.indices.astype(np.int32)  # row of each CSC position
    column_values = weights.data[entry_ids.data]  # value of each CSC position
    column_end = entry_ids.indptr[1:][weights.indices]  # end of the column of each CSR entry
    partner_counts = column_end - csc_position  # partners j >= i (itself included) of each CSR entry

    cumulative = np.concatenate([[0], np.cumsum(partner_counts)])
    row_pair_counts = cumulative[weights.indptr[1:]] - cumulative[weights.indptr[:-1]]
    blocks = []
    for start, stop in _row_chunks(row_pair_counts, _MAX_PAIRS_PER_CHUNK):
        lo, hi = weights.indptr[start], weights.indptr[stop]
        counts = partner_counts[lo:hi]
        num_pairs = int(counts.sum())
        first = csc_position[lo:hi] - (np.cumsum(counts) - counts)
        partner_pos = np.repeat(first, counts) + np.arange(num_pairs, dtype=np.int64)
        minima = np.minimum(np.repeat(weights.data[lo:hi], counts), column_values[partner_pos])
        pair_ids = np.arange(num_pairs, dtype=np.int32 if num_pairs < 2**31 else np.int64)
        row_starts = (cumulative[weights.indptr[start : stop + 1]] - cumulative[lo]).astype(pair_ids.dtype)
        row_to_pair = sp.csr_matrix((minima, pair_ids, row_starts), shape=(stop - start, num_pairs))
        pair_to_column = sp.csr_matrix(
            (np.ones(num_pairs), column_rows[partner_pos], np.arange(num_pairs + 1, dtype=pair_ids.dtype)),
            shape=(num_pairs, num_samples),
        )
        blocks.append(row_to_pair @ pair_to_column)
    return sp.vstack(blocks, format="csr")


def _row_chunks(pair_counts: np.ndarray, max_pairs: int) -> list[tuple[int, int]]:
    """Split rows 0..N-1 into consecutive [start, stop) ranges holding about <= max_pairs pairs each.

    A single row with more than max_pairs pairs gets a range of its own.
    """
    chunks = []
    start = 0
    cumulative = np.concatenate([[0], np.cumsum(pair_counts)])
    num_rows = pair_counts.size
    while start < num_rows:
        limit = int(np.searchsorted(cumulative, cumulative[start] + max_pairs, side="right")) - 1
        stop = min(max(limit, start + 1), num_rows)
        chunks.append((start, stop))
        start = stop
    return chunks
