"""Pseudo-labels of one adaptation round: extract the target-train features, cluster them on rank 0, broadcast
the labels to every rank, log the round's clustering signals.

Used by stage 2 (:mod:`reid.engine.adapt`) and by ``scripts/gds_gradients.py``, so both see the same clusters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from reid import distributed
from reid.cluster import KnnMethod, clustering_features, generate_pseudo_labels, knn_search
from reid.cluster.camera import camera_fallback_reason, camera_normalize
from reid.config import ClusterConfig
from reid.data.loaders import build_test_loader
from reid.engine.logging import RunLogger
from reid.engine.monitor import log_clustering, log_distance_histograms, pair_distance_samples
from reid.evaluation.camera_bn import extract_features_camera_bn
from reid.evaluation.features import extract_features

Item = tuple[str, int, int]  # (path, pid, camid)


@dataclass
class PseudoLabels:
    """One round's clustering of the target-train images (dataset order).

    Attributes:
        labels: (N,) int64, clusters 0..C-1, -1 for outliers.
        core: (N,) bool, DBSCAN core points (``gds.pairs: core``).
        eps: the DBSCAN radius used.
        features: (N, D) float32, L2-normalised: what was clustered (every rank holds all of them); None for
            labels restored from a mid-round checkpoint.
    """

    labels: np.ndarray
    core: np.ndarray
    eps: float
    features: torch.Tensor | None = None

    def training_items(self, items: Sequence[Item]) -> list[Item]:
        """``items`` with their pseudo-label as pid, outliers dropped."""
        return [(path, int(label), cam) for (path, _, cam), label in zip(items, self.labels) if label >= 0]

    @property
    def num_clusters(self) -> int:
        return len(np.unique(self.labels[self.labels >= 0]))


class PseudoLabeler:
    """Extract -> cluster (rank 0) -> broadcast -> log, as every round of stage 2 does it.

    Args:
        model: the network being adapted (extraction runs in eval mode; ``model`` itself, never a DDP wrapper).
        items: the target-train ``(path, pid, camid)`` list; the pids are read only when ``labelled`` (for the
            diagnostics marked as using target labels).
        cluster: ``cfg.cluster``: Jaccard ``k1`` / ``k2``, DBSCAN ``min_samples``, the eps rule's ``rho`` and the
            camera options (``camera_norm``, ``camera_jaccard`` with its four k's, ``camera_bn``), each falling back
            to its plain form when the images have fewer than two cameras.
        height, width, batch_size, workers, amp: extraction (the test transform: resize, no augmentation).
        labelled: whether the pids of ``items`` are true identities (not the placeholders of an unlabelled folder).
        logger: where each round's clustering signals go (console, metrics.jsonl, TensorBoard); None: nowhere.

    Example::

        labeler = PseudoLabeler(model, target.train, cluster=cfg.cluster, height=256, width=128)
        round0 = labeler(round_index=0, eps=None)      # eps None: the automatic rule (UDA_TP)
        loader_items = round0.training_items(target.train)
    """

    def __init__(self, model: torch.nn.Module, items: Sequence[Item], *, cluster: ClusterConfig, height: int,
                 width: int, batch_size: int = 128, workers: int = 0, device: torch.device | str = "cpu",
                 amp: bool = False, labelled: bool = True, logger: RunLogger | None = None):
        self.model, self.items, self.cluster, self.logger = model, list(items), cluster, logger
        self.height, self.width, self.batch_size, self.workers = height, width, batch_size, workers
        self.device, self.amp = device, amp
        self.camids = np.array([cam for _, _, cam in self.items])
        self.true_pids = np.array([pid for _, pid, _ in self.items]) if labelled else None
        self.camera_bn = cluster.camera_bn and camera_fallback_reason(self.camids) is None
        self.loader = build_test_loader(self.items, height, width, batch_size, workers,
                                        distributed=distributed.world_size() > 1)

    def extract(self) -> torch.Tensor:
        """(N, D) L2-normalised embeddings of ``items`` in dataset order, on every rank (each extracts its shard;
        with per-camera BN statistics, ``cluster.camera_bn``, each extracts all)."""
        if self.camera_bn:
            return extract_features_camera_bn(self.model, self.items, height=self.height, width=self.width,
                                              batch_size=self.batch_size, workers=self.workers, device=self.device,
                                              amp=self.amp)[0]
        return extract_features(self.model, self.loader, self.device, amp=self.amp)[0]

    def __call__(self, round_index: int, eps: float | None) -> PseudoLabels:
        """Cluster the current features with DBSCAN radius ``eps`` (None: the automatic rule). Every rank must
        call it; every rank returns rank 0's labels."""
        features = self.extract()
        c = self.cluster
        knn = KnnMethod(c.knn, dim=c.knn_dim, candidates=c.knn_candidates, nlist=c.knn_nlist, nprobe=c.knn_nprobe,
                         drop=c.knn_drop, train_dim=c.knn_train_dim)
        clustered = features.numpy().astype(np.float16 if c.feature_dtype == "float16" else np.float32, copy=False)
        neighbours = None
        if distributed.world_size() > 1 and not c.camera_jaccard:  # every rank searches its share
            x = clustering_features(clustered, self.camids, c.camera_norm)
            neighbours = knn_search(x, min(c.k1, x.shape[0]), method=knn, shard=True)
            del x
        labels = core = None
        if distributed.is_main():
            labels, info = generate_pseudo_labels(
                clustered, eps, k1=c.k1, k2=c.k2, min_samples=c.min_samples,
                rho=c.rho, camids=self.camids, camera_norm=c.camera_norm, camera_jaccard=c.camera_jaccard,
                camera_k=(c.k1_intra, c.k1_inter, c.k2_intra, c.k2_inter),
                knn=knn, neighbours=neighbours)
            eps, core = float(info["eps"]), info["core"]
            if self.logger is not None:
                self._log(round_index, info, labels, features)
        labels, eps, core = distributed.broadcast_object((labels, eps, core))
        return PseudoLabels(labels, core, eps, features)

    def _log(self, round_index: int, info: dict, labels: np.ndarray, features: torch.Tensor) -> None:
        log_clustering(self.logger, round_index, info, labels, self.true_pids, camids=self.camids,
                       features=camera_normalize(features.numpy(), self.camids, self.cluster.camera_norm))
        positives, negatives = pair_distance_samples(features, labels, seed=round_index)
        log_distance_histograms(self.logger, "pseudo_label_distances", positives, negatives, round_index)
