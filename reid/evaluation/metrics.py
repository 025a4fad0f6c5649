"""CMC, mAP and mINP under the Market-1501 protocol, vectorised over chunks of queries.

The numbers are those of torchreid's ``eval_market1501`` with AGW's mINP added (the per-query Python loop
that both use is kept outside the library, as ``evaluate_rank_loop`` in ``benchmarks/reference.py``, the
reference of the tests and the benchmark). Here every chunk of queries is ranked with one ``np.argsort`` and the
matches are read off boolean arrays, so no Python loop runs over queries or gallery items inside a chunk.
"""

from __future__ import annotations

import warnings

import numpy as np

from reid.data.datasets import JUNK_PID

# Gallery entries handled per chunk of queries: bounds the (chunk, G) temporaries to roughly 100 MB.
_CHUNK_ELEMENTS = 1 << 22

# Codes of a gallery entry relative to one query, stored as uint8 so that one gather reorders all three.
_NON_MATCH = 0
_TRUE_MATCH = 1
_REMOVED = 2  # same pid and same camera as the query, or junk (pid -1)


def evaluate_rank(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
                  g_camids: np.ndarray, max_rank: int = 50) -> dict:
    """CMC curve, mAP and mINP of a query-gallery distance matrix (Market-1501 protocol).

    For each query the gallery is ranked by ascending distance with ``np.argsort(row)`` (numpy's default
    sort, as torchreid does, so ties are ordered exactly as there), then gallery items with the query's pid
    AND camera, and every junk item (pid -1), are removed from the ranked list. Distractors (pid 0) stay as
    ordinary non-matches. A query with no true match left is skipped.

    Per valid query, with matches at 1-based ranks ``r_1 < ... < r_n`` of the kept list:
    ``CMC@k = [r_1 <= k]``, ``AP = mean_m (m / r_m)`` (non-interpolated), ``INP = n / r_n``.
    Results are means over valid queries.

    Args:
        distmat: (Q, G) distances, smaller = more similar; any float dtype (it is sorted as given).
        q_pids, q_camids: (Q,) integer person and camera ids of the queries.
        g_pids, g_camids: (G,) integer person and camera ids of the gallery (pid -1 = junk, 0 = distractor).
        max_rank: length of the CMC curve. As in torchreid, a gallery smaller than ``max_rank`` shortens the
            curve to G (with a warning). Ranks past the end of a query's kept list count as hits, since that
            query's match was found earlier (torchreid fails on such ragged lists).

    Returns:
        ``{"cmc": (min(max_rank, G),) float64, "mAP": float, "mINP": float, "num_valid_queries": int}``;
        cmc, mAP and mINP are fractions in [0, 1].

    Raises:
        ValueError: shapes disagree, ``max_rank < 1``, or no query has a true match in the gallery.

    Example:
        >>> d = np.array([[0.1, 0.2, 0.3]])
        >>> r = evaluate_rank(d, np.array([1]), np.array([2, 1, 1]), np.array([0]), np.array([1, 1, 2]), 3)
        >>> r["cmc"].tolist(), round(r["mAP"], 4), r["mINP"]
        ([0.0, 1.0, 1.0], 0.5833, 0.6666666666666666)
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids).ravel(), np.asarray(g_pids).ravel()
    q_camids, g_camids = np.asarray(q_camids).ravel(), np.asarray(g_camids).ravel()
    _check_inputs(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    num_query, num_gallery = distmat.shape
    if num_gallery < max_rank:
        warnings.warn(f"gallery has only {num_gallery} items; CMC is cut to rank {num_gallery} "
                      f"instead of {max_rank}", stacklevel=2)
        max_rank = num_gallery

    # first_match_counts[r - 1]: valid queries whose first true match is at rank r (last bin: r > max_rank).
    first_match_counts = np.zeros(max_rank + 1, dtype=np.int64)
    ap_sum = inp_sum = 0.0
    num_valid = 0
    chunk_rows = max(1, _CHUNK_ELEMENTS // max(num_gallery, 1))
    for start in range(0, num_query, chunk_rows):
        stop = min(start + chunk_rows, num_query)
        first_rank, average_precision, inverse_negative_penalty = _rank_chunk(
            distmat[start:stop], q_pids[start:stop], q_camids[start:stop], g_pids, g_camids)
        first_match_counts += np.bincount(np.minimum(first_rank, max_rank + 1) - 1, minlength=max_rank + 1)
        ap_sum += float(average_precision.sum())
        inp_sum += float(inverse_negative_penalty.sum())
        num_valid += first_rank.size

    if num_valid == 0:
        raise ValueError(f"no query has a true match in the gallery: all {num_query} queries were skipped "
                         "(after removing same-pid-same-camera and junk pid -1 gallery items); "
                         "check that query and gallery pids come from the same identity set")
    # torchreid averages the per-query 0/1 CMC rows in float32 (sum, then divide); do the same so the curve agrees
    # with it bit for bit (the float64 quotient differs by up to ~3e-8)
    cmc = np.cumsum(first_match_counts[:max_rank]).astype(np.float32) / num_valid
    return {"cmc": cmc.astype(np.float64), "mAP": ap_sum / num_valid, "mINP": inp_sum / num_valid,
            "num_valid_queries": num_valid}


def _rank_chunk(distmat: np.ndarray, q_pids: np.ndarray, q_camids: np.ndarray, g_pids: np.ndarray,
                g_camids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-query first-match rank, AP and INP of the valid queries in one chunk.

    Args:
        distmat: (C, G) distances of C queries; q_pids, q_camids: (C,); g_pids, g_camids: (G,).

    Returns:
        first_rank: (V,) int64, 1-based rank of the first true match in the kept list, for the V valid queries
        (those with at least one true match), in query order; average_precision: (V,) float64;
        inverse_negative_penalty: (V,) float64.
    """
    same_pid = g_pids[None, :] == q_pids[:, None]
    removed = (same_pid & (g_camids[None, :] == q_camids[:, None])) | (g_pids == JUNK_PID)[None, :]
    codes = np.where(removed, np.uint8(_REMOVED), same_pid.astype(np.uint8))
    del same_pid, removed

    order = np.argsort(distmat, axis=1)  # default kind on purpose: identical tie order to torchreid
    ranked_codes = np.take_along_axis(codes, order, axis=1)
    del codes, order
    # 1-based rank in the kept list of every ranked position (meaningful where the item is kept).
    kept_rank = np.cumsum(ranked_codes != _REMOVED, axis=1, dtype=np.int64)
    match_rows, match_cols = np.nonzero(ranked_codes == _TRUE_MATCH)  # row-major: ranks ascend within a row
    match_kept_rank = kept_rank[match_rows, match_cols]
    del kept_rank, ranked_codes

    num_rows = distmat.shape[0]
    matches_per_row = np.bincount(match_rows, minlength=num_rows)
    valid = matches_per_row > 0
    first_index = np.cumsum(matches_per_row) - matches_per_row  # index of each row's first match
    # m-th match of its row (1-based), so that precision at that match is m / its kept rank.
    match_number = np.arange(match_rows.size) - first_index[match_rows] + 1
    precision_sum = np.bincount(match_rows, weights=match_number / match_kept_rank, minlength=num_rows)

    num_matches = matches_per_row[valid]
    first_rank = match_kept_rank[first_index[valid]]
    last_rank = match_kept_rank[first_index[valid] + num_matches - 1]
    average_precision = precision_sum[valid] / num_matches
    inverse_negative_penalty = num_matches / last_rank
    return first_rank, average_precision, inverse_negative_penalty


def _check_inputs(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
                  g_camids: np.ndarray, max_rank: int) -> None:
    """Raise ValueError with the offending shapes when the inputs do not describe one (Q, G) problem."""
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D (num_query, num_gallery), got shape {distmat.shape}")
    num_query, num_gallery = distmat.shape
    if q_pids.size != num_query or q_camids.size != num_query:
        raise ValueError(f"distmat has {num_query} query rows but q_pids has {q_pids.size} and "
                         f"q_camids {q_camids.size} entries")
    if g_pids.size != num_gallery or g_camids.size != num_gallery:
        raise ValueError(f"distmat has {num_gallery} gallery columns but g_pids has {g_pids.size} and "
                         f"g_camids {g_camids.size} entries")
    if int(max_rank) < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
