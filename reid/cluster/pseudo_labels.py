"""Pseudo-labels from a Jaccard distance matrix: DBSCAN, the UDA_TP eps rule, and quality diagnostics.

Distances come as a sparse (N, N) matrix from :func:`reid.cluster.jaccard.jaccard_distance`: stored entries
are distances < 1 (explicit zeros included), an absent entry means distance 1.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import DBSCAN
from sklearn.metrics import normalized_mutual_info_score, silhouette_score

from reid.cluster.camera import CameraNorm, camera_fallback_reason, camera_normalize
from reid.cluster.jaccard import camera_jaccard_distance, jaccard_distance, l2_normalise
from reid.cluster.knn import KnnMethod
from reid.errors import TrainingError


def cluster_dbscan(dist: sp.csr_matrix | np.ndarray, eps: float, min_samples: int = 4,
                   return_core: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """DBSCAN on precomputed distances.

    Args:
        dist: (N, N) distances in [0, 1]: a sparse matrix whose absent entries mean 1 (never a neighbour,
            as eps < 1) and whose stored zeros mean 0 (a neighbour), or a dense array.
        eps: neighbourhood radius, 0 < eps < 1; j is a neighbour of i when dist[i, j] <= eps.
        min_samples: neighbours (the point itself included) that make a core point.

    Returns:
        (N,) int64 labels: clusters 0..C-1 (numbered as sklearn finds them), -1 for outliers; with
        ``return_core``, also (N,) bool: the DBSCAN core points (at least ``min_samples`` neighbours).
    """
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1) for Jaccard distances, got eps={eps}")
    if sp.issparse(dist):
        # csr keeps explicit zeros as stored distances; sklearn only counts stored entries as neighbours.
        dist = sp.csr_matrix(dist)
    else:
        dist = np.asarray(dist)
    if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
        raise ValueError(f"dist must be a square (N, N) matrix, got shape {dist.shape}")
    model = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", n_jobs=-1)
    labels = model.fit_predict(dist).astype(np.int64)
    if not return_core:
        return labels
    core = np.zeros(len(labels), dtype=bool)
    core[model.core_sample_indices_] = True
    return labels, core


def compute_eps(dist: sp.csr_matrix | np.ndarray, num_samples: int, rho: float = 1.6e-3) -> float:
    """UDA_TP eps rule: the mean of the M smallest distances between pairs i < j, M = round(rho·N(N-1)/2),
    taken over the pairs that exist.

    The rule's M grows as N², but the pairs at distance < 1 (those the sparse Jaccard distance stores) grow as
    N·k1: above a few tens of thousands of images M exceeds them. The rule as UDA_TP wrote it then averages in
    absent pairs at distance 1 and eps drifts towards 1 (0.88 at 100,000 synthetic images); here the mean is
    over the stored pairs only (all of them when there are fewer than M), a statistic of the k-reciprocal graph
    that does not drift with N. Where at least M pairs are stored — every dataset of the usual sizes — the value
    is UDA_TP's exactly. The count is rounded half to even (``np.round``) and is at least 1.

    Args:
        dist: (N, N) distances, sparse (absent = 1, never averaged) or dense. Only the strict upper triangle is
            read.
        num_samples: N, checked against ``dist``.
        rho: fraction of the N(N-1)/2 pairs to average, in (0, 1].

    Returns:
        eps, a float in [0, 1] (1 when no pair below 1 is stored).
    """
    if dist.shape != (num_samples, num_samples):
        raise ValueError(f"dist has shape {dist.shape}, expected ({num_samples}, {num_samples})")
    if not 0 < rho <= 1:
        raise ValueError(f"rho must be in (0, 1], got rho={rho}")
    if num_samples < 2:
        raise ValueError(f"compute_eps needs at least 2 samples, got {num_samples}")
    num_pairs = num_samples * (num_samples - 1) // 2
    top_num = max(1, int(np.round(rho * num_pairs)))
    if sp.issparse(dist):
        upper = sp.triu(dist, k=1, format="coo")
        values = upper.data.astype(np.float64)
    else:
        values = np.asarray(dist, dtype=np.float64)[np.triu_indices(num_samples, k=1)]
    if values.size == 0:
        return 1.0
    if values.size > top_num:
        values = np.partition(values, top_num - 1)[:top_num]
    return float(values.mean())


def generate_pseudo_labels(
    features: np.ndarray,
    eps: float | None,
    k1: int = 20,
    k2: int = 6,
    min_samples: int = 4,
    rho: float = 1.6e-3,
    camids: np.ndarray | None = None,
    camera_norm: CameraNorm = "none",
    camera_jaccard: bool = False,
    camera_k: tuple[int, int, int, int] = (5, 20, 2, 4),
    knn: KnnMethod | None = None,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict]:
    """(camera normalisation) -> Jaccard distance (plain or camera-aware) -> eps (UDA_TP rule when ``eps`` is
    None) -> DBSCAN.

    Args:
        features: (N, D) float32 (or float16, to halve the memory of large sets) features of the target training
            images (L2-normalised inside).
        eps: DBSCAN radius in (0, 1), or None to compute it with :func:`compute_eps`.
        k1, k2: see :func:`reid.cluster.jaccard.jaccard_distance`.
        min_samples: DBSCAN core-point size.
        rho: see :func:`compute_eps`.
        knn: how the plain distance finds the k1 neighbours (:class:`reid.cluster.knn.KnnMethod`; exact by
            default). ``neighbours``: those neighbours already found for :func:`clustering_features` of these
            features (a search sharded across ranks); plain distance only.
        camids: (N,) camera ids of the images, or None (no camera information).
        camera_norm: ``none`` | ``center`` | ``standardize``: :func:`reid.cluster.camera.camera_normalize`
            before the distance, statistics from these very images.
        camera_jaccard: use :func:`reid.cluster.jaccard.camera_jaccard_distance` with
            ``camera_k = (k1_intra, k1_inter, k2_intra, k2_inter)`` instead of the plain distance.
            Both camera options fall back to the plain form without camera ids or with one camera
            (``info["camera_fallback"]`` says why; None when they applied or were not asked for).

    Returns:
        labels: (N,) int64, clusters 0..C-1, -1 for outliers.
        info: {"eps": float, "num_clusters": int, "num_outliers": int,
               "cluster_sizes": (C,) int64 array (size of cluster c at index c), "seconds": float,
               "camera_fallback": str | None, "core": (N,) bool DBSCAN core points,
               "seconds_distance", "seconds_eps", "seconds_dbscan": float, the three steps' wall times}.

    Raises:
        TrainingError: the eps rule gives 0 or 1 (collapsed features), so DBSCAN cannot run.
    """
    start = time.perf_counter()
    wants_camera = camera_norm != "none" or camera_jaccard
    fallback = camera_fallback_reason(camids) if wants_camera else None
    if fallback is None and camera_norm != "none":
        features = camera_normalize(features, camids, camera_norm)
    if fallback is None and camera_jaccard:
        k1_intra, k1_inter, k2_intra, k2_inter = camera_k
        dist = camera_jaccard_distance(features, camids, k1_intra, k1_inter, k2_intra, k2_inter)
    else:
        dist = jaccard_distance(features, k1=k1, k2=k2, knn=knn, neighbours=neighbours)
    distance_done = time.perf_counter()
    if eps is None:
        eps = compute_eps(dist, dist.shape[0], rho=rho)
        if not 0 < eps < 1:
            raise TrainingError(
                f"degenerate clustering: the eps rule (rho={rho}) gave eps={eps:.6g}, outside (0, 1); "
                "the features are collapsed (many identical rows) or too few to cluster"
            )
    eps_done = time.perf_counter()
    labels, core = cluster_dbscan(dist, eps, min_samples=min_samples, return_core=True)
    end = time.perf_counter()
    cluster_sizes = np.bincount(labels[labels >= 0], minlength=int(labels.max()) + 1 if labels.size else 0)
    info = {
        "eps": float(eps),
        "num_clusters": int(cluster_sizes.size),
        "num_outliers": int(np.count_nonzero(labels < 0)),
        "cluster_sizes": cluster_sizes.astype(np.int64),
        "seconds": end - start,
        "seconds_distance": distance_done - start,
        "seconds_eps": eps_done - distance_done,
        "seconds_dbscan": end - eps_done,
        "camera_fallback": fallback,
        "core": core,
    }
    return labels, info


def clustering_features(features: np.ndarray, camids: np.ndarray | None = None,
                        camera_norm: CameraNorm = "none") -> np.ndarray:
    """The L2-normalised features the plain distance of :func:`generate_pseudo_labels` searches (after the
    camera normalisation, when it applies): what a search sharded across ranks must be given."""
    if camera_norm != "none" and camera_fallback_reason(camids) is None:
        features = camera_normalize(features, camids, camera_norm)
    return l2_normalise(features)


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
