"""Pseudo-labels from a Jaccard distance matrix: DBSCAN and the UDA_TP eps rule (diagnostics: quality.py).

Distances come as a sparse (N, N) matrix from :func:`reid.cluster.jaccard.jaccard_distance`: stored entries
are distances < 1 (explicit zeros included), an absent entry means distance 1.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import DBSCAN

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
