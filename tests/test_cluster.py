"""Tests for reid/cluster: k-NN, k-reciprocal Jaccard distance, DBSCAN, eps rule, pseudo-label quality."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from sklearn.cluster import DBSCAN
from sklearn.metrics import normalized_mutual_info_score

from benchmarks.clustering import benchmark_clustering, make_clustered_features
from reid.cluster import (
    camera_spread,
    cluster_dbscan,
    compute_eps,
    generate_pseudo_labels,
    jaccard_distance,
    knn_search,
    pseudo_label_quality,
)
from reid.errors import TrainingError

# ---------------------------------------------------------------------------------------------------------
# An independent, dense, loop-by-loop re-implementation of SpCL's compute_jaccard_distance
# (spcl/utils/faiss_rerank.py), with the faiss search replaced by an exact brute-force one.


def _reference_k_reciprocal_neigh(initial_rank: np.ndarray, i: int, k1: int) -> np.ndarray:
    forward = initial_rank[i, : k1 + 1]
    backward = initial_rank[forward, : k1 + 1]
    return forward[np.where(backward == i)[0]]


def _reference_jaccard(features: np.ndarray, k1: int, k2: int) -> tuple[np.ndarray, int]:
    """Dense (N, N) float32 Jaccard distances as SpCL computes them, and how many rows the expansion grew."""
    target = F.normalize(torch.from_numpy(features), dim=1)
    n = target.shape[0]
    similarity = (target @ target.T).numpy()
    initial_rank = np.argsort(-similarity, axis=1, kind="stable")[:, :k1]  # faiss returns k1 columns

    nn_k1 = [_reference_k_reciprocal_neigh(initial_rank, i, k1) for i in range(n)]
    nn_k1_half = [_reference_k_reciprocal_neigh(initial_rank, i, int(np.around(k1 / 2))) for i in range(n)]
    v = np.zeros((n, n), dtype=np.float32)
    grown_rows = 0
    for i in range(n):
        k_reciprocal_index = nn_k1[i]
        expansion_index = k_reciprocal_index
        for candidate in k_reciprocal_index:
            candidate_index = nn_k1_half[candidate]
            if len(np.intersect1d(candidate_index, k_reciprocal_index)) > 2 / 3 * len(candidate_index):
                expansion_index = np.append(expansion_index, candidate_index)
        expansion_index = np.unique(expansion_index)
        grown_rows += len(expansion_index) > len(k_reciprocal_index)
        dist = 2 - 2 * torch.mm(target[i].unsqueeze(0), target[expansion_index].t())
        v[i, expansion_index] = F.softmax(-dist, dim=1).view(-1).numpy()
    if k2 != 1:
        v = np.stack([np.mean(v[initial_rank[i, :k2], :], axis=0) for i in range(n)])
    # Every row of V sums to 1, so the reference's literal 2 in 1 - m / (2 - m) is sum V_i + sum V_j and
    # the distance is 1 - (sum of minima) / (sum of maxima).
    np.testing.assert_allclose(v.sum(axis=1), 1.0, atol=1e-5)

    inverted_index = [np.where(v[:, i] != 0)[0] for i in range(n)]
    jaccard = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        temp_min = np.zeros((1, n), dtype=np.float32)
        nonzero = np.where(v[i, :] != 0)[0]
        for column in nonzero:
            rows = inverted_index[column]
            temp_min[0, rows] += np.minimum(v[i, column], v[rows, column])
        jaccard[i] = 1 - temp_min / (2 - temp_min)
    jaccard[jaccard < 0] = 0.0
    return jaccard, grown_rows


def _clustered_problem(num_samples: int, dim: int, num_ids: int, seed: int) -> np.ndarray:
    """(N, D) float32 identity centres plus noise, not normalised (jaccard_distance normalises)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids, dim))
    labels = rng.integers(0, num_ids, size=num_samples)
    noise = rng.uniform(0.3, 1.2, size=(num_samples, 1)) * rng.standard_normal((num_samples, dim))
    return (centres[labels] + noise).astype(np.float32)


def _densify(dist: sp.csr_matrix) -> np.ndarray:
    """Sparse Jaccard matrix -> dense with absent entries = 1 and stored zeros = 0."""
    dense = np.ones(dist.shape, dtype=np.float64)
    coo = dist.tocoo()
    dense[coo.row, coo.col] = coo.data
    return dense


# ---------------------------------------------------------------------------------------------------------
# knn_search


def test_knn_search_matches_brute_force_inner_product_ranking():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    similarities, indices = knn_search(x, 7, use_gpu=False)
    full = x @ x.T
    expected = np.argsort(-full, axis=1, kind="stable")[:, :7]
    assert indices.dtype == np.int64 and similarities.dtype == np.float32
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(similarities, np.take_along_axis(full, expected, axis=1), atol=1e-6)
    np.testing.assert_array_equal(indices[:, 0], np.arange(300))  # the point itself comes first


def test_knn_search_spans_several_blocks(monkeypatch):
    # Blocks of 30 rows: the symmetric block sweep must still find every neighbour across blocks.
    monkeypatch.setattr("reid.cluster.knn._BLOCK_ENTRIES", 30 * 30)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((97, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    _, indices = knn_search(x, 5, use_gpu=False)
    np.testing.assert_array_equal(indices, np.argsort(-(x @ x.T), axis=1, kind="stable")[:, :5])


def test_knn_search_orders_equal_similarities_by_index():
    # Rows 0, 2 and 3 are the same vector: every one of them lists 0, 2, 3 in index order, then row 1.
    x = np.array([[1, 0], [0.6, 0.8], [1, 0], [1, 0]], dtype=np.float32)
    similarities, indices = knn_search(x, 4, use_gpu=False)
    np.testing.assert_array_equal(indices[[0, 2, 3]], [[0, 2, 3, 1]] * 3)
    np.testing.assert_array_equal(indices[1], [1, 0, 2, 3])
    np.testing.assert_allclose(similarities[1], [1.0, 0.6, 0.6, 0.6], atol=1e-6)


def test_knn_search_rejects_k_larger_than_n():
    with pytest.raises(ValueError, match="k=5"):
        knn_search(np.eye(3, dtype=np.float32), 5)


# ---------------------------------------------------------------------------------------------------------
# jaccard_distance


def _two_groups(delta_squared: float) -> np.ndarray:
    """Six unit vectors in R^8: rows 0-2 around e0, rows 3-5 around e4, inner product 1 - delta² in a group.

    a_k = sqrt(1 - delta²) e_centre + delta e_{centre+1+k}: unit norm, a_k·a_l = 1 - delta² (k != l),
    and the two groups are orthogonal.
    """
    x = np.zeros((6, 8), dtype=np.float64)
    for group, centre in enumerate((0, 4)):
        for k in range(3):
            x[3 * group + k, centre] = math.sqrt(1 - delta_squared)
            x[3 * group + k, centre + 1 + k] = math.sqrt(delta_squared)
    return x.astype(np.float32)


def test_jaccard_two_tight_groups_by_hand_without_query_expansion():
    # delta² = ln(2)/2, so 2 - 2 x_i·x_j = 2 delta² = ln 2 within a group and exp(-ln 2) = 1/2.
    # k1=3: the top-3 of each point is its group, all reciprocal; the half set uses
    # int(np.around(1.5)) + 1 = 3 neighbours, the same group, so the expansion adds nothing.
    # V[i] over its group = softmax(0, -ln2, -ln2) = (1/2 self, 1/4, 1/4).
    # Same group, i != j: m = min(1/2, 1/4) + min(1/4, 1/2) + min(1/4, 1/4) = 3/4,
    #   d = 1 - (3/4) / (2 - 3/4) = 1 - 0.6 = 0.4.  Diagonal: m = 1, d = 0.  Across groups: 1 (absent).
    dist = jaccard_distance(_two_groups(math.log(2) / 2), k1=3, k2=1)
    group = np.full((3, 3), 0.4) - 0.4 * np.eye(3)
    expected = np.block([[group, np.ones((3, 3))], [np.ones((3, 3)), group]])
    np.testing.assert_allclose(_densify(dist), expected, atol=1e-6)
    assert dist.nnz == 18  # both 3x3 blocks, diagonal zeros stored explicitly
    assert dist.dtype == np.float32


def test_jaccard_two_tight_groups_by_hand_with_query_expansion():
    # Same V as above. Inside a group the two other points tie, so each list is (self, lower, higher index):
    # point 0 -> (0, 1, 2), point 1 -> (1, 0, 2), point 2 -> (2, 0, 1). k2=2 averages self and the next:
    # V'0 = V'1 = (V0 + V1)/2 = (3/8, 3/8, 1/4); V'2 = (V2 + V0)/2 = (3/8, 1/4, 3/8).
    # d(0,1) = 0 (m = 1); d(0,2) = d(1,2): m = 3/8 + 1/4 + 1/4 = 7/8, d = 1 - (7/8)/(9/8) = 2/9.
    dist = _densify(jaccard_distance(_two_groups(math.log(2) / 2), k1=3, k2=2))
    group = np.array([[0, 0, 2 / 9], [0, 0, 2 / 9], [2 / 9, 2 / 9, 0]])
    expected = np.block([[group, np.ones((3, 3))], [np.ones((3, 3)), group]])
    np.testing.assert_allclose(dist, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("num_samples", "dim", "num_ids", "k1", "k2", "seed"),
    [
        (300, 32, 15, 20, 6, 0),
        (260, 32, 30, 10, 3, 1),
        (220, 24, 20, 5, 1, 2),
        (240, 32, 12, 13, 4, 3),
    ],
)
def test_jaccard_matches_dense_reference_implementation(num_samples, dim, num_ids, k1, k2, seed):
    features = _clustered_problem(num_samples, dim, num_ids, seed)
    expected, grown_rows = _reference_jaccard(features, k1, k2)
    dist = jaccard_distance(features, k1=k1, k2=k2)
    assert isinstance(dist, sp.csr_matrix) and dist.shape == (num_samples, num_samples)
    np.testing.assert_allclose(_densify(dist), expected, atol=1e-5, rtol=0)
    # Stored exactly where the reference is below 1, the diagonal included.
    stored = np.zeros((num_samples, num_samples), dtype=bool)
    coo = dist.tocoo()
    stored[coo.row, coo.col] = True
    np.testing.assert_array_equal(stored, expected < 1)
    assert np.all(dist.diagonal() < 1e-6)
    if k1 >= 10:
        assert grown_rows > 0  # the 2/3-overlap expansion was exercised


def test_jaccard_is_symmetric_deterministic_and_normalises_its_input():
    features = _clustered_problem(200, 16, 10, seed=5)
    dist = jaccard_distance(features, k1=12, k2=4)
    again = jaccard_distance(3.0 * features, k1=12, k2=4)  # scale does not matter: rows are normalised
    assert (dist != dist.T).nnz == 0
    np.testing.assert_array_equal(dist.indptr, again.indptr)
    np.testing.assert_array_equal(dist.indices, again.indices)
    np.testing.assert_allclose(dist.data, again.data, atol=1e-6)
    repeat = jaccard_distance(features, k1=12, k2=4)
    np.testing.assert_array_equal(dist.data, repeat.data)
    np.testing.assert_array_equal(dist.indices, repeat.indices)


def test_jaccard_storage_grows_linearly_not_quadratically():
    # Well-clustered data: each row holds its neighbours' neighbours, O(k1²), not N = 4000 entries.
    features, _ = make_clustered_features(4000, dim=128, seed=0, nuisance=0.5)
    dist = jaccard_distance(features, k1=20, k2=6)
    assert dist.nnz < 4000 * 200


def test_jaccard_clips_k_to_the_number_of_samples():
    # k1=20 > N=6: every point has all 6 as neighbours; must not fail and must stay in [0, 1).
    dist = jaccard_distance(_two_groups(0.3), k1=20, k2=6)
    assert dist.shape == (6, 6)
    assert np.all((dist.data >= 0) & (dist.data < 1))


# ---------------------------------------------------------------------------------------------------------
# cluster_dbscan


def test_dbscan_on_sparse_jaccard_equals_dbscan_on_the_dense_matrix():
    features = _clustered_problem(400, 32, 25, seed=7)
    dist = jaccard_distance(features, k1=20, k2=6)
    for eps in (0.3, 0.5, 0.6):
        labels = cluster_dbscan(dist, eps, min_samples=4)
        dense_labels = DBSCAN(eps=eps, min_samples=4, metric="precomputed").fit_predict(_densify(dist))
        np.testing.assert_array_equal(labels, dense_labels)
        assert labels.dtype == np.int64
        clusters = np.unique(labels[labels >= 0])
        np.testing.assert_array_equal(clusters, np.arange(clusters.size))
    assert cluster_dbscan(dist, 0.6).max() >= 1  # the problem is not degenerate


def test_dbscan_counts_explicitly_stored_zero_distances_as_neighbours():
    # Four duplicates (pairwise distance 0, stored explicitly) and one far point. min_samples=4: the four
    # form a cluster only if the stored zeros count as neighbours.
    rows, cols = zip(*itertools.product(range(4), range(4)))
    dist = sp.csr_matrix((np.zeros(16, dtype=np.float32), (rows, cols)), shape=(5, 5))
    assert dist.nnz == 16
    np.testing.assert_array_equal(cluster_dbscan(dist, 0.5, min_samples=4), [0, 0, 0, 0, -1])


def test_dbscan_dense_input_is_accepted():
    dense = np.array([[0, 0.1, 0.9], [0.1, 0, 0.9], [0.9, 0.9, 0]])
    np.testing.assert_array_equal(cluster_dbscan(dense, 0.2, min_samples=2), [0, 0, -1])


@pytest.mark.parametrize("eps", [0.0, -0.1, 1.0, 1.5])
def test_dbscan_rejects_eps_outside_zero_one(eps):
    with pytest.raises(ValueError, match=f"eps={eps}"):
        cluster_dbscan(sp.identity(3, format="csr"), eps)


# ---------------------------------------------------------------------------------------------------------
# compute_eps


def _brute_force_eps(dense: np.ndarray, rho: float) -> float:
    """The mean of the round(rho * pairs) smallest pair distances below 1 (absent pairs are never averaged)."""
    n = dense.shape[0]
    upper = sorted(dense[i, j] for i in range(n) for j in range(i + 1, n))
    top_num = max(1, int(np.round(rho * len(upper))))
    return float(np.mean([value for value in upper[:top_num] if value < 1]))


@pytest.mark.parametrize("rho", [1.6e-3, 0.02, 0.8])
def test_compute_eps_matches_brute_force_over_the_stored_pairs(rho):
    features = _clustered_problem(250, 32, 20, seed=11)
    dist = jaccard_distance(features, k1=20, k2=6)
    stored_upper = sp.triu(dist, k=1).nnz
    if rho == 0.8:
        assert stored_upper < round(rho * 250 * 249 / 2)  # fewer stored than wanted: the mean of them all
    assert compute_eps(dist, 250, rho=rho) == pytest.approx(_brute_force_eps(_densify(dist), rho), abs=1e-7)


def test_compute_eps_by_hand():
    # 4 points, 6 pairs i<j; stored: (0,1)=0.2, (2,3)=0.0 (explicit), (0,2)=0.7; absent pairs count as 1.
    # The diagonal and the lower triangle are not read. rho=0.5 -> round(3) = 3 smallest: 0.0, 0.2, 0.7.
    # rho=0.9 -> round(5.4) = 5 wanted, 3 stored: the mean of those 3 (absent pairs are not averaged in).
    rows = [0, 2, 0, 1, 0, 3]
    cols = [1, 3, 2, 0, 0, 0]
    data = [0.2, 0.0, 0.7, 0.05, 0.0, 0.01]
    dist = sp.csr_matrix((np.array(data, dtype=np.float32), (rows, cols)), shape=(4, 4))
    assert compute_eps(dist, 4, rho=0.5) == pytest.approx(0.3, abs=1e-7)
    assert compute_eps(dist, 4, rho=0.9) == pytest.approx(0.3, abs=1e-7)
    with pytest.raises(ValueError, match="expected"):
        compute_eps(dist, 5)


# ---------------------------------------------------------------------------------------------------------
# generate_pseudo_labels


def test_generate_pseudo_labels_reports_consistent_info():
    features = _clustered_problem(300, 32, 15, seed=13)
    labels, info = generate_pseudo_labels(features, eps=None, k1=20, k2=6)
    dist = jaccard_distance(features, k1=20, k2=6)
    assert info["eps"] == pytest.approx(compute_eps(dist, 300))
    np.testing.assert_array_equal(labels, cluster_dbscan(dist, info["eps"]))
    assert info["num_clusters"] == labels.max() + 1
    assert info["num_outliers"] == np.count_nonzero(labels == -1)
    np.testing.assert_array_equal(info["cluster_sizes"], np.bincount(labels[labels >= 0]))
    assert info["seconds"] > 0

    fixed_labels, fixed_info = generate_pseudo_labels(features, eps=0.6)
    assert fixed_info["eps"] == 0.6
    np.testing.assert_array_equal(fixed_labels, cluster_dbscan(dist, 0.6))


def test_generate_pseudo_labels_on_collapsed_features_raises_training_error():
    # 30 identical rows: every pair is at distance 0, so the eps rule gives 0 and DBSCAN cannot run.
    with pytest.raises(TrainingError, match="eps=0"):
        generate_pseudo_labels(np.ones((30, 8), dtype=np.float32), eps=None)


# ---------------------------------------------------------------------------------------------------------
# pseudo_label_quality


def test_pseudo_label_quality_by_hand():
    # pseudo: clusters {0,1,2}, {3,4}, outlier 5; truth: {0,1}, {2,3,4,5}.
    # same-cluster pairs: 3 + 1 = 4; of those same-identity: (0,1), (3,4) = 2 -> precision 1/2.
    # same-identity pairs: 1 + 6 = 7; of those in one cluster: (0,1), (3,4) = 2 -> recall 2/7.
    quality = pseudo_label_quality(np.array([0, 0, 0, 1, 1, -1]), np.array([7, 7, 9, 9, 9, 9]))
    assert quality["pairwise_precision"] == pytest.approx(0.5)
    assert quality["pairwise_recall"] == pytest.approx(2 / 7)
    assert quality["pairwise_f1"] == pytest.approx(2 * 0.5 * (2 / 7) / (0.5 + 2 / 7))
    assert quality["outlier_fraction"] == pytest.approx(1 / 6)


def test_pseudo_label_quality_matches_brute_force_pair_counting():
    rng = np.random.default_rng(3)
    for _ in range(5):
        true_labels = rng.integers(0, 8, size=60)
        pseudo = np.where(rng.random(60) < 0.2, -1, (true_labels + (rng.random(60) < 0.3)) % 6)
        same_cluster = same_identity = both = 0
        for i, j in itertools.combinations(range(60), 2):
            in_one_cluster = pseudo[i] >= 0 and pseudo[i] == pseudo[j]
            same_cluster += in_one_cluster
            same_identity += true_labels[i] == true_labels[j]
            both += in_one_cluster and true_labels[i] == true_labels[j]
        clustered = pseudo >= 0
        quality = pseudo_label_quality(pseudo, true_labels)
        assert quality["pairwise_precision"] == pytest.approx(both / same_cluster)
        assert quality["pairwise_recall"] == pytest.approx(both / same_identity)
        assert quality["nmi"] == pytest.approx(
            normalized_mutual_info_score(true_labels[clustered], pseudo[clustered])
        )
        assert quality["outlier_fraction"] == pytest.approx(np.mean(~clustered))


def test_pseudo_label_quality_with_all_outliers_is_zero_not_nan():
    quality = pseudo_label_quality(np.full(4, -1), np.array([0, 0, 1, 1]))
    assert quality == {
        "pairwise_precision": 0.0,
        "pairwise_recall": 0.0,
        "pairwise_f1": 0.0,
        "nmi": 0.0,
        "outlier_fraction": 1.0,
    }


# ---------------------------------------------------------------------------------------------------------
# benchmark


def test_make_clustered_features_is_deterministic_and_normalised():
    features, labels = make_clustered_features(500, dim=32, num_ids=20, seed=4)
    again, _ = make_clustered_features(500, dim=32, num_ids=20, seed=4)
    np.testing.assert_array_equal(features, again)
    assert features.dtype == np.float32 and features.shape == (500, 32)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.unique(labels), np.arange(20))


def test_benchmark_clustering_reports_time_memory_and_clusters():
    result = benchmark_clustering(600, dim=32, num_ids=30, seed=0)
    assert result["num_samples"] == 600 and result["num_ids"] == 30
    assert result["seconds"] == pytest.approx(
        result["seconds_jaccard"] + result["seconds_eps"] + result["seconds_dbscan"]
    )
    assert result["peak_mb"] >= 0 and result["peak_rss_mb"] >= result["baseline_mb"]
    assert 0 < result["eps"] < 1
    assert result["num_clusters"] >= 1


# ---------------------------------------------------------------------------------------------------------
# cross-camera diagnostics: camera_spread, pseudo_label_quality(camids=...), log_clustering

# 8 samples: clusters {0,1,2}, {3,4}, {5,6}, outlier 7.
_PSEUDO = np.array([0, 0, 0, 1, 1, 2, 2, -1])
_TRUTH = np.array([5, 5, 6, 6, 6, 7, 7, 6])
_CAMS = np.array([1, 2, 1, 3, 3, 1, 2, 4])


def test_camera_spread_by_hand():
    # cluster 0: cams {1, 2, 1} -> 2 cameras; cluster 1: cams {3, 3} -> 1; cluster 2: cams {1, 2} -> 2.
    # cross-camera clusters: 2 of 3 -> 2/3; mean cameras per cluster (2 + 1 + 2) / 3 = 5/3;
    # cameras among all samples {1, 2, 3, 4} (4 only on the outlier) -> 4.
    spread = camera_spread(_PSEUDO, _CAMS)
    assert spread == {
        "cross_camera_cluster_fraction": pytest.approx(2 / 3),
        "mean_cameras_per_cluster": pytest.approx(5 / 3),
        "num_cameras": 4,
    }
    assert isinstance(spread["num_cameras"], int)


def test_camera_spread_without_clusters_is_zero_not_nan():
    assert camera_spread(np.full(3, -1), np.array([0, 1, 1])) == {
        "cross_camera_cluster_fraction": 0.0,
        "mean_cameras_per_cluster": 0.0,
        "num_cameras": 2,
    }


def test_pseudo_label_quality_cross_camera_by_hand():
    # truth: id 5 {0,1}, id 6 {2,3,4,7}, id 7 {5,6}; cams as _CAMS.
    # same-cluster pairs: (0,1) (0,2) (1,2) (3,4) (5,6) = 5; same identity among them: (0,1) (3,4) (5,6) = 3
    #   -> precision 3/5. Same-identity pairs: 1 + C(4,2)=6 + 1 = 8 -> recall 3/8.
    # cross-camera same-cluster pairs: (0,1) cams 1-2, (1,2) 2-1, (5,6) 1-2 = 3 [(0,2) 1-1 and (3,4) 3-3 are not];
    #   by counting: C2(3,2,2) = 5 minus C2 of (cluster, cam) groups {0,2} {3,4} = 2 -> 3.
    #   Of those, same identity: (0,1), (5,6) = 2 -> cross-camera precision 2/3.
    # cross-camera same-identity pairs: id 5 (0,1) = 1; id 6: 6 pairs minus (3,4) both cam 3 = 5; id 7 (5,6) = 1
    #   -> 7; cross-camera recall 2/7.
    quality = pseudo_label_quality(_PSEUDO, _TRUTH, camids=_CAMS)
    assert quality["pairwise_precision"] == pytest.approx(3 / 5)
    assert quality["pairwise_recall"] == pytest.approx(3 / 8)
    assert quality["cross_camera_pairwise_precision"] == pytest.approx(2 / 3)
    assert quality["cross_camera_pairwise_recall"] == pytest.approx(2 / 7)
    without = pseudo_label_quality(_PSEUDO, _TRUTH)
    assert set(without) == {"pairwise_precision", "pairwise_recall", "pairwise_f1", "nmi", "outlier_fraction"}
    assert {k: quality[k] for k in without} == without


def test_pseudo_label_quality_cross_camera_degenerate_cases_are_zero_not_nan():
    one_camera = pseudo_label_quality(_PSEUDO, _TRUTH, camids=np.zeros(8, dtype=np.int64))
    assert one_camera["cross_camera_pairwise_precision"] == 0.0
    assert one_camera["cross_camera_pairwise_recall"] == 0.0
    all_outliers = pseudo_label_quality(np.full(4, -1), np.array([0, 0, 1, 1]), camids=np.array([0, 1, 0, 1]))
    assert all_outliers["cross_camera_pairwise_precision"] == 0.0
    assert all_outliers["cross_camera_pairwise_recall"] == 0.0
    with pytest.raises(ValueError, match="camids"):
        pseudo_label_quality(_PSEUDO, _TRUTH, camids=_CAMS[:-1])


def test_cross_camera_diagnostics_match_brute_force():
    rng = np.random.default_rng(11)
    for trial in range(6):
        n = 70
        true_labels = rng.integers(0, 9, size=n) * 3 + 100  # non-contiguous identities
        camids = rng.choice(np.array([2, 5, 9, 13]), size=n)  # non-contiguous cameras
        pseudo = (true_labels + (rng.random(n) < 0.3)) % 7
        pseudo = np.where(rng.random(n) < 0.2, -1, pseudo * 4)  # non-contiguous cluster ids, outliers
        if trial == 0:
            pseudo[:] = -1
        cross_cluster = cross_identity = cross_both = 0
        for i, j in itertools.combinations(range(n), 2):
            if camids[i] == camids[j]:
                continue
            one_cluster = pseudo[i] >= 0 and pseudo[i] == pseudo[j]
            same_id = true_labels[i] == true_labels[j]
            cross_cluster += one_cluster
            cross_identity += same_id
            cross_both += one_cluster and same_id
        quality = pseudo_label_quality(pseudo, true_labels, camids=camids)
        assert quality["cross_camera_pairwise_precision"] == pytest.approx(
            cross_both / cross_cluster if cross_cluster else 0.0
        )
        assert quality["cross_camera_pairwise_recall"] == pytest.approx(
            cross_both / cross_identity if cross_identity else 0.0
        )
        assert {k: quality[k] for k in pseudo_label_quality(pseudo, true_labels)} == pseudo_label_quality(
            pseudo, true_labels
        )
        cameras_per_cluster = [
            len(set(camids[pseudo == c].tolist())) for c in sorted(set(pseudo.tolist()) - {-1})
        ]
        spread = camera_spread(pseudo, camids)
        if cameras_per_cluster:
            assert spread["cross_camera_cluster_fraction"] == pytest.approx(
                sum(c >= 2 for c in cameras_per_cluster) / len(cameras_per_cluster)
            )
            assert spread["mean_cameras_per_cluster"] == pytest.approx(
                sum(cameras_per_cluster) / len(cameras_per_cluster)
            )
        else:
            assert (
                spread["cross_camera_cluster_fraction"] == 0.0 and spread["mean_cameras_per_cluster"] == 0.0
            )
        assert spread["num_cameras"] == len(set(camids.tolist()))


class _RecordingLogger:
    """Stands in for RunLogger: keeps what log_clustering sends to the console, metrics.jsonl and TensorBoard."""

    def __init__(self):
        self.lines, self.records, self.scalar_calls, self.histograms = [], [], [], []

    def info(self, message):
        self.lines.append(message)

    def record(self, kind, **values):
        self.records.append((kind, values))

    def scalars(self, prefix, values, step):
        self.scalar_calls.append((prefix, dict(values), step))

    def histogram(self, tag, values, step):
        self.histograms.append((tag, step))


def _cluster_info(pseudo):
    sizes = np.bincount(pseudo[pseudo >= 0])
    return {
        "eps": 0.5,
        "num_clusters": len(sizes),
        "num_outliers": int((pseudo < 0).sum()),
        "cluster_sizes": sizes,
        "seconds": 0.1,
    }


def test_log_clustering_with_camids_logs_camera_spread_and_cross_camera_quality():
    import json

    from reid.engine.monitor import log_clustering

    logger = _RecordingLogger()
    record = log_clustering(logger, 3, _cluster_info(_PSEUDO), _PSEUDO, _TRUTH, camids=_CAMS)
    assert record["cross_camera_cluster_fraction"] == pytest.approx(2 / 3)
    assert record["mean_cameras_per_cluster"] == pytest.approx(5 / 3)
    assert record["num_cameras"] == 4
    diagnostic = record["diagnostic_uses_target_labels"]
    assert diagnostic["cross_camera_pairwise_precision"] == pytest.approx(2 / 3)
    assert diagnostic["cross_camera_pairwise_recall"] == pytest.approx(2 / 7)
    assert logger.records == [("cluster", record)]
    json.dumps(record)
    scalars = {prefix: values for prefix, values, step in logger.scalar_calls if step == 3}
    assert set(scalars["cluster"]) == {
        "num_clusters",
        "num_outliers",
        "eps",
        "outlier_fraction",
        "largest_cluster",
        "median_cluster_size",
        "cross_camera_cluster_fraction",
        "mean_cameras_per_cluster",
        "num_cameras",
    }
    assert scalars["pseudo_labels_diagnostic_uses_labels"] == diagnostic
    assert "cross-camera clusters 0.667" in logger.lines[0]
    assert "cross-camera precision 0.667 recall 0.286" in logger.lines[0]
    # label-free part without the labels
    unlabelled = log_clustering(_RecordingLogger(), 3, _cluster_info(_PSEUDO), _PSEUDO, None, camids=_CAMS)
    assert "diagnostic_uses_target_labels" not in unlabelled
    assert unlabelled["num_cameras"] == 4


def test_log_clustering_without_camids_is_unchanged():
    from reid.engine.monitor import log_clustering

    logger = _RecordingLogger()
    record = log_clustering(logger, 0, _cluster_info(_PSEUDO), _PSEUDO, _TRUTH)
    assert set(record) == {
        "round",
        "num_clusters",
        "num_outliers",
        "num_samples",
        "eps",
        "cluster_size_histogram",
        "seconds",
        "diagnostic_uses_target_labels",
        "outlier_fraction",
        "largest_cluster",
        "median_cluster_size",
        "giant_cluster",
    }
    assert record["giant_cluster"] is False  # a handful of images: below the 50 a warning needs
    sizes = np.bincount(_PSEUDO[_PSEUDO >= 0])
    assert record["outlier_fraction"] == pytest.approx(np.mean(_PSEUDO < 0))
    assert record["largest_cluster"] == sizes.max() and record["median_cluster_size"] == np.median(sizes)
    assert record["diagnostic_uses_target_labels"] == pseudo_label_quality(_PSEUDO, _TRUTH)
    scalars = {prefix: values for prefix, values, _ in logger.scalar_calls}
    assert set(scalars["cluster"]) == {"num_clusters", "num_outliers", "eps", "outlier_fraction", "largest_cluster",
                                       "median_cluster_size"}
    assert "cross-camera" not in logger.lines[0]


def test_cluster_dbscan_core_points_are_those_with_min_samples_neighbours() -> None:
    """Independent count: a point is core when at least min_samples points (itself included) lie within eps."""
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(0, 0.05, (6, 2)), rng.normal(1, 0.05, (3, 2)), rng.uniform(-2, 3, (5, 2))])
    dist = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
    dist = dist / dist.max() * 0.99
    labels, core = cluster_dbscan(dist, 0.05, min_samples=4, return_core=True)
    expected = (dist <= 0.05).sum(axis=1) >= 4
    assert np.array_equal(core, expected) and core.any() and not core.all()
    assert np.array_equal(labels, cluster_dbscan(dist, 0.05, min_samples=4))
    assert (labels[core] >= 0).all()
