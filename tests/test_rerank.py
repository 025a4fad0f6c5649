"""k-reciprocal re-ranking against a dense, loop-by-loop re-implementation of the reference algorithm."""

from __future__ import annotations

import numpy as np
import pytest

from reid.evaluation import re_ranking


def dense_re_ranking(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int, k2: int,
                     lambda_value: float) -> np.ndarray:
    """Zhong et al. 2017 as the reference code computes it: dense (N, N) matrices, Python sets and loops."""
    num_query = q_q.shape[0]
    squared = np.power(np.block([[q_q, q_g], [q_g.T, g_g]]), 2).astype(np.float32)
    original = (squared / squared.max(axis=0)).T  # row i divided by the maximum of column i
    num_all = original.shape[0]
    ranking = np.argsort(original, axis=1)

    def k_reciprocal(item: int, k: int) -> list[int]:
        return [int(j) for j in ranking[item, :k + 1] if item in ranking[j, :k + 1]]

    half = int(np.around(k1 / 2.0))
    encoding = np.zeros((num_all, num_all))
    for i in range(num_all):
        base = k_reciprocal(i, k1)
        expansion = set(base)
        for candidate in base:
            candidate_set = k_reciprocal(candidate, half)
            if len(set(candidate_set) & set(base)) > 2.0 / 3 * len(candidate_set):
                expansion |= set(candidate_set)
        members = sorted(expansion)
        weights = np.exp(-original[i, members].astype(np.float64))
        encoding[i, members] = weights / weights.sum()
    if k2 != 1:
        encoding = np.stack([encoding[ranking[i, :k2]].mean(axis=0) for i in range(num_all)])

    jaccard = np.zeros((num_query, num_all - num_query))
    for i in range(num_query):
        for j in range(num_query, num_all):
            shared = np.minimum(encoding[i], encoding[j]).sum()
            jaccard[i, j - num_query] = 1.0 - shared / (2.0 - shared)
    return jaccard * (1.0 - lambda_value) + original[:num_query, num_query:] * lambda_value


def euclidean_blocks(features: np.ndarray, num_query: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q_g, q_q, g_g) Euclidean distance blocks of ``features`` (N, D), the first ``num_query`` rows queries."""
    dist = np.sqrt(np.maximum(((features[:, None, :] - features[None, :, :]) ** 2).sum(-1), 0.0))
    return dist[:num_query, num_query:], dist[:num_query, :num_query], dist[num_query:, num_query:]


def clustered_features(seed: int, num_points: int = 55, dim: int = 8, num_clusters: int = 9) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_clusters, dim))
    return centres[rng.integers(0, num_clusters, size=num_points)] + 0.5 * rng.normal(size=(num_points, dim))


@pytest.mark.parametrize(("seed", "k1", "k2", "lambda_value"),
                         [(0, 20, 6, 0.3), (1, 7, 3, 0.3), (2, 5, 1, 0.5), (3, 10, 4, 0.0), (4, 3, 2, 0.9)])
def test_matches_dense_reference_on_random_problems(seed, k1, k2, lambda_value):
    q_g, q_q, g_g = euclidean_blocks(clustered_features(seed), num_query=15)  # 15 queries x 40 gallery
    expected = dense_re_ranking(q_g, q_q, g_g, k1, k2, lambda_value)
    result = re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lambda_value)
    assert result.shape == (15, 40)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-6)


def test_tied_distances_are_broken_as_the_reference_argsort_does():
    # Integer grid points: many pairs at exactly the same distance.
    features = np.random.default_rng(5).integers(0, 3, size=(40, 3)).astype(np.float64)
    q_g, q_q, g_g = euclidean_blocks(features, num_query=10)
    expected = dense_re_ranking(q_g, q_q, g_g, 6, 3, 0.3)
    np.testing.assert_allclose(re_ranking(q_g, q_q, g_g, k1=6, k2=3), expected, rtol=0, atol=1e-6)


def test_float32_query_gallery_block_is_promoted_with_the_others_as_the_reference_does():
    q_g, q_q, g_g = euclidean_blocks(clustered_features(6, num_points=30), num_query=8)
    q_g = q_g.astype(np.float32)
    expected = dense_re_ranking(q_g, q_q, g_g, 6, 3, 0.3)
    np.testing.assert_allclose(re_ranking(q_g, q_q, g_g, k1=6, k2=3), expected, rtol=0, atol=1e-6)


def test_k1_larger_than_the_whole_set_uses_every_item():
    q_g, q_q, g_g = euclidean_blocks(clustered_features(7, num_points=8), num_query=3)
    expected = dense_re_ranking(q_g, q_q, g_g, 20, 6, 0.3)
    np.testing.assert_allclose(re_ranking(q_g, q_q, g_g), expected, rtol=0, atol=1e-6)


def test_lambda_one_returns_squared_distances_over_each_query_column_maximum():
    # D = [[0, 1, 2], [1, 0, 3], [2, 3, 0]]; squared column 0 = [0, 1, 4], maximum 4.
    # Query row: D[1:, 0]**2 / 4 = [1/4, 4/4].
    q_g = np.array([[1.0, 2.0]])
    q_q = np.array([[0.0]])
    g_g = np.array([[0.0, 3.0], [3.0, 0.0]])
    result = re_ranking(q_g, q_q, g_g, k1=1, k2=1, lambda_value=1.0)
    np.testing.assert_allclose(result, [[0.25, 1.0]], rtol=0, atol=1e-7)


def test_duplicate_of_the_query_in_the_gallery_is_ranked_first():
    features = clustered_features(8, num_points=30)
    features[12] = features[0]  # gallery item 2 is query 0
    q_g, q_q, g_g = euclidean_blocks(features, num_query=10)
    result = re_ranking(q_g, q_q, g_g, k1=6, k2=3)
    assert np.argmin(result[0]) == 2


def test_mismatched_block_shapes_are_rejected():
    with pytest.raises(ValueError, match="g_g_dist"):
        re_ranking(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((4, 4)))
