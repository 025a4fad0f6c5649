"""Pseudo-label diagnostics: how many cameras the clusters span, how separated they are (both label-free), and
precision / recall / NMI against true identities (uses labels: reported, never used to choose anything)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.metrics import normalized_mutual_info_score, silhouette_score


def camera_spread(pseudo_labels: np.ndarray, camids: np.ndarray) -> dict:
    """How many cameras each pseudo-label cluster spans (label-free: needs only the camera ids).

    Args:
        pseudo_labels: (N,) int cluster ids, -1 for outliers.
        camids: (N,) camera ids.

    Returns:
        {"cross_camera_cluster_fraction": clusters (outliers excluded) whose members come from >= 2 distinct
             cameras / clusters (0.0 when there is no cluster),
         "mean_cameras_per_cluster": mean over clusters of the number of distinct cameras (0.0 when there is
             no cluster),
         "num_cameras": int, distinct cameras among all N samples (outliers included)}.
    """
    pseudo_labels = np.asarray(pseudo_labels).ravel()
    camids = np.asarray(camids).ravel()
    if pseudo_labels.shape != camids.shape:
        raise ValueError(f"pseudo_labels and camids differ in length: {pseudo_labels.size} vs {camids.size}")
    cameras, cam_ids = np.unique(camids, return_inverse=True)
    cam_ids = cam_ids.ravel()
    clustered = pseudo_labels >= 0
    if not clustered.any():
        return {
            "cross_camera_cluster_fraction": 0.0,
            "mean_cameras_per_cluster": 0.0,
            "num_cameras": int(cameras.size),
        }
    # distinct (cluster, camera) pairs; counting them per cluster gives each cluster's number of cameras
    cluster_cam = np.unique(np.stack([pseudo_labels[clustered], cam_ids[clustered]]), axis=1)
    _, cameras_per_cluster = np.unique(cluster_cam[0], return_counts=True)
    return {
        "cross_camera_cluster_fraction": float(np.mean(cameras_per_cluster >= 2)),
        "mean_cameras_per_cluster": float(np.mean(cameras_per_cluster)),
        "num_cameras": int(cameras.size),
    }


SEPARATION_SAMPLE = 2000
"""Clustered images the label-free separation signals are computed on (:func:`cluster_separation`)."""


def cluster_separation(features: np.ndarray, pseudo_labels: np.ndarray, max_points: int = SEPARATION_SAMPLE,
                       seed: int = 0) -> dict:
    """Label-free separation of the clusters (no identity labels used): intra- vs inter-cluster distance, silhouette.

    Distances are Euclidean between L2-normalised rows (``sqrt(2 - 2 cos)``, in [0, 2]: the GDS scale). Everything
    below is computed on one sample of clustered images: a fixed random order of all N images (from ``seed``,
    independent of the labels) and, of it, the first ``max_points`` images that are not outliers this round. With
    the same N and seed the order is the same every round, so rounds differ only by which images are outliers.

    Args:
        features: (N, D) float, the features the clustering saw (after any per-camera normalisation); L2-normalised
            inside.
        pseudo_labels: (N,) int cluster ids, -1 for outliers.
        max_points: sample size cap (the silhouette is O(sample^2)).
        seed: the sample's seed; keep it fixed across rounds.

    Returns:
        {"intra_cluster_distance": mean distance over the pairs of sampled images that share a cluster,
         "nearest_centroid_distance": mean over sampled images of the distance to the nearest centroid of ANOTHER
             cluster (centroid = mean of the normalised features of all the cluster's members, not re-normalised),
         "distance_gap": nearest_centroid_distance - intra_cluster_distance (larger: tighter, better separated
             clusters),
         "silhouette": sklearn ``silhouette_score`` of the sample with these distances, in [-1, 1],
         "separation_points": sample size (int)}.
        A value that cannot be computed is None: no same-cluster pair in the sample, fewer than 2 clusters, or (for
        the silhouette) a sample with fewer than 2 clusters or with every image its own cluster.
    """
    pseudo_labels = np.asarray(pseudo_labels).ravel()
    features = np.asarray(features, dtype=np.float64)
    if features.shape[0] != pseudo_labels.size:
        raise ValueError(f"features has {features.shape[0]} rows for {pseudo_labels.size} pseudo-labels")
    features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    order = np.random.default_rng(seed).permutation(pseudo_labels.size)
    sample = order[pseudo_labels[order] >= 0][:max_points]
    result: dict = {"intra_cluster_distance": None, "nearest_centroid_distance": None, "distance_gap": None,
                    "silhouette": None, "separation_points": int(sample.size)}
    if sample.size < 2:
        return result
    x, labels = features[sample], pseudo_labels[sample]
    dist = np.sqrt(np.maximum(2.0 - 2.0 * (x @ x.T), 0.0))
    np.fill_diagonal(dist, 0.0)
    same = labels[:, None] == labels[None, :]
    upper = np.triu(same, k=1)
    if upper.any():
        result["intra_cluster_distance"] = float(dist[upper].mean())
    clustered = np.flatnonzero(pseudo_labels >= 0)
    cluster_ids, members = np.unique(pseudo_labels[clustered], return_inverse=True)
    if cluster_ids.size >= 2:
        members = members.ravel()
        membership = sp.csr_matrix((np.ones(members.size), (members, np.arange(members.size))),
                                   shape=(cluster_ids.size, members.size))
        centroids = (membership @ features[clustered]) / np.bincount(members)[:, None]
        to_centroids = np.sqrt(np.maximum(
            1.0 - 2.0 * (x @ centroids.T) + (centroids ** 2).sum(axis=1)[None, :], 0.0))
        to_centroids[np.arange(sample.size), np.searchsorted(cluster_ids, labels)] = np.inf  # own cluster
        result["nearest_centroid_distance"] = float(to_centroids.min(axis=1).mean())
    if result["intra_cluster_distance"] is not None and result["nearest_centroid_distance"] is not None:
        result["distance_gap"] = result["nearest_centroid_distance"] - result["intra_cluster_distance"]
    if 2 <= np.unique(labels).size <= sample.size - 1:
        result["silhouette"] = float(silhouette_score(dist, labels, metric="precomputed"))
    return result


def pseudo_label_quality(
    pseudo_labels: np.ndarray, true_labels: np.ndarray, camids: np.ndarray | None = None
) -> dict:
    """Diagnostics of pseudo-labels against ground truth (uses labels: log it as such).

    Args:
        pseudo_labels: (N,) int cluster ids, -1 for outliers.
        true_labels: (N,) int identities.
        camids: optional (N,) camera ids; when given, the cross-camera pair counts below are added.

    Returns:
        {"pairwise_precision": pairs in one cluster that share the identity / pairs in one cluster
             (outliers excluded; 0.0 when no cluster has two members),
         "pairwise_recall": pairs sharing an identity that land in one cluster / pairs sharing an identity
             (all samples; an outlier is never in a cluster with anyone; 0.0 when there is no such pair),
         "pairwise_f1": harmonic mean of the two (0.0 when both are 0),
         "nmi": sklearn normalized_mutual_info_score on the non-outliers (0.0 when there are none),
         "outlier_fraction": outliers / N}, all floats in [0, 1].
        With ``camids``, also (only pairs whose two images come from different cameras count):
        {"cross_camera_pairwise_precision": such pairs in one cluster that share the identity / such pairs in
             one cluster (0.0 when there is none),
         "cross_camera_pairwise_recall": such pairs sharing an identity that land in one cluster / such pairs
             sharing an identity (0.0 when there is none)}.
    """
    pseudo_labels = np.asarray(pseudo_labels).ravel()
    true_labels = np.asarray(true_labels).ravel()
    if pseudo_labels.shape != true_labels.shape:
        raise ValueError(
            f"pseudo_labels and true_labels differ in length: {pseudo_labels.size} vs {true_labels.size}"
        )
    clustered = pseudo_labels >= 0
    _, true_ids = np.unique(true_labels, return_inverse=True)
    true_ids = true_ids.ravel()

    same_identity_pairs = _pairs(np.bincount(true_ids))
    same_cluster_pairs = _pairs(np.bincount(pseudo_labels[clustered])) if clustered.any() else 0
    both_pairs = _group_pairs(pseudo_labels[clustered], true_ids[clustered])

    precision = both_pairs / same_cluster_pairs if same_cluster_pairs else 0.0
    recall = both_pairs / same_identity_pairs if same_identity_pairs else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    nmi = (
        float(normalized_mutual_info_score(true_labels[clustered], pseudo_labels[clustered]))
        if clustered.any()
        else 0.0
    )
    quality = {
        "pairwise_precision": float(precision),
        "pairwise_recall": float(recall),
        "pairwise_f1": float(f1),
        "nmi": nmi,
        "outlier_fraction": float(np.count_nonzero(~clustered) / max(1, pseudo_labels.size)),
    }
    if camids is not None:
        camids = np.asarray(camids).ravel()
        if camids.shape != pseudo_labels.shape:
            raise ValueError(
                f"pseudo_labels and camids differ in length: {pseudo_labels.size} vs {camids.size}"
            )
        cam_ids = np.unique(camids, return_inverse=True)[1].ravel()
        cluster, identity, cam = pseudo_labels[clustered], true_ids[clustered], cam_ids[clustered]
        # pairs in a group whose cameras differ = pairs in the group - pairs in the same (group, camera)
        cross_cluster = same_cluster_pairs - _group_pairs(cluster, cam)
        cross_both = both_pairs - _group_pairs(cluster, identity, cam)
        cross_identity = same_identity_pairs - _group_pairs(true_ids, cam_ids)
        quality["cross_camera_pairwise_precision"] = (
            float(cross_both / cross_cluster) if cross_cluster else 0.0
        )
        quality["cross_camera_pairwise_recall"] = (
            float(cross_both / cross_identity) if cross_identity else 0.0
        )
    return quality


def _group_pairs(*keys: np.ndarray) -> int:
    """Unordered pairs of samples that agree on every key (int arrays of one length): sum of n choose 2."""
    if keys[0].size == 0:
        return 0
    _, counts = np.unique(np.stack(keys), axis=1, return_counts=True)
    return _pairs(counts)


def _pairs(counts: np.ndarray) -> int:
    """Number of unordered pairs within groups of the given sizes: sum of n choose 2."""
    counts = np.asarray(counts, dtype=np.int64)
    return int((counts * (counts - 1) // 2).sum())
