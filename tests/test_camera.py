"""Tests for camera awareness in clustering: reid/cluster/camera.py (per-camera normalisation, per-camera
neighbour lists), the camera-aware Jaccard distance (CA-Jaccard) and the camera options of
generate_pseudo_labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from reid.cluster import (
    camera_spread,
    cluster_dbscan,
    generate_pseudo_labels,
    jaccard_distance,
    pseudo_label_quality,
)
from reid.cluster.camera import camera_fallback_reason, camera_neighbours, camera_normalize
from reid.cluster.jaccard import camera_jaccard_distance


def _densify(dist: sp.csr_matrix) -> np.ndarray:
    """Sparse Jaccard matrix -> dense with absent entries = 1 and stored zeros = 0."""
    dense = np.ones(dist.shape, dtype=np.float64)
    coo = dist.tocoo()
    dense[coo.row, coo.col] = coo.data
    return dense


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# camera_fallback_reason


def test_camera_fallback_reason():
    assert camera_fallback_reason(None) == "no camera ids"
    assert camera_fallback_reason(np.array([3, 3, 3])) == "1 camera"
    assert camera_fallback_reason(np.array([3, 1, 3])) is None
    assert camera_fallback_reason([0, 1]) is None


# ---------------------------------------------------------------------------------------------------------
# camera_normalize


def test_camera_normalize_center_by_hand():
    # Camera 7: rows 0, 1, 3 = (3, 0), (0, 3), (0, 0); mean (1, 1).
    #   centred (2, -1), (-1, 2), (-1, -1) -> divided by sqrt 5, sqrt 5, sqrt 2.
    # Camera 2: rows 2, 4 = (1, 1), (3, 5); mean (2, 3).
    #   centred (-1, -2), (1, 2) -> divided by sqrt 5.
    x = np.array([[3, 0], [0, 3], [1, 1], [0, 0], [3, 5]], dtype=np.float32)
    camids = np.array([7, 7, 2, 7, 2])
    s5, s2 = math.sqrt(5), math.sqrt(2)
    expected = np.array([[2 / s5, -1 / s5], [-1 / s5, 2 / s5], [-1 / s5, -2 / s5], [-1 / s2, -1 / s2],
                         [1 / s5, 2 / s5]])
    out = camera_normalize(x, camids, "center")
    assert out.dtype == np.float32 and out.shape == (5, 2)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # The default mode is "center".
    np.testing.assert_allclose(camera_normalize(x, camids), expected, atol=1e-6)


def test_camera_normalize_center_keeps_a_row_that_centres_to_zero_at_zero():
    # Camera 0 holds one image: it centres to exactly 0 and stays 0 (no division by zero, no NaN).
    # Camera 1: (1, 0), (0, 1), mean (1/2, 1/2) -> (1/2, -1/2), (-1/2, 1/2) -> (±1, ∓1) / sqrt 2.
    x = np.array([[0.6, 0.8], [1, 0], [0, 1]], dtype=np.float32)
    out = camera_normalize(x, np.array([0, 1, 1]), "center")
    r = 1 / math.sqrt(2)
    np.testing.assert_allclose(out, [[0, 0], [r, -r], [-r, r]], atol=1e-6)
    assert np.all(np.isfinite(out))


def _standardize_reference(x: np.ndarray, camids: np.ndarray, eps: float) -> np.ndarray:
    x = x.astype(np.float64)
    out = np.empty_like(x)
    for camera in np.unique(camids):
        rows = camids == camera
        mean = x[rows].mean(axis=0)
        std = x[rows].std(axis=0)  # population std (ddof=0)
        out[rows] = (x[rows] - mean) / (std + eps)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.mark.parametrize("eps", [1e-6, 0.5])
def test_camera_normalize_standardize_matches_numpy(eps):
    rng = np.random.default_rng(0)
    camids = rng.integers(0, 4, size=80) * 10 + 5  # ids 5, 15, 25, 35: not 0..C-1
    scales = rng.uniform(0.2, 3.0, size=(4, 12))  # per-camera per-dimension spread: std matters
    offsets = rng.standard_normal((4, 12)) * 3
    cam = camids // 10
    x = (rng.standard_normal((80, 12)) * scales[cam] + offsets[cam]).astype(np.float32)
    out = camera_normalize(x, camids, "standardize", eps=eps)
    expected = _standardize_reference(x, camids, eps)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # Standardising is not centring: the per-dimension scale changes the direction of the rows.
    assert np.abs(out - camera_normalize(x, camids, "center")).max() > 0.05


@pytest.mark.parametrize("mode", ["center", "standardize"])
def test_camera_normalize_rows_are_unit_and_cameras_are_centred(mode):
    rng = np.random.default_rng(1)
    camids = np.repeat([0, 1, 2], [30, 20, 10])
    x = _unit_rows(rng.standard_normal((60, 16)) + 4 * rng.standard_normal((3, 16))[camids])
    out = camera_normalize(x, camids, mode)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # Before re-normalisation every camera's mean is 0; afterwards it is much smaller than the offsets were.
    for camera in range(3):
        assert np.linalg.norm(out[camids == camera].mean(axis=0)) < 0.5
        assert np.linalg.norm(x[camids == camera].mean(axis=0)) > 0.9


def test_camera_normalize_returns_input_unchanged_without_camera_information():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((10, 4)).astype(np.float32)  # not unit rows: unchanged means not normalised
    for camids, mode in [(np.array([0, 1] * 5), "none"), (None, "center"), (None, "standardize"),
                         (np.full(10, 3), "center"), (np.full(10, 3), "standardize")]:
        out = camera_normalize(x, camids, mode)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, x)
    # float64 input with mode none: values unchanged, returned as float32
    out = camera_normalize(x.astype(np.float64), np.array([0, 1] * 5), "none")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x)


def test_camera_normalize_rejects_wrong_length_camids_and_bad_mode():
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="3 entries for 4"):
        camera_normalize(x, np.array([0, 1, 1]), "center")
    with pytest.raises(ValueError, match="mode"):
        camera_normalize(x, np.array([0, 1, 1, 0]), "centre")
    with pytest.raises(ValueError, match="mode"):
        camera_normalize(x, None, "bogus")


# ---------------------------------------------------------------------------------------------------------
# camera_neighbours


def _brute_force_camera_neighbours(x: np.ndarray, camids: np.ndarray, k: int, same_camera: bool):
    """Full similarity matrix, per-row camera mask, stable sort by (-similarity, index), pad by the first."""
    n = x.shape[0]
    full = x @ x.T
    sims = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        pool = np.flatnonzero((camids == camids[i]) if same_camera else (camids != camids[i]))
        order = pool[np.lexsort((pool, -full[i, pool]))][:k]
        order = np.concatenate([order, np.full(k - order.size, order[0])])
        idx[i] = order
        sims[i] = full[i, order]
    return sims, idx


@pytest.mark.parametrize(("sizes", "k", "block_entries"), [
    ((40, 25, 12, 3), 5, None),  # camera 3 (3 images) pads its same-camera lists
    ((40, 25, 12, 3), 5, 64),  # blocks of 1-5 query rows
    ((20, 3, 2, 1), 8, None),  # camera 0 has only 6 other-camera images: its inter lists pad too
])
def test_camera_neighbours_matches_brute_force(monkeypatch, sizes, k, block_entries):
    if block_entries is not None:
        monkeypatch.setattr("reid.cluster.camera._BLOCK_ENTRIES", block_entries)
    rng = np.random.default_rng(sum(sizes) + k)
    camids = rng.permutation(np.repeat([4, 9, 1, 6], sizes))  # interleaved, unsorted camera ids
    x = _unit_rows(rng.standard_normal((camids.size, 16)))
    for same_camera in (True, False):
        sims, idx = camera_neighbours(x, camids, k, same_camera=same_camera)
        expected_sims, expected_idx = _brute_force_camera_neighbours(x, camids, k, same_camera)
        assert sims.dtype == np.float32 and idx.dtype == np.int64 and idx.shape == (camids.size, k)
        np.testing.assert_array_equal(idx, expected_idx)
        np.testing.assert_allclose(sims, expected_sims, atol=1e-5)
        same = camids[idx] == camids[:, None]
        assert same.all() if same_camera else not same.any()
        if same_camera:
            np.testing.assert_array_equal(idx[:, 0], np.arange(camids.size))  # the row itself first
            np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)
    # The padding rule, spelled out for the smallest camera (same-camera lists).
    smallest = np.flatnonzero(camids == 6)
    sims, idx = camera_neighbours(x, camids, k, same_camera=True)
    available = smallest.size
    for i in smallest:
        assert set(idx[i, :available]) == set(smallest)
        np.testing.assert_array_equal(idx[i, available:], i)  # i is its own first entry
        np.testing.assert_array_equal(sims[i, available:], sims[i, 0])


def test_camera_neighbours_ties_by_index_and_one_camera_has_no_inter_pool():
    # Rows 0, 2, 3 (camera 0) and 1 (camera 1). Rows 2 and 3 are the same vector: equal similarity to
    # row 0, listed by increasing index.
    x = np.array([[1, 0], [0.6, 0.8], [0.8, 0.6], [0.8, 0.6]], dtype=np.float32)
    camids = np.array([0, 1, 0, 0])
    sims, idx = camera_neighbours(x, camids, 3, same_camera=True)
    np.testing.assert_array_equal(idx, [[0, 2, 3], [1, 1, 1], [2, 3, 0], [2, 3, 0]])
    np.testing.assert_allclose(sims[0], [1, 0.8, 0.8], atol=1e-6)
    _, idx = camera_neighbours(x, camids, 2, same_camera=False)
    np.testing.assert_array_equal(idx, [[1, 1], [2, 3], [1, 1], [1, 1]])
    # One camera: no other-camera images, -1 / -inf.
    sims, idx = camera_neighbours(x, np.zeros(4), 2, same_camera=False)
    np.testing.assert_array_equal(idx, -1)
    assert np.all(np.isneginf(sims))


# ---------------------------------------------------------------------------------------------------------
# camera_jaccard_distance: an independent dense, loop-by-loop reference of CA-Jaccard (Chen et al., CVPR
# 2024, github.com/chen960/CA-Jaccard caj/utils/caj_rerank.py) with exact ranked lists.


def _reference_camera_jaccard(features: np.ndarray, camids: np.ndarray, k1_intra: int, k1_inter: int,
                              k2_intra: int, k2_inter: int) -> np.ndarray:
    """Dense (N, N) CA-Jaccard distances. A camera (or the other cameras together) with fewer images than a
    list asks for contributes what it has."""
    x = features.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    n = x.shape[0]
    similarity = x @ x.T
    original_dist = 2 - 2 * similarity
    intra_rank, inter_rank = [], []
    for i in range(n):
        ranked = np.lexsort((np.arange(n), -similarity[i]))  # by decreasing similarity, ties by index
        intra_rank.append([j for j in ranked if camids[j] == camids[i]])  # self first
        inter_rank.append([j for j in ranked if camids[j] != camids[i]])

    # CKRNNs: k-reciprocal on the intra list (self + k1_intra) and on the inter list (k1_inter + 1); union.
    intra_top = [set(r[: k1_intra + 1]) for r in intra_rank]
    inter_top = [set(r[: k1_inter + 1]) for r in inter_rank]
    v = np.zeros((n, n))
    for i in range(n):
        reciprocal = {j for j in intra_top[i] if i in intra_top[j]}
        reciprocal |= {j for j in inter_top[i] if i in inter_top[j]}
        members = np.array(sorted(reciprocal))
        logits = -original_dist[i, members]
        weights = np.exp(logits - logits.max())
        v[i, members] = weights / weights.sum()
    np.testing.assert_allclose(v.sum(axis=1), 1.0, atol=1e-12)

    # CLQE: mean of V over the k2_intra nearest same-camera (self included) + k2_inter nearest others.
    if (k2_intra, k2_inter) != (1, 0):
        expanded = np.zeros_like(v)
        for i in range(n):
            rows = intra_rank[i][:k2_intra] + inter_rank[i][:k2_inter]
            expanded[i] = v[rows].mean(axis=0)
        v = expanded

    jaccard = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            m = np.minimum(v[i], v[j]).sum()
            jaccard[i, j] = 1 - m / (2 - m)
    return np.maximum(jaccard, 0.0)


def _camera_problem(num_ids: int, num_cameras: int, dim: int, seed: int, offset: float = 0.6):
    """Identity centres + a per-camera offset + noise, 1-4 images per identity, each on a random camera.

    Returns features (N, D) float32 (not normalised), identities (N,) and camera ids (N,).
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids, dim))
    offsets = offset * rng.standard_normal((num_cameras, dim))
    per_id = rng.integers(1, 5, size=num_ids)
    identities = np.repeat(np.arange(num_ids), per_id)
    camids = rng.integers(0, num_cameras, size=identities.size) * 3 + 1  # camera ids 1, 4, 7, ...
    noise = rng.uniform(0.3, 0.9, size=(identities.size, 1)) * rng.standard_normal((identities.size, dim))
    features = centres[identities] + offsets[(camids - 1) // 3] * math.sqrt(dim) / 4 + noise
    return features.astype(np.float32), identities, camids


@pytest.mark.parametrize(("num_ids", "num_cameras", "k", "seed"), [
    (40, 3, (5, 20, 2, 4), 0),  # the defaults
    (35, 4, (3, 8, 1, 0), 1),  # no query expansion
    (30, 4, (4, 6, 3, 2), 2),
])
def test_camera_jaccard_matches_dense_reference(num_ids, num_cameras, k, seed):
    features, identities, camids = _camera_problem(num_ids, num_cameras, 24, seed)
    n = features.shape[0]
    # Every camera holds more than max(k1_intra + 1, k2_intra) images and identities span cameras: no
    # padding here, and the cross-camera pairs are real.
    sizes = np.unique(camids, return_counts=True)[1]
    assert sizes.size == num_cameras and sizes.min() > k[0] + 1 and 60 <= n <= 120
    assert any(np.unique(camids[identities == p]).size > 1 for p in range(num_ids))

    expected = _reference_camera_jaccard(features, camids, *k)
    dist = camera_jaccard_distance(features, camids, *k)
    assert isinstance(dist, sp.csr_matrix) and dist.shape == (n, n) and dist.dtype == np.float32
    np.testing.assert_allclose(_densify(dist), expected, atol=1e-5, rtol=0)
    # Stored exactly where the reference is below 1 (up to float32 rounding), nothing else.
    stored = _densify(dist) < 1
    clear = np.abs(expected - 1) > 1e-6
    np.testing.assert_array_equal(stored[clear], (expected < 1)[clear])
    assert (dist != dist.T).nnz == 0  # exactly symmetric
    np.testing.assert_allclose(dist.diagonal(), 0.0, atol=1e-6)
    assert np.all(stored.diagonal())  # the diagonal is stored (zeros kept), rows of V are never empty
    assert np.all((dist.data >= 0) & (dist.data < 1))
    # The test is not vacuous: many pairs are below 1, their distances spread, and cross-camera pairs are
    # stored. (With the default k1_inter=20 on ~100 images nearly every pair is stored.)
    off_diagonal = ~np.eye(n, dtype=bool)
    assert np.mean(expected[off_diagonal] < 1) > 0.05
    assert np.ptp(expected[off_diagonal]) > 0.3
    assert np.any(stored & (camids[:, None] != camids[None, :]))


def test_camera_jaccard_small_camera_query_expansion_by_hand():
    # x0 = (1, 0) alone in camera 0; x1 = (.8, .6), x2 = (.6, .8), x3 = (0, 1) in camera 1.
    # Inner products: s01 = .8, s02 = .6, s03 = 0, s12 = .96, s13 = .6, s23 = .8.
    # k1_intra = 1 (self + 1): lists 0: [0], 1: [1, 2], 2: [2, 1], 3: [3, 2] -> reciprocal {0}, {1, 2},
    #   {1, 2}, {3}.  k1_inter = 1 (2 others): 0: [1, 2], 1: [0], 2: [0], 3: [0] -> reciprocal {1, 2},
    #   {0}, {0}, {} (3 is not in 0's list).  R(0) = R(1) = R(2) = {0, 1, 2}, R(3) = {3}.
    # V[i] = softmax of -(2 - 2 s) over R(i): V0 = sm(0, -.4, -.8), V1 = sm(-.4, 0, -.08),
    #   V2 = sm(-.8, -.08, 0) on columns 0, 1, 2; V3 = e3.
    # CLQE with k2_intra = 2, k2_inter = 1: camera 0 has one image, so image 0 averages itself and its
    #   nearest other-camera image 1: V'0 = (V0 + V1) / 2.  V'1 = V'2 = (V1 + V2 + V0) / 3,
    #   V'3 = (V3 + V2 + V0) / 3.
    def softmax(logits):
        e = np.exp(np.array(logits) - max(logits))
        return e / e.sum()

    v = np.zeros((4, 4))
    v[0, :3] = softmax([0, -0.4, -0.8])
    v[1, :3] = softmax([-0.4, 0, -0.08])
    v[2, :3] = softmax([-0.8, -0.08, 0])
    v[3, 3] = 1.0
    qe = np.stack([(v[0] + v[1]) / 2, (v[0] + v[1] + v[2]) / 3, (v[0] + v[1] + v[2]) / 3,
                   (v[3] + v[2] + v[0]) / 3])
    m = np.minimum(qe[:, None, :], qe[None, :, :]).sum(axis=2)
    expected = np.maximum(1 - m / (2 - m), 0)
    x = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1]], dtype=np.float32)
    camids = np.array([0, 1, 1, 1])
    np.testing.assert_allclose(expected, _reference_camera_jaccard(x, camids, 1, 1, 2, 1), atol=1e-12)
    assert expected[0, 1] == pytest.approx(0.1107, abs=1e-4)
    # The library gives d(0, 1) = 0.1721: V'0 = (2 V0 + V1) / 3.
    np.testing.assert_allclose(_densify(camera_jaccard_distance(x, camids, 1, 1, 2, 1)), expected, atol=1e-5)


def test_camera_jaccard_differs_from_plain_jaccard_and_normalises_input():
    features, _, camids = _camera_problem(40, 3, 24, seed=3)
    dist = camera_jaccard_distance(features, camids, 5, 20, 2, 4)
    scaled = camera_jaccard_distance(2.5 * features, camids, 5, 20, 2, 4)
    np.testing.assert_allclose(_densify(dist), _densify(scaled), atol=1e-6)
    plain = jaccard_distance(features, k1=20, k2=6)
    assert np.abs(_densify(dist) - _densify(plain)).max() > 0.1


def test_camera_jaccard_rejects_one_camera_and_empty_query_expansion():
    features, _, camids = _camera_problem(20, 3, 8, seed=4)
    with pytest.raises(ValueError, match="two cameras"):
        camera_jaccard_distance(features, np.zeros(features.shape[0], dtype=int))
    with pytest.raises(ValueError, match="k2_intra"):
        camera_jaccard_distance(features, camids, 5, 20, 0, 0)
    with pytest.raises(ValueError):
        camera_jaccard_distance(features, camids, -1, 20, 2, 4)
    with pytest.raises(ValueError, match="entries for"):
        camera_jaccard_distance(features, camids[:-1])


# ---------------------------------------------------------------------------------------------------------
# Why the feature exists: a large per-camera offset makes plain Jaccard + DBSCAN group images by camera.


def _camera_offset_problem(seed: int = 0, num_ids: int = 30, dim: int = 32, offset: float = 2.5,
                           noise: float = 0.05):
    """Unit identity vectors + a per-camera offset of norm ``offset`` (identities are ~sqrt 2 apart, the
    cameras ~offset·sqrt 2) + small noise; 2-4 images per identity, spread over 3 cameras (at most one
    image per camera for the first three images of an identity)."""
    rng = np.random.default_rng(seed)
    ids = _unit_rows(rng.standard_normal((num_ids, dim)))
    offsets = rng.standard_normal((3, dim))
    offsets *= offset / np.linalg.norm(offsets, axis=1, keepdims=True)
    identities, camids = [], []
    for person in range(num_ids):
        count = rng.integers(2, 5)
        cameras = rng.permutation(3)
        identities += [person] * count
        camids += [cameras[i % 3] for i in range(count)]
    identities, camids = np.array(identities), np.array(camids)
    x = ids[identities] + offsets[camids] + noise * rng.standard_normal((identities.size, dim))
    return x.astype(np.float32), identities, camids


def test_camera_centring_turns_camera_clusters_into_identity_clusters():
    features, identities, camids = _camera_offset_problem(seed=0)
    assert features.shape[0] == 88
    options = {"eps": 0.6, "k1": 10, "k2": 2, "min_samples": 2}

    plain, plain_info = generate_pseudo_labels(features, **options)
    plain_quality = pseudo_label_quality(plain, identities)
    # Measured: precision 0.017, recall 0.095, 11 clusters, every one inside a single camera.
    assert plain_quality["pairwise_precision"] < 0.1
    assert plain_quality["pairwise_recall"] < 0.2
    assert plain_info["num_clusters"] >= 3
    assert camera_spread(plain, camids)["cross_camera_cluster_fraction"] == 0.0

    centred, centred_info = generate_pseudo_labels(features, **options, camids=camids, camera_norm="center")
    centred_quality = pseudo_label_quality(centred, identities, camids)
    # Measured: precision 1.0, recall 1.0, the 30 identities exactly.
    assert centred_info["camera_fallback"] is None
    assert centred_quality["pairwise_precision"] > 0.95
    assert centred_quality["pairwise_recall"] > 0.95
    assert centred_quality["cross_camera_pairwise_recall"] > 0.95
    assert 27 <= centred_info["num_clusters"] <= 33
    assert camera_spread(centred, camids)["cross_camera_cluster_fraction"] > 0.9


# ---------------------------------------------------------------------------------------------------------
# generate_pseudo_labels: camera options and their fallback


@pytest.mark.parametrize(("camids", "reason"), [(None, "no camera ids"), ("single", "1 camera")])
@pytest.mark.parametrize(("camera_norm", "camera_jaccard"), [("center", False), ("none", True),
                                                             ("standardize", True)])
def test_generate_pseudo_labels_falls_back_to_plain_distance(camids, reason, camera_norm, camera_jaccard):
    features, _, _ = _camera_offset_problem(seed=1)
    if camids == "single":
        camids = np.full(features.shape[0], 5)
    plain, plain_info = generate_pseudo_labels(features, 0.6, k1=10, k2=2, min_samples=2)
    labels, info = generate_pseudo_labels(features, 0.6, k1=10, k2=2, min_samples=2, camids=camids,
                                          camera_norm=camera_norm, camera_jaccard=camera_jaccard)
    assert plain_info["camera_fallback"] is None  # nothing asked, nothing to fall back from
    assert info["camera_fallback"] == reason
    np.testing.assert_array_equal(labels, plain)
    assert plain.max() >= 2  # a nontrivial clustering


def test_generate_pseudo_labels_applies_camera_options_with_several_cameras():
    features, _, camids = _camera_offset_problem(seed=1)
    k = (3, 6, 2, 2)
    plain, _ = generate_pseudo_labels(features, 0.6, k1=10, k2=2, min_samples=2)

    # camera ids but no camera option: the plain distance, no fallback message.
    labels, info = generate_pseudo_labels(features, 0.6, k1=10, k2=2, min_samples=2, camids=camids)
    assert info["camera_fallback"] is None
    np.testing.assert_array_equal(labels, plain)

    labels, info = generate_pseudo_labels(features, 0.6, k1=10, k2=2, min_samples=2, camids=camids,
                                          camera_jaccard=True, camera_k=k)
    assert info["camera_fallback"] is None
    np.testing.assert_array_equal(labels, cluster_dbscan(camera_jaccard_distance(features, camids, *k), 0.6, 2))

    labels, info = generate_pseudo_labels(features, 0.5, k1=10, k2=2, min_samples=2, camids=camids,
                                          camera_norm="center", camera_jaccard=True, camera_k=k)
    assert info["camera_fallback"] is None
    centred = camera_normalize(features, camids, "center")
    np.testing.assert_array_equal(labels, cluster_dbscan(camera_jaccard_distance(centred, camids, *k), 0.5, 2))
    assert not np.array_equal(labels, plain)
