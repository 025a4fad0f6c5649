"""Pseudo-label generation: faiss k-NN, k-reciprocal Jaccard distance (sparse), DBSCAN, diagnostics."""

from __future__ import annotations

from reid.cluster.jaccard import jaccard_distance
from reid.cluster.knn import KnnMethod, knn_search
from reid.cluster.pseudo_labels import (
    cluster_dbscan,
    clustering_features,
    compute_eps,
    generate_pseudo_labels,
)
from reid.cluster.quality import camera_spread, cluster_separation, pseudo_label_quality

__all__ = [
    "KnnMethod",
    "camera_spread",
    "cluster_dbscan",
    "cluster_separation",
    "clustering_features",
    "compute_eps",
    "generate_pseudo_labels",
    "jaccard_distance",
    "knn_search",
    "pseudo_label_quality",
]
